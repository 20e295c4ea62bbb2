"""Constant vs monotonic vs cyclical KL annealing for the dialog CVAE (Fu et al., NAACL 2019, Table 2).

    python examples/dialog_cvae/compare.py                    # the controlled table: 3 schedules x 3 seeds (wall times: README)
    python examples/dialog_cvae/compare.py --table paper      # the paper's settings: lr restarts for cyclical only
    python examples/dialog_cvae/compare.py --bow-weight 1     # the CVAE + bag-of-words loss
    python examples/dialog_cvae/compare.py --data-dir DIR     # DailyDialog / JSONL files (README: a real corpus)
    python examples/dialog_cvae/compare.py --data-dir ~/data/dailydialog --preset paper --bow-weight 1 --lr 1e-3 \
        --steps 20592 --batch-size 30 --table paper --accelerator gpu    # the paper's setting, on real data

Every schedule trains the same model, on the same data, from the same seed, for the same number of steps,
with the paper's beta schedules (experiment 2):
    constant  beta = 1 throughout
    monotonic beta = min(t / 10000, 1) of the paper's 4 x 5148 = 20592 steps, scaled to the budget: it
              rises over the first 10000 / 20592 = 48.6% of training (``--monotonic-ratio``)
    cyclical  4 cycles, rising to 1 by 2/3 of each cycle (R = 2/3), then 1 (``--ratio-zero`` adds a hold)
Two tables (``--table``):
    controlled  every schedule gets the same optimiser and learning-rate policy (``--lr-policy``: constant,
                or a cosine decay restarted at every beta cycle, which is one decay for constant/monotonic)
    paper       the paper's: a cosine learning rate restarted every cycle for cyclical only, constant otherwise
Evaluation is at beta = 1 on the test split, every example exactly once on any number of devices.
``--out`` receives ``results.json`` (per schedule: the test and final validation metrics of each seed,
their mean and sample standard deviation; validation includes ``LatentMonitor``'s ``latent/*`` values and the
step of its collapse alert, -1 if it never fired), ``learning_curves.png``, ``samples.txt`` and the logs
(``logs/``, including Lightning's console output and the alert's warning in ``logs/lightning.log``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples.dialog_cvae` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from examples.dialog_cvae.data import DialogDataModule, collate
from examples.dialog_cvae.model import SMALL_PRESET, DialogCVAE
from lightning_kl_anneal import CyclicalKLAnnealing, LatentMonitor

#: The paper's monotonic schedule, beta = min(t / 10000, 1), over its 4 cycles of 5148 iterations.
PAPER_MONOTONIC_RATIO = 10000 / (4 * 5148)

SCHEDULES: dict[str, dict[str, Any]] = {
    "constant": dict(n_cycle=1, ratio=1.0, start=1.0, stop=1.0),
    "monotonic": dict(n_cycle=1),  # + ratio from --monotonic-ratio
    "cyclical": dict(n_cycle=4, ratio=2 / 3),  # + ratio_zero from --ratio-zero
}

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
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    p.add_argument("--steps", type=int, default=1800, help="optimizer steps per run (default: %(default)s)")
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
        default=0.0,
        help="weight of the bag-of-words loss: 0 is the plain CVAE, 1 the paper's CVAE+BoW (default: %(default)s)",
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
        "--monotonic-ratio",
        type=float,
        default=PAPER_MONOTONIC_RATIO,
        help="share of training over which monotonic beta rises; the default is the paper's 10000 of "
        "20592 steps (default: %(default).4f)",
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
    p.add_argument("--context-turns", type=int, default=10)
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
    p.add_argument("--val-every", type=int, default=300, help="validate every this many steps (default: %(default)s)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", default="1")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; these small GRUs gain nothing from more (default: %(default)s)",
    )
    p.add_argument("--fast-dev-run", action="store_true", help="a few batches per schedule, to check the wiring")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be a positive int, got {args.steps}")
    if args.bow_weight < 0:
        p.error(f"--bow-weight must be >= 0, got {args.bow_weight}")
    if not 0 < args.monotonic_ratio <= 1:
        p.error(f"--monotonic-ratio must be in (0, 1], got {args.monotonic_ratio}")
    if not 0 <= args.ratio_zero < SCHEDULES["cyclical"]["ratio"]:
        p.error(f"--ratio-zero must be in [0, {SCHEDULES['cyclical']['ratio']:.3f}), got {args.ratio_zero}")
    if args.threads < 1:
        p.error(f"--threads must be a positive int, got {args.threads}")
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


def schedule_kwargs(schedule: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs = dict(SCHEDULES[schedule])
    if schedule == "monotonic":
        kwargs["ratio"] = args.monotonic_ratio
    if schedule == "cyclical":
        kwargs["ratio_zero"] = args.ratio_zero
    return kwargs


def lr_restarts(schedule: str, args: argparse.Namespace) -> int:
    """Cosine restarts of the learning rate for this schedule's run (0: constant lr)."""
    if args.table == "paper":
        return SCHEDULES["cyclical"]["n_cycle"] if schedule == "cyclical" else 0
    return SCHEDULES[schedule]["n_cycle"] if args.lr_policy == "restart" else 0


@contextlib.contextmanager
def lightning_output_to(path: Path) -> Iterator[None]:
    """Send Lightning's console messages and Python warnings to ``path`` instead of the console."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    # both package names: once a program imports `pytorch_lightning`, Lightning logs under its names
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric", "py.warnings")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    for n in names:
        logger = logging.getLogger(n)
        logger.handlers, logger.propagate = [handler], False
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        for n, (handlers, propagate) in saved.items():
            logging.getLogger(n).handlers, logging.getLogger(n).propagate = handlers, propagate
        handler.close()


def run_one(
    schedule: str, seed: int, args: argparse.Namespace, dm: DialogDataModule, out: Path
) -> tuple[dict[str, float], dict[str, float], DialogCVAE, Path | None]:
    """Train one schedule from one seed; returns its test and final validation metrics, the model and its
    metrics.csv."""
    L.seed_everything(seed, workers=True, verbose=False)
    sizes = SMALL_PRESET if args.preset == "small" else {}
    model = DialogCVAE(
        vocab_size=dm.vocab_size,
        lr=args.lr,
        bow_weight=args.bow_weight,
        lr_restart_cycles=lr_restarts(schedule, args),
        max_decode_len=20 if args.data_dir is None else dm.max_len,
        val_gen_contexts=32,
        **sizes,
    )
    logger = CSVLogger(out / "logs", name=schedule, version=f"seed{seed}")
    # The CVAE's KL is to its learned prior p(z | c): the monitor reads both from validation_step's dict.
    monitor = LatentMonitor(prior_mu_key="prior_mu", prior_logvar_key="prior_logvar")
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator=args.accelerator,
        devices=args.devices,
        logger=logger,
        callbacks=[CyclicalKLAnnealing(**schedule_kwargs(schedule, args)), monitor],
        gradient_clip_val=5.0,
        val_check_interval=min(args.val_every, args.steps),
        check_val_every_n_epoch=None,
        log_every_n_steps=20,
        enable_checkpointing=False,
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
    csv = Path(logger.log_dir) / "metrics.csv"
    return metrics, val, model, csv if csv.exists() else None


def git_commit() -> str:
    """The code's commit, with ``+dirty`` when tracked files differ from it ("unknown" outside git)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: dict[str, dict[str, Any]]) -> str:
    lines = []
    for title, cols in TABLE:
        lines.append(f"\n{title}")
        lines.append(f"{'schedule':<10}" + "".join(f"{c:>14}" for c in cols))
        for name, res in results.items():
            seeds = list(res["seeds"].values())
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
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _compare(args)
    finally:  # leave the process as we found it (the tests call main() in-process)
        torch.set_num_threads(threads)


def _compare(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    dm = make_datamodule(args)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, DialogCVAE] = {}
    csvs: dict[str, Path] = {}
    total, done = len(args.schedules) * len(args.seeds), 0
    where = "built-in corpus" if args.data_dir is None else args.data_dir
    print(
        f"{args.table} table, {where}: {len(dm.splits['train'])} training pairs, vocabulary {dm.vocab_size}; "
        f"{total} runs of {args.steps} steps (Lightning's messages: {out / 'logs' / 'lightning.log'})",
        flush=True,
    )
    with lightning_output_to(out / "logs" / "lightning.log"):
        for name in args.schedules:
            results[name] = {"seeds": {}, "val": {}}
            for seed in args.seeds:
                t = time.perf_counter()
                metrics, val, model, csv = run_one(name, seed, args, dm, out)
                done += 1
                alert = val["collapse_alert_step"]
                print(
                    f"[{done}/{total}] {name:<9} seed {seed}: test ELBO {metrics['elbo']:.3f}, KL {metrics['kl']:.3f}, "
                    f"BLEU-1 recall {metrics.get('bleu1_r', float('nan')):.3f}; validation ELBO "
                    f"{val.get('elbo', float('nan')):.3f}"
                    + (f"; collapse alert at step {alert}" if alert >= 0 else "")
                    + f" ({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
                results[name]["seeds"][str(seed)] = metrics
                results[name]["val"][str(seed)] = val
                if seed == args.seeds[0]:
                    models[name] = model
                    if csv is not None:
                        csvs[name] = csv
            per_seed = list(results[name]["seeds"].values())
            stats = {k: mean_std([s[k] for s in per_seed]) for k in per_seed[0]}
            results[name]["mean"] = {k: m for k, (m, _) in stats.items()}
            results[name]["std"] = {k: sd for k, (_, sd) in stats.items()}
    wall = time.perf_counter() - t0
    config = {k: v for k, v in vars(args).items()}
    config.update(
        wall_seconds=round(wall, 1),
        std="sample (ddof=1)",
        schedules={n: schedule_kwargs(n, args) for n in args.schedules},
        lr_restart_cycles={n: lr_restarts(n, args) for n in args.schedules},
        vocab_size=dm.vocab_size,
        max_len=dm.max_len,
        min_freq=dm.min_freq,
        split_sizes={k: len(v) for k, v in dm.splits.items()},
        command="python examples/dialog_cvae/compare.py " + " ".join(sys.argv[1:]) if __name__ == "__main__" else None,
    )
    (out / "results.json").write_text(json.dumps({"config": config, **results}, indent=2))
    table = summarize(results)
    samples = sample_examples(models, dm)
    (out / "samples.txt").write_text(samples)
    if csvs:
        plot_curves(csvs, out / "learning_curves.png")
    print(table)
    print("\n" + samples)
    print(f"wall time {wall:.0f} s for {len(args.schedules)} schedules x {len(args.seeds)} seeds; wrote {out}")
    return results


if __name__ == "__main__":
    main()
