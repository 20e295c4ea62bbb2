"""One fit of a scheduling callback: what it resolves when the fit starts, and the per-step path that reads it.

The callback's constructor arguments are its configuration; everything that belongs to one fit lives in
one :class:`Fit`, made in ``on_fit_start`` and replaced, whole, by the next fit's. Pickled (``ddp_spawn``
pickles callbacks), a fit leaves its binding to this process's Trainer behind and keeps its ``T`` only.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Fit", "Lookahead"]


class Lookahead:
    """``step -> value`` of a schedule over ``T`` = ``total``, evaluated ``size`` steps at a time.

    The library's own schedule is pure: one tight loop every 256 steps costs less than one call per step,
    each with caches cold from Lightning's work in between. A user's function may keep state: ``size=1``
    calls it on its own step only, when that step comes.

    Example:
        >>> values = Lookahead(lambda step, total: step / total, total=10, size=4)
        >>> values.at(2), values.ahead
        (0.2, [0.2, 0.3, 0.4, 0.5])
    """

    __slots__ = ("ahead", "first", "n", "size", "total", "value_at")

    def __init__(self, value_at: Callable[[int, int | None], float], total: int | None, size: int) -> None:
        self.value_at, self.total, self.size = value_at, total, size
        self.ahead: list[float] = []  # the values at steps `first + i`
        self.first = self.n = 0

    def at(self, step: int) -> float:
        """The value at ``step``, evaluating the next ``size`` steps when it is not held yet."""
        i = step - self.first
        if 0 <= i < self.n:
            return self.ahead[i]
        total, value_at = self.total, self.value_at
        end = step + self.size if total is None else max(step + 1, min(step + self.size, total))
        return self.keep(step, [value_at(s, total) for s in range(step, end)])

    def keep(self, first: int, values: list[float]) -> float:
        """Hold ``values`` for steps ``first, first + 1, ...`` (a value already evaluated is not evaluated again)."""
        self.ahead, self.first, self.n = values, first, len(values)
        return values[0]


def _ended(total: int | None) -> Fit:
    return Fit(total=total)


@dataclasses.dataclass(eq=False, slots=True)
class Fit:
    """Everything that belongs to one fit; the per-step hook reads it and nothing else."""

    # found when the fit starts (on_fit_start)
    trainer: weakref.ref[Any] | None = None
    estimate: int | None = None  # the Trainer's length in units; 0: no training step will run; None: unknown
    continued: int | None = None  # T of the last fit on the same Trainer, kept if this fit continues it
    probe: tuple[int | None, float] | None = None  # (T, value at step 0) of a fresh fit, evaluated before training
    warned_short: bool = False  # the "cannot cycle" warning is said once per fit
    warned_end: int | None = None  # the run length at whose end a warning at the start said it ends off the plateau
    # resolved when training starts (on_train_start)
    total: int | None = None  # T
    counter: Any = None  # `getattr(counter, field)` is the step
    field: str = ""
    values: Lookahead | None = None
    write: Callable[[float], Any] | None = None
    log_name: str | None = None
    loggers: list[Any] = dataclasses.field(default_factory=list)
    log_every: int = 0
    log_between_changes: bool = False  # with unit="epoch" the value changes per epoch; logging steps don't
    epoch_loop: Any = None
    # what the per-step hook did last
    step: int = -1  # the step whose value is written; -1: none yet
    value: float = math.nan
    logged_step: int = -1
    stop_checked: int = -1  # the last step whose logging for `should_stop` was decided
    ended: bool = False  # the end-of-fit check ran

    def __reduce__(self) -> tuple[Any, ...]:
        return _ended, (self.total,)

    def set(self, step: int) -> None:
        """Write the value at ``step``."""
        self.step = step
        values = self.values  # its hit path inline: this runs at every step
        i = step - values.first  # type: ignore[union-attr]
        value = self.value = values.ahead[i] if 0 <= i < values.n else values.at(step)  # type: ignore[union-attr]
        self.write(value)  # type: ignore[misc]

    def log(self, force: bool = False, step: int | None = None) -> None:
        """Send the value to the loggers on the Trainer's logging steps (``force``: on this one, or on ``step``).

        Straight to the loggers, as ``LearningRateMonitor`` does: ``self.log`` costs far more per step.
        ``_batches_that_stepped`` is the step the Trainer logs this step's losses at, and the condition is
        the Trainer's own ``should_update_logs`` for the fit loop, minus its lookups.
        """
        step = self.epoch_loop._batches_that_stepped if step is None else step
        if (force or (step + 1) % self.log_every == 0) and step != self.logged_step:
            self.logged_step = step
            for logger in self.loggers:
                logger.log_metrics({self.log_name: self.value}, step=step)
