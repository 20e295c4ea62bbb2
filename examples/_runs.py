"""What both ``compare.py`` scripts share: provenance, logs, the worker pool and its console, seed statistics.

    from examples._runs import git_commit  # first, before torch: the commit checked out when the process started

A comparison trains one independent run per (arm, seed). This module runs them, one at a time in this
process or ``jobs`` at a time in spawned worker processes (:func:`run_all`), keeps Lightning's console
messages in a log file (:func:`lightning_to_file`), draws one progress line per run (:class:`RunProgress`,
:class:`ProgressBoard`), records what ran (:func:`git_commit`, :func:`command_line`) and summarises the
seeds (:func:`mean_std`, :func:`sign_test`, :func:`bootstrap_interval`, :func:`wilson_interval`).
The experiments themselves, their arms, tables and results files, stay in each example's ``compare.py``.

    >>> d = paired_differences({"0": 1.0, "1": 2.0, "2": 0.5}, {"0": 0.5, "1": 1.0, "2": 1.0})
    >>> d, sign_test(d.values())["p_two_sided"]
    ({'0': 0.5, '1': 1.0, '2': -0.5}, 1.0)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_CODE = ("*.py", "*.yaml", "*.toml")


def _commit_now() -> str:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=_ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no", "--", *_CODE)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


# Taken at import, before torch and Lightning load: a slow start on a busy machine must not pick up later edits.
COMMIT_AT_START = _commit_now()
# the imports below take seconds: after the commit

import argparse
import io
import logging
import math
import multiprocessing
import os
import queue
import random
import statistics
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm
from typing_extensions import override

# ----------------------------------------------------------------------------- provenance


def git_commit() -> str:
    """The commit checked out when this process imported the module; ``+dirty`` if tracked code
    (``*.py``, ``*.yaml``, ``*.toml``) differed from it, ``"unknown"`` outside a git checkout."""
    return COMMIT_AT_START


def command_line(script: str, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The command that runs ``values``: the script and every option that differs from its default.

    Example:
        >>> command_line("python x.py", {"seeds": [0, 1], "jobs": 2, "fast": True}, {"seeds": [0], "jobs": 2, "fast": False})
        'python x.py --seeds 0 1 --fast'
    """
    parts = [script]
    for key, value in values.items():
        if key in defaults and value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag)
        elif isinstance(value, list):
            parts.append(f"{flag} {' '.join(map(str, value))}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- logs


class RunLabel(logging.Filter):
    """Adds ``record.run``, the run being trained (``"cyclical seed 0"``, or ``"-"`` between runs).

    With several worker processes appending to one log file, the label says whose line it is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.label = "-"

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        record.run = self.label
        return True


RUN_LABEL = RunLabel()  # one per process: run_all sets it around each run, the handlers read it

# both package names: `pytorch_lightning` / `lightning_fabric` log under their own once imported
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric",
                      "py.warnings")  # fmt: skip


@contextmanager
def lightning_to_file(path: Path, truncate: bool = True) -> Iterator[None]:
    """Send Lightning's log lines and Python warnings to ``path`` instead of the console.

    Lightning prints accelerator banners, tips and ``limit_*_batches`` notices at every ``fit`` and
    ``test``; in a comparison of many runs they bury the progress lines. They are kept, in the file,
    with their time, run (:data:`RUN_LABEL`) and source.

    Args:
        path: The log file.
        truncate: Empty the file first (the comparison's process); ``False`` only appends (its worker
            processes). Every process appends, so lines from several processes never overwrite each other.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if truncate:
        path.write_text("")
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(run)s] %(name)s %(levelname)s: %(message)s"))
    handler.addFilter(RUN_LABEL)
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    captured = logging._warnings_showwarning is not None  # type: ignore[attr-defined]  # already captured by the caller
    for lg in loggers:
        lg.handlers, lg.propagate = [handler], False
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # every run's warnings (the collapse alert among them) reach the file
            yield
    finally:
        if not captured:
            logging.captureWarnings(False)
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
        handler.close()


# ----------------------------------------------------------------------------- progress


class RunProgress(Callback):
    """One progress bar per run that says which run it is, with the live beta (and KL, Rec if returned).

    In a worker process the bar is drawn by the parent: the callback sends ``("start", run, total)``,
    ``("step", run, step, postfix)`` and ``("end", run, step)`` to ``events`` for a :class:`ProgressBoard`.
    """

    def __init__(self, desc: str, events: Any | None = None, run: int = 0) -> None:
        self.desc, self.events, self.run = desc, events, run
        self.bar: tqdm | None = None
        self.steps = 0  #: the run's optimizer steps when its training ended

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        total = int(trainer.estimated_stepping_batches)
        if self.events is not None:
            self.events.put(("start", self.run, total))
            return
        self.bar = tqdm(total=total, desc=self.desc, leave=True, dynamic_ncols=True)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.bar is None and self.events is None:
            return
        postfix = None
        if batch_idx % 20 == 0:
            postfix = {"beta": f"{float(pl_module.beta):.2f}"}
            for key, digits in (("kl", 2), ("rec", 1)):
                if isinstance(outputs, Mapping) and key in outputs:
                    postfix[key] = f"{float(outputs[key]):.{digits}f}"
        if self.events is not None:
            if postfix is not None and trainer.is_global_zero:  # every 20 steps: the parent redraws, no need for each
                self.events.put(("step", self.run, trainer.global_step, postfix))
            return
        self.bar.update(trainer.global_step - self.bar.n)  # type: ignore[union-attr]
        if postfix is not None:
            self.bar.set_postfix(postfix)  # type: ignore[union-attr]

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps = trainer.global_step
        if self.events is not None and trainer.is_global_zero:
            self.events.put(("end", self.run, trainer.global_step))
        if self.bar is not None:
            self.bar.close()


class ProgressBoard:
    """The console of runs trained in worker processes: a live bar per training run, a line per finished one.

    Fed with :class:`RunProgress`'s events. A run's line is left when its training ends, numbered ``[k/n]``
    in the order the runs *finish*, so the lines read 1, 2, ... n whatever that order; a live bar carries
    the number it gets if the runs finish in the order they started. With one run at a time this is the
    console of ``RunProgress`` drawing its own bar.

    Args:
        descs: Each run's name after its number, e.g. ``{0: "constant    seed 0"}``.
    """

    def __init__(self, descs: dict[int, str]) -> None:
        self.descs, self.n = descs, len(descs)
        self.bars: dict[int, tqdm] = {}  # the runs in training, in the order they started
        self.finished: set[int] = set()

    def handle(self, event: tuple[Any, ...]) -> None:
        kind, run, *rest = event
        if run in self.finished:  # an event that travelled slower than the run's result
            return
        if kind == "start":
            self.bars[run] = tqdm(total=rest[0], desc=self.descs[run], leave=False, dynamic_ncols=True)
            self._renumber()
        elif kind == "step" and run in self.bars:
            bar = self.bars[run]
            bar.update(rest[0] - bar.n)
            bar.set_postfix(rest[1])
        elif kind == "end":
            self.finish(run, rest[0])

    def drain(self, events: Any) -> None:
        """Handle every event waiting in the queue ``events``."""
        while True:
            try:
                self.handle(events.get_nowait())
            except queue.Empty:
                return

    def finish(self, run: int, steps: int) -> None:
        """Leave the run's line on the console (once; a second call does nothing)."""
        if run in self.finished:
            return
        self.finished.add(run)
        label = f"[{len(self.finished)}/{self.n}] {self.descs[run]}"
        bar = self.bars.pop(run, None)
        if bar is None:  # its events were lost (they are progress only): a line without a bar
            line = f"{label}: {steps} steps"
        else:
            bar.set_description(label, refresh=False)
            bar.update(steps - bar.n)
            line = str(bar)
            bar.clear()  # then close() leaves the cursor at the start of a line, wherever the bar was
            bar.close()
        tqdm.write(line, file=sys.stderr)  # where the bars are, as RunProgress's own bars
        self._renumber()

    def close(self) -> None:
        """Remove the bars of runs that did not finish (after an error)."""
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def _renumber(self) -> None:
        for i, (run, bar) in enumerate(self.bars.items(), start=len(self.finished) + 1):
            bar.set_description(f"[{i}/{self.n}] {self.descs[run]}")


# ----------------------------------------------------------------------------- the worker pool

_JOBS_WHAT = "runs trained at once; 0 = as many as the CPU cores allow"


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_jobs(jobs: int, n_runs: int, *, threads: int = 1, accelerator: str = "cpu", devices: Any = 1) -> int:
    """How many runs train at once: ``jobs``, or for ``jobs=0`` as many as the cores allow.

    ``jobs=0`` gives ``min(n_runs, usable_cpus() // threads)``, at least 1, for runs on one CPU device
    with ``threads >= 1``; otherwise 1: under DDP (``devices > 1``) a run already uses several processes,
    on an accelerator the runs would share it, and with ``threads=0`` (torch's default) one run already
    uses every core. An explicit ``jobs`` is capped at ``n_runs``.

    Raises:
        ValueError: ``jobs`` is not an int >= 0, or is > 1 with ``devices > 1`` or an accelerator other
            than ``"cpu"``.

    Example:
        >>> resolve_jobs(4, n_runs=3), resolve_jobs(0, n_runs=9, threads=0)
        (3, 1)
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"`jobs` must be an int >= 0 ({_JOBS_WHAT}), got {jobs!r}")
    one_cpu_device = accelerator == "cpu" and str(devices) == "1"
    if jobs > 1 and not one_cpu_device:
        raise ValueError(
            f"`jobs` must be 0 (auto) or 1 with `accelerator={accelerator!r}` and `devices={devices}`, got {jobs}: "
            "runs in parallel are for one CPU device each; use --accelerator cpu --devices 1 to run several at once"
        )
    if jobs > 0:
        return min(jobs, n_runs)
    if not one_cpu_device or threads < 1:
        return 1
    return max(1, min(n_runs, usable_cpus() // threads))


def jobs_arg(text: str) -> int:
    """argparse ``type=`` of ``--jobs``: the message of :func:`resolve_jobs` for a value that is not an int >= 0."""
    try:
        jobs = int(text)
    except ValueError:
        jobs = -1
    if jobs < 0:
        raise argparse.ArgumentTypeError(f"`jobs` must be an int >= 0 ({_JOBS_WHAT}), got {text!r}")
    return jobs


Work = Callable[..., Any]  # work(*task[, progress=RunProgress]) -> a result torch.save can write

_worker: dict[str, Any] = {}  # one worker process's state: the parent's progress queue


def _init_worker(events: Any, log_path: str, threads: int) -> None:
    """Set up a worker process like the parent: torch threads, Lightning's messages to the log file."""
    if threads > 0:
        torch.set_num_threads(threads)
    # progress events are not worth waiting for at exit (a parent that stopped reading would hang it)
    events.cancel_join_thread()
    stack = ExitStack()  # held until the process ends
    stack.enter_context(lightning_to_file(Path(log_path), truncate=False))
    _worker.update(events=events, stack=stack)


def _in_worker(work: Work, task: tuple, run: int, label: str, progress: bool) -> tuple[bytes, int]:
    """One run in a worker process; the result travels as ``torch.save`` bytes (no shared memory to keep alive)."""
    bar = RunProgress(label, _worker["events"], run) if progress else None
    RUN_LABEL.label = " ".join(label.split())  # the console's label without its column padding
    try:
        result = work(*task, progress=bar) if bar is not None else work(*task)
    finally:
        RUN_LABEL.label = "-"
    buffer = io.BytesIO()
    torch.save(result, buffer)
    return buffer.getvalue(), 0 if bar is None else bar.steps


def run_all(
    work: Work, tasks: Sequence[tuple], labels: Sequence[str], *, jobs: int, threads: int, log_path: Path,
    progress: bool = True,
) -> Iterator[tuple[int, Any]]:  # fmt: skip
    """``work(*task, progress=RunProgress(...))`` for every task, yielding ``(index, result)`` as each run finishes.

    With ``jobs == 1`` the runs go one after the other in this process (``progress``: each draws its own
    bar, ``[k/n] label``); otherwise in ``jobs`` spawned worker processes, whose Lightning messages go to
    ``log_path`` and whose progress the parent draws (:class:`ProgressBoard`). With ``progress=False`` it
    calls ``work(*task)``: the caller prints its own line per run. Run the serial case inside
    :func:`lightning_to_file`; the workers set it up themselves.

    Raises:
        Exception: The first error of a run, as raised in its worker (its traceback attached), with a note
            naming the run; the other runs are stopped.
    """
    n = len(tasks)
    if jobs == 1:
        for k, task in enumerate(tasks):
            RUN_LABEL.label = " ".join(labels[k].split())
            try:
                yield k, work(*task, progress=RunProgress(f"[{k + 1}/{n}] {labels[k]}")) if progress else work(*task)
            finally:
                RUN_LABEL.label = "-"
        return
    ctx = multiprocessing.get_context("spawn")  # not fork: torch's thread pools do not survive a fork
    events = ctx.Queue()
    board = ProgressBoard(dict(enumerate(labels))) if progress else None
    executor = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                   initargs=(events, str(log_path), threads))  # fmt: skip
    finished = False
    try:
        futures: dict[Future, int] = {executor.submit(_in_worker, work, task, k, labels[k], progress): k
                                      for k, task in enumerate(tasks)}  # fmt: skip
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            if board is not None:
                board.drain(events)
            for future in sorted(done, key=futures.__getitem__):
                k = futures[future]
                error = future.exception()
                if error is not None:
                    raise _with_note(error, labels[k], jobs, log_path)
                payload, steps = future.result()
                if board is not None:
                    board.finish(k, steps)
                yield k, torch.load(io.BytesIO(payload), weights_only=False)
        finished = True
    finally:
        if board is not None:
            board.close()
        if not finished:  # an error or Ctrl-C: stop the other runs now rather than wait for them
            # SIGKILL, not terminate(): Lightning catches SIGTERM inside fit, ends the run and the worker
            # stays alive waiting for work, so the exit would wait for it forever (no public API before 3.14)
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.kill()
        executor.shutdown(wait=finished, cancel_futures=True)
        events.close()


def _with_note(error: BaseException, label: str, jobs: int, log_path: Path) -> BaseException:
    if isinstance(error, BrokenProcessPool):
        _add_note(error, f"a worker process ended without a Python error (killed? out of memory?) while the run "
                         f"{label!r} was running or waiting (--jobs {jobs}); --jobs 1 runs in this process")  # fmt: skip
    else:
        _add_note(error, f"in the run {label!r}, in a worker process (--jobs {jobs}); Lightning's log: {log_path}")
    return error


def _add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``; Python 3.10 has no notes, so there the note also ends the message, to be seen."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
        return
    error.__notes__ = [*getattr(error, "__notes__", []), note]  # type: ignore[attr-defined]
    if error.args and isinstance(error.args[0], str):
        error.args = (f"{error.args[0]}\n{note}", *error.args[1:])


# ----------------------------------------------------------------------------- seed statistics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value).

    Example:
        >>> mean_std([1.0, 2.0, 3.0]), mean_std([5.0])
        ((2.0, 1.0), (5.0, 0.0))
    """
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_differences(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """``a[seed] - b[seed]`` for every seed both have, in ``a``'s order.

    Raises:
        ValueError: if the two share no seed.
    """
    seeds = [s for s in a if s in b]
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
    return {s: a[s] - b[s] for s in seeds}


def sign_test(differences: Iterable[float]) -> dict[str, float | int]:
    """Exact two-sided sign test of "the median difference is 0"; ties (exactly 0) are dropped.

    p = min(1, 2 * P(X <= min(wins, losses))) for X ~ Binomial(wins + losses, 1/2).

    Example:
        >>> sign_test([1.0] * 10)["p_two_sided"]  # 10 of 10: 2 / 2**10
        0.001953125
        >>> sign_test([0.1, -0.2, 0.0])
        {'wins': 1, 'losses': 1, 'ties': 1, 'p_two_sided': 1.0}
    """
    values = list(differences)
    wins, losses = sum(v > 0 for v in values), sum(v < 0 for v in values)
    n, k = wins + losses, min(wins, losses)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return {"wins": wins, "losses": losses, "ties": len(values) - n, "p_two_sided": p}


def sign_test_p(diffs: Iterable[float]) -> float:
    """:func:`sign_test`'s two-sided p alone.

    Example:
        >>> sign_test_p([0.1, 0.2, 0.3, 0.4, 0.5])  # 5 of 5 positive: 2 * 0.5 ** 5
        0.0625
    """
    return float(sign_test(diffs)["p_two_sided"])


def bootstrap_interval(diffs: Sequence[float], n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean (seeds resampled with replacement; numpy, seeded): the text example's.

    Example:
        >>> bootstrap_interval([1.0, 1.0, 1.0])
        [1.0, 1.0]
    """
    d = np.asarray(diffs, dtype=float)
    means = d[np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(
    values: Iterable[float], level: float = 0.95, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (pure Python ``random``, seeded): the dialog example's.

    Two generators because each example's committed tables were computed with its own: one of them
    for both would change the intervals of a table merged again from its seeds.

    Example:
        >>> bootstrap_ci([1.0, 1.0, 1.0])
        (1.0, 1.0)
    """
    data = list(values)
    if not data:
        raise ValueError("`values` must not be empty")
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level}")
    rng = random.Random(seed)
    n = len(data)
    means = sorted(math.fsum(data[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[math.floor((1 - level) / 2 * (resamples - 1))], means[math.ceil((1 + level) / 2 * (resamples - 1))]


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default).

    Example:
        >>> [round(x, 3) for x in wilson_interval(0, 10)], [round(x, 3) for x in wilson_interval(5, 10)]
        ([0.0, 0.278], [0.237, 0.763])
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
