"""A mutation probe: do the tests notice plausible one-line mistakes in the library's logic?

Run from the repository root (one mutant at a time, each in a throw-away copy of the package and
its tests, so the working tree is never touched)::

    python tools/mutations.py                      # every module
    python tools/mutations.py --only monitor kl    # some modules
    python tools/mutations.py --list               # the mutations, without running anything

Each mutation replaces one exact snippet of one line (it must occur once in its file) and runs that
module's test files and its doctests with ``pytest -x -q``. A failing run (or one past ``--timeout``) kills the mutant;
a passing run means it survived: a behaviour no test pins. A snippet that is no longer in its file
(the code moved on) is skipped and reported, not counted. Prints one line per mutant and a summary;
``--json PATH`` writes the results.

Survivors that are *equivalent* (the program means the same thing) are listed in ``EQUIVALENT`` with
the reason; they are reported apart and left out of the score.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lightning_kl_anneal"


@dataclass(frozen=True)
class Mutation:
    module: str  # file name in the package, e.g. "kl.py"
    old: str  # an exact snippet, found once in the file
    new: str
    what: str  # the mistake it stands for

    @property
    def name(self) -> str:
        return f"{self.module}: {self.what}"


# The test files of each module (tests/ mirrors the package).
TESTS: dict[str, list[str]] = {
    "kl.py": ["tests/test_kl.py"],
    "diagnostics.py": ["tests/test_diagnostics.py"],
    "metrics.py": ["tests/test_metrics.py"],
    "monitor.py": ["tests/test_monitor.py"],
    "selection.py": ["tests/test_selection.py"],
    "plot.py": ["tests/test_plot.py", "tests/test_main.py"],
    "schedules.py": ["tests/test_schedules.py"],
    "callback.py": ["tests/test_callback.py", "tests/test_callback_options.py", "tests/test_callback_runs.py"],
}

M = Mutation
MUTATIONS: list[Mutation] = [
    # ---- kl.py: the objective's KL term
    M(
        "kl.py",
        "return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)",
        "return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 + logvar)",
        "KL: sign of log-variance flipped",
    ),
    M(
        "kl.py",
        "return 0.5 * (diff2 + logvar.exp() - 1.0 - logvar)",
        "return 0.5 * (diff2 + logvar.exp() - logvar)",
        "KL with a prior mean: the -1 dropped",
    ),
    M(
        "kl.py",
        "* torch.exp(-prior_logvar) - 1.0)",
        "* torch.exp(prior_logvar) - 1.0)",
        "KL with a prior variance: divided the wrong way",
    ),
    M(
        "kl.py",
        "return _floor(kl_per_dim.mean(0), lam).sum()",
        "return _floor(kl_per_dim.sum(0), lam).sum()",
        "free bits 'dim': sum over the batch instead of mean",
    ),
    M(
        "kl.py",
        "return _floor(kl_per_dim, lam).sum(1).mean()",
        "return _floor(kl_per_dim, lam).mean(1).mean()",
        "free bits 'example_dim': mean over dimensions",
    ),
    M(
        "kl.py",
        "return _floor(kl_per_dim.sum(1), lam).mean()",
        "return _floor(kl_per_dim.sum(1).mean(), lam)",
        "free bits 'example': the floor on the batch mean",
    ),
    M("kl.py", 'if mode == "example":', 'if mode == "batch":', "free bits: the 'example' branch taken for 'batch'"),
    # ---- diagnostics.py: active units, dimensionality, MI
    M(
        "diagnostics.py",
        "return int((variance > threshold).sum())",
        "return int((variance >= threshold).sum())",
        "active units: threshold not strict",
    ),
    M(
        "diagnostics.py",
        "return ((total_sq - n * mean * mean) / (n - 1)).clamp(min=0.0)",
        "return ((total_sq - n * mean * mean) / n).clamp(min=0.0)",
        "streamed variance: population instead of sample",
    ),
    M(
        "diagnostics.py",
        'return _count_active(mu.double().var(0, correction=1), threshold, "active_units")',
        'return _count_active(mu.double().var(0, correction=0), threshold, "active_units")',
        "active_units: population variance",
    ),
    M(
        "diagnostics.py",
        "return [int((held < share).sum()) + 1 for share in shares]",
        "return [int((held <= share).sum()) + 1 for share in shares]",
        "dimensionality: boundary share not inclusive",
    ),
    M(
        "diagnostics.py",
        "return [int((held < share).sum()) + 1 for share in shares]",
        "return [int((held < share).sum()) for share in shares]",
        "dimensionality: off by one",
    ),
    M(
        "diagnostics.py",
        "eig = torch.linalg.eigvalsh(covariance.double()).flip(0).clamp(min=0.0)",
        "eig = torch.linalg.eigvalsh(covariance.double()).clamp(min=0.0)",
        "dimensionality: eigenvalues ascending",
    ),
    M(
        "diagnostics.py",
        "return [0] * len(shares)",
        "return [1] * len(shares)",
        "dimensionality: no variance counted as one direction",
    ),
    M(
        "diagnostics.py",
        "return (outer - n * torch.outer(mean, mean)) / (n - 1)",
        "return outer / (n - 1)",
        "streamed covariance: not centred",
    ),
    M(
        "diagnostics.py",
        "total += float((own_dens - (torch.logsumexp(log_dens, dim=1) - math.log(n))).sum())",
        "total += float((own_dens - torch.logsumexp(log_dens, dim=1)).sum())",
        "MI: the 1/N of the aggregate posterior dropped",
    ),
    M(
        "diagnostics.py",
        "outer = torch.linspace(0, n - 1, int(outer_rows), device=mu.device).round().long()",
        "outer = torch.arange(int(outer_rows), device=mu.device)",
        "MI: outer rows the first ones, not evenly spaced",
    ),
    M(
        "diagnostics.py",
        "return total / (len(outer) * n_samples)",
        "return total / len(outer)",
        "MI: not averaged over the draws",
    ),
    M(
        "diagnostics.py",
        "    step = n if batch_size is None else int(batch_size)",
        "    step = n",
        "MI: batch_size ignored",
    ),
    # ---- metrics.py: streaming state
    M(
        "metrics.py",
        "self.kl_sum = self.kl_sum + gaussian_kl(mu, logvar, prior_mu, prior_logvar).sum(0)",
        "self.kl_sum = self.kl_sum + gaussian_kl(mu, logvar).sum(0)",
        "KLPerDimension: the conditional prior ignored",
    ),
    M(
        "metrics.py",
        "        self.n = self.n + len(mu)\n",
        "        self.n = self.n + 1\n",
        "KLPerDimension: counts batches, not rows",
    ),
    M(
        "metrics.py",
        "            x = x - prior_mu.detach().double()\n        self.total = self.total + x.sum(0)\n        self.total_sq",
        "            pass\n        self.total = self.total + x.sum(0)\n        self.total_sq",
        "ActiveUnits: the conditional prior ignored",
    ),
    M(
        "metrics.py",
        "        if float(self.n) < 2:\n            if self._one_batch:  # forward()'s value of a one-row batch\n                return",
        "        if float(self.n) < 1:\n            if self._one_batch:  # forward()'s value of a one-row batch\n                return",
        "ActiveUnits: one row accepted",
    ),
    M(
        "metrics.py",
        "self.outer = self.outer + x.T @ x",
        "self.outer = self.outer + x.T @ x / len(x)",
        "LatentDimensionality: sums of x xT scaled per batch",
    ),
    M(
        "metrics.py",
        "            x = x - prior_mu.detach().double()\n        self.total = self.total + x.sum(0)\n        self.outer",
        "            pass\n        self.total = self.total + x.sum(0)\n        self.outer",
        "LatentDimensionality: the conditional prior ignored",
    ),
    M(
        "metrics.py",
        "room = self.max_samples - self._kept()",
        "room = self.max_samples",
        "MutualInformation: keeps more than max_samples rows",
    ),
    M(
        "metrics.py",
        "if len(order) > self.max_samples:",
        "if len(order) > self.max_samples + 1:",
        "MutualInformation: off by one in the subsample",
    ),
    M(
        "metrics.py",
        "return torch.sort(rows.double() @ direction.to(rows.device), stable=True).indices",
        "return torch.arange(len(rows), device=rows.device)",
        "MutualInformation: no canonical order",
    ),
    # ---- monitor.py: the count and the alert
    M(
        "monitor.py",
        "            self.collapsed_count = 0\n            return",
        "            return",
        "the collapse count not reset by a healthy validation",
    ),
    M(
        "monitor.py",
        "low_au = self.min_active_units is not None and active_units < self.min_active_units",
        "low_au = self.min_active_units is not None and active_units <= self.min_active_units",
        "min_active_units boundary counted as collapsed",
    ),
    M(
        "monitor.py",
        "low_kl = self.kl_threshold is not None and kl < self.kl_threshold",
        "low_kl = self.kl_threshold is not None and kl <= self.kl_threshold",
        "kl_threshold boundary counted as collapsed",
    ),
    M("monitor.py", "return low_kl or low_au", "return low_kl and low_au", "collapsed needs both criteria"),
    M(
        "monitor.py",
        "        if self._fit.collapsed_count < self.patience:\n",
        "        if self._fit.collapsed_count < self.patience - 1:\n",
        "patience off by one",
    ),
    M(
        "monitor.py",
        '_COUNTING_PHASES = ("plateau", "final", None)',
        '_COUNTING_PHASES = ("plateau", "final", "ramp", None)',
        "ramp validations counted",
    ),
    M(
        "monitor.py",
        "if any(phase not in _COUNTING_PHASES for _, phase in phases):",
        "if all(phase not in _COUNTING_PHASES for _, phase in phases) and phases:",
        "one phase callback on a plateau is enough",
    ),
    M(
        "monitor.py",
        'no_ramp_left = all(phase in ("final", None) or _endless(callback) for callback, phase in phases)',
        'no_ramp_left = all(phase in ("final", "plateau", None) or _endless(callback) for callback, phase in phases)',
        "'stop' acts on a plateau with cycles to come",
    ),
    M(
        "monitor.py",
        'if self.on_collapse == "stop" and not at_end:',
        'if self.on_collapse == "stop":',
        "'stop' at the end of the fit sets should_stop",
    ),
    M(
        "monitor.py",
        "if fit.collapsed_count >= self.patience or fit.collapsed_count == fit.counted_validations:",
        "if fit.collapsed_count >= self.patience:",
        "end-of-fit alert only at patience",
    ),
    M(
        "monitor.py",
        "step = max(trainer.global_step - 1, 0)  # the last training step that ran",
        "step = trainer.global_step  # the last training step that ran",
        "phase asked one step late",
    ),
    M(
        "monitor.py",
        "if trainer.state.fn == TrainerFn.FITTING and self.alert_step is None:",
        "if self.alert_step is None:",
        "validate() counts towards the alert",
    ),
    M(
        "monitor.py",
        "        if self._rows.count >= self._FLUSH_ROWS:\n            self._update(self._rows.take(self._device))",
        "        if self._rows.count >= self._FLUSH_ROWS:\n            self._rows.take(self._device)",
        "buffered rows dropped at a flush",
    ),
    M(
        "monitor.py",
        'self.dimensionality.update(mu, post["prior_mu"])',
        "self.dimensionality.update(mu)",
        "monitor: dimensionality ignores the conditional prior",
    ),
    M(
        "monitor.py",
        'self.streak_end = {"step": step, **{k: v for k, v in values.items() if k in _JUDGED}}',
        'self.streak_end = {"step": step + 1, **{k: v for k, v in values.items() if k in _JUDGED}}',
        "alert_step one step late",
    ),
    # ---- selection.py
    M(
        "selection.py",
        'return phase == "final" if self.when == "final" else phase in ("plateau", "final")',
        'return phase in ("plateau", "final")',
        "when='final' acts on every plateau",
    ),
    M(
        "selection.py",
        'return phase == "final" if self.when == "final" else phase in ("plateau", "final")',
        'return phase == "final" if self.when == "final" else phase == "plateau"',
        "when='plateau' skips the final plateau",
    ),
    M(
        "selection.py",
        "return current is not None and not math.isfinite(float(current))",
        "return False",
        "check_finite ignored outside the plateau",
    ),
    M(
        "selection.py",
        "if self.save_last and self._trigger_step == trainer.global_step != self._last_global_step_saved:",
        "if False:",
        "save_last skipped on a ramp",
    ),
    M(
        "selection.py",
        '            if schedule.phase_at(last) == "final":\n                return',
        '            if schedule.phase_at(last) in ("final", "ramp"):\n                return',
        "no warning for an unreachable final plateau",
    ),
    # ---- plot.py
    M(
        "plot.py",
        "CyclicalSchedule(m, ratio, start, stop, shape=shape, ratio_zero=ratio_zero, period=period, delay=delay)",
        "CyclicalSchedule(m, ratio, start, stop, shape=shape, ratio_zero=ratio_zero, period=period)",
        "plot: the delay not drawn",
    ),
    M(
        "plot.py",
        "CyclicalSchedule(m, ratio, start, stop, shape=shape, ratio_zero=ratio_zero, period=period, delay=delay)",
        "CyclicalSchedule(m, ratio, stop, start, shape=shape, ratio_zero=ratio_zero, period=period, delay=delay)",
        "plot: start and stop swapped",
    ),
    M(
        "plot.py",
        "lo, hi = min(start, stop), max(start, stop)",
        "lo, hi = start, stop",
        "plot: limits wrong for a decreasing schedule",
    ),
    M(
        "plot.py",
        'label = "monotonic (M=1)" if m == 1 else',
        'label = "monotonic (M=1)" if m == 2 else',
        "plot: panel titles swapped",
    ),
    # ---- schedules.py
    M(
        "schedules.py",
        "return -(-total_steps // n_cycle)  # ceil(T / M) in integers",
        "return total_steps // n_cycle  # ceil(T / M) in integers",
        "cycle length: floor instead of ceil",
    ),
    M(
        "schedules.py",
        "    if tau >= ratio:\n        return stop",
        "    if tau >= ratio:\n        return max(start, stop)",
        "plateau of a decreasing schedule is max(start, stop)",
    ),
    M(
        "schedules.py",
        "    if step < delay:\n        return start",
        "    if step <= delay:\n        return start",
        "delay one step too long",
    ),
    M(
        "schedules.py",
        "if tau < ratio_zero:\n        return start",
        "if tau <= ratio_zero:\n        return start",
        "ratio_zero hold one step too long",
    ),
    M(
        "schedules.py",
        "if n_cycle is not None and step >= n_cycle * period:",
        "if n_cycle is not None and step > n_cycle * period:",
        "endless-period schedule ends one step late",
    ),
    M(
        "schedules.py",
        'return "final" if cycle == _last_cycle(total_steps, n_cycle, delay, period) else "plateau"',
        'return "final" if cycle == n_cycle - 1 else "plateau"',
        "the last cycle is n_cycle - 1 even when uneven cycles leave fewer",
    ),
    M(
        "schedules.py",
        "if n_cycle >= total_steps - delay:",
        "if n_cycle > total_steps - delay:",
        "too-many-cycles check off by one",
    ),
    M(
        "schedules.py",
        "if not 0.0 <= ratio_zero < ratio:",
        "if not 0.0 <= ratio_zero <= ratio:",
        "ratio_zero == ratio accepted",
    ),
    M(
        "schedules.py",
        "return 0.5 - 0.5 * math.cos(math.pi * u)",
        "return 0.5 - 0.5 * math.cos(2 * math.pi * u)",
        "cosine ramp: a full period",
    ),
    # ---- callback.py (another engineer refactors it: these may no longer apply, and are then reported)
    M(
        "callback.py",
        "total = sum(math.ceil(batches / scheduler.get_accumulate_grad_batches(e)) for e in range(epochs))",
        "total = sum(math.floor(batches / scheduler.get_accumulate_grad_batches(e)) for e in range(epochs))",
        "T under accumulation: floor instead of ceil",
    ),
    M(
        "callback.py",
        "return self.phase_at(max(self._read_counter(trainer) - 1, 0))",
        "return self.phase_at(self._read_counter(trainer))",
        "current phase one step late",
    ),
    M("callback.py", "if cyc.delay >= total:", "if cyc.delay > total:", "delay == T accepted"),
    M(
        "callback.py",
        "if trainer.should_stop and self._loggers and self._cached_step >= 0:",
        "if False:",
        "beta not logged at the step should_stop is set",
    ),
]

# Survivors judged equivalent: the mutated program behaves the same for every input it can get.
EQUIVALENT: dict[str, str] = {}


def _copy_tree(dest: Path) -> None:
    """The package, its tests and the project file, copied: each mutant runs against its own copy."""
    shutil.copytree(ROOT / PACKAGE, dest / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _apply(mutation: Mutation, root: Path) -> str | None:
    """Write the mutant into ``root``; None, or why it cannot be applied."""
    path = root / PACKAGE / mutation.module
    if not path.exists():
        return f"{mutation.module} not found"
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        return "snippet not found" if count == 0 else f"snippet found {count} times"
    path.write_text(text.replace(mutation.old, mutation.new))
    return None


def _run(mutation: Mutation, timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        root = Path(tmp)
        _copy_tree(root)
        why = _apply(mutation, root)
        if why is not None:
            return {"status": "skipped", "why": why, "seconds": 0.0}
        tests = [t for t in TESTS[mutation.module] if (root / t).exists()] + [
            f"{PACKAGE}/{mutation.module}"
        ]  # + doctests
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                command, check=False, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"status": "killed", "why": f"timeout after {timeout:.0f} s", "seconds": timeout}
        seconds = round(time.perf_counter() - start, 1)
        if proc.returncode == 0:
            return {"status": "survived", "why": "", "seconds": seconds}
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        return {
            "status": "killed",
            "why": failed[0] if failed else f"pytest exit {proc.returncode}",
            "seconds": seconds,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="module names without .py, e.g. monitor kl")
    parser.add_argument(
        "--grep", nargs="*", default=None, help="only mutations whose description contains one of these"
    )
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant before it counts as killed")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only is None or m.module.removesuffix(".py") in args.only]
    chosen = [m for m in chosen if args.grep is None or any(g in m.what for g in args.grep)]
    if args.list:
        for m in chosen:
            path = ROOT / PACKAGE / m.module
            found = path.read_text().count(m.old) if path.exists() else 0
            state = (
                "applies"
                if found == 1
                else "SKIPPED: " + ("snippet not found" if not found else f"found {found} times")
            )
            print(f"{m.name}  [{state}]\n    - {m.old.strip()}\n    + {m.new.strip()}")
        return 0
    results = []
    for i, mutation in enumerate(chosen, 1):
        result = {**asdict(mutation), **_run(mutation, args.timeout)}
        if result["status"] == "survived" and mutation.name in EQUIVALENT:
            result["status"], result["why"] = "equivalent", EQUIVALENT[mutation.name]
        results.append(result)
        print(
            f"[{i}/{len(chosen)}] {result['status']:10} {result['seconds']:6}s  {mutation.name}  {result['why']}",
            flush=True,
        )
    counts = {s: sum(r["status"] == s for r in results) for s in ("killed", "survived", "equivalent", "skipped")}
    scored = counts["killed"] + counts["survived"]
    print(
        f"\nkilled {counts['killed']} of {scored} applied ({100 * counts['killed'] / max(scored, 1):.1f} %); "
        f"equivalent {counts['equivalent']}; skipped {counts['skipped']} (snippet no longer in the code)"
    )
    for r in results:
        if r["status"] in ("survived", "skipped", "equivalent"):
            print(f"  {r['status']}: {r['module']}: {r['what']}  {r['why']}")
    if args.json is not None:
        args.json.write_text(json.dumps({"counts": counts, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
