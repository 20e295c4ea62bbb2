"""Tests for lightning_kl_anneal._run: the choice of T and the Trainer's length, tested without a Trainer."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace
from typing import Any

import pytest
from lightning.pytorch.callbacks import GradientAccumulationScheduler

from lightning_kl_anneal import MisconfigurationException
from lightning_kl_anneal._run import (
    accumulated_steps,
    choose_total,
    run_length,
    trainer_length,
    unbounded_hint,
    unbounded_reason,
)


@pytest.mark.parametrize(
    ("given", "saved", "continued", "estimate", "total", "warning"),
    [
        (None, None, None, 100, 100, None),  # a fresh fit: the Trainer's length
        (None, None, None, None, None, None),  # unknown (a period-based schedule needs none)
        (None, None, None, 0, 0, None),  # no training step will run
        (50, None, None, 100, 50, None),  # given wins over the Trainer
        (50, 50, None, 100, 50, None),  # resumed with the same T: nothing to say
        (50, 40, None, 100, 50, r"resuming a run scheduled over 40 epochs with `total_steps=50`; the values change"),
        (None, 40, None, 40, 40, None),  # resumed on a Trainer of the same length
        (None, 40, None, 60, 40, r"the checkpoint's schedule spans 40 epochs but this Trainer would run 60; keep"),
        (None, 40, 30, 60, 40, r"the checkpoint's schedule"),  # the checkpoint before the continued fit
        (None, None, 30, 60, 30, r"the continued fit's schedule spans 30 epochs .* `total_steps=60` to reschedule"),
        (None, None, 30, None, 30, None),  # continued, and the Trainer gives no length: nothing to compare
        (None, None, 30, 0, 30, None),
    ],
)
def test_choose_total(
    given: int | None,
    saved: int | None,
    continued: int | None,
    estimate: int | None,
    total: int | None,
    warning: str | None,
) -> None:
    chosen, message = choose_total(given, saved, continued, estimate, unit="epoch")
    assert chosen == total
    if warning is None:
        assert message is None
    else:
        assert message is not None and re.search(warning, message), message


# ---------------------------------------------------------------- the Trainer's length, read without a Trainer


@pytest.mark.parametrize(
    ("batches", "epochs", "max_steps", "schedule", "steps"),
    [
        # 10 batches by 3: 3 full steps and one of the last batch, ceil(10 / 3) = 4 (floor would give 3).
        (10, 3, -1, {0: 1, 1: 3}, 10 + 4 + 4),
        (12, 3, -1, {0: 1, 1: 3}, 12 + 4 + 4),  # a multiple: ceil and floor agree
        (7, 2, -1, {0: 2}, 4 + 4),
        (10, 3, 15, {0: 1, 1: 3}, 15),  # max_steps caps the sum
        (10, 0, -1, {0: 1}, 0),
    ],
)
def test_accumulated_steps_counts_a_partial_last_step(
    batches: int, epochs: int, max_steps: int, schedule: dict[int, int], steps: int
) -> None:
    def accumulation(epoch: int) -> int:
        return schedule[max(e for e in schedule if e <= epoch)]

    assert accumulated_steps(batches, epochs, max_steps, accumulation) == steps


@pytest.mark.parametrize(("batches", "epochs"), [(math.inf, 3), (10, None), (10, -1)])
def test_accumulated_steps_of_an_unbounded_run_is_none(batches: float, epochs: int | None) -> None:
    assert accumulated_steps(batches, epochs, -1, lambda epoch: 2) is None


def fake_trainer(**kwargs: Any) -> Any:
    """The attributes `trainer_length` reads, as a Trainer on CPU would give them after setting up its data."""
    module = SimpleNamespace(automatic_optimization=kwargs.pop("automatic", True))
    defaults: dict[str, Any] = dict(
        limit_train_batches=1.0, max_epochs=3, max_steps=-1, num_training_batches=10, estimated_stepping_batches=30,
        callbacks=[], lightning_module=module,
    )  # fmt: skip
    return SimpleNamespace(**{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("trainer_kwargs", "unit", "length"),
    [
        (dict(), "step", 30),
        (dict(limit_train_batches=0), "step", 0),  # Lightning's estimate reads -1 there
        (dict(limit_train_batches=0), "epoch", 0),
        (dict(), "epoch", 3),
        (dict(max_epochs=-1), "epoch", math.inf),
        (dict(max_epochs=None), "epoch", math.inf),
        (dict(estimated_stepping_batches=math.inf), "step", math.inf),
        (dict(callbacks=[GradientAccumulationScheduler({0: 1, 1: 3})]), "step", 18),  # not Lightning's 30
        (dict(callbacks=[GradientAccumulationScheduler({1: 3})], automatic=False), "step", 30),  # manual: batches
        (dict(callbacks=[GradientAccumulationScheduler({1: 3})], num_training_batches=math.inf), "step", 30),
    ],
)
def test_trainer_length(trainer_kwargs: dict, unit: str, length: float) -> None:
    assert trainer_length(fake_trainer(**trainer_kwargs), unit) == length


def test_run_length_is_an_int_none_or_an_error_that_says_why() -> None:
    assert run_length(fake_trainer(), "step", needed=True, who="X") == 30
    assert type(run_length(fake_trainer(), "step", needed=True, who="X")) is int
    assert run_length(fake_trainer(max_epochs=-1), "epoch", needed=False, who="X") is None
    with pytest.raises(
        MisconfigurationException,
        match=r"^X needs the run's length, but `max_epochs=-1` sets no number of epochs: pass `total_steps=` \(in epochs\)",
    ):
        run_length(fake_trainer(max_epochs=-1), "epoch", needed=True, who="X")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ("step", math.inf, -1, -1, 60.0),
            "the run is bounded only by `max_time` (60.0 s), which gives no number of steps",
        ),
        (("epoch", math.inf, -1, -1), "`max_epochs=-1` sets no number of epochs"),
        (
            ("epoch", math.inf, -1, 10),
            "`max_epochs=-1` sets no number of epochs (`max_steps=10` counts steps, not epochs)",
        ),
        (
            ("step", math.inf, -1, -1),
            "the Trainer estimates inf optimizer steps (`max_epochs=-1`, or an iterable dataset",
        ),
    ],
)
def test_unbounded_reason_names_the_arguments(args: tuple, reason: str) -> None:
    assert unbounded_reason(*args).startswith(reason)


def test_unbounded_hint_names_the_callbacks_arguments_in_the_unit() -> None:
    assert unbounded_hint("step").startswith("pass `total_steps=` to the callback, or `period=` (units per cycle)")
    assert unbounded_hint("step").endswith("or bound the run with `max_steps` / `max_epochs`")
    assert unbounded_hint("epoch").startswith("pass `total_steps=` (in epochs)")
    assert unbounded_hint("epoch").endswith("or set `max_epochs`")
