"""Tests for lightning_kl_anneal._run: the choice of T, a pure function tested without a Trainer."""

from __future__ import annotations

import re

import pytest

from lightning_kl_anneal._run import choose_total


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
