"""Tests for lightning_kl_anneal._advice: the words of the scheduling callbacks' warnings, without a Trainer."""

from __future__ import annotations

import functools

import pytest

from lightning_kl_anneal import ConstantSchedule, CyclicalSchedule, join_schedules
from lightning_kl_anneal._advice import (
    changed_config,
    describe_schedule,
    manual_max_steps,
    off_plateau,
    too_short,
    unfinished,
)


@pytest.mark.parametrize(
    ("schedule", "given", "total", "expected"),
    [
        (CyclicalSchedule(n_cycle=2), None, 10, None),
        (CyclicalSchedule(n_cycle=2, delay=4), None, 8, None),  # 4 steps left for 2 cycles of 2
        (None, None, 1, None),  # a user's function: nothing to judge
        (CyclicalSchedule(n_cycle=50, period=2), None, 3, None),  # `period` sets the cycles, not T
        (
            CyclicalSchedule(n_cycle=1, delay=10),
            None,
            10,
            (
                True,
                (
                    "`delay`=10 must be smaller than the run's 10 steps: no cycle would run. Use a shorter delay or a "
                    "longer run."
                ),
            ),
        ),
        (CyclicalSchedule(n_cycle=1, delay=10), 10, 10, (True, "`delay`=10 must be smaller than `total_steps`=10: no")),
        (
            CyclicalSchedule(n_cycle=3, delay=3),
            None,
            6,
            (
                False,
                (
                    "`n_cycle`=3 cycles need more than 3 steps, but the schedule has 3 (the run's 6 steps minus "
                    "`delay`=3); every cycle would be one step long and β would never leave `start`. Use fewer cycles or a "
                    "longer run."
                ),
            ),
        ),
        (
            CyclicalSchedule(n_cycle=4),
            4,
            4,
            (False, "`n_cycle`=4 cycles need more than 4 steps, but the schedule has 4 (`total_steps`=4); every"),
        ),
        (CyclicalSchedule(n_cycle=3), None, 3, (False, "`n_cycle`=3 cycles need more than 3 steps")),  # boundary
        (CyclicalSchedule(n_cycle=3), None, 4, None),
    ],
)
def test_too_short(schedule: CyclicalSchedule | None, given: int | None, total: int, expected: tuple | None) -> None:
    problem = too_short(schedule, given, "step", total)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem[0] == expected[0] and problem[1].startswith(expected[1]), problem
        if not problem[0]:  # too many cycles: the fix names what the user set
            assert problem[1].endswith("or a longer run." if given is None else "or a larger `total_steps`.")


def test_too_short_in_epochs_says_epochs() -> None:
    problem = too_short(CyclicalSchedule(n_cycle=4), None, "epoch", 3)
    assert problem is not None and "more than 4 epochs, but the schedule has 3 (the run's 3 epochs)" in problem[1]
    assert " steps" not in problem[1]


@pytest.mark.parametrize(
    ("schedule", "given", "value", "expected"),
    [
        (
            CyclicalSchedule(n_cycle=2),
            None,
            0.72,
            (
                "the fit ended after 10 of the schedule's 50 steps (the Trainer's planned length); `beta` last held 0.72, "
                "not its final value 1. A model whose β never reached `stop` was not trained on the ELBO: for a run that "
                "may stop early, pass `period=` (units per cycle) instead of relying on its planned length."
            ),
        ),
        (
            CyclicalSchedule(n_cycle=4),
            50,
            1.0,
            (
                "the fit ended after 10 of the schedule's 50 steps (`total_steps`); `beta` last held 1, its final value, "
                "but the rest of the schedule did not run."
            ),
        ),
        (
            CyclicalSchedule(n_cycle=4, period=6, delay=2, stop=0.5),
            None,
            0.25,
            (
                "the fit ended after 10 of the schedule's 50 steps (`delay`=2 + `n_cycle`=4 × `period`=6); `beta` last "
                "held 0.25, not its final value 0.5. A model whose β never reached `stop` was not trained on the ELBO: "
                "pass a smaller `n_cycle`, or `n_cycle=None` to cycle for as long as the run lasts."
            ),
        ),
        (
            CyclicalSchedule(n_cycle=2, start=1.0, stop=0.1),  # decreasing: a value above `stop` is not the final one
            None,
            0.55,
            (
                "the fit ended after 10 of the schedule's 50 steps (the Trainer's planned length); `beta` last held 0.55, "
                "not its final value 0.1. A model whose β never reached `stop` was not trained on the ELBO"
            ),
        ),
        (
            None,
            None,
            0.6,
            (
                "the fit ended after 10 of the schedule's 50 steps (the Trainer's planned length); `beta` last held 0.6; "
                "the rest of the schedule did not run. For a run that may stop early, pass `total_steps=`"
            ),
        ),
        (
            None,
            50,
            0.6,
            (
                "the fit ended after 10 of the schedule's 50 steps (`total_steps`); `beta` last held 0.6; the "
                "rest of the schedule did not run. If the run was meant to be shorter, pass `total_steps=` to match it."
            ),
        ),
    ],
)
def test_unfinished(schedule: CyclicalSchedule | None, given: int | None, value: float, expected: str) -> None:
    assert unfinished(schedule, given, "step", "beta", 10, 50, value).startswith(expected)


@pytest.mark.parametrize(
    ("schedule", "given", "run", "total", "expected"),
    [
        (
            CyclicalSchedule(n_cycle=None, period=100),
            None,
            30,
            None,
            (
                "this run's last step (29, of 30) is in the schedule's ramp phase, at β = 0.58 instead of `stop`=1, so "
                "training ends off the plateau. With `period`=100 the first plateau starts at step 50: use a shorter "
                "`period` (the last cycle's ramp must end before step 30), or a longer run."
            ),
        ),
        (
            CyclicalSchedule(n_cycle=None, period=100, delay=20),
            None,
            50,
            None,
            # step 49 is 29 steps into the first cycle: u = 0.29 / 0.5; its plateau starts at 20 + ceil(0.5 * 100)
            (
                "this run's last step (49, of 50) is in the schedule's ramp phase, at β = 0.58 instead of `stop`=1, so "
                "training ends off the plateau. With `period`=100 the first plateau starts at step 70: use a shorter "
                "`period` (the last cycle's ramp must end before step 50), or a longer run."
            ),
        ),
        (
            CyclicalSchedule(n_cycle=4),
            None,
            10,
            10,
            # cycles of ceil(10 / 4) = 3 and a last one of 1 step; the divisors of 10 nearest 4: 5, then 2
            (
                "this run's last step (9, of 10) is in the schedule's ramp phase, at β = 0 instead of `stop`=1, so training "
                "ends off the plateau. `n_cycle`=4 cuts the 10 steps into cycles of 3 and a shorter last one that ends on "
                "its ramp: use an `n_cycle` that divides 10 (e.g. 5 or 2), or a run length that 4 divides."
            ),
        ),
        (
            CyclicalSchedule(n_cycle=1, delay=4),
            20,
            10,
            20,
            (
                "this run's last step (9, of 10) is in the schedule's ramp phase, at β = 0.625 instead of `stop`=1, so "
                "training ends off the plateau. `total_steps`=20 is longer than the run: pass `total_steps=10`, or run longer."
            ),
        ),
        (
            None,
            None,
            10,
            10,
            (
                "this run's last step (9, of 10) is in the schedule's delay phase, so training ends off the plateau. Fit the "
                "schedule to the run's 10 steps (`total_steps=`), or run longer."
            ),
        ),
    ],
)
def test_off_plateau(
    schedule: CyclicalSchedule | None, given: int | None, run: int, total: int | None, expected: str
) -> None:
    phase = "delay" if schedule is None else schedule.phase(run - 1, total)
    assert off_plateau(schedule, given, "step", run, total, phase) == expected


def test_changed_config_names_what_changed_only() -> None:
    now = {"n_cycle": 4, "ratio": 0.25, "unit": "step"}
    assert changed_config({"n_cycle": 4, "ratio": 0.25, "unit": "step"}, now) is None
    assert changed_config(None, now) is None and changed_config("garbage", now) is None  # no config saved (0.1)
    assert changed_config({"n_cycle": 3, "ratio": 0.25, "unit": "epoch"}, now) == (
        "the checkpoint was trained with another schedule (n_cycle: 3 -> 4; unit: 'epoch' -> 'step'); the values "
        "change from the resumed step on"
    )


def test_manual_max_steps() -> None:
    assert manual_max_steps(16).startswith(
        "under manual optimization the schedule counts training batches, but the run is bounded by `max_steps=16`"
    )


class _Ramp:
    def __call__(self, step: int, total: int | None) -> float:
        return 0.0


def _ramp(step: int, total: int | None, *, top: float = 1.0) -> float:
    return top


def test_describe_schedule_stays_the_same_across_processes() -> None:
    # no memory address: a checkpoint's description must compare equal when the same schedule is rebuilt
    assert describe_schedule(_ramp) == "test_advice._ramp"
    assert describe_schedule(functools.partial(_ramp, top=0.5)) == "functools.partial(test_advice._ramp, top=0.5)"
    assert describe_schedule(_Ramp()) == "test_advice._Ramp"  # its repr holds an address: the type instead
    assert describe_schedule(ConstantSchedule(2.0)) == "ConstantSchedule(value=2.0, phase_name='final')"
    joined = join_schedules([_ramp, ConstantSchedule(1.0)], [3])
    assert describe_schedule(joined) == (
        "JoinedSchedule(schedules=(test_advice._ramp, ConstantSchedule(value=1.0, phase_name='final')), "
        "boundaries=(3,))"
    )
    assert (
        describe_schedule(join_schedules([_ramp], []))
        == "JoinedSchedule(schedules=(test_advice._ramp,), boundaries=())"
    )
