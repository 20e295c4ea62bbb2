"""Binding a schedule to a run: how long the run is, which ``T`` a fit uses, where its step counter lives.

The choices are pure functions of numbers (tested without a Trainer); the few functions that take a Trainer
only read those numbers from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import GradientAccumulationScheduler, Timer

from lightning_kl_anneal.exceptions import misconfiguration

__all__ = [
    "accumulated_steps",
    "choose_total",
    "max_time",
    "read_step",
    "run_length",
    "step_counter",
    "trainer_length",
    "unbounded_hint",
    "unbounded_reason",
]


def choose_total(
    given: int | None, saved: int | None, continued: int | None, estimate: int | None, unit: str = "step"
) -> tuple[int | None, str | None]:
    """The ``T`` a fit schedules over, and the warning the choice implies (None: nothing to say).

    In order: the ``T`` the user gave (``total_steps=``) wins, with a warning when it reschedules a
    resumed run; else the ``T`` saved in the checkpoint the fit resumes, else the ``T`` of the fit it
    continues on the same Trainer, both kept so the values continue exactly (with a warning when the
    Trainer would run another length); else the Trainer's estimate (None when unknown, 0 when no
    training step will run).

    Args:
        given: the callback's ``total_steps``, or None.
        saved: ``T`` in the checkpoint being resumed, or None (no checkpoint, or none saved).
        continued: ``T`` of the previous fit this one continues on the same Trainer, or None.
        estimate: the Trainer's length in ``unit``\\ s, or None.
        unit: ``"step"`` or ``"epoch"``, for the message.

    Example:
        >>> choose_total(None, None, None, 100)
        (100, None)
        >>> choose_total(None, 40, None, 60)
        (40, "the checkpoint's schedule spans 40 steps but this Trainer would run 60; keeping 40 so the values continue exactly. Pass `total_steps=60` to reschedule.")
        >>> choose_total(50, 40, None, 60)
        (50, 'resuming a run scheduled over 40 steps with `total_steps=50`; the values change from here on')
    """
    if given is not None:
        if saved is not None and saved != given:
            return given, (
                f"resuming a run scheduled over {saved} {unit}s with `total_steps={given}`; the values change from here on"
            )
        return given, None
    for kept, what in ((saved, "the checkpoint's schedule"), (continued, "the continued fit's schedule")):
        if kept is not None:
            if estimate and estimate != kept:
                return kept, (
                    f"{what} spans {kept} {unit}s but this Trainer would run {estimate}; keeping {kept} so the values "
                    f"continue exactly. Pass `total_steps={estimate}` to reschedule."
                )
            return kept, None
    return estimate, None


# ---------------------------------------------------------------------- the Trainer's length


def accumulated_steps(
    batches: float, max_epochs: int | None, max_steps: int, accumulation: Callable[[int], int]
) -> int | None:
    """Optimizer steps of a run whose accumulation changes by epoch; None when the epochs are not bounded.

    An epoch of ``batches`` batches accumulated by ``k`` takes ``ceil(batches / k)`` steps: its last,
    partial group of batches steps too. ``max_steps`` (-1: none) caps the sum.

    Args:
        batches: training batches per epoch (``trainer.num_training_batches``; inf for an iterable dataset).
        max_epochs: epochs of the run (None or negative: unbounded).
        max_steps: the Trainer's ``max_steps``, -1 for none.
        accumulation: batches accumulated in an epoch, by epoch index
            (``GradientAccumulationScheduler.get_accumulate_grad_batches``).

    Example:
        >>> accumulated_steps(10, 3, -1, lambda epoch: 1 if epoch == 0 else 3)  # 10 + ceil(10 / 3) * 2
        18
        >>> accumulated_steps(10, 3, 12, lambda epoch: 1 if epoch == 0 else 3)
        12
    """
    if not math.isfinite(batches) or max_epochs is None or max_epochs < 0:
        return None
    total = sum(math.ceil(batches / accumulation(epoch)) for epoch in range(max_epochs))
    return min(total, max_steps) if max_steps != -1 else total


def trainer_length(trainer: pl.Trainer, unit: str) -> float:
    """The Trainer's planned length in ``unit``\\ s: 0 when no training step will run; inf or negative when unknown.

    Steps are ``estimated_stepping_batches``, made exact under a ``GradientAccumulationScheduler``
    (which Lightning's estimate ignores); epochs are ``max_epochs``.
    """
    if trainer.limit_train_batches == 0:
        return 0  # a fit that only validates; Lightning's estimate reads -1 here
    if unit == "epoch":
        epochs = trainer.max_epochs
        return math.inf if epochs is None or epochs < 0 else epochs
    estimate = trainer.estimated_stepping_batches  # first: it sets up the data, so `num_training_batches` is known
    scheduler = next((c for c in trainer.callbacks if isinstance(c, GradientAccumulationScheduler)), None)  # type: ignore[attr-defined]
    module = trainer.lightning_module
    if scheduler is None or module is None or not module.automatic_optimization:
        return estimate
    exact = accumulated_steps(
        trainer.num_training_batches, trainer.max_epochs, trainer.max_steps, scheduler.get_accumulate_grad_batches
    )
    return estimate if exact is None else exact


def unbounded_reason(unit: str, estimate: float, max_epochs: int | None, max_steps: int, max_time: Any = None) -> str:
    """Why a run gives no length in ``unit``\\ s, in the words of the Trainer's arguments that made it so.

    Args:
        unit: ``"step"`` or ``"epoch"``.
        estimate: the Trainer's estimate that was not a length (inf, -1).
        max_epochs: the Trainer's ``max_epochs``.
        max_steps: the Trainer's ``max_steps``.
        max_time: the ``Timer``'s duration (``max_time``), or None.

    Example:
        >>> unbounded_reason("epoch", math.inf, -1, 10)
        '`max_epochs=-1` sets no number of epochs (`max_steps=10` counts steps, not epochs)'
    """
    if max_time is not None:
        return (
            f"the run is bounded only by `max_time` ({max_time} s), which gives no number of {unit}s to schedule over"
        )
    if unit == "epoch":
        why = f"`max_epochs={max_epochs}` sets no number of epochs"
        return why + (f" (`max_steps={max_steps}` counts steps, not epochs)" if max_steps != -1 else "")
    return f"the Trainer estimates {estimate} optimizer steps (`max_epochs=-1`, or an iterable dataset without `max_steps`)"


def unbounded_hint(unit: str) -> str:
    """How to give a cyclical schedule's unbounded run a length, or do without one.

    Example:
        >>> unbounded_hint("epoch")
        "pass `total_steps=` (in epochs) to the callback, or `period=` (units per cycle) to cycle without knowing the run's length, or set `max_epochs`"
    """
    period = ", or `period=` (units per cycle) to cycle without knowing the run's length,"
    if unit == "epoch":
        return f"pass `total_steps=` (in epochs) to the callback{period} or set `max_epochs`"
    return f"pass `total_steps=` to the callback{period} or bound the run with `max_steps` / `max_epochs`"


def run_length(trainer: pl.Trainer, unit: str, *, needed: bool, who: str) -> int | None:
    """The Trainer's length in ``unit``\\ s (0: no training step will run); None when unknown.

    Raises:
        MisconfigurationException: the length is unknown and ``needed``; the message says why (in the words
            of the Trainer's arguments) and how to fix it, on behalf of ``who``.
    """
    length = trainer_length(trainer, unit)
    if math.isfinite(length) and length >= 0:
        return int(length)
    if needed:
        why = unbounded_reason(unit, length, trainer.max_epochs, trainer.max_steps, max_time(trainer))
        raise misconfiguration(f"{who} needs the run's length, but {why}: {unbounded_hint(unit)}.")
    return None


def max_time(trainer: pl.Trainer) -> Any:
    """The Trainer's ``max_time`` (its ``Timer``'s duration), or None."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
    return None if timer is None else timer._duration


# ---------------------------------------------------------------------- the step counter


def step_counter(trainer: pl.Trainer, unit: str, pl_module: pl.LightningModule | None = None) -> tuple[Any, str]:
    """``(object, attribute)`` holding the run's count of ``unit``\\ s: read once per step, so resolved once per fit.

    Epochs: ``trainer.current_epoch``. Steps: ``trainer.global_step`` (optimizer steps); under manual
    optimization, where ``global_step`` counts every optimizer's steps, the training batches that stepped.
    """
    loop = trainer.fit_loop
    if unit == "epoch":
        return loop.epoch_progress.current, "completed"
    module = pl_module if pl_module is not None else trainer.lightning_module
    if module is None or module.automatic_optimization:
        return loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total, "completed"
    return loop.epoch_loop, "_batches_that_stepped"


def read_step(trainer: pl.Trainer, unit: str, pl_module: pl.LightningModule | None = None) -> int:
    """The run's count of ``unit``\\ s now (see :func:`step_counter`)."""
    obj, field = step_counter(trainer, unit, pl_module)
    return int(getattr(obj, field))
