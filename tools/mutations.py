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


# The test files of each module (tests/ mirrors the package), the module's own first, so that ``-x`` stops early.
# The callback's private pieces (_run, _attribute, _fit, _advice) are also tested through the callback's own
# end-to-end tests, which are theirs too.
_CALLBACK_TESTS = [
    "tests/test_callback.py", "tests/test_callback_options.py", "tests/test_callback_runs.py",
    "tests/test_schedule_fits.py",
]  # fmt: skip
TESTS: dict[str, list[str]] = {
    "kl.py": ["tests/test_kl.py"],
    "diagnostics.py": ["tests/test_diagnostics.py"],
    "metrics.py": ["tests/test_metrics.py"],
    "monitor.py": ["tests/test_monitor.py"],
    "selection.py": ["tests/test_selection.py"],
    "plot.py": ["tests/test_plot.py", "tests/test_main.py"],
    "schedules.py": ["tests/test_schedules.py", "tests/test_schedule_fits.py"],
    "posterior.py": ["tests/test_posterior.py"],
    "callback.py": _CALLBACK_TESTS,
    "_run.py": ["tests/test_run.py", *_CALLBACK_TESTS],
    "_attribute.py": ["tests/test_attribute.py", *_CALLBACK_TESTS],
    "_fit.py": ["tests/test_fit.py", *_CALLBACK_TESTS],
    "_advice.py": ["tests/test_advice.py", *_CALLBACK_TESTS],
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
        "            x = x - prior_mu.detach().double()\n        self.n = self.n + len(x)",
        "            pass\n        self.n = self.n + len(x)",
        "ActiveUnits, LatentDimensionality: the conditional prior ignored",
    ),
    M(
        "metrics.py",
        "        self.n = self.n + len(x)",
        "        self.n = self.n + 1",
        "ActiveUnits, LatentDimensionality: count batches, not rows",
    ),
    M(
        "metrics.py",
        "        if float(self.n) >= 2:\n            return False",
        "        if float(self.n) >= 1:\n            return False",
        "ActiveUnits, LatentDimensionality: one row accepted",
    ),
    M(
        "metrics.py",
        "        finally:\n            self._one_batch = False",
        "        finally:\n            pass",
        "after a one-row forward(), compute() gives NaN instead of refusing one row",
    ),
    M(
        "metrics.py",
        "self.outer = self.outer + x.T @ x",
        "self.outer = self.outer + x.T @ x / len(x)",
        "LatentDimensionality: sums of x xT scaled per batch",
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
        "schedules = [_schedule_from(arguments, n_cycle=m) for m in n_cycles]",
        "schedules = [_schedule_from(arguments, n_cycle=m, delay=0) for m in n_cycles]",
        "plot: the delay not drawn",
    ),
    M(
        "plot.py",
        "schedules = [_schedule_from(arguments, n_cycle=m) for m in n_cycles]",
        "schedules = [_schedule_from(arguments, n_cycle=m, start=stop, stop=start) for m in n_cycles]",
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
        "        if tau >= self.ratio:\n            return self.stop",
        "        if tau >= self.ratio:\n            return max(self.start, self.stop)",
        "plateau of a decreasing schedule is max(start, stop)",
    ),
    M(
        "schedules.py",
        "        if step < self.delay:\n            return self.start",
        "        if step <= self.delay:\n            return self.start",
        "delay one step too long",
    ),
    M(
        "schedules.py",
        "        if tau < self.ratio_zero:\n            return self.start",
        "        if tau <= self.ratio_zero:\n            return self.start",
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
        "if (n_cycle or 1) >= total_steps - delay:",
        "if (n_cycle or 1) > total_steps - delay:",
        "span: as many cycles as steps accepted (pure functions, callback, joined parts)",
    ),
    M(
        "schedules.py",
        '    if delay >= total_steps:\n        return "delay"',
        '    if delay > total_steps:\n        return "delay"',
        "span: a delay as long as the run accepted (pure functions, callback, joined parts)",
    ),
    M(
        "schedules.py",
        "if not 0.0 <= self.ratio_zero < self.ratio:",
        "if not 0.0 <= self.ratio_zero <= self.ratio:",
        "ratio_zero == ratio accepted",
    ),
    M(
        "schedules.py",
        "return 0.5 - 0.5 * math.cos(math.pi * u)",
        "return 0.5 - 0.5 * math.cos(2 * math.pi * u)",
        "cosine ramp: a full period",
    ),
    # ---- schedules.py: the schedule object's other paths, the log ramp, schedules that compose
    M(
        "schedules.py",
        "    if step < delay:\n        return 0.0\n    return _locate(",
        "    if step <= delay:\n        return 0.0\n    return _locate(",
        "cycle_position: the first step after the delay read as delay",
    ),
    M(
        "schedules.py",
        '        if step < delay:\n            return "delay"',
        '        if step <= delay:\n            return "delay"',
        "phase: the first step after the delay read as delay",
    ),
    M(
        "schedules.py",
        "return (step % _period(span, n_cycle) + 1) * n_cycle >= span",
        "return (step % _period(span, n_cycle) + 1) * n_cycle > span",
        "ratio 1: the step that closes a full cycle's ramp missed",
    ),
    M(
        "schedules.py",
        "return -(-span // _period(span, n_cycle)) - 1",
        "return n_cycle - 1",
        "last cycle: n_cycle - 1 even when uneven cycles leave fewer",
    ),
    M(
        "schedules.py",
        "out[head + self.n_cycle * self.period :] = self.stop",
        "out[self.n_cycle * self.period :] = self.stop",
        "values(): the end of a period schedule ignores the delay",
    ),
    M(
        "schedules.py",
        "        beta[tau < ratio_zero] = start",
        "        beta[tau <= ratio_zero] = start",
        "values(): ratio_zero hold one step too long",
    ),
    M(
        "schedules.py",
        "return None if self.n_cycle is None else self.delay + self.n_cycle * self.period",
        "return None if self.n_cycle is None else self.n_cycle * self.period",
        "length(): the delay left out",
    ),
    M(
        "schedules.py",
        "            if self.delay >= total_steps:\n                raise ValueError",
        "            if self.delay > total_steps:\n                raise ValueError",
        "phase(): delay == T accepted",
    ),
    M(
        "schedules.py",
        "return self.start * (self.stop / self.start) ** u",
        "return self.stop * (self.start / self.stop) ** u",
        "log ramp: endpoints swapped",
    ),
    M(
        "schedules.py",
        "            np.power(stop / start, beta, out=beta)\n            beta *= start",
        "            np.power(start / stop, beta, out=beta)\n            beta *= stop",
        "log ramp, values(): endpoints swapped",
    ),
    M(
        "schedules.py",
        "        if not value > 0.0:",
        "        if value < 0.0:",
        "log ramp: a zero start or stop accepted",
    ),
    M(
        "schedules.py",
        "edges = tuple(int(b * total_steps + 0.5) for b in boundaries)",
        "edges = tuple(int(b * total_steps) for b in boundaries)",
        "join: fractional boundaries floored, not rounded",
    ),
    M(
        "schedules.py",
        "return [i for i, span in enumerate(spans) if span < 1]",
        "return [i for i, span in enumerate(spans) if span < 0]",
        "join: a part with no step not warned about",
    ),
    M(
        "schedules.py",
        "spans = [edges[0], *(b - a for a, b in itertools.pairwise(edges)), total_steps - edges[-1]]",
        "spans = [edges[0], *(b - a for a, b in itertools.pairwise(edges))]",
        "join: the last part's stretch never checked",
    ),
    M(
        "schedules.py",
        "problem = _span_problem(span, part.n_cycle, part.delay)",
        "problem = None if span else _span_problem(span, part.n_cycle, part.delay)",
        "join: a cyclical part too short for its cycles not held",
    ),
    M(
        "schedules.py",
        'return "delay"  # held at `start`',
        'return "ramp"  # held at `start`',
        "join: a held cyclical part's phase counted by the selection",
    ),
    M(
        "schedules.py",
        "return any(_declares_phases(part) for part in self.schedules)",
        "return all(_declares_phases(part) for part in self.schedules)",
        "join: phases only when every part declares them",
    ),
    M(
        "schedules.py",
        "if key not in self._warned:",
        "if True:",
        "join: warned at every step",
    ),
    M(
        "schedules.py",
        "i = bisect.bisect_right(edges, step)",
        "i = bisect.bisect_left(edges, step)",
        "join: the boundary step belongs to the earlier part",
    ),
    M(
        "schedules.py",
        "            return i, step - begin, edges[i] - begin",
        "            return i, step - begin, edges[i]",
        "join: a middle part's T is its end, not its length",
    ),
    M(
        "schedules.py",
        "return i, step - begin, None if total is None else total - begin",
        "return i, step - begin, total",
        "join: the last part's T is the whole run",
    ),
    M(
        "schedules.py",
        'return "plateau" if phase == "final" and i < len(self.schedules) - 1 else phase',
        "return phase",
        "join: a non-last part's final plateau reads 'final'",
    ),
    M(
        "schedules.py",
        'return "plateau" if phase == "final" and i < len(self.schedules) - 1 else phase',
        'return "plateau" if phase == "final" and i < len(self.schedules) else phase',
        "join: the last part's final plateau reads 'plateau'",
    ),
    M(
        "schedules.py",
        'return bool(self._fractions or getattr(self.schedules[-1], "needs_total", False))',
        'return bool(self._fractions or getattr(self.schedules[0], "needs_total", False))',
        "join: needs_total asks the first part",
    ),
    M(
        "schedules.py",
        "else [part(s, span) for s in range(span)]",
        "else [part(s, total) for s in range(span)]",
        "join values(): a part without values() gets the run's T",
    ),
    M(
        "schedules.py",
        '    phase_name: Phase = "final"',
        '    phase_name: Phase = "plateau"',
        "ConstantSchedule: default phase 'plateau'",
    ),
    # ---- _run.py: which T a fit uses, the Trainer's length
    M(
        "_run.py",
        "        if saved is not None and saved != given:",
        "        if saved is not None:",
        "choose_total: warns when the given T equals the saved one",
    ),
    M(
        "_run.py",
        "    if given is not None:\n        if saved",
        "    if given is not None and saved is None:\n        if saved",
        "choose_total: the given T loses to the checkpoint's",
    ),
    M(
        "_run.py",
        '((saved, "the checkpoint\'s schedule"), (continued, "the continued fit\'s schedule"))',
        '((continued, "the continued fit\'s schedule"), (saved, "the checkpoint\'s schedule"))',
        "choose_total: the continued fit's T wins over the checkpoint's",
    ),
    M(
        "_run.py",
        "            if estimate and estimate != kept:",
        "            if estimate != kept:",
        "choose_total: warns when the Trainer's length is unknown or 0",
    ),
    M(
        "_run.py",
        "            return kept, None\n    return estimate, None",
        "            return estimate, None\n    return estimate, None",
        "choose_total: the kept T dropped when the Trainer's length is unknown",
    ),
    M(
        "_run.py",
        "total = sum(math.ceil(batches / accumulation(epoch)) for epoch in range(max_epochs))",
        "total = sum(math.floor(batches / accumulation(epoch)) for epoch in range(max_epochs))",
        "T under accumulation: floor instead of ceil",
    ),
    M(
        "_run.py",
        "return min(total, max_steps) if max_steps != -1 else total",
        "return total",
        "T under accumulation: max_steps does not cap it",
    ),
    M(
        "_run.py",
        "if not math.isfinite(batches) or max_epochs is None or max_epochs < 0:",
        "if not math.isfinite(batches) or max_epochs is None:",
        "T under accumulation: max_epochs=-1 read as 0 epochs",
    ),
    M(
        "_run.py",
        "    if trainer.limit_train_batches == 0:\n",
        '    if trainer.limit_train_batches == 0 and unit == "step":\n',
        "a run that only validates has a length in epochs",
    ),
    M(
        "_run.py",
        "    return estimate if exact is None else exact",
        "    return estimate",
        "the accumulation scheduler's exact count ignored",
    ),
    M(
        "_run.py",
        "    if math.isfinite(length) and length >= 0:",
        "    if math.isfinite(length) and length > 0:",
        "run_length: 0 (no training step) read as unknown",
    ),
    M(
        "_run.py",
        "    if module is None or module.automatic_optimization:",
        "    if module is None or not module.automatic_optimization:",
        "step counter: manual and automatic optimization swapped",
    ),
    # ---- _attribute.py: resolving and writing the attribute
    M(
        "_attribute.py",
        'if not all(part.isidentifier() or part.isdigit() for part in path.split(".")):',
        'if not all(part.isidentifier() for part in path.split(".")):',
        "writer: a ModuleList index in the path refused",
    ),
    M(
        "_attribute.py",
        "            return current.fill_  # in place",
        "            return functools.partial(setattr, owner, name)  # in place",
        "writer: a buffer replaced, not filled in place",
    ),
    M(
        "_attribute.py",
        "        if isinstance(current, torch.Tensor) and not _has_setter(owner, name):",
        "        if isinstance(current, torch.Tensor):",
        "writer: a property returning a tensor filled in place, its setter skipped",
    ),
    M(
        "_attribute.py",
        "        if isinstance(static, property) and static.fset is None:",
        "        if isinstance(static, property) and static.fset is None and False:",
        "writer: a read-only property accepted (fails later, in the evaluation without fit too)",
    ),
    M(
        "_attribute.py",
        "        if value.requires_grad:",
        "        if value.requires_grad and not value.is_leaf:",
        "writer: a Parameter accepted",
    ),
    M(
        "_attribute.py",
        "        if not value.is_floating_point():",
        "        if value.dtype == torch.bool:",
        "writer: an integer tensor accepted",
    ),
    M(
        "_attribute.py",
        "{'.'.join(path[: i + 1])}",
        "{'.'.join(path[:i])}",
        "writer: the missing part of a dotted path misnamed",
    ),
    # ---- _fit.py: the per-step path
    M(
        "_fit.py",
        "        if 0 <= i < self.n:\n",
        "        if 0 <= i <= self.n:\n",
        "lookahead: one step past the values held",
    ),
    M(
        "_fit.py",
        "end = step + self.size if total is None else max(step + 1, min(step + self.size, total))",
        "end = step + self.size",
        "lookahead: evaluates past T",
    ),
    M(
        "_fit.py",
        "value = self.value = values.ahead[i] if 0 <= i < values.n else values.at(step)",
        "value = self.value = values.ahead[i] if 0 <= i <= values.n else values.at(step)",
        "fit.set: one step past the values held",
    ),
    M(
        "_fit.py",
        "if (force or (step + 1) % self.log_every == 0) and step != self.logged_step:",
        "if (force or step % self.log_every == 0) and step != self.logged_step:",
        "fit.log: logging steps off by one",
    ),
    M(
        "_fit.py",
        "if (force or (step + 1) % self.log_every == 0) and step != self.logged_step:",
        "if force or (step + 1) % self.log_every == 0:",
        "fit.log: a step logged twice",
    ),
    M("_fit.py", "return _ended, (self.total,)", "return _ended, (None,)", "a pickled fit loses its T"),
    # ---- _advice.py: what a run's length means, in words
    M(
        "_advice.py",
        '    if problem == "delay":\n        return (\n            True,',
        '    if problem == "delay":\n        return (\n            False,',
        "a delay as long as the run only warned",
    ),
    M(
        "_advice.py",
        "    if problem is None:\n        return None",
        '    if problem != "delay":\n        return None',
        "as many cycles as steps not flagged",
    ),
    M(
        "_advice.py",
        "    elif value == cyc.stop:",
        "    elif value >= cyc.stop:",
        "unfinished: a decreasing schedule's start read as its final value",
    ),
    M(
        "_advice.py",
        "first = cyc.delay + math.ceil(cyc.ratio * cyc.period)",
        "first = math.ceil(cyc.ratio * cyc.period)",
        "off_plateau: the first plateau ignores the delay",
    ),
    M(
        "_advice.py",
        "{-(-span // n_cycle)} and a shorter last one",
        "{span // n_cycle} and a shorter last one",
        "off_plateau: cycle length floored",
    ),
    M(
        "_advice.py",
        "    if total > run:\n",
        "    if total >= run:\n",
        "off_plateau: a T equal to the run read as longer",
    ),
    # ---- callback.py: the hooks
    M(
        "callback.py",
        'step = trainer.current_epoch if self._unit == "epoch" else max(read_step(trainer, self._unit) - 1, 0)',
        'step = trainer.current_epoch if self._unit == "epoch" else read_step(trainer, self._unit)',
        "current phase one step late",
    ),
    M(
        "callback.py",
        "        if trainer.should_stop:\n            self._log_if_stopped(",
        "        if False:\n            self._log_if_stopped(",
        "beta not logged at the step should_stop is set",
    ),
    M(
        "callback.py",
        "self._log_if_stopped(trainer, trainer.fit_loop.epoch_loop._batches_that_stepped - 1)",
        "self._log_if_stopped(trainer, trainer.fit_loop.epoch_loop._batches_that_stepped)",
        "stopped at an epoch's end: beta logged one step late",
    ),
    M(
        "callback.py",
        "        if trainer.state.fn == TrainerFn.FITTING and self._fit.step >= 0:\n            self._writer.write(",
        "        if False:\n            self._writer.write(",
        "the training value not restored after validation",
    ),
    M(
        "callback.py",
        "at the evaluation value.\n        self._write_eval_value(pl_module)",
        "at the evaluation value.\n        pass",
        "after fit the attribute keeps the training value",
    ),
    M(
        "callback.py",
        "        if self._eval_value is not None:\n",
        "        if self._eval_value:\n",
        "eval_value 0.0 not written",
    ),
    M(
        "callback.py",
        "        return total or None",
        "        return total",
        "T = 0 kept for a fit without training steps",
    ),
    M(
        "callback.py",
        "continued = last.total if last.trainer is not None and last.trainer() is trainer else None",
        "continued = last.total if last.trainer is not None else None",
        "another Trainer continues the last fit's T",
    ),
    M(
        "callback.py",
        "continued = self._fit.continued if read_step(trainer, self._unit, pl_module) > 0 else None",
        "continued = self._fit.continued",
        "a fit at step 0 on the same Trainer keeps the last fit's T",
    ),
    M(
        "callback.py",
        "if fit.estimate != 0 and self._loaded is None and read_step(trainer, self._unit, pl_module) == 0:",
        "if fit.estimate != 0 and read_step(trainer, self._unit, pl_module) == 0:",
        "a resumed fit is probed at step 0",
    ),
    M(
        "callback.py",
        "            values.keep(0, [fit.probe[1]])",
        "            pass",
        "step 0's value evaluated twice",
    ),
    M(
        "callback.py",
        "Lookahead(self._value_at, fit.total, 1) if cyc is None else",
        "Lookahead(self._value_at, fit.total, _LOOKAHEAD) if cyc is None else",
        "a user's function evaluated ahead of its steps",
    ),
    M(
        "callback.py",
        "fit.loggers = list(trainer.loggers) if self._log_name is not None and fit.log_every else []",
        "fit.loggers = list(trainer.loggers) if fit.log_every else []",
        "log_name=None still logs",
    ),
    M(
        "callback.py",
        'fit.log_between_changes = self._unit == "epoch"',
        "fit.log_between_changes = False",
        "unit='epoch': logged only at the step the value changes",
    ),
    M(
        "callback.py",
        "        if fatal and not trainer.fast_dev_run:",
        "        if fatal:",
        "fast_dev_run with a long delay refused",
    ),
    M(
        "callback.py",
        "        if not self._fit.warned_short:",
        "        if True:",
        "the too-short warning said twice",
    ),
    M(
        "callback.py",
        '        if phase in ("ramp", "delay"):',
        '        if phase == "ramp":',
        "no warning for a run that ends in the delay",
    ),
    M(
        "callback.py",
        "            fit.warned_end = run  # the end-of-fit warning would say it again",
        "            pass",
        "the off-plateau warning said again at the end",
    ),
    M(
        "callback.py",
        "if length is not None and reached < length and reached != fit.warned_end:",
        "if length is not None and reached <= length and reached != fit.warned_end:",
        "a finished run warns it did not finish",
    ),
    M(
        "callback.py",
        "length = _schedule_length(self._schedule, fit.total)",
        "length = fit.total",
        "unfinished: a period schedule's length is the Trainer's",
    ),
    M(
        "callback.py",
        '"total_steps": self.total or self._total_steps',
        '"total_steps": self._total_steps',
        "the Trainer's T not saved in the checkpoint",
    ),
    M(
        "callback.py",
        "if callback.log_name is not None and other.log_name == callback.log_name:",
        "if other.log_name == callback.log_name:",
        "two callbacks without logging clash",
    ),
    M(
        "callback.py",
        "if value is not None and value not in PHASES:",
        "if value not in PHASES:",
        "a schedule's None phase refused",
    ),
    M(
        "callback.py",
        "        if value - value != 0.0:",
        "        if value != value:",
        "an infinite value written",
    ),
    M(
        "callback.py",
        "return self._total_steps if self._total_steps is not None else self._fit.total",
        "return self._fit.total",
        "the constructor's T ignored before a fit",
    ),
    M(
        "callback.py",
        "eval_value=schedule.stop if eval_beta is None else eval_beta",
        "eval_value=eval_beta",
        "eval_beta default not stop",
    ),
    # ---- posterior.py: BN-VAE
    M(
        "posterior.py",
        "self.scale, self.shift, self.training, self.momentum, self.eps",
        "self.scale, self.shift, self.training, self.eps, self.momentum",
        "BN: eps and momentum swapped",
    ),
    M(
        "posterior.py",
        'self.register_buffer("scale", torch.full((latent_dim,), self.gamma), persistent=False)',
        'self.register_buffer("scale", torch.full((latent_dim,), self.gamma), persistent=True)',
        "BN: gamma saved in (and loaded from) the state_dict",
    ),
    M(
        "posterior.py",
        "torch.full((latent_dim,), self.gamma)",
        "torch.full((latent_dim,), self.gamma**2)",
        "BN: the scale is gamma squared",
    ),
    M(
        "posterior.py",
        'self.register_buffer("running_var", torch.ones(latent_dim))',
        'self.register_buffer("running_var", torch.zeros(latent_dim))',
        "BN: running variance starts at 0",
    ),
    M(
        "posterior.py",
        "return self.latent_dim * self.gamma**2 / 2",
        "return self.latent_dim * self.gamma / 2",
        "BN: the floor is n gamma / 2",
    ),
    M(
        "posterior.py",
        "min_rows=2 if self.training else 0",
        "min_rows=1 if self.training else 0",
        "BN: a one-row training batch accepted",
    ),
    M(
        "posterior.py",
        'check_positive("momentum", momentum, 1.0)',
        'check_positive("momentum", momentum)',
        "BN: momentum > 1 accepted",
    ),
    M("posterior.py", "        if learn_shift:\n", "        if True:\n", "BN: the shift learns with learn_shift=False"),
    # ---- diagnostics.py: the functional dimensionality
    M(
        "diagnostics.py",
        "    x = x - x.mean(0)\n    (count,)",
        "    (count,)",
        "latent_dimensionality: not centred",
    ),
    M(
        "callback.py",
        'needed = self._total_steps is None and bool(getattr(self._schedule, "needs_total", False))',
        "needed = self._total_steps is None and self._cyclical is not None and self._cyclical.needs_total",
        "callback: a joined schedule needing T not refused in a run of unknown length",
    ),
    M(
        "callback.py",
        "    if isinstance(schedule, (CyclicalSchedule, JoinedSchedule)):\n        return schedule.length(total)",
        "    if isinstance(schedule, CyclicalSchedule):\n        return schedule.length(total)",
        "callback: a joined schedule's own length ignored at the end of the fit",
    ),
    M(
        "callback.py",
        'return {"schedule": describe_schedule(self._schedule), "unit": self._unit}',
        'return {"unit": self._unit}',
        "callback: a schedule other than CyclicalSchedule not saved (a change not warned on resume)",
    ),
    M(
        "schedules.py",
        'return "ramp" if i < len(self.schedules) - 1 else None',
        "return None",
        "join: a part without phases read as no phase while parts follow",
    ),
    M(
        "diagnostics.py",
        "eig = torch.where(eig > floor, eig, torch.zeros_like(eig))",
        "eig = torch.where(eig > 0, eig, torch.zeros_like(eig))",
        "dimensionality: rounding counted as a direction",
    ),
    M(
        "diagnostics.py",
        "+ rounding**2 * second_moment)",
        "+ rounding * second_moment)",
        "dimensionality: the storage floor is eps, not eps squared (cuts half-precision directions)",
    ),
    M(
        "metrics.py",
        "if self.total.dim() and mu.shape[1] != len(self.total):",
        "if False:",
        "metrics: rows of another width not refused",
    ),
    M(
        "_advice.py",
        'return f"{type(schedule).__module__}.{type(schedule).__qualname__}" if _ADDRESS.search(text) else text',
        "return text",
        "describe_schedule: a memory address saved (every resume would warn)",
    ),
    M(
        "_advice.py",
        'return f"{schedule.__module__}.{schedule.__qualname__}"  # a function, a builtin, a class',
        'return f"{schedule.__qualname__}"  # a function, a builtin, a class',
        "describe_schedule: a function's module dropped",
    ),
]

# Survivors judged equivalent: the mutated program behaves the same for every input it can get.
EQUIVALENT: dict[str, str] = {
    "schedules.py: cycle_position: the first step after the delay read as delay": (
        "at step == delay the position is (0 mod L) / (T / M) = 0.0 (or 0 / period), the value the delay branch returns"
    ),
    "callback.py: T = 0 kept for a fit without training steps": (
        "choose_total gives 0 only for a Trainer length of 0 (a given, saved or continued T is >= 1), and then "
        "Lightning skips the training loop (FitLoop.skip), so on_train_start, the only caller, does not run"
    ),
}


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
