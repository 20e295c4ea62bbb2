"""Tests for lightning_kl_anneal._fit: one fit's state and the values the per-step hook reads, without a Trainer."""

from __future__ import annotations

import pickle
import weakref
from typing import Any

import pytest

from lightning_kl_anneal import CyclicalSchedule, cyclical_beta
from lightning_kl_anneal._fit import Fit, Lookahead


@pytest.mark.parametrize(("total", "size"), [(600, 256), (7, 256), (None, 256), (50, 1)])
def test_lookahead_gives_the_schedules_value_at_every_step(total: int | None, size: int) -> None:
    schedule = CyclicalSchedule(n_cycle=3, ratio=0.6, shape="cosine", period=None if total else 40)
    values = Lookahead(schedule._value, total, size)
    steps = range(total + 20 if total else 700)  # past the end of T too
    assert [values.at(s) for s in steps] == [
        cyclical_beta(s, total, 3, 0.6, shape="cosine", period=None if total else 40) for s in steps
    ]


def test_lookahead_by_hand() -> None:
    # 600 steps, 3 cycles of 200, rising over 120: step 10 is tau = 10 * 3 / 600 = 0.05 of its cycle,
    # (1 - cos(pi * 0.05 / 0.6)) / 2 = 0.017037; step 130 is on the plateau; step 200 starts the second cycle.
    values = Lookahead(CyclicalSchedule(n_cycle=3, ratio=0.6, shape="cosine")._value, 600, 256)
    assert values.at(10) == pytest.approx(0.017037, abs=1e-6)
    assert (values.at(130), values.at(200), values.at(700)) == (1.0, 0.0, 1.0)


def test_lookahead_evaluates_ahead_only_up_to_t_and_a_user_function_on_its_own_step() -> None:
    calls: list[int] = []

    def value_at(step: int, total: Any) -> float:
        calls.append(step)
        return step / 10

    ahead = Lookahead(value_at, 10, 4)
    assert [ahead.at(s) for s in (0, 1, 5, 9, 11)] == [0.0, 0.1, 0.5, 0.9, 1.1]
    assert calls == [0, 1, 2, 3, 5, 6, 7, 8, 9, 11]  # 4 at a time, never past T (10) except the step asked
    calls.clear()
    one = Lookahead(value_at, 10, 1)
    assert [one.at(s) for s in (0, 0, 3)] == [0.0, 0.0, 0.3] and calls == [0, 3]


def test_keep_holds_a_value_already_evaluated() -> None:
    calls: list[int] = []
    values = Lookahead(lambda step, total: calls.append(step) or 0.5, None, 1)
    assert values.keep(0, [0.25]) == 0.25
    assert values.at(0) == 0.25 and calls == [] and values.at(1) == 0.5 and calls == [1]


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.rows.append((metrics, step))


def test_set_writes_the_value_of_its_step_and_log_follows_the_trainers_logging_steps() -> None:
    written: list[float] = []
    loop = type("Loop", (), {"_batches_that_stepped": 0})()
    logger = Recorder()
    fit = Fit(values=Lookahead(lambda step, total: step / 4, None, 1), write=written.append, loggers=[logger], log_name="beta", log_every=3,
              epoch_loop=loop)  # fmt: skip
    for step in range(7):
        loop._batches_that_stepped = step
        fit.set(step)
        fit.log(force=step == 4)
        fit.log()  # a second call on one step logs nothing more
    assert written == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5] and (fit.step, fit.value) == (6, 1.5)
    assert logger.rows == [({"beta": 0.5}, 2), ({"beta": 1.0}, 4), ({"beta": 1.25}, 5)]


class Holder:
    pass


def test_a_fit_pickles_as_its_t_only() -> None:
    trainer = Holder()
    fit = Fit(weakref.ref(trainer), estimate=40, continued=20, total=20, counter=Holder(), field="completed",
              values=lambda step: 0.0, loggers=[Recorder()], step=7, value=0.5)  # fmt: skip
    copy = pickle.loads(pickle.dumps(fit))
    assert copy.total == 20 and copy.trainer is None and copy.counter is None and copy.values is None
    assert copy.loggers == [] and copy.step == -1 and copy.estimate is None and copy.continued is None
