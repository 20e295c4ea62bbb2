"""Research script behind ``compare.py --recipe``: which of the library's pieces keep the latent on real text?

    python examples/text_vae/recipe_search.py --data-dir ../shared/data/wordnet --seeds 0 1 --jobs 2 \
        --log search.json --configs search            # every configuration of SEARCH, in its order
    python examples/text_vae/recipe_search.py --data-dir ../shared/data/wordnet --seeds 0 --log search.json \
        --configs monotonic cyclical "recipe=cyclical,fb=4.0,fb_mode=example,fb_hold=0.75,fb_end=1.0"
    python examples/text_vae/recipe_search.py --log search.json --select choice.json   # the selection rule
    python examples/text_vae/recipe_search.py --log search.json --plot search.png

Trains the example's ``TextVAE`` once per (config, seed) at the demo's budget and records the
*validation* numbers (rec, kl, elbo, ppl, au, mi at β = 1, and ``dim90``: the principal components of
the posterior means holding 90 % of their variance) of the epoch with the best validation PPL, and of
the last epoch, into a JSON log, one record per run, written as soon as the run ends (a search cut
short keeps what finished). The test split is never read here: choices are made on validation
(``select``), the test split is reported once by ``compare.py``. ``--jobs N`` trains N runs at once in
worker processes (one torch thread each; on a GPU they share it), ``--deadline S`` stops starting runs
that would not end within S seconds and stops the ones still running at S.

A config combines four pieces, each a pure function of (step, total_steps) or a module:

* β: ``delay`` (a fraction of the run) held at ``start``, then ``n_cycle`` cycles over the remaining
  steps, ramps of ``shape`` (``CyclicalKLAnnealing(delay=..., shape=...)``; Li et al. 2019 use
  ``start=0``; ``shape="log"`` ramps geometrically and needs ``start > 0``);
* the free-bits threshold λ(t): constant, or held then decayed linearly to ``fb_floor`` (``cyclical_beta``
  with ``start=λ, stop=fb_floor, n_cycle=1``), so that the end of training optimises the true ELBO;
* the free-bits variant, named as in the library's ``free_bits_kl``: ``"dim"`` (Kingma et al. 2016:
  ``Σ_d max(λ, mean_batch KL_d)``), ``"example_dim"`` (Li et al. 2019's code:
  ``mean_batch Σ_d max(λ, KL_d)``) or ``"example"`` (a floor on each sentence's total KL,
  ``mean_batch max(λ, Σ_d KL_d)``; λ is then per sentence, not per dimension);
* BN-VAE (Zhu et al. 2020): ``bn_gamma`` > 0 puts ``BatchNormPosterior(latent_dim, gamma=bn_gamma)`` on
  the posterior mean, which keeps the KL above ``latent_dim · γ² / 2`` nats (2 nats at γ = 0.5, d = 16).
  Its active units are then all of them by construction (every mean varies); ``dim90`` says how many
  directions the means really use.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from examples.text_vae.data import TextVAEDataModule
from examples.text_vae.model import TextVAE
from lightning_kl_anneal import SHAPES, CyclicalKLAnnealing, ScheduledAttribute, cyclical_beta, latent_dimensionality

Schedule = Callable[[int, int], float]
#: the model and code a record was made with; records of the first search round, made before the
#: library pieces were merged, carry "h0c0-emulated" (see README): z -> h0 and c0, pieces emulated here
CODE = "h0-library"
#: the search round of the records this code writes: 3 is issue 19's (BN-VAE, log ramps, the selection rule),
#: run with BatchNormPosterior's first default eps=1e-5, whose KL floor the encoder escaped (figures/recipe_round1/);
#: 4 is the same search and rule with its default eps=1e-8
ROUND = 4


@dataclass(frozen=True)
class Recipe:
    """One point of the search: the β schedule, the free-bits threshold schedule and variant, BN-VAE."""

    n_cycle: int = 4
    ratio: float = 0.5
    start: float = 0.1
    stop: float = 1.0
    delay: float = 0.0  # fraction of the run held at `start` before the cycles
    fb: float = 0.0  # λ in nats (per dimension, or per sentence in mode "example"); 0 = off
    fb_mode: str = "dim"
    fb_hold: float = 1.0  # λ is held for this fraction of the run ...
    fb_end: float = 1.0  # ... then decays linearly to `fb_floor`, reached at this fraction (hold == 1: constant)
    fb_floor: float = 0.0  # λ at the end; 0 makes the end of training optimise the true ELBO
    shape: str = "linear"  # the ramps' shape, a CyclicalKLAnnealing shape
    bn_gamma: float = 0.0  # BN-VAE's fixed scale of the posterior mean; 0 = off


# the baselines and the candidates, by name; more are given on the command line as name=base,key=value,...
CONFIGS: dict[str, Recipe] = {
    "constant": Recipe(n_cycle=1, start=1.0),
    "monotonic": Recipe(n_cycle=1),
    "cyclical": Recipe(),
}
#: the plain schedules: the selection rule's reference, never chosen
PLAIN = ("constant", "monotonic", "cyclical")
BASELINES = PLAIN


def search_configs(shapes: Iterable[str] = SHAPES) -> dict[str, Recipe]:
    """Issue 19's search, in priority order (a search cut short by its deadline runs the first ones).

    The plain schedules and the current recipe first, then BN-VAE at several γ (KL floors 0.72, 2, 3.9
    and 6.5 nats at d = 16), BN with a schedule and with scheduled free bits, free bits in each mode with a
    scheduled threshold, log ramps (only where the library has ``shape="log"``), a delay, and more γ.
    """
    const, mono, cyc = CONFIGS["constant"], CONFIGS["monotonic"], CONFIGS["cyclical"]
    ex4 = {"fb": 4.0, "fb_mode": "example", "fb_hold": 0.75, "fb_end": 1.0}  # the current recipe's threshold
    out = {
        "constant": const,
        "monotonic": mono,
        "cyclical": cyc,
        "cyc+fbex4decay.75-1": replace(cyc, **ex4),  # the current recipe
        "cyc+bn0.5": replace(cyc, bn_gamma=0.5),
        "cyc+bn0.3": replace(cyc, bn_gamma=0.3),
        "cyc+bn0.7": replace(cyc, bn_gamma=0.7),
        "const+bn0.5": replace(const, bn_gamma=0.5),  # BN-VAE as published: the plain ELBO
        "cyc+bn0.5+fbex4decay.75-1": replace(cyc, bn_gamma=0.5, **ex4),
        "cyc+fb0.5decay.75-1floor.05": replace(cyc, fb=0.5, fb_mode="dim", fb_hold=0.75, fb_floor=0.05),
        "cyc+fbexdim0.5decay.75-1": replace(cyc, fb=0.5, fb_mode="example_dim", fb_hold=0.75),
        "cyc+fbex8decay.75-1": replace(cyc, **{**ex4, "fb": 8.0}),
        "cyc+bn0.9": replace(cyc, bn_gamma=0.9),
        "mono+bn0.5": replace(mono, bn_gamma=0.5),
        "cyc+bn0.3+fbex4decay.75-1": replace(cyc, bn_gamma=0.3, **ex4),
    }
    if "log" in shapes:
        out |= {
            "cyclog": replace(cyc, shape="log"),
            "monolog": replace(mono, shape="log"),
            "cyclog+fbex4decay.75-1": replace(cyc, shape="log", **ex4),
            "cyclog+bn0.5": replace(cyc, shape="log", bn_gamma=0.5),
        }
    out |= {
        "const+bn0.3": replace(const, bn_gamma=0.3),
        "cyc+fbex4decay.5-1": replace(cyc, **{**ex4, "fb_hold": 0.5}),
        "cyc+fbex6decay.75-1": replace(cyc, **{**ex4, "fb": 6.0}),
        "delay.25+cyc0": replace(cyc, delay=0.25, start=0.0),
        "delay.25+cyc0+fbex4decay.75-1": replace(cyc, delay=0.25, start=0.0, **ex4),
        "delay.25+cyc+bn0.5": replace(cyc, delay=0.25, bn_gamma=0.5),
        "cyc+bn0.4": replace(cyc, bn_gamma=0.4),
        "cyc+bn0.6": replace(cyc, bn_gamma=0.6),
        "cyc+fb0.5decay.75-1": replace(cyc, fb=0.5, fb_mode="dim", fb_hold=0.75),
    }
    return out


def parse_config(text: str) -> tuple[str, Recipe]:
    """``name`` (a key of CONFIGS or of the search) or ``name=base,key=value,...`` (keys of ``Recipe``).

    Example:
        >>> parse_config("bn=cyclical,bn_gamma=0.5")
        ('bn', Recipe(n_cycle=4, ratio=0.5, start=0.1, stop=1.0, delay=0.0, fb=0.0, fb_mode='dim', fb_hold=1.0, fb_end=1.0, fb_floor=0.0, shape='linear', bn_gamma=0.5))
    """
    known = {**search_configs(), **CONFIGS}
    if "=" not in text.split(",")[0]:
        return text, known[text]
    name, rest = text.split("=", 1)
    base, *pairs = rest.split(",")
    recipe = known[base]
    types = {k: type(v) for k, v in asdict(recipe).items()}
    for pair in pairs:
        key, value = pair.split("=")
        recipe = replace(recipe, **{key: types[key](value)})
    return name, recipe


def threshold_schedule(r: Recipe) -> Schedule:
    """λ(step, T): held for ``fb_hold`` of the run, then linearly down to ``fb_floor`` at ``fb_end``.

    The library's cyclical function with one cycle, ``start=λ`` and ``stop=0`` is exactly this shape,
    so the schedule is a library function, not example-only math.
    """
    return partial(cyclical_beta, n_cycle=1, ratio=r.fb_end, ratio_zero=r.fb_hold, start=r.fb, stop=r.fb_floor)


def callbacks(r: Recipe, total_steps: int) -> list[Callback]:
    """The library's callbacks for one recipe: the β schedule and, if λ decays, the λ schedule."""
    out: list[Callback] = [CyclicalKLAnnealing(n_cycle=r.n_cycle, ratio=r.ratio, start=r.start, stop=r.stop,
                                               delay=round(r.delay * total_steps), shape=r.shape)]  # fmt: skip
    if r.fb > 0 and r.fb_hold < 1.0:
        out.append(ScheduledAttribute(threshold_schedule(r), "free_bits", log_name="free_bits"))
    return out


def compare_flags(r: Recipe) -> list[str]:
    """``compare.py`` options whose ``recipe`` row is this recipe (``--recipe`` and every ``--recipe-*`` knob).

    Example:
        >>> " ".join(compare_flags(parse_config("cyc+bn0.5")[1]))  # doctest: +ELLIPSIS
        '--recipe --recipe-n-cycle 4 ... --recipe-bn-gamma 0.5 --recipe-free-bits 0.0'
    """
    flags = ["--recipe", "--recipe-n-cycle", str(r.n_cycle), "--recipe-ratio", str(r.ratio),
             "--recipe-start", str(r.start), "--recipe-stop", str(r.stop), "--recipe-shape", r.shape,
             "--recipe-delay", str(r.delay), "--recipe-bn-gamma", str(r.bn_gamma), "--recipe-free-bits", str(r.fb)]  # fmt: skip
    if r.fb > 0:
        flags += ["--recipe-free-bits-mode", r.fb_mode, "--recipe-hold", str(r.fb_hold), "--recipe-end", str(r.fb_end),
                  "--recipe-floor", str(r.fb_floor)]  # fmt: skip
    return flags


class ValRecorder(Callback):
    """Keeps the model's validation metrics after every validation epoch, with ``dim90`` of the posterior means."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._mu: list[torch.Tensor] = []

    @override
    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._mu.append(outputs["mu"].detach().float().cpu())

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.last_eval and self._mu:
            dim90 = latent_dimensionality(torch.cat(self._mu), 0.9)
            self.epochs.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **pl_module.last_eval,
                                "dim90": dim90})  # fmt: skip
        self._mu = []


def run(recipe: Recipe, seed: int, args: argparse.Namespace, dm: TextVAEDataModule) -> dict[str, Any]:
    L.seed_everything(seed, workers=True, verbose=False)
    model = TextVAE(vocab_size=dm.vocab_size, emb_dim=args.emb_dim, hidden_dim=args.hidden_dim, latent_dim=args.latent_dim,
                    dropout=args.dropout, dec_init=args.dec_init, free_bits=recipe.fb, free_bits_mode=recipe.fb_mode,
                    bn_gamma=recipe.bn_gamma or None)  # fmt: skip
    rec = ValRecorder()
    total = len(dm.train_dataloader()) * args.max_epochs
    trainer = L.Trainer(
        max_epochs=args.max_epochs, accelerator=args.accelerator, devices=1, gradient_clip_val=5.0, logger=False,
        callbacks=[*callbacks(recipe, total), rec],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, dm)
    best = min(rec.epochs, key=lambda m: m["ppl"])
    return {"best": best, "last": rec.epochs[-1], "epochs": rec.epochs}


BUDGET_KEYS = ("max_epochs", "batch_size", "train_sentences", "max_vocab", "emb_dim", "hidden_dim", "latent_dim",
               "dropout", "dec_init")  # fmt: skip


def make_datamodule(args: argparse.Namespace, seed: int) -> TextVAEDataModule:
    return TextVAEDataModule(args.data_dir, batch_size=args.batch_size, max_vocab=args.max_vocab,
                             train_sentences=args.train_sentences, seed=seed)  # fmt: skip


def run_record(name: str, recipe: Recipe, seed: int, args: argparse.Namespace, dm: TextVAEDataModule) -> dict[str, Any]:
    """One run as a log record: what was run (config, seed, budget, code, round) and its validation numbers."""
    t0 = time.time()
    res = run(recipe, seed, args, dm)
    return {"name": name, "seed": seed, "recipe": asdict(recipe), "split": "valid",
            "budget": {k: getattr(args, k) for k in BUDGET_KEYS}, "data_dir": args.data_dir, "code": CODE,
            "round": ROUND, "accelerator": args.accelerator, "wall_s": round(time.time() - t0, 1), **res}  # fmt: skip


def format_record(r: dict[str, Any]) -> str:
    b, last = r["best"], r["last"]
    return (f"{r['name']:<30} seed {r['seed']}  best ep {b['epoch']}: elbo {b['elbo']:8.3f} kl {b['kl']:6.3f} mi {b['mi']:6.3f} "
            f"au {b['au']:4.0f} dim90 {b['dim90']:3d} | last: elbo {last['elbo']:8.3f} mi {last['mi']:6.3f} au {last['au']:4.0f}"
            f"  ({r['wall_s']:.0f} s)")  # fmt: skip


# one worker process's state: its data modules by seed
_worker: dict[str, Any] = {}


def _quiet() -> None:
    """Lightning's banners and per-run warnings off: a search prints one line per run."""
    for name in _LIGHTNING:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


_LIGHTNING = ("lightning.pytorch", "lightning.fabric")


@contextmanager
def _quiet_here() -> Iterator[None]:
    """:func:`_quiet` in this process, for as long as the runs take: the caller's logging and warnings are restored."""
    levels = [logging.getLogger(name).level for name in _LIGHTNING]
    with warnings.catch_warnings():
        _quiet()
        try:
            yield
        finally:
            for name, level in zip(_LIGHTNING, levels):
                logging.getLogger(name).setLevel(level)


def _init_worker() -> None:
    torch.set_num_threads(1)  # one run per core; on a GPU the host side of these small steps needs no more
    _quiet()


def _run_in_worker(name: str, recipe: Recipe, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    data = _worker.setdefault("data", {})
    if seed not in data:
        data[seed] = make_datamodule(args, seed)
    return run_record(name, recipe, seed, args, data[seed])


def run_tasks(
    tasks: list[tuple[str, Recipe, int]],
    args: argparse.Namespace,
    jobs: int,
    on_record: Callable[[dict[str, Any]], None],
    stop_at: Callable[[list[float]], float] | None = None,
    on_error: Callable[[str, int, BaseException], None] | None = None,
) -> list[tuple[str, int]]:
    """Train ``tasks`` (name, recipe, seed) in order, ``jobs`` at once; ``on_record`` gets each record as it ends.

    ``stop_at(walls)`` (seconds since the epoch, given the wall times of the runs finished so far) is when
    the search must end: no run starts that, taking as long as the slowest finished run, would end after
    it, and the runs still going at that time are stopped. An error in a run stops the search, or with
    ``on_error`` is handed to it and the search goes on. Returns the (name, seed) of the runs not finished.
    """
    walls: list[float] = []

    def may_start() -> bool:
        return stop_at is None or time.time() + (max(walls) if walls else 0.0) <= stop_at(walls)

    queue = list(tasks)
    if jobs <= 1:  # in this process, one at a time (a running run is not stopped)
        data: dict[int, TextVAEDataModule] = {}
        with _quiet_here():
            while queue and may_start():
                name, recipe, seed = queue.pop(0)
                if seed not in data:
                    data = {seed: make_datamodule(args, seed)}
                try:
                    record = run_record(name, recipe, seed, args, data[seed])
                except Exception as error:
                    if on_error is None:
                        raise
                    on_error(name, seed, error)
                    continue
                walls.append(record["wall_s"])
                on_record(record)
        return [(n, s) for n, _, s in queue]
    ctx = multiprocessing.get_context("spawn")  # not fork: torch's thread pools (and CUDA) do not survive a fork
    executor = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker)
    running: dict[Future, tuple[str, int]] = {}
    try:
        while queue or running:
            while queue and len(running) < jobs and may_start():
                name, recipe, seed = queue.pop(0)
                running[executor.submit(_run_in_worker, name, recipe, seed, args)] = (name, seed)
            if not running:
                break
            timeout = None if stop_at is None else max(0.0, stop_at(walls) - time.time())
            done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:  # the deadline: what still runs is lost, what finished is in the log
                break
            for future in done:
                name, seed = running.pop(future)
                error = future.exception()
                if error is not None:
                    if on_error is None or isinstance(error, BrokenProcessPool):
                        raise error  # with its traceback from the worker
                    on_error(name, seed, error)
                    continue
                record = future.result()
                walls.append(record["wall_s"])
                on_record(record)
    finally:
        unfinished = [*running.values(), *((n, s) for n, _, s in queue)]
        if running:  # SIGKILL: Lightning catches SIGTERM inside fit and the worker would wait for more work
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.kill()
        executor.shutdown(wait=not running, cancel_futures=True)
    return unfinished


def append_record(log: Path, record: dict[str, Any]) -> None:
    """Add one record to the JSON log now, atomically (a search stopped later keeps it)."""
    records = json.loads(log.read_text()) if log.exists() else []
    records.append(record)
    log.parent.mkdir(parents=True, exist_ok=True)
    tmp = log.with_name(log.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1) + "\n")
    tmp.replace(log)


# ---------------------------------------------------------------------------------------------- selection
#: issue 19's targets on real text, on the validation split
TARGETS = {"mi": 1.0, "au": 4.0, "elbo_rel_gap": 0.01}
RULE = (
    "Written before the search ran. Per configuration, the validation numbers (epoch with the best validation PPL) "
    "are averaged over the seeds it ran that all three plain schedules (constant, monotonic, cyclical) also ran; "
    "its reference is the plain schedule with the best mean validation ELBO over those same seeds, and its ELBO "
    "gap is (reference - ELBO) / |reference|. A configuration meets the targets if MI >= 1 nat, AU >= 4 and gap "
    "<= 1 %. Among the configurations other than the plain schedules that meet all three, the one with the "
    "smallest gap (the highest ELBO next to its reference) is chosen. Fallback when none meets all three: among "
    "those with gap <= 1 %, the highest MI; if none is within 1 %, the smallest gap among those with MI >= 1; "
    "otherwise the smallest gap. dim90 (principal components of the posterior means holding 90 % of their "
    "variance) is reported, not used: with BN-VAE, AU >= 4 holds by construction."
)


def summarize_configs(records: list[dict[str, Any]], which: str = "best") -> list[dict[str, Any]]:
    """Per configuration of ``records``: seeds, mean elbo/kl/mi/au/dim90, its reference and gap, targets met."""
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["name"], {})[int(r["seed"])] = r
    plain_seeds = set.intersection(*(set(by.get(p, {})) for p in PLAIN))
    rows = []
    for name, per in by.items():
        seeds = sorted(set(per) & plain_seeds)
        if not seeds:
            continue
        mean = {
            k: sum(float(per[s][which][k]) for s in seeds) / len(seeds)
            for k in ("elbo", "kl", "mi", "au", "dim90", "ppl")
        }
        refs = {p: sum(float(by[p][s][which]["elbo"]) for s in seeds) / len(seeds) for p in PLAIN}
        ref_name = max(refs, key=refs.__getitem__)
        gap = (refs[ref_name] - mean["elbo"]) / abs(refs[ref_name])
        met = {
            "mi": mean["mi"] >= TARGETS["mi"],
            "au": mean["au"] >= TARGETS["au"],
            "elbo": gap <= TARGETS["elbo_rel_gap"],
        }
        rows.append({"name": name, "seeds": seeds, **mean, "reference": ref_name, "reference_elbo": refs[ref_name],
                     "gap": gap, "met": met, "recipe": per[seeds[0]]["recipe"],
                     "per_seed": {str(s): {k: per[s][which][k] for k in ("elbo", "kl", "mi", "au", "dim90")} for s in seeds}})  # fmt: skip
    return rows


def select(records: list[dict[str, Any]], which: str = "best") -> dict[str, Any]:
    """Issue 19's selection rule (``RULE``) over a search's records; never reads the test split.

    Returns the chosen configuration (``name``, ``recipe``, ``compare_flags``), whether it met every
    target or which fallback chose it, and the table of every configuration.

    Raises:
        ValueError: If a plain schedule has no record (the rule's reference is missing) or nothing else ran.

    Example:
        >>> def rec(name, elbo, mi, au, seed=0):
        ...     m = {"elbo": elbo, "kl": mi, "mi": mi, "au": au, "dim90": 1, "ppl": 0.0}
        ...     return {"name": name, "seed": seed, "recipe": asdict(parse_config(name)[1]), "best": m}
        >>> log = [rec("constant", -48.0, 0.0, 0), rec("monotonic", -47.5, 0.0, 0), rec("cyclical", -47.6, 0.1, 1),
        ...        rec("cyc+bn0.5", -47.9, 1.5, 16), rec("cyc+bn0.3", -47.7, 1.1, 16), rec("cyc+bn0.9", -49.0, 3.0, 16)]
        >>> choice = select(log)
        >>> choice["name"], choice["met_all"], choice["fallback"]
        ('cyc+bn0.3', True, None)
    """
    missing = [p for p in PLAIN if not any(r["name"] == p for r in records)]
    if missing:
        raise ValueError(f"the selection rule needs every plain schedule in the log, missing {missing}")
    table = sorted(summarize_configs(records, which), key=lambda row: row["gap"])
    candidates = [row for row in table if row["name"] not in PLAIN]
    if not candidates:
        raise ValueError("the log holds no configuration other than the plain schedules")
    fallback = None
    chosen = next((row for row in candidates if all(row["met"].values())), None)
    if chosen is None:
        within = [row for row in candidates if row["met"]["elbo"]]
        informative = [row for row in candidates if row["met"]["mi"]]
        if within:
            fallback, chosen = "highest MI within 1 % of the reference ELBO", max(within, key=lambda row: row["mi"])
        elif informative:
            fallback, chosen = "smallest ELBO gap among MI >= 1 nat", informative[0]
        else:
            fallback, chosen = "smallest ELBO gap", candidates[0]
    recipe = Recipe(**chosen["recipe"])
    return {"rule": RULE, "targets": TARGETS, "which": which, "name": chosen["name"], "recipe": asdict(recipe),
            "met_all": fallback is None, "fallback": fallback, "chosen": chosen, "compare_flags": compare_flags(recipe),
            "table": table}  # fmt: skip


def format_selection(choice: dict[str, Any]) -> str:
    lines = [
        f"{'configuration':<30} {'seeds':>5} {'ELBO':>8} {'gap %':>6} {'KL':>6} {'MI':>6} {'AU':>5} {'dim90':>5}  targets (MI AU ELBO)"
    ]
    for row in choice["table"]:
        met = " ".join("yes" if row["met"][k] else " - " for k in ("mi", "au", "elbo"))
        lines.append(f"{row['name']:<30} {len(row['seeds']):>5} {row['elbo']:8.3f} {100 * row['gap']:6.2f} {row['kl']:6.3f} "
                     f"{row['mi']:6.3f} {row['au']:5.1f} {row['dim90']:5.1f}  {met}")  # fmt: skip
    how = "meets every target" if choice["met_all"] else f"meets not every target; fallback: {choice['fallback']}"
    lines.append(f"chosen: {choice['name']} ({how})")
    return "\n".join(lines)


def plot_search(records: list[dict[str, Any]], path: Path, which: str = "best", round_: int | None = None) -> None:
    """Validation MI against validation ELBO, one point per run: the trade-off the search explored.

    Runs of this code are dots (baselines black); runs of the first round (``code`` "h0c0-emulated")
    are grey crosses. The shaded band is the ELBO target (at most 2 % below the best baseline of
    this code, seed 0), the dashed line MI = 0.5 nats. With ``round_``, only that round's runs are
    dots and the band and line are its targets (``TARGETS``: 1 %, MI = 1 nat).
    """
    band, mi_line = (2.0, 0.5) if round_ is None else (100 * TARGETS["elbo_rel_gap"], TARGETS["mi"])

    def current(r: dict[str, Any]) -> bool:
        return r.get("code") == CODE and (round_ is None or r.get("round") == round_)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    base = [r for r in records if r["name"] in BASELINES and current(r) and r["seed"] == 0]
    if base:
        best = max(r[which]["elbo"] for r in base)
        ax.axvspan(best * (1 + band / 100), best - 0.01 * best, color="tab:green", alpha=0.1,
                   label=f"ELBO within {band:g} % of the best baseline")  # fmt: skip
        ax.axvline(best, color="k", lw=0.8, ls=":")
    ax.axhline(mi_line, color="tab:green", lw=0.8, ls="--", label=f"MI = {mi_line:g} nats")
    for r in records:
        m, now = r[which], current(r)
        if now:
            ax.scatter(
                m["elbo"], m["mi"], s=12 + 4 * m["au"], c="k" if r["name"] in BASELINES else "tab:blue", alpha=0.85
            )
        else:
            ax.scatter(m["elbo"], m["mi"], s=20, c="0.6", marker="x")
        ax.annotate(f"{r['name']} s{r['seed']}", (m["elbo"], m["mi"]), fontsize=6, xytext=(3, 2), textcoords="offset points",
                    color="k" if now else "0.5")  # fmt: skip
    ax.set_xlabel(f"validation ELBO (nats per sentence, {which} epoch by validation PPL); right is better")
    ax.set_ylabel("validation MI (nats)")
    ax.set_title("recipe search, WordNet glosses, 4000 training sentences (dot size ~ active units)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


FAMILIES = {  # how a configuration keeps information, as named in `search_configs()`; drawn in these colours
    "plain schedule": "k",
    "schedule variant (log ramp, delay)": "0.55",
    "free bits": "tab:blue",
    "BN-VAE": "tab:orange",
    "BN-VAE + free bits": "tab:purple",
}


def family(name: str) -> str:
    if "bn" in name:
        return "BN-VAE + free bits" if "fb" in name else "BN-VAE"
    if "fb" in name:
        return "free bits"
    return "plain schedule" if name in PLAIN else "schedule variant (log ramp, delay)"


def plot_tradeoff(choice: dict[str, Any], path: Path, label: tuple[str, ...] = ()) -> None:
    """The selection's table as the trade-off it shows: MI and active units against the ELBO given up.

    One point per configuration (the mean over its seeds, as the rule reads them), coloured by how it
    keeps information; x is the ELBO gap to the best plain schedule in % (symlog: linear to 1 %, then
    logarithmic); the shaded corner of each panel is where that target and the ELBO target both hold.
    The chosen configuration is a star; ``label`` names the others to annotate (in the MI panel).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, targets = choice["table"], choice["targets"]
    gap_limit = 100 * targets["elbo_rel_gap"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for ax, key, ylabel in ((axes[0], "mi", "validation MI (nats)"), (axes[1], "au", "validation active units")):
        top = max(r[key] for r in rows) * 1.08
        ax.fill_between([-1, gap_limit], targets[key], top, color="tab:green", alpha=0.12, lw=0,
                        label=f"{key.upper()} ≥ {targets[key]:g} and ELBO within {gap_limit:g} %")  # fmt: skip
        ax.axhline(targets[key], color="tab:green", lw=0.8, ls="--")
        ax.axvline(gap_limit, color="tab:green", lw=0.8, ls="--")
        for fam, colour in FAMILIES.items():
            pts = [r for r in rows if family(r["name"]) == fam and r["name"] != choice["name"]]
            ax.scatter([100 * r["gap"] for r in pts], [r[key] for r in pts], s=30, c=colour, label=fam, alpha=0.85)
        chosen = next(r for r in rows if r["name"] == choice["name"])
        ax.scatter(100 * chosen["gap"], chosen[key], s=180, marker="*", c="tab:red", zorder=3,
                   label=f"chosen: {choice['name']}")  # fmt: skip
        for r in rows if key == "mi" else ():  # named once, in the MI panel (the AU panel's points share rows)
            if r["name"] in label:
                ax.annotate(r["name"], (100 * r["gap"], r[key]), fontsize=7, xytext=(4, 3),
                            textcoords="offset points", color="0.25")  # fmt: skip
        ax.set_xscale("symlog", linthresh=1.0, linscale=1.5)
        ax.set_xticks([0, 0.5, 1, 2, 5, 10, 20], ["0", "0.5", "1", "2", "5", "10", "20"])
        ax.set_xlim(-0.5, 1.5 * max(100 * r["gap"] for r in rows))
        ax.set_ylim(-0.05 * top, top)
        ax.set_xlabel("ELBO below the best plain schedule (%, symlog); left is better")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    n_seeds = sorted({len(r["seeds"]) for r in rows})
    fig.suptitle(
        f"recipe search on WordNet validation: {len(rows)} configurations, mean of {'/'.join(map(str, n_seeds))} "
        "seeds each; no point reaches both shaded corners", fontsize=9,
    )  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# configurations named in the trade-off figure: each family's point nearest the targets, and the BN extremes
TRADEOFF_LABELS = ("cyc+fb0.5decay.75-1", "cyc+fbexdim0.5decay.75-1", "cyc+bn0.3+fbex4decay.75-1",
                   "cyc+bn0.5+fbex4decay.75-1", "cyc+bn0.3", "cyc+bn0.5", "cyc+bn0.9", "cyc+fbex4decay.75-1")  # fmt: skip


def plan(config_texts: list[str], seeds: list[int]) -> list[tuple[str, Recipe, int]]:
    """(name, recipe, seed) in the order they run: every config for the first seed, then for the next, ...

    ``"search"`` stands for every configuration of ``search_configs()``, in its priority order.
    """
    configs: dict[str, Recipe] = {}
    for text in config_texts:
        configs |= search_configs() if text == "search" else dict([parse_config(text)])
    return [(name, recipe, seed) for seed in seeds for name, recipe in configs.items()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="PTB-format folder (required unless --plot or --select)")
    p.add_argument(
        "--configs", nargs="+", default=[], help="'search' (all, in order), names or name=base,key=value,..."
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-sentences", type=int, default=4000, help="seeded subsample of the training split")
    p.add_argument("--max-vocab", type=int, default=10_000)
    p.add_argument("--emb-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--dec-init", default="h0")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, in worker processes (1: in this process)")
    p.add_argument(
        "--deadline", type=float, default=None, help="seconds: start no run that would end later, stop the rest then"
    )
    p.add_argument("--log", required=True, help="JSON file; records are appended as each run ends")
    p.add_argument("--plot", default=None, help="only draw the log's MI-vs-ELBO figure into this file, train nothing")
    p.add_argument("--plot-round", type=int, default=None, help="--plot: this round's runs as dots, its targets drawn")
    p.add_argument("--select", default=None, help="only apply the selection rule to the log, write the choice here")
    p.add_argument("--tradeoff", default=None, help="with --select: also draw the choice's MI/AU-vs-ELBO figure here")
    args = p.parse_args(argv)
    if args.plot:
        plot_search(json.loads(Path(args.log).read_text()), Path(args.plot), round_=args.plot_round)
        return
    if args.select:
        records = [r for r in json.loads(Path(args.log).read_text()) if r.get("round") == ROUND]
        choice = select(records)
        Path(args.select).write_text(json.dumps(choice, indent=1) + "\n")
        print(format_selection(choice))
        if args.tradeoff:
            plot_tradeoff(choice, Path(args.tradeoff), label=TRADEOFF_LABELS)
        return
    if args.data_dir is None or not args.configs:
        p.error("training needs --data-dir and --configs (or pass --plot or --select to read the log)")
    if args.jobs < 1:
        p.error(f"--jobs must be an int >= 1, got {args.jobs}")
    torch.set_num_threads(1)
    log, t0 = Path(args.log), time.time()

    def on_record(record: dict[str, Any]) -> None:
        append_record(log, record)
        print(format_record(record), flush=True)

    deadline = None if args.deadline is None else (lambda walls: t0 + args.deadline)
    left = run_tasks(plan(args.configs, args.seeds), args, args.jobs, on_record, deadline)
    if left:
        print(f"deadline: {len(left)} runs not finished: {', '.join(f'{n} s{s}' for n, s in left)}", flush=True)


if __name__ == "__main__":
    main()
