"""Constant vs monotonic vs cyclical KL annealing on the same text VAE, seeds and budget.

    python examples/text_vae/compare.py

Trains one VAE per schedule and seed on the built-in corpus (or ``--data-dir`` with PTB-format
files), evaluates each at beta = 1 on the test split (checkpoint with the best validation PPL, as
in the paper), prints a table like the paper's Table 1 and writes into ``--out``:

* ``results.json``: ``{schedule: {"per_seed": {seed: metrics}, "mean": metrics, "std": metrics}}``
  with metrics ``rec kl elbo ppl au mi`` (and ``probe_<factor>`` on the built-in corpus),
* ``curves.png``: beta, KL and Rec against training steps (the paper's learning-curve figure),
* ``latent.png``: sampled z of test sentences in 2-D, coloured by topic, one panel per schedule,
* ``logs/``: a CSVLogger run per schedule and seed.

Runs are independent, so ``--jobs N`` trains N of them at once in worker processes (default 0:
as many as the CPU cores allow at ``--threads`` each, so 2 on a 2-core machine); every run is
seeded on its own, so the results are the same for any ``--jobs``.

``--free-bits 0.5`` adds a ``cyclical+fb`` row, ``--lr-restart`` a ``cyclical+lr`` row (cosine
learning rate restarted every cycle, the paper's confound, measured on its own), ``--delay D`` a
``delay+cyclical`` row (Li et al. 2019: beta = 0 for the first D steps, then the cycles, from 0).
``--recipe`` adds a ``recipe`` row: the recommended setting for real text on which every schedule
collapses (README, "When the latent collapses on real text"): the cyclical schedule plus free bits
whose threshold decays during training (``--recipe-*`` set its knobs, every knob of
``recipe_search.Recipe``: the schedule, free bits, the delay, BN-VAE). ``--bn-gamma G`` puts
``lightning_kl_anneal.BatchNormPosterior`` on the posterior mean of every row (BN-VAE).

Rows are defined in ``schedules()``: one entry of callback arguments (and model overrides) each.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples._runs import git_commit  # noqa: I001  (first: the commit at start)

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from tqdm.auto import tqdm
from typing_extensions import override

from examples._runs import (
    RunProgress,
    bootstrap_interval,
    command_line,
    jobs_arg,
    lightning_to_file,
    resolve_jobs,
    run_all,
    sign_test_p,
)
from examples.text_vae.data import BucketedBatches, TextVAEDataModule
from examples.text_vae.metrics import linear_probe_accuracy
from examples.text_vae.model import TextVAE
from lightning_kl_anneal import (
    FREE_BITS_MODES,
    SHAPES,
    CyclicalKLAnnealing,
    LatentMonitor,
    ScheduledAttribute,
    cyclical_beta,
    latent_dimensionality,
)

METRICS = ("rec", "kl", "elbo", "ppl", "au", "mi")


@dataclass
class Config:
    """Every knob of the comparison; the defaults are the README's measured run."""

    out: str = "runs/text_vae"
    data_dir: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_epochs: int = 10
    max_steps: int = -1
    batch_size: int = 32
    corpus_size: int = 10_000
    train_sentences: int | None = None
    max_vocab: int = 10_000
    min_count: int = 2
    max_train_len: int | None = None
    # built-in corpus preset: a quarter of the paper's model runs in minutes on 2 CPU cores
    emb_dim: int = 64
    hidden_dim: int = 128
    latent_dim: int = 16
    dropout: float = 0.5
    dec_init: str = "h0"
    lr: float = 1e-3
    n_cycle: int = 4
    ratio: float = 0.5
    start: float = 0.1  # the paper's LM runs; measured against 0.0 in README.md
    free_bits: float = 0.0
    lr_restart: bool = False
    delay: int = 0
    rows: list[str] | None = None
    # the `recipe` row (README, "When the latent collapses on real text"); defaults chosen on WordNet's validation
    # split, the last time by the rule of "The recipe chosen again" (search round 4: lambda 6, was 4)
    recipe: bool = False
    recipe_free_bits: float = 6.0
    recipe_free_bits_mode: str = "example"
    recipe_hold: float = 0.75
    recipe_end: float = 1.0
    recipe_floor: float = 0.0
    # the recipe's beta schedule: None takes the cyclical row's value
    recipe_n_cycle: int | None = None
    recipe_ratio: float | None = None
    recipe_start: float | None = None
    recipe_stop: float | None = None
    recipe_shape: str = "linear"
    recipe_delay: float = 0.0  # fraction of the run held at the start value before the cycles
    recipe_bn_gamma: float = 0.0  # BN-VAE in the recipe row (0: off, or --bn-gamma's)
    bn_gamma: float | None = None  # BN-VAE in every row (lightning_kl_anneal.BatchNormPosterior); None/0 = off
    select: str = "best"
    accelerator: str = "cpu"
    devices: int = 1
    threads: int = 1
    jobs: int = 0  # runs trained at once, in worker processes; 0: as many as the cores allow (resolve_jobs)
    limit_batches: float | int = 1.0
    probe_size: int = 3000
    # a persistence phase after the schedule: this many more epochs at beta = 1 for every row (0: none)
    persist_epochs: int = 0


def constant_beta(step: int, total_steps: int | None) -> float:
    """beta = 1 at every step (module level, so a DDP spawn can pickle it)."""
    return 1.0


def schedules(cfg: Config) -> dict[str, dict[str, Any]]:
    """Row name -> ``{"anneal": CyclicalKLAnnealing arguments or None, "model": TextVAE overrides}``.

    ``anneal=None`` is constant beta = 1, written by ``ScheduledAttribute`` so beta is logged like in
    the other rows; a general schedule has no ramp, so ``LatentMonitor`` counts every validation.
    """
    rows: dict[str, dict[str, Any]] = {
        "constant": {"anneal": None},
        "monotonic": {"anneal": {"n_cycle": 1, "ratio": cfg.ratio, "start": cfg.start}},
        "cyclical": {"anneal": {"n_cycle": cfg.n_cycle, "ratio": cfg.ratio, "start": cfg.start}},
    }
    cyc = rows["cyclical"]["anneal"]
    if cfg.free_bits > 0:
        rows["cyclical+fb"] = {"anneal": cyc, "model": {"free_bits": cfg.free_bits}}
    if cfg.lr_restart:
        rows["cyclical+lr"] = {"anneal": cyc, "model": {"lr_restart_cycles": cfg.n_cycle}}
    if cfg.delay > 0:
        # Li et al. (2019): an autoencoder phase at beta = 0, then the cycles fill the remaining steps
        rows["delay+cyclical"] = {"anneal": {**cyc, "start": 0.0, "delay": cfg.delay}}
    if cfg.recipe:
        # the cycles, plus free bits whose threshold lambda is held, then decays to `recipe_floor` (0: the end
        # of training optimises the true ELBO): lambda(t) is the library's cyclical function with one cycle
        # from lambda down to the floor (`ratio_zero` = the hold), written into `model.free_bits` by ScheduledAttribute
        rows["recipe"] = recipe_row(cfg, cyc)
    if cfg.rows is not None:
        unknown = [r for r in cfg.rows if r not in rows]
        if unknown or not cfg.rows:
            raise ValueError(f"`rows` must name rows of this configuration, {list(rows)}, got {cfg.rows!r}")
        rows = {name: rows[name] for name in cfg.rows}
    return rows


def recipe_row(cfg: Config, cyc: dict[str, Any]) -> dict[str, Any]:
    """The ``recipe`` row from the ``recipe_*`` knobs; with their defaults, the cyclical row plus scheduled free bits."""
    anneal = {**cyc, **{k: v for k, v in (("n_cycle", cfg.recipe_n_cycle), ("ratio", cfg.recipe_ratio),
                                          ("start", cfg.recipe_start), ("stop", cfg.recipe_stop)) if v is not None}}  # fmt: skip
    if cfg.recipe_shape != "linear":
        anneal["shape"] = cfg.recipe_shape
    row: dict[str, Any] = {
        "anneal": anneal,
        "model": {"free_bits": cfg.recipe_free_bits, "free_bits_mode": cfg.recipe_free_bits_mode},
    }
    if cfg.recipe_free_bits > 0 and cfg.recipe_hold < 1.0:
        row["free_bits"] = {"n_cycle": 1, "ratio": cfg.recipe_end, "ratio_zero": cfg.recipe_hold,
                            "start": cfg.recipe_free_bits, "stop": cfg.recipe_floor}  # fmt: skip
    if cfg.recipe_bn_gamma > 0:
        row["model"]["bn_gamma"] = cfg.recipe_bn_gamma
    if cfg.recipe_delay > 0:
        row["delay_fraction"] = cfg.recipe_delay  # in steps once the run's length is known (schedule_callback)
    return row


class CurveRecorder(Callback):
    """Keeps (step, beta, KL per sentence, Rec per token) of every training step for the curve figure.

    Rec is divided by the batch's tokens because length-bucketed batches make the per-sentence
    value jump with sentence length from one step to the next, hiding the trend.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float, float]] = []

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        rec_per_token = float(outputs["rec"]) * len(batch["lengths"]) / float(batch["lengths"].sum())
        self.rows.append((trainer.global_step, float(pl_module.beta), float(outputs["kl"]), rec_per_token))


class PhaseBest(Callback):
    """Keeps, in memory, the weights with the best validation PPL of each phase of a run.

    Phase 0 is the schedule (validations at steps ``<= boundary``), phase 1 the persistence phase
    after it (``> boundary``), so each phase is tested from its own best checkpoint, as the paper
    selects on validation PPL, and a model of the persistence phase is never the schedule's.
    """

    def __init__(self, boundary: int) -> None:
        self.boundary = boundary
        self.best: dict[int, float] = {}
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.steps: dict[int, int] = {}
        self.last: dict[
            int, tuple[int, dict[str, torch.Tensor]]
        ] = {}  # (step, weights) of each phase's last validation

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/ppl" not in trainer.callback_metrics:
            return
        ppl, phase = float(trainer.callback_metrics["val/ppl"]), int(trainer.global_step > self.boundary)
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.last[phase] = (trainer.global_step, state)
        if ppl < self.best.get(phase, math.inf):
            self.best[phase], self.steps[phase], self.states[phase] = ppl, trainer.global_step, state

    def pick(self, phase: int, select: str) -> tuple[int, dict[str, torch.Tensor]]:
        """(step, weights) of the phase's best (``select="best"``) or last validated model."""
        return (self.steps[phase], self.states[phase]) if select == "best" else self.last[phase]


@torch.no_grad()
def sample_latents(
    model: TextVAE, split: Any, seed: int, limit: int | None = None, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and one sampled z per sentence (eval mode, fixed noise)."""
    model.eval()
    n = len(split) if limit is None else min(limit, len(split))
    gen = torch.Generator().manual_seed(seed)
    mus, zs = [], []
    for i in range(0, n, batch):
        b = split.batch(torch.arange(i, min(n, i + batch)))
        mu, logvar = model.encode(b["tokens"].to(model.device), b["lengths"].to(model.device))
        mu, logvar = mu.float().cpu(), logvar.float().cpu()
        mus.append(mu)
        zs.append(mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen))
    return torch.cat(mus), torch.cat(zs)


def schedule_callback(row: dict[str, Any], total_steps: int | None = None, run_steps: int | None = None) -> Callback:
    """The row's beta schedule over ``total_steps`` (``None``: the whole fit); after it, beta stays at 1.

    ``run_steps``: the schedule's length, for a row whose delay is a fraction of it (``delay_fraction``).
    """
    if row["anneal"] is None:
        return ScheduledAttribute(constant_beta, "beta", log_name="beta", total_steps=total_steps)
    delay = {"delay": round(row["delay_fraction"] * (run_steps or 0))} if "delay_fraction" in row else {}
    return CyclicalKLAnnealing(**row["anneal"], **delay, total_steps=total_steps)


def free_bits_callbacks(row: dict[str, Any], total_steps: int | None = None) -> list[Callback]:
    """The row's schedule of the free-bits threshold (``model.free_bits``), if it has one."""
    if "free_bits" not in row:
        return []
    schedule = partial(cyclical_beta, **row["free_bits"])
    return [ScheduledAttribute(schedule, "free_bits", log_name="free_bits", total_steps=total_steps)]


def check_recipe(cfg: Config) -> None:
    """Refuse bad ``--recipe-*`` values before any run, naming the argument."""
    other = (
        cfg.recipe_bn_gamma > 0
        or cfg.recipe_delay > 0
        or cfg.recipe_shape != "linear"
        or any(v is not None for v in (cfg.recipe_n_cycle, cfg.recipe_ratio, cfg.recipe_start, cfg.recipe_stop))
    )
    fb = cfg.recipe_free_bits
    if not math.isfinite(fb) or not (fb > 0 or (fb == 0 and other)):
        raise ValueError(
            f"`recipe_free_bits` must be > 0 (nats at the start; per dimension or per sentence, by mode), or 0 with "
            f"another recipe knob that sets the row apart from cyclical (bn gamma, delay, shape, cycles), got {cfg.recipe_free_bits!r}"
        )
    if not (0.0 <= cfg.recipe_bn_gamma and math.isfinite(cfg.recipe_bn_gamma)):
        raise ValueError(f"`recipe_bn_gamma` must be a finite number >= 0 (0 = off), got {cfg.recipe_bn_gamma!r}")
    if not 0.0 <= cfg.recipe_delay < 1.0:
        raise ValueError(f"`recipe_delay` must be in [0, 1) (a fraction of the run), got {cfg.recipe_delay!r}")
    if cfg.recipe_free_bits_mode not in FREE_BITS_MODES:
        raise ValueError(f"`recipe_free_bits_mode` must be one of {FREE_BITS_MODES}, got {cfg.recipe_free_bits_mode!r}")
    if not 0.0 <= cfg.recipe_floor <= cfg.recipe_free_bits:
        raise ValueError(
            f"`recipe_floor` must be in [0, recipe_free_bits] = [0, {cfg.recipe_free_bits}], got {cfg.recipe_floor!r}"
        )
    if not (0.0 <= cfg.recipe_hold < cfg.recipe_end <= 1.0 or cfg.recipe_hold == cfg.recipe_end == 1.0):
        raise ValueError(
            "`recipe_hold` and `recipe_end` (fractions of training: lambda held until `recipe_hold`, at the floor from "
            "`recipe_end` on) must satisfy 0 <= recipe_hold < recipe_end <= 1 (or both 1: lambda constant), "
            f"got {cfg.recipe_hold!r} and {cfg.recipe_end!r}"
        )


def run_one(
    cfg: Config, name: str, row: dict[str, Any], seed: int, progress: RunProgress | None = None
) -> dict[str, Any]:
    """Train and test one (schedule, seed); returns test metrics, the curve and test latents."""
    dm = data_for(cfg, seed)
    L.seed_everything(seed, workers=True, verbose=False)
    t0, c0 = time.perf_counter(), time.process_time()
    model = TextVAE(
        vocab_size=dm.vocab_size, emb_dim=cfg.emb_dim, hidden_dim=cfg.hidden_dim, latent_dim=cfg.latent_dim,
        dropout=cfg.dropout, dec_init=cfg.dec_init, lr=cfg.lr, **{"bn_gamma": cfg.bn_gamma, **row.get("model", {})},
    )  # fmt: skip
    # the collapse alert with its defaults, as a user would attach it; "warn" lets the run finish, so the
    # table is comparable, and records the step at which on_collapse="stop" would have ended it.
    # MI is off here because the model already logs it (val/mi) from the same posteriors.
    monitor = LatentMonitor(mi_max_samples=0)
    # with a persistence phase, the schedule spans the first `schedule_steps` and beta stays at 1 after them
    total, persist = schedule_steps(cfg, dm), persist_steps(cfg, dm)
    sched_total = total if persist else None
    phases = PhaseBest(total)
    curve, ckpt = (
        CurveRecorder(),
        ModelCheckpoint(
            monitor="val/ppl",
            mode="min",
            save_top_k=1,
            save_weights_only=True,
            dirpath=Path(cfg.out) / "ckpt" / f"{name}_seed{seed}",
            filename="best",
        ),
    )
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs + cfg.persist_epochs, max_steps=cfg.max_steps + persist if cfg.max_steps > 0 else -1,
        accelerator=cfg.accelerator, devices=cfg.devices,
        gradient_clip_val=5.0,  # paper
        callbacks=[schedule_callback(row, sched_total, total), *free_bits_callbacks(row, sched_total), monitor, curve,
                   *([phases] if persist else [ckpt]), *([progress] if progress else [])],
        logger=CSVLogger(Path(cfg.out) / "logs", name=name, version=f"seed{seed}"),
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_train_batches=cfg.limit_batches, limit_val_batches=cfg.limit_batches, limit_test_batches=cfg.limit_batches,
        deterministic=False,
    )  # fmt: skip
    trainer.fit(model, dm)
    alert = {
        "step": monitor.alert_step,
        "steps": trainer.global_step,
        "steps_per_epoch": int(trainer.num_training_batches),
    }
    best = ckpt.best_model_path if cfg.select == "best" and ckpt.best_model_path and not persist else None
    persist_metrics = None
    if persist:  # the persistence phase's model first, the schedule's last: it stays loaded for the probes
        step, state = phases.pick(1, cfg.select)
        model.load_state_dict(state)
        trainer.test(model, dm, verbose=False)
        persist_metrics = {**model.last_eval, "step": step}
        step, state = phases.pick(0, cfg.select)
        model.load_state_dict(state)
    elif best:
        model = TextVAE.load_from_checkpoint(best)
    trainer.test(model, dm, verbose=False)
    metrics = dict(model.last_eval)
    if persist:
        metrics["step"] = step
    model.to("cpu")
    mu_test, z_test = sample_latents(model, dm.split("test"), seed)
    # principal components of the test posterior means holding 90 % of their variance: AU next to how spread it is
    metrics["dim90"] = latent_dimensionality(mu_test, 0.9)
    if dm.factor_names:
        _, z_train = sample_latents(model, dm.split("train"), seed + 1, limit=cfg.probe_size)
        ytr, yte = dm.split("train").labels, dm.split("test").labels
        for j, factor in enumerate(dm.factor_names):
            metrics[f"probe_{factor}"] = linear_probe_accuracy(z_train, ytr[: len(z_train), j], z_test, yte[:, j])
    # CPU time next to wall time: on a shared machine the wall time says more about the neighbours
    seconds = {"wall": round(time.perf_counter() - t0, 1), "cpu": round(time.process_time() - c0, 1)}
    return {
        "metrics": metrics,
        "persist_metrics": persist_metrics,
        "curve": curve.rows,
        "z": z_test,
        "mu": mu_test,
        "best_ckpt": best,
        "alert": alert,
        "seconds": seconds,
    }


def make_datamodule(cfg: Config, seed: int) -> TextVAEDataModule:
    """The data of every run with this seed (the seed sets the batch composition; the corpus is fixed)."""
    return TextVAEDataModule(cfg.data_dir, batch_size=cfg.batch_size, max_vocab=cfg.max_vocab, min_count=cfg.min_count,
                             max_train_len=cfg.max_train_len, train_sentences=cfg.train_sentences,
                             corpus_size=cfg.corpus_size, seed=seed)  # fmt: skip


_data: dict[tuple[str, int], TextVAEDataModule] = {}  # this process's data module (0.4 s to build)


def data_for(cfg: Config, seed: int) -> TextVAEDataModule:
    """``make_datamodule``, built once per configuration and seed in each process; one kept at a time."""
    key = (repr(cfg), seed)
    if key not in _data:
        _data.clear()  # the plan goes seed by seed
        _data[key] = make_datamodule(cfg, seed)
    return _data[key]


def steps_per_epoch(cfg: Config, dm: TextVAEDataModule) -> int:
    """Training batches per epoch, as the Trainer will count them (``limit_batches`` applied)."""
    n = len(BucketedBatches(dm.split("train"), cfg.batch_size))
    return int(n * cfg.limit_batches) if isinstance(cfg.limit_batches, float) else min(n, cfg.limit_batches)


def schedule_steps(cfg: Config, dm: TextVAEDataModule) -> int:
    """T, the steps of the beta schedule: ``max_steps``, or ``max_epochs`` epochs."""
    return cfg.max_steps if cfg.max_steps > 0 else cfg.max_epochs * steps_per_epoch(cfg, dm)


def persist_steps(cfg: Config, dm: TextVAEDataModule) -> int:
    """Steps of the persistence phase after T, at beta = 1 for every row: ``persist_epochs`` epochs."""
    return cfg.persist_epochs * steps_per_epoch(cfg, dm)


def summarize(per_seed: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Per-seed metrics, their mean and their *sample* standard deviation (ddof=1; None for one seed)."""
    keys = list(next(iter(per_seed.values())))
    vals = {k: np.array([m[k] for m in per_seed.values()], dtype=float) for k in keys}
    return {
        "per_seed": {str(s): m for s, m in per_seed.items()},
        "mean": {k: float(v.mean()) for k, v in vals.items()},
        "std": {k: float(v.std(ddof=1)) if len(v) > 1 else None for k, v in vals.items()},
    }


def paired(results: dict[str, Any], base: str = "monotonic", key: str = "kl") -> dict[str, dict[str, Any]]:
    """Per-seed differences ``row - base`` of one metric for every other row, how many are > 0, and tests.

    Seeds share the data order and the initial weights, so the paired difference removes the
    seed-to-seed spread that the rows' standard deviations include. ``sign_test_p`` is the
    two-sided exact sign test, ``bootstrap_95`` the percentile bootstrap 95 % interval of the mean
    difference (with few seeds it is narrower than it should be; the sign test is the decision).
    """
    if base not in results:
        return {}
    ref = results[base]["per_seed"]
    out = {}
    for name, r in results.items():
        if name in (base, "constant"):
            continue
        diffs = {s: r["per_seed"][s][key] - ref[s][key] for s in ref if s in r["per_seed"]}
        values = list(diffs.values())
        out[name] = {
            "key": key,
            "base": base,
            "per_seed": diffs,
            "greater": sum(d > 0 for d in values),
            "n": len(diffs),
            "mean": float(np.mean(values)) if values else None,
            "sign_test_p": sign_test_p(values),
            "bootstrap_95": bootstrap_interval(values) if len(values) > 1 else None,
        }
    return out


def add_paired(results: dict[str, Any]) -> None:
    """``paired`` (KL), ``paired_mi`` and ``paired_elbo`` of every row against monotonic, into each row."""
    for key, field_name in (("kl", "paired"), ("mi", "paired_mi"), ("elbo", "paired_elbo")):
        for name, p in paired(results, key=key).items():
            results[name][field_name] = p


def format_table(results: dict[str, Any]) -> str:
    first = next(iter(results.values()))["mean"]
    cols = [k for k in METRICS if k in first] + sorted(k for k in first if k.startswith("probe_"))
    head = f"{'schedule':<16}" + "".join(f"{c.replace('probe_', 'p_'):>16}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        cells = []
        for c in cols:
            m, s = r["mean"][c], r["std"][c]
            digits = 3 if abs(m) < 100 else 2
            cells.append(f"{m:>9.{digits}f} ±{s:<5.{digits}f}" if s is not None else f"{m:>9.{digits}f}       ")
        lines.append(f"{name:<16}" + "".join(f"{c:>16}" for c in cells))
    n = len(first_seeds := next(iter(results.values()))["per_seed"])
    lines.append(
        f"mean ± sample std (ddof=1) over {n} seed{'s' * (n > 1)}: {', '.join(first_seeds)}"
        if n > 1
        else f"one seed: {', '.join(first_seeds)}"
    )
    for name, p in paired(results).items():
        diffs = " / ".join(f"{d:+.3f}" for d in p["per_seed"].values())
        lines.append(
            f"{name} - {p['base']} {p['key'].upper()} per seed: {diffs} ({p['greater']} of {p['n']} seeds > 0)"
        )
    return "\n".join(lines)


def format_alerts(results: dict[str, Any]) -> str:
    """Where LatentMonitor's collapse alert fired, per row, and how much of the run "stop" would save."""
    lines = [
        (
            "LatentMonitor collapse alert (defaults: KL < 0.05 nats or no active unit, 3 counted validations in a "
            "row, counted on a plateau or after the last ramp):"
        )
    ]
    for name, r in results.items():
        fired = {s: a for s, a in r.get("alert", {}).items() if a["step"] is not None}
        text = f"  {name:<16}fired on {len(fired)} of {len(r.get('alert', {}))} seeds"
        if fired:
            where = ", ".join(f"seed {s}: validation {a['step'] // a['steps_per_epoch']} (step {a['step']} of {a['steps']}, "
                              f"'stop' saves {1 - a['step'] / a['steps']:.0%})" for s, a in fired.items())  # fmt: skip
            text += f" ({where})"
        lines.append(text)
    return "\n".join(lines)


def plot_curves(curves: dict[str, list[tuple[int, float, float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    for name, rows in curves.items():
        a = np.array(rows)
        if len(a) == 0:
            continue
        w = max(1, len(a) // 100)  # per-step KL and Rec are noisy; a moving mean shows the trend
        smooth = lambda x, w=w: np.convolve(x, np.ones(w) / w, mode="valid")
        axes[0].plot(a[:, 0], a[:, 1], label=name)
        axes[1].plot(a[w - 1 :, 0], smooth(a[:, 2]), label=name)
        axes[2].plot(a[w - 1 :, 0], smooth(a[:, 3]), label=name)
    for ax, label in zip(axes, ("β", "KL (nats/sentence, train)", "Rec (nats/token, train)")):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("symlog", linthresh=0.1)
    axes[0].legend(loc="lower right")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_latents(
    latents: dict[str, tuple[torch.Tensor, torch.Tensor]], labels: torch.Tensor | None, label_name: str, path: Path
) -> None:
    """Sampled z on the top-2 principal axes of the posterior means, at the prior's scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(latents), figsize=(3.2 * len(latents), 3.4), squeeze=False)
    for ax, (name, (z, mu)) in zip(axes[0], latents.items()):
        centred = mu - mu.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        xy = ((z - mu.mean(0)) @ v[:2].T).numpy()
        colour = {} if labels is None else {"c": labels.numpy(), "cmap": "tab10"}
        ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.6, **colour)
        ax.set_title(name)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
    fig.suptitle(f"sampled z, test set, colour = {label_name}" if labels is not None else "sampled z, test set")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def compare(cfg: Config) -> dict[str, Any]:
    """Run every schedule for every seed; write results.json and figures into ``cfg.out``.

    The runs go one at a time in this process, or ``jobs`` at a time in worker processes
    (``resolve_jobs``); each is seeded on its own, so the results are the same either way.
    """
    if cfg.select not in ("best", "last"):
        raise ValueError(f"`select` must be 'best' or 'last', got {cfg.select!r}")
    if not cfg.seeds:
        raise ValueError("`seeds` must name at least one seed, got []")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(
            f"`seeds` must not repeat a seed (a run writes its logs and checkpoint under its seed), got {cfg.seeds}"
        )
    if isinstance(cfg.delay, bool) or not isinstance(cfg.delay, int) or cfg.delay < 0:
        raise ValueError(f"`delay` must be an int >= 0 (steps at beta = 0; 0 = no delay row), got {cfg.delay!r}")
    if isinstance(cfg.persist_epochs, bool) or not isinstance(cfg.persist_epochs, int) or cfg.persist_epochs < 0:
        raise ValueError(
            f"`persist_epochs` must be an int >= 0 (epochs at beta = 1 after the schedule; 0 = none), got {cfg.persist_epochs!r}"
        )
    if cfg.persist_epochs and cfg.lr_restart:
        raise ValueError(
            "`persist_epochs` > 0 with `lr_restart`: the learning-rate restarts would span the persistence phase too; "
            f"run them separately (got persist_epochs={cfg.persist_epochs})"
        )
    if cfg.bn_gamma is not None and not (cfg.bn_gamma >= 0 and math.isfinite(cfg.bn_gamma)):
        raise ValueError(f"`bn_gamma` must be None or a finite number >= 0 (0 or None = off), got {cfg.bn_gamma!r}")
    if cfg.recipe:
        check_recipe(cfg)
    rows = schedules(cfg)
    # seed by seed, the rows inside: the order of the runs, of the progress lines and of results.json
    plan = [(cfg, name, row, seed) for seed in cfg.seeds for name, row in rows.items()]
    n_runs = len(plan)
    jobs = resolve_jobs(cfg.jobs, n_runs, threads=cfg.threads, accelerator=cfg.accelerator, devices=cfg.devices)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    labels = [f"{name:<11} seed {seed}" for _, name, _, seed in plan]
    log_path = out / "logs" / "lightning.log"
    with lightning_to_file(log_path):
        dm = data_for(cfg, cfg.seeds[0])
        tqdm.write(f"data: {dm.describe()}")
        # a bad setting of a row is refused by the library's callback before that row's first step
        runs = dict(run_all(run_one, plan, labels, jobs=jobs, threads=cfg.threads, log_path=log_path))
    per: dict[str, dict[int, dict[str, float]]] = {name: {} for name in rows}
    alerts: dict[str, dict[str, dict[str, int | None]]] = {name: {} for name in rows}
    seconds: dict[str, dict[str, dict[str, float]]] = {name: {} for name in rows}
    curves: dict[str, list] = {}
    latents: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, (_, name, _, seed) in enumerate(plan):
        res = runs[k]
        per[name][seed] = res["metrics"]
        alerts[name][str(seed)] = res["alert"]
        seconds[name][str(seed)] = res["seconds"]
        if seed == cfg.seeds[0]:
            curves[name] = res["curve"]
            latents[name] = (res["z"], res["mu"])
    results = {name: summarize(p) for name, p in per.items()}
    add_paired(results)
    if cfg.persist_epochs:  # the same rows after the persistence phase at beta = 1
        for name in rows:
            results[name]["persist"] = summarize(
                {seed: runs[k]["persist_metrics"] for k, (_, n, _, seed) in enumerate(plan) if n == name}
            )
        persisted = {name: r["persist"] for name, r in results.items()}
        add_paired(persisted)
    for name, a in alerts.items():
        results[name]["alert"] = a
        results[name]["seconds"] = seconds[name]
    if rank_zero_only.rank != 0:  # under DDP every process runs this script; one writes the outputs
        return results
    total, persist = schedule_steps(cfg, dm), persist_steps(cfg, dm)
    block = {
        "steps": total + persist,
        "schedule_steps": total,
        "persist_steps": persist,
        "steps_per_epoch": steps_per_epoch(cfg, dm),
        "seeds": list(cfg.seeds),
        "rows": list(rows),
        "command": command_line("python examples/text_vae/compare.py", asdict(cfg), asdict(Config())),
        "commit": git_commit(),
        "threads": cfg.threads,
        "jobs_used": jobs,
    }
    (out / "results.json").write_text(json.dumps({"config": block, **results}, indent=2) + "\n")
    cpu_s = sum(t["cpu"] for r in seconds.values() for t in r.values())
    run_info = {"jobs_used": jobs, "wall_s": round(time.time() - t0, 1), "runs_cpu_s": round(cpu_s, 1)}
    (out / "config.json").write_text(json.dumps({**asdict(cfg), **run_info}, indent=2) + "\n")
    plot_curves(curves, out / "curves.png")
    labels = dm.split("test").labels
    plot_latents(latents, None if labels is None else labels[:, 0], "topic", out / "latent.png")
    print(format_table(results))
    print(format_alerts(results))
    at_once = f", {jobs} at a time" if jobs > 1 else ""
    print(
        f"\n{n_runs} runs in {time.time() - t0:.0f} s wall{at_once} ({cpu_s:.0f} s CPU in the runs); results in {out / 'results.json'}"
    )
    return results


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", default=d.out, help="folder for results.json, figures and logs")
    p.add_argument(
        "--data-dir", default=d.data_dir, help="folder with ptb.{train,valid,test}.txt; default: built-in corpus"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=d.seeds)
    p.add_argument("--max-epochs", type=int, default=d.max_epochs)
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="-1: use --max-epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--corpus-size", type=int, default=d.corpus_size, help="built-in corpus: training sentences")
    p.add_argument(
        "--train-sentences",
        type=int,
        default=d.train_sentences,
        help="train on a seeded subsample of this many training sentences (the same for every run); default: all",
    )
    p.add_argument("--max-vocab", type=int, default=d.max_vocab, help="vocabulary cap, 4 special tokens included")
    p.add_argument("--min-count", type=int, default=d.min_count, help="training words seen fewer times become <unk>")
    p.add_argument(
        "--max-train-len",
        type=int,
        default=d.max_train_len,
        help="leave longer training sentences out; default: the 99th percentile of training lengths",
    )
    p.add_argument("--emb-dim", type=int, default=d.emb_dim, help="paper: 256")
    p.add_argument("--hidden-dim", type=int, default=d.hidden_dim, help="paper: 256")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim, help="paper: 32")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument(
        "--dec-init",
        choices=("h0", "h0c0"),
        default=d.dec_init,
        help="z sets the decoder's h0 (paper's code) or both h0 and c0",
    )
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--n-cycle", type=int, default=d.n_cycle)
    p.add_argument("--ratio", type=float, default=d.ratio)
    p.add_argument(
        "--start", type=float, default=d.start, help="beta at the start of each cycle (0.1 as in the paper's LM runs)"
    )
    p.add_argument("--free-bits", type=float, default=d.free_bits, help="> 0 adds a 'cyclical+fb' row")
    p.add_argument("--lr-restart", action="store_true", help="add a 'cyclical+lr' row: cosine lr restart per cycle")
    p.add_argument(
        "--delay",
        type=int,
        default=d.delay,
        help="> 0 adds a 'delay+cyclical' row: beta = 0 for this many steps, then n-cycle cycles from 0 (Li et al. 2019)",
    )
    p.add_argument(
        "--rows",
        nargs="+",
        default=d.rows,
        help="run only these rows (e.g. monotonic cyclical); default: every row the other flags define",
    )
    p.add_argument(
        "--recipe",
        action="store_true",
        help="add a 'recipe' row: cyclical + free bits whose threshold decays to 0 (README: when the latent collapses)",
    )
    p.add_argument(
        "--recipe-free-bits",
        type=float,
        default=d.recipe_free_bits,
        help="recipe: free-bits threshold lambda at the start (nats)",
    )
    p.add_argument(
        "--recipe-free-bits-mode",
        choices=FREE_BITS_MODES,
        default=d.recipe_free_bits_mode,
        help="recipe: the variant (lightning_kl_anneal.free_bits_kl's mode)",
    )
    p.add_argument(
        "--recipe-hold", type=float, default=d.recipe_hold, help="recipe: fraction of training with lambda held"
    )
    p.add_argument(
        "--recipe-end",
        type=float,
        default=d.recipe_end,
        help="recipe: fraction of training at which lambda reaches the floor",
    )
    p.add_argument(
        "--recipe-floor", type=float, default=d.recipe_floor, help="recipe: lambda at the end (0: the true ELBO)"
    )
    p.add_argument(
        "--recipe-n-cycle", type=int, default=d.recipe_n_cycle, help="recipe: beta cycles (default: --n-cycle)"
    )
    p.add_argument(
        "--recipe-ratio", type=float, default=d.recipe_ratio, help="recipe: ramp share of a cycle (default: --ratio)"
    )
    p.add_argument(
        "--recipe-start", type=float, default=d.recipe_start, help="recipe: beta at a cycle's start (default: --start)"
    )
    p.add_argument("--recipe-stop", type=float, default=d.recipe_stop, help="recipe: beta at the plateau (default: 1)")
    p.add_argument(
        "--recipe-shape",
        choices=SHAPES,
        default=d.recipe_shape,
        help="recipe: the ramps' shape (CyclicalKLAnnealing's)",
    )
    p.add_argument(
        "--recipe-delay",
        type=float,
        default=d.recipe_delay,
        help="recipe: fraction of the run at the start value first",
    )
    p.add_argument(
        "--recipe-bn-gamma", type=float, default=d.recipe_bn_gamma, help="recipe: BN-VAE's fixed scale of mu (0: off)"
    )
    p.add_argument(
        "--bn-gamma",
        type=float,
        default=d.bn_gamma,
        help="BN-VAE in every row: batch-normalise the posterior mean with this fixed scale (0 or unset: off)",
    )
    p.add_argument(
        "--select", choices=("best", "last"), default=d.select, help="test the best-val-PPL or the last checkpoint"
    )
    p.add_argument("--accelerator", default=d.accelerator)
    p.add_argument("--devices", type=int, default=d.devices)
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch CPU threads per run (1 avoids oversubscription on small shared CPUs); 0 = torch default",
    )
    p.add_argument(
        "--jobs",
        type=jobs_arg,
        default=d.jobs,
        help="runs trained at once, in worker processes (same results for any value); 0 = min(runs, CPU cores // threads), "
        "1 with --threads 0, --devices > 1 or an accelerator other than cpu",
    )
    p.add_argument(
        "--limit-batches",
        type=float,
        default=d.limit_batches,
        help="fraction (or, if > 1, number) of batches per epoch",
    )
    p.add_argument("--probe-size", type=int, default=d.probe_size, help="training sentences used to fit the probes")
    p.add_argument(
        "--persist-epochs",
        type=int,
        default=d.persist_epochs,
        help="after the schedule's --max-epochs (or --max-steps), this many epochs at beta = 1 for every row; each "
        "phase is tested from its own best-validation checkpoint ('persist' in results.json)",
    )
    a = p.parse_args(argv)
    if a.limit_batches > 1:
        a.limit_batches = int(a.limit_batches)
    return Config(**{k.replace("-", "_"): v for k, v in vars(a).items()})


if __name__ == "__main__":
    compare(parse_args())
