"""Monotonic vs cyclical KL annealing for the dialog CVAE + BoW (Fu et al., NAACL 2019, Table 2).

    python examples/dialog_cvae/compare.py --jobs 2            # monotonic vs cyclical, seeds 0-9 (README: what ran)
    python examples/dialog_cvae/compare.py --schedules constant monotonic cyclical --seeds 0 1 2
    python examples/dialog_cvae/compare.py --bow-weight 0      # the plain CVAE (no bag-of-words loss)
    python examples/dialog_cvae/compare.py --table paper       # the paper's cosine lr restart per cycle, cyclical only
    python examples/dialog_cvae/compare.py --data-dir DIR      # DailyDialog / JSONL files (README: a real corpus)
    python examples/dialog_cvae/compare.py --data-dir ~/data/dailydialog --preset paper --lr 1e-3 --steps 20592 \
        --monotonic-steps 10000 --period 5148 --batch-size 30 --table paper --accelerator gpu   # the paper's

Every schedule trains the same model (CVAE + bag-of-words loss by default, as the paper's main dialog
setting), on the same data, from the same seed, for the same number of steps, with the paper's kinds of
schedule (experiment 2), fixed in steps rather than stretched to the run:
    constant  beta = 1 throughout
    monotonic beta = min(t / N, 1) with N = ``--monotonic-steps`` (the paper: 10000), then 1
    cyclical  cycles of ``--period`` steps (the paper: 5148) until the run ends, each rising linearly to 1
              by 2/3 of the cycle (R = 2/3), then 1; ``--ratio-zero`` adds a hold at 0 (Optimus)
The run must end on a plateau of the last cycle (checked). The period is chosen from ``probe.py``'s
measured re-open time (README). Two tables (``--table``):
    controlled  every schedule gets the same optimiser and learning-rate policy (``--lr-policy``: constant,
                or a cosine decay restarted with every beta cycle, which is one decay for constant/monotonic)
    paper       the paper's: a cosine learning rate restarted every cycle for cyclical only, constant otherwise
Evaluation is at beta = 1 on the test split, every example exactly once on any number of devices, for the
final model and for the checkpoint with the best validation ELBO (the paper's model selection).
``--out`` receives ``results.json``: a ``config`` block (steps, seeds, command, the code's commit, every
setting), per schedule the test metrics of each seed for the final model (``seeds``) and the best
checkpoint (``best``, with its step in ``best_step``), the final validation metrics (``val``, with
``LatentMonitor``'s ``latent/*`` values and the step of its collapse alert, -1 if it never fired), means and
sample standard deviations; and ``comparison``: the paired per-seed differences of every pair of schedules
with a sign test and a bootstrap interval, and yes/no outcomes as fractions with Wilson intervals.
Also ``learning_curves.png``, ``samples.txt`` and the logs (``logs/``, Lightning's console output and the
alert's warning in ``logs/lightning.log``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples.dialog_cvae` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples._runs import git_commit  # noqa: I001  (first: the commit at start)

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from examples._runs import (
    bootstrap_ci,
    command_line,
    lightning_to_file,
    mean_std,
    paired_differences,
    run_all,
    sign_test,
    wilson_interval,
)
from examples.dialog_cvae.data import DialogDataModule, collate
from examples.dialog_cvae.model import SMALL_PRESET, DialogCVAE
from lightning_kl_anneal import CyclicalKLAnnealing, LatentMonitor

#: The paper's dialog schedules, in steps: monotonic over 10000 iterations, cyclical periods of 5148.
PAPER_MONOTONIC_STEPS = 10000
PAPER_PERIOD = 5148
CYCLICAL_RATIO = 2 / 3

SCHEDULES = ("constant", "monotonic", "cyclical")

# The committed table's budget (README: how the period was chosen from probe.py's re-open times).
DEFAULT_STEPS = 2000
DEFAULT_PERIOD = 1000
DEFAULT_MONOTONIC_STEPS = 1000

#: Yes/no outcome per run: the decoded response has the true response's act when z is the posterior mean
#: in more than half of the test pairs (chance: 1 in 4). A latent that does not carry the act cannot do it.
ACT_FROM_Z_THRESHOLD = 0.5

# Columns of the printed table, grouped as in the paper's Table 2; results.json uses the same names.
TABLE = (
    ("losses", ("elbo", "rec", "kl", "bow")),
    ("BLEU precision", ("bleu1_p", "bleu2_p", "bleu3_p", "bleu4_p")),
    ("BLEU recall", ("bleu1_r", "bleu2_r", "bleu3_r", "bleu4_r")),
    ("BLEU F1", ("bleu1_f1", "bleu2_f1", "bleu3_f1", "bleu4_f1")),
    (
        "embedding / diversity / hidden factor",
        ("emb_avg_p", "emb_avg_r", "emb_ext_p", "emb_ext_r", "distinct1", "distinct2", "factor_acc", "factor_cov"),
    ),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/dialog_cvae/", help="output directory (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--schedules", nargs="+", default=["monotonic", "cyclical"], choices=list(SCHEDULES))
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per run (default: %(default)s)")
    p.add_argument(
        "--monotonic-steps",
        type=int,
        default=DEFAULT_MONOTONIC_STEPS,
        help=f"monotonic: beta rises over this many steps, then stays 1 (paper: {PAPER_MONOTONIC_STEPS}) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--period",
        type=int,
        default=DEFAULT_PERIOD,
        help=f"cyclical: steps per cycle (paper: {PAPER_PERIOD}); chosen from probe.py (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--lr",
        type=float,
        default=3e-3,
        help="Adam learning rate; the paper's 1e-3 is for ~20k steps, too slow for this budget (default: %(default)s)",
    )
    p.add_argument(
        "--bow-weight",
        type=float,
        default=1.0,
        help="weight of the bag-of-words loss: 1 is the paper's CVAE + BoW, 0 the plain CVAE (default: %(default)s)",
    )
    p.add_argument(
        "--bn-gamma",
        type=float,
        default=None,
        help="BN-VAE: batch-normalise the posterior mean with this fixed scale "
        "(lightning_kl_anneal.BatchNormPosterior); 0 or unset = off (default: %(default)s)",
    )
    p.add_argument(
        "--table",
        choices=("controlled", "paper"),
        default="controlled",
        help="controlled: one lr policy for all schedules (--lr-policy); paper: cosine lr restarts for "
        "cyclical only, as the paper ran it (default: %(default)s)",
    )
    p.add_argument(
        "--lr-policy",
        choices=("constant", "restart"),
        default="constant",
        help="controlled table only: constant lr, or a cosine decay restarted at every beta cycle "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--ratio-zero",
        type=float,
        default=0.0,
        help="cyclical only: share of each cycle held at beta=0 before the rise (the Optimus variant); "
        "0 is the paper's schedule (default: %(default)s)",
    )
    p.add_argument("--preset", choices=("small", "paper"), default="small", help="model sizes (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="DailyDialog or JSONL directory instead of the built-in corpus")
    p.add_argument(
        "--context-turns",
        type=int,
        default=10,
        help="previous utterances in the context (the built-in corpus has at most 3) (default: %(default)s)",
    )
    p.add_argument("--num-train", type=int, default=6000, help="built-in corpus: training dialogs")
    p.add_argument(
        "--num-valid",
        type=int,
        default=300,
        help="validation examples (built-in corpus), at most this many (--data-dir) (default: %(default)s)",
    )
    p.add_argument(
        "--num-test",
        type=int,
        default=200,
        help="test contexts (built-in corpus), at most this many (--data-dir), spread evenly over the "
        "file: generation metrics cost far more than training steps (default: %(default)s)",
    )
    p.add_argument(
        "--embeddings",
        default=None,
        help="GloVe / word2vec text file for the embedding metrics; default: PPMI + SVD vectors of the "
        "training split, one fixed space for all runs",
    )
    p.add_argument(
        "--val-every",
        type=int,
        default=250,
        help="validate (and consider a best checkpoint) every this many steps (default: %(default)s)",
    )
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", default="1")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per run; these small GRUs gain nothing from more (default: %(default)s)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, in separate processes (default: %(default)s)")
    p.add_argument("--fast-dev-run", action="store_true", help="a few batches per schedule, to check the wiring")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="combine the results.json of these --out directories (same settings, other seeds) into --out; "
        "trains nothing",
    )
    args = p.parse_args(argv)
    for name in ("steps", "monotonic_steps", "threads", "jobs", "val_every", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    if args.period < 2:
        p.error(f"--period must be an int >= 2, got {args.period}")
    if args.bow_weight < 0:
        p.error(f"--bow-weight must be >= 0, got {args.bow_weight}")
    if args.bn_gamma is not None and not (args.bn_gamma >= 0 and math.isfinite(args.bn_gamma)):
        p.error(f"--bn-gamma must be a finite number >= 0 (0 = off), got {args.bn_gamma}")
    if not 0 <= args.ratio_zero < CYCLICAL_RATIO:
        p.error(f"--ratio-zero must be in [0, {CYCLICAL_RATIO:.3f}), got {args.ratio_zero}")
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct, got {args.seeds}")
    if not args.fast_dev_run:
        # Evaluation is at beta = 1: a run stopped while beta rises was not trained on the ELBO it is scored on.
        if (
            "cyclical" in args.schedules
            and args.steps % args.period
            and args.steps % args.period < CYCLICAL_RATIO * args.period
        ):
            p.error(
                f"--steps {args.steps} ends cyclical's last cycle of --period {args.period} while beta still rises "
                f"(step {args.steps % args.period} of the cycle, the plateau starts at "
                f"{math.ceil(CYCLICAL_RATIO * args.period)}): use a multiple of the period or end on a plateau"
            )
        if "monotonic" in args.schedules and args.monotonic_steps > args.steps:
            p.error(f"--monotonic-steps {args.monotonic_steps} must be at most --steps {args.steps}: beta must reach 1")
    return args


def make_datamodule(args: argparse.Namespace) -> DialogDataModule:
    small = args.fast_dev_run
    return DialogDataModule(
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        context_turns=args.context_turns,
        num_train=64 if small else args.num_train,
        num_valid=16 if small else args.num_valid,
        num_test=16 if small else args.num_test,
        embeddings=args.embeddings,
    )


_data: dict[str, DialogDataModule] = {}  # this process's data module, built once per configuration


def data_for(args: argparse.Namespace) -> DialogDataModule:
    """``make_datamodule``, built once per configuration in each process (every run of a table shares it)."""
    key = repr(vars(args))
    if key not in _data:
        _data.clear()
        _data[key] = make_datamodule(args)
    return _data[key]


def schedule_kwargs(schedule: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``CyclicalKLAnnealing`` arguments of ``schedule``."""
    if schedule == "constant":
        return {"n_cycle": 1, "ratio": 1.0, "start": 1.0, "stop": 1.0}
    if schedule == "monotonic":
        return {"n_cycle": 1, "ratio": 1.0, "total_steps": args.monotonic_steps}
    return {"n_cycle": None, "ratio": CYCLICAL_RATIO, "period": args.period, "ratio_zero": args.ratio_zero}


def lr_restarts(schedule: str, args: argparse.Namespace) -> dict[str, int | None]:
    """The model's learning-rate arguments: ``lr_restart_period`` (a cosine restarted every so many steps) and
    ``lr_restart_cycles`` (1: one cosine decay over the run); constant lr when both are 0 / None."""
    restart = args.lr_policy == "restart" if args.table == "controlled" else schedule == "cyclical"
    if not restart:
        return {"lr_restart_cycles": 0, "lr_restart_period": None}
    if schedule == "cyclical":
        return {"lr_restart_cycles": 0, "lr_restart_period": args.period}
    return {"lr_restart_cycles": 1, "lr_restart_period": None}


def run_one(schedule: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train one schedule from one seed; returns the test metrics of the final model (``metrics``) and of the
    checkpoint with the best validation ELBO (``best``, with its ``step``), the final validation metrics (``val``),
    the final model's weights and hyperparameters, its metrics.csv and the run's seconds."""
    t0, dm = time.perf_counter(), data_for(args)
    L.seed_everything(seed, workers=True, verbose=False)
    sizes = SMALL_PRESET if args.preset == "small" else {}
    model = DialogCVAE(
        vocab_size=dm.vocab_size,
        lr=args.lr,
        bow_weight=args.bow_weight,
        bn_gamma=args.bn_gamma,
        **lr_restarts(schedule, args),
        max_decode_len=dm.max_len,
        val_gen_contexts=32,
        **sizes,
    )
    logger = CSVLogger(out / "logs", name=schedule, version=f"seed{seed}")
    # The CVAE's KL is to its learned prior p(z | c): the monitor reads both from validation_step's dict.
    monitor = LatentMonitor(prior_mu_key="prior_mu", prior_logvar_key="prior_logvar")
    # The paper's model selection: the checkpoint with the best validation ELBO (evaluated at beta = 1).
    best = ModelCheckpoint(
        dirpath=Path(logger.log_dir) / "checkpoints", monitor="val/elbo", mode="max", save_top_k=1,
        save_weights_only=True, filename="best-{step}", auto_insert_metric_name=False,
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator=args.accelerator,
        devices=args.devices,
        logger=logger,
        callbacks=[CyclicalKLAnnealing(**schedule_kwargs(schedule, args)), monitor, best],
        gradient_clip_val=5.0,
        val_check_interval=min(args.val_every, args.steps),
        check_val_every_n_epoch=None,
        log_every_n_steps=25,
        enable_model_summary=False,
        enable_progress_bar=False,
        fast_dev_run=args.fast_dev_run,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    val = {
        k.removeprefix("val/"): float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("val/", "latent/"))
    }
    val["collapse_alert_step"] = -1 if monitor.alert_step is None else monitor.alert_step  # -1: never fired
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    metrics = {k.removeprefix("test/"): float(v) for k, v in result.items() if k.startswith("test/")}
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        best_model = DialogCVAE(**model.hparams)
        best_model.load_state_dict(state["state_dict"])
        best_model.beta = 1.0
        result = trainer.test(best_model, datamodule=dm, verbose=False)[0]
        best_metrics = {k.removeprefix("test/"): float(v) for k, v in result.items() if k.startswith("test/")}
        best_metrics["step"] = int(state["global_step"])
    else:  # fast_dev_run saves no checkpoint: the final model is all there is
        best_metrics = dict(metrics, step=trainer.global_step)
    csv = Path(logger.log_dir) / "metrics.csv"
    return {"metrics": metrics, "best": best_metrics, "val": val, "state": {k: v.cpu() for k, v in model.state_dict().items()},
            "hparams": dict(model.hparams), "csv": csv if csv.exists() else None, "seconds": time.perf_counter() - t0}  # fmt: skip


def summarize(results: dict[str, dict[str, Any]], which: str = "seeds") -> str:
    """The printed table of ``which`` (``"seeds"``: final models, ``"best"``: best-validation checkpoints)."""
    lines = []
    for title, cols in TABLE:
        lines.append(f"\n{title}")
        lines.append(f"{'schedule':<10}" + "".join(f"{c:>14}" for c in cols))
        for name, res in results.items():
            seeds = list(res[which].values())
            cells = []
            for c in cols:
                vals = [s[c] for s in seeds if c in s and not math.isnan(s[c])]
                if not vals:
                    cells.append(f"{'-':>14}")
                    continue
                mean, std = mean_std(vals)
                cells.append(f"{mean:>8.3f}±{std:<5.3f}" if len(vals) > 1 else f"{mean:>14.3f}")
            lines.append(f"{name:<10}" + "".join(cells))
    lines.append("\nmean ± sample standard deviation (ddof = 1) over seeds; per seed in results.json")
    return "\n".join(lines)


#: Metrics compared between schedules (paired by seed) in ``results.json``'s ``comparison`` block.
COMPARED = ("elbo", "rec", "kl", "bow", "bleu1_r", "bleu4_r", "bleu4_p", "distinct2", "factor_acc", "factor_cov")


def paired_summary(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Everything the README states about ``a - b``: per-seed differences, mean, sample std, bootstrap
    95 % interval of the mean, and the sign test."""
    d = paired_differences(a, b)
    mean, std = mean_std(list(d.values()))
    return {
        "per_seed": d,
        "mean": mean,
        "std": std,
        "bootstrap95": list(bootstrap_ci(d.values())),
        **sign_test(d.values()),
    }


def proportion(flags: dict[str, bool]) -> dict[str, Any]:
    """A yes/no outcome over seeds: which seeds said yes, the fraction and its Wilson 95 % interval."""
    n, k = len(flags), sum(bool(v) for v in flags.values())
    return {"yes": k, "n": n, "fraction": k / n, "wilson95": list(wilson_interval(k, n)), "per_seed": dict(flags)}


def compare_schedules(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Paired differences between every two schedules (later minus earlier in ``results``' order) for the final
    models and the best checkpoints, and the yes/no outcome "z carries the act" per schedule."""
    names = list(results)
    out: dict[str, Any] = {"pairs": {}, "act_from_z": {}}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out["pairs"][f"{b} - {a}"] = {
                which: {
                    k: paired_summary(
                        {s: m[k] for s, m in results[b][which].items()}, {s: m[k] for s, m in results[a][which].items()}
                    )
                    for k in COMPARED
                    if all(k in m for r in (a, b) for m in results[r][which].values())
                }
                for which in ("seeds", "best")
            }
    for name in names:
        out["act_from_z"][name] = {
            which: proportion(
                {s: m.get("factor_acc", 0.0) > ACT_FROM_Z_THRESHOLD for s, m in results[name][which].items()}
            )
            for which in ("seeds", "best")
        }
    out["act_from_z_threshold"] = ACT_FROM_Z_THRESHOLD
    return out


#: Columns of the README's table: (results.json key, header, decimals).
README_COLUMNS = (
    ("elbo", "ELBO ↑", 3),
    ("rec", "Rec ↓", 3),
    ("kl", "KL", 3),
    ("bow", "BoW ↓", 2),
    ("bleu1_r", "BLEU-1 R", 3),
    ("bleu4_r", "BLEU-4 R", 3),
    ("bleu4_p", "BLEU-4 P", 3),
    ("distinct2", "distinct-2", 3),
    ("factor_acc", "act from z", 3),
)


def readme_tables(saved: dict[str, Any]) -> str:
    """The README's markdown for a ``results.json``: means ± sample std of the final models and the
    best-validation-ELBO checkpoints, the per-seed KL, the paired differences and the yes/no outcome.
    The README holds this text verbatim and a test regenerates it from the committed file."""
    names = [n for n in SCHEDULES if n in saved and saved[n]["seeds"]]
    lines = ["| schedule | model | seeds | " + " | ".join(h for _, h, _ in README_COLUMNS) + " |"]
    lines.append("|---|---|---:|" + "---:|" * len(README_COLUMNS))
    for name in names:
        for which, label in (("seeds", "final"), ("best", "best val. ELBO")):
            per_seed = list(saved[name][which].values())
            cells = []
            for key, _, digits in README_COLUMNS:
                mean, std = mean_std([m[key] for m in per_seed])
                cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}" if len(per_seed) > 1 else f"{mean:.{digits}f}")
            lines.append(f"| {name} | {label} | {len(per_seed)} | " + " | ".join(cells) + " |")
    lines.append("")
    for name in names:
        for which, label in (("seeds", "final"), ("best", "best")):
            kls = ", ".join(f"{s}: {m['kl']:.3f}" for s, m in saved[name][which].items())
            extra = ""
            if which == "best":
                extra = "; best step " + ", ".join(f"{s}: {m['step']}" for s, m in saved[name]["best"].items())
            lines.append(f"- {name}, {label}: test KL per seed {kls}{extra}")
    comparison = saved.get("comparison") or {}
    for pair, by_which in comparison.get("pairs", {}).items():
        lines.append("")
        lines.append(f"| {pair} (paired by seed) | model | mean | bootstrap 95 % | wins / losses | sign test p |")
        lines.append("|---|---|---:|---|---:|---:|")
        for key in ("kl", "elbo", "bleu4_r", "factor_acc"):
            for which, label in (("seeds", "final"), ("best", "best val. ELBO")):
                d = by_which[which].get(key)
                if d is None:
                    continue
                lo, hi = d["bootstrap95"]
                lines.append(
                    f"| {key} | {label} | {d['mean']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {d['wins']} / {d['losses']} | "
                    f"{d['p_two_sided']:.3g} |"
                )
    if comparison.get("act_from_z"):
        lines.append("")
        threshold = comparison["act_from_z_threshold"]
        lines.append(f"| z carries the act (act from z > {threshold}) | final | best val. ELBO |")
        lines.append("|---|---|---|")
        for name, by_which in comparison["act_from_z"].items():
            cells = [
                f"{o['yes']}/{o['n']} (Wilson 95 % [{o['wilson95'][0]:.2f}, {o['wilson95'][1]:.2f}])"
                for o in (by_which["seeds"], by_which["best"])
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(csvs: dict[str, Path], path: Path) -> None:
    """Training KL, Rec and beta per step, validation ELBO per check, one colour per schedule."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for name, file in csvs.items():
        rows = list(csv.DictReader(file.open()))
        for ax, key in zip(axes, ("train/kl", "train/rec", "beta", "val/elbo")):
            pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
            if key.startswith("train/") and len(pts) > 5:  # a running mean: per-batch losses are noisy
                k = 5
                pts = [
                    (pts[i][0], sum(v for _, v in pts[max(0, i - k + 1) : i + 1]) / min(i + 1, k))
                    for i in range(len(pts))
                ]
            if pts:
                ax.plot(*zip(*pts), label=name, marker="o" if key == "val/elbo" else None, ms=3)
            ax.set_title(key)
            ax.set_xlabel("step")
    # KL spans 0.001 (collapsed) to hundreds (beta = 0): a symmetric log axis keeps both readable.
    axes[0].set_yscale("symlog", linthresh=0.1)
    axes[1].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def sample_examples(models: dict[str, DialogCVAE], dm: DialogDataModule, num_contexts: int = 3) -> str:
    """A few test contexts with 5 responses sampled from the prior by each schedule's model."""
    dm.setup("test")  # a no-op when a run in this process already set it up
    vocab, items = dm.vocab, [dm.datasets["test"][i] for i in range(min(num_contexts, len(dm.datasets["test"])))]
    batch = collate(items)
    lines = []
    for i, it in enumerate(items):
        lines.append("context: " + " | ".join(vocab.decode(u) for u in it["context"]))
        lines.append(f"  reference: {vocab.decode(it['response'])}")
        for name, model in models.items():
            model.eval()
            c = model.encode_context({k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()})
            for j, hyp in enumerate(model.sample_responses(c[i : i + 1], index=batch["index"][i : i + 1])[0]):
                lines.append(f"  {name + ':' if j == 0 else '':<11}{vocab.decode(hyp)}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.merge:
        command = "python examples/dialog_cvae/compare.py " + " ".join(sys.argv[1:]) if argv is None else None
        saved = merge_results(args.merge, Path(args.out), command)
        print(readme_tables(saved))
        return saved
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _compare(args)
    finally:  # leave the process as we found it (the tests call main() in-process)
        torch.set_num_threads(threads)


def write_results(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, dm: DialogDataModule, out: Path, wall: float
) -> None:
    """``results.json`` from the runs finished so far (see :func:`finish_results`)."""
    config = dict(vars(args))
    config.update(
        commit=git_commit(),
        wall_seconds=round(wall, 1),
        std="sample (ddof=1)",
        schedules={n: schedule_kwargs(n, args) for n in args.schedules},
        lr={n: lr_restarts(n, args) for n in args.schedules},
        vocab_size=dm.vocab_size,
        max_len=dm.max_len,
        min_freq=dm.min_freq,
        split_sizes={k: len(v) for k, v in dm.splits.items()},
        command=command_line("python examples/dialog_cvae/compare.py", vars(args), vars(parse_args([]))),
    )
    finish_results(results, config, out)


def finish_results(results: dict[str, dict[str, Any]], config: dict[str, Any], out: Path) -> dict[str, Any]:
    """Means and standard deviations over each schedule's finished seeds (in ``config["seeds"]``' order), the
    comparison over the seeds every schedule finished, ``config["completed"]``; written to ``out/results.json``."""
    seeds = [str(s) for s in config["seeds"]]
    for res in results.values():
        done = [s for s in seeds if s in res["seeds"]]
        for which in ("seeds", "best", "val"):
            res[which] = {s: res[which][s] for s in done}
        for which, prefix in (("seeds", ""), ("best", "best_")):
            per_seed = list(res[which].values())
            stats = {k: mean_std([s[k] for s in per_seed]) for k in per_seed[0]} if per_seed else {}
            res[f"{prefix}mean"] = {k: m for k, (m, _) in stats.items()}
            res[f"{prefix}std"] = {k: sd for k, (_, sd) in stats.items()}
    config["completed"] = {n: [int(s) for s in r["seeds"]] for n, r in results.items()}
    common = [s for s in seeds if all(s in r["seeds"] for r in results.values())]
    paired = {n: {w: {s: r[w][s] for s in common} for w in ("seeds", "best")} for n, r in results.items()}
    comparison = compare_schedules(paired) if common else {}
    payload = {"config": config, **results, "comparison": comparison}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out / "results.json")
    return payload


#: Settings that may differ between the tables :func:`merge_results` combines (everything else must agree).
_MERGE_FREE = {"seeds", "out", "jobs", "command", "commit", "wall_seconds", "completed", "merge", "threads"}


def merge_results(dirs: list[str], out: Path, command: str | None = None) -> dict[str, Any]:
    """Combine the ``results.json`` of tables run with the same settings on different seeds (e.g. at the same
    time, or on different machines) into one, with the statistics recomputed over all seeds.

    Raises:
        ValueError: if a setting other than the seeds differs, or two tables share a seed.
    """
    loaded = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    first = loaded[0]["config"]
    for d, saved in zip(dirs[1:], loaded[1:]):
        for key in sorted((set(first) | set(saved["config"])) - _MERGE_FREE):
            if first.get(key) != saved["config"].get(key):
                raise ValueError(
                    f"cannot merge {dirs[0]} and {d}: `{key}` differs ({first.get(key)!r} vs {saved['config'].get(key)!r})"
                )
    names = list(first["schedules"])
    # Seeds that every schedule finished (a table stopped early may hold one schedule's run of a seed).
    seeds = [
        s
        for saved in loaded
        for s in saved["config"]["seeds"]
        if all(s in saved["config"]["completed"][n] for n in names)
    ]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"cannot merge: a seed occurs in two tables ({seeds})")
    results: dict[str, dict[str, Any]] = {n: {"seeds": {}, "best": {}, "val": {}} for n in names}
    for saved in loaded:
        for n in names:
            for which in ("seeds", "best", "val"):
                results[n][which].update(saved[n][which])
    config = {k: v for k, v in first.items() if k not in _MERGE_FREE}
    config.update(
        seeds=seeds,
        out=str(out),
        commit=git_commit(),
        wall_seconds=round(sum(saved["config"]["wall_seconds"] for saved in loaded), 1),
        command=command,
        merged_from=[
            {
                k: saved["config"].get(k)
                for k in ("out", "command", "commit", "seeds", "completed", "wall_seconds", "jobs")
            }
            for saved in loaded
        ],
    )
    return finish_results(results, config, out)


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    dm = data_for(args)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {n: {"seeds": {}, "best": {}, "val": {}} for n in args.schedules}
    models: dict[str, DialogCVAE] = {}
    csvs: dict[str, Path] = {}
    # Seed by seed, every schedule of a seed together: a table stopped early still holds whole pairs.
    plan = [(name, seed, args, out) for seed in args.seeds for name in args.schedules]
    jobs = min(args.jobs, len(plan))
    where = "built-in corpus" if args.data_dir is None else args.data_dir
    print(
        f"{args.table} table, {where}: {len(dm.splits['train'])} training pairs, vocabulary {dm.vocab_size}; "
        f"{len(plan)} runs of {args.steps} steps, {jobs} at a time (Lightning's messages: {out / 'logs'})",
        flush=True,
    )
    log = out / "logs" / "lightning.log"
    with lightning_to_file(log):
        runs = run_all(run_one, plan, [f"{name} seed {seed}" for name, seed, _, _ in plan], jobs=jobs,
                       threads=args.threads, log_path=log, progress=False)  # fmt: skip
        for done, (k, run) in enumerate(runs, start=1):
            name, seed, _, _ = plan[k]
            metrics, best, val = run["metrics"], run["best"], run["val"]
            alert = val["collapse_alert_step"]
            print(
                f"[{done}/{len(plan)}] {name:<9} seed {seed}: test ELBO {metrics['elbo']:.3f}, KL {metrics['kl']:.3f}, "
                f"act from z {metrics.get('factor_acc', float('nan')):.3f}; best validation ELBO at step "
                f"{best['step']}: test ELBO {best['elbo']:.3f}, KL {best['kl']:.3f}"
                + (f"; collapse alert at step {alert}" if alert >= 0 else "")
                + f" ({run['seconds']:.0f} s)",
                flush=True,
            )
            results[name]["seeds"][str(seed)], results[name]["best"][str(seed)] = metrics, best
            results[name]["val"][str(seed)] = val
            # Written after every run, so that an interrupted table keeps what finished (config: `completed`).
            write_results(results, args, dm, out, time.perf_counter() - t0)
            if seed == args.seeds[0]:
                models[name] = DialogCVAE(**run["hparams"])
                models[name].load_state_dict(run["state"])
                if run["csv"] is not None:
                    csvs[name] = run["csv"]
    write_results(results, args, dm, out, time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    samples = sample_examples(models, dm)
    (out / "samples.txt").write_text(samples)
    if csvs:
        plot_curves(csvs, out / "learning_curves.png")
    print("\nfinal models" + summarize(results))
    print("\nbest-validation-ELBO checkpoints" + summarize(results, "best"))
    print("\n" + samples)
    print(f"wall time {wall:.0f} s for {len(args.schedules)} schedules x {len(args.seeds)} seeds; wrote {out}")
    return results


if __name__ == "__main__":
    main()
