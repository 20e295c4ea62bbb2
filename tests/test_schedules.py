"""Tests for lightning_kl_anneal.schedules: exact values, reference compatibility, properties, bad input."""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
import reference_frange
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_kl_anneal import (
    ConstantSchedule,
    CyclicalSchedule,
    JoinedSchedule,
    cycle_length,
    cycle_position,
    cyclical_beta,
    cyclical_phase,
    cyclical_schedule,
    frange_cycle_cosine,
    frange_cycle_linear,
    frange_cycle_sigmoid,
    join_schedules,
)

# ---------------------------------------------------------------- exact values (PAPER.md's worked examples)


@pytest.mark.parametrize(
    ("shape", "cycle"),
    [
        ("linear", [0.0, 0.4, 0.8, 1.0, 1.0]),
        ("cosine", [0.0, 0.3455, 0.9045, 1.0, 1.0]),
        ("sigmoid", [0.00247, 0.2315, 0.9734, 1.0, 1.0]),
    ],
)
def test_worked_values(shape: str, cycle: list[float]) -> None:
    values = [cyclical_beta(t, 20, n_cycle=4, ratio=0.5, shape=shape) for t in range(20)]
    np.testing.assert_allclose(values, cycle * 4, atol=5e-5)
    np.testing.assert_allclose(cyclical_schedule(20, 4, 0.5, shape=shape), cycle * 4, atol=5e-5)


def test_points_that_matter() -> None:
    total, m = 10_000, 4
    assert cyclical_beta(0, total, m) == 0.0  # step 0
    assert cyclical_beta(1249, total, m) == pytest.approx(1249 / 1250)  # last step of the ramp
    assert cyclical_beta(1250, total, m) == 1.0  # plateau, exactly stop
    assert cyclical_beta(2499, total, m) == 1.0  # last step of a cycle
    assert cyclical_beta(2500, total, m) == 0.0  # cycle boundary: restart
    assert cyclical_beta(9999, total, m) == 1.0  # last step
    assert cyclical_beta(10_000, total, m) == 1.0  # past the end
    assert cyclical_beta(10**12, total, m, start=0.1, stop=0.7) == 0.7


def test_range_start_stop_and_decreasing() -> None:
    assert cyclical_beta(0, 100, 1, 0.5, start=0.1) == 0.1
    assert cyclical_beta(25, 100, 1, 0.5, start=0.1) == pytest.approx(0.55)
    assert cyclical_beta(60, 100, 1, 0.5, start=0.1, stop=0.5) == 0.5
    # start > stop gives a decaying schedule
    assert cyclical_beta(25, 100, 1, 0.5, start=1.0, stop=0.0) == pytest.approx(0.5)


def test_ratio_zero_holds_start_then_rises() -> None:
    # T=100, M=1: hold 0.2 for tau < 0.25, rise until 0.5, plateau.
    kwargs = dict(n_cycle=1, ratio=0.5, start=0.2, stop=1.0, ratio_zero=0.25)
    assert [cyclical_beta(t, 100, **kwargs) for t in (0, 24)] == [0.2, 0.2]
    assert cyclical_beta(25, 100, **kwargs) == pytest.approx(0.2)
    assert cyclical_beta(35, 100, **kwargs) == pytest.approx(0.2 + 0.8 * 0.4)
    assert cyclical_beta(50, 100, **kwargs) == 1.0
    np.testing.assert_array_equal(
        cyclical_schedule(100, **kwargs), [cyclical_beta(t, 100, **kwargs) for t in range(100)]
    )


def test_monotonic_is_one_cycle() -> None:
    np.testing.assert_array_equal(cyclical_schedule(1000, n_cycle=1, ratio=0.5)[:500], np.arange(500) / 500)
    assert np.all(cyclical_schedule(1000, n_cycle=1, ratio=0.5)[500:] == 1.0)


def test_cycle_helpers() -> None:
    assert cycle_length(10_000, 4) == 2500
    assert cycle_length(10, 4) == 3
    assert cycle_position(2500, 10_000, 4) == 0.0
    assert cycle_position(2499, 10_000, 4) == pytest.approx(0.9996)
    assert cycle_position(10_000, 10_000, 4) == 1.0


# ---------------------------------------------------------------- the reference code's faults, fixed


def test_ramp_ends_exactly_at_stop_without_accumulation() -> None:
    # The reference accumulates `v += step`; the equation is evaluated in closed form at each step.
    sched = frange_cycle_linear(30_000, start=0.0, stop=1.0, n_cycle=3, ratio=0.7)
    period = 10_000
    ramp_end = int(np.ceil(0.7 * period))
    assert np.all(sched[ramp_end:period] == 1.0)
    assert sched[ramp_end - 1] < 1.0
    np.testing.assert_array_equal(sched[:ramp_end], np.arange(ramp_end) * 3 / 30_000 / 0.7)


def test_uneven_cycles_stay_aligned() -> None:
    # Reference: [0, .8, 0, .8, 1, 0, .8, 0, .8, 1]; the equation restarts every ceil(10/4)=3 steps.
    np.testing.assert_allclose(
        frange_cycle_linear(10, n_cycle=4, ratio=0.5), [0, 0.8, 1, 0, 0.8, 1, 0, 0.8, 1, 0], atol=1e-12
    )


@pytest.mark.parametrize("fn", [frange_cycle_linear, frange_cycle_sigmoid, frange_cycle_cosine])
def test_ratio_one_never_raises_and_reaches_stop_at_the_end(fn) -> None:
    sched = fn(100, n_cycle=4, ratio=1.0)
    assert sched.shape == (100,)
    assert np.all(np.isfinite(sched))
    period = sched.reshape(4, 25)
    assert np.all(np.diff(period, axis=1) > 0)  # rises through the whole cycle
    assert cyclical_beta(100, 100, n_cycle=4, ratio=1.0) == 1.0


@pytest.mark.parametrize("fn", [frange_cycle_sigmoid, frange_cycle_cosine])
def test_plateau_follows_stop(fn) -> None:
    sched = fn(40, start=0.0, stop=0.5)
    assert sched.max() == 0.5
    assert sched[9] == 0.5


# ---------------------------------------------------------------- drop-in compatibility


CASES = [
    (n_iter, n_cycle, ratio)
    for n_iter in (20, 40, 100, 1000, 4096)
    for n_cycle in (1, 2, 4)
    for ratio in (0.3, 0.5, 2 / 3, 0.8)
]


@pytest.mark.parametrize(("n_iter", "n_cycle", "ratio"), CASES)
def test_linear_matches_reference_where_well_defined(n_iter: int, n_cycle: int, ratio: float) -> None:
    for start, stop in ((0.0, 1.0), (0.1, 1.0), (0.0, 0.5)):
        np.testing.assert_allclose(
            frange_cycle_linear(n_iter, start, stop, n_cycle, ratio),
            reference_frange.reference_frange(n_iter, start, stop, n_cycle, ratio, "linear"),
            rtol=0,
            atol=1e-9,
        )


@pytest.mark.parametrize(("n_iter", "n_cycle", "ratio"), CASES)
@pytest.mark.parametrize("shape", ["sigmoid", "cosine"])
def test_curves_match_reference_where_well_defined(n_iter: int, n_cycle: int, ratio: float, shape: str) -> None:
    fn = frange_cycle_sigmoid if shape == "sigmoid" else frange_cycle_cosine
    ours = fn(n_iter, 0.0, 1.0, n_cycle, ratio)
    ref = reference_frange.reference_frange(n_iter, 0.0, 1.0, n_cycle, ratio, shape)
    diff = np.abs(ours - ref) > 1e-9
    # The only documented difference: where tau == ratio exactly, the reference writes the sigmoid's
    # f(1) = 0.99753 while the equation is already on its plateau.
    tau = np.array([cycle_position(t, n_iter, n_cycle) for t in range(n_iter)])
    if shape == "cosine":
        assert not diff.any()
    else:
        assert np.all(np.isclose(tau[diff], ratio, atol=1e-9))
        np.testing.assert_allclose(ref[diff], 1 / (1 + math.exp(-6.0)), atol=1e-9)
        assert np.all(ours[diff] == 1.0)


@pytest.mark.parametrize(("n_cycle", "where"), [(1, [10]), (2, [5, 15])])
def test_the_sigmoid_differs_from_the_reference_exactly_where_tau_equals_ratio(n_cycle: int, where: list[int]) -> None:
    # The check above passes vacuously where no step has tau == ratio (25 of its 60 cases): pin the mask here.
    # 20 steps, ratio 0.5: tau = (t % (20 / M)) * M / 20 reaches 0.5 at t = 10 (M = 1), at t = 5 and 15 (M = 2).
    ours = frange_cycle_sigmoid(20, 0.0, 1.0, n_cycle, 0.5)
    ref = reference_frange.reference_frange(20, 0.0, 1.0, n_cycle, 0.5, "sigmoid")
    assert np.flatnonzero(np.abs(ours - ref) > 1e-9).tolist() == where
    assert ref[where].tolist() == pytest.approx([0.9975274] * len(where), abs=1e-7)  # f(1) = 1 / (1 + e^-6)
    assert ours[where].tolist() == [1.0] * len(where)  # the equation's plateau


# ---------------------------------------------------------------- scalar and vector agree


@pytest.mark.parametrize("shape", ["linear", "sigmoid", "cosine", "log"])
@pytest.mark.parametrize(
    ("total", "n_cycle", "ratio", "ratio_zero"),
    [(2, 1, 0.5, 0.0), (7, 3, 0.9, 0.1), (1000, 4, 0.5, 0.0), (997, 5, 1.0, 0.25)],
)
def test_schedule_equals_beta(shape: str, total: int, n_cycle: int, ratio: float, ratio_zero: float) -> None:
    kwargs = dict(n_cycle=n_cycle, ratio=ratio, start=0.1, stop=0.9, shape=shape, ratio_zero=ratio_zero)
    sched = cyclical_schedule(total, **kwargs)
    scalar = np.array([cyclical_beta(t, total, **kwargs) for t in range(total)])
    assert sched.shape == (total,) and sched.dtype == np.float64
    if shape == "linear":
        np.testing.assert_array_equal(sched, scalar)
    else:
        np.testing.assert_allclose(sched, scalar, rtol=1e-15, atol=1e-15)


# ---------------------------------------------------------------- properties


configs = st.fixed_dictionaries(
    {
        "total_steps": st.integers(13, 5000),  # more steps than cycles
        "n_cycle": st.integers(1, 12),
        "ratio": st.floats(0.01, 1.0),
        "start": st.floats(-10, 10),
        "stop": st.floats(-10, 10),
        "shape": st.sampled_from(["linear", "sigmoid", "cosine"]),
        "zero_frac": st.floats(0.0, 0.99),
    }
)


def _kwargs(cfg: dict) -> dict:
    cfg = dict(cfg)
    cfg["ratio_zero"] = cfg.pop("zero_frac") * cfg["ratio"]
    return cfg


@settings(max_examples=150, deadline=None)
@given(configs)
def test_bounded_and_finite(cfg: dict) -> None:
    kw = _kwargs(cfg)
    sched = cyclical_schedule(**kw)
    lo, hi = min(kw["start"], kw["stop"]), max(kw["start"], kw["stop"])
    assert np.all(np.isfinite(sched))
    assert np.all((sched >= lo - 1e-12) & (sched <= hi + 1e-12))


@settings(max_examples=150, deadline=None)
@given(configs)
def test_non_decreasing_within_each_cycle_when_rising(cfg: dict) -> None:
    kw = _kwargs(cfg)
    if kw["start"] > kw["stop"]:
        kw["start"], kw["stop"] = kw["stop"], kw["start"]
    sched = cyclical_schedule(**kw)
    period = cycle_length(kw["total_steps"], kw["n_cycle"])
    for c in range(0, kw["total_steps"], period):
        assert np.all(np.diff(sched[c : c + period]) >= -1e-12)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_periodic(cfg: dict) -> None:
    kw = _kwargs(cfg)
    total = kw.pop("total_steps")
    period = cycle_length(total, kw["n_cycle"])
    for t in range(0, total - period, max(1, (total - period) // 50)):
        assert cyclical_beta(t, total, **kw) == cyclical_beta(t + period, total, **kw)
    assert cyclical_beta(total + 3, total, **kw) == kw["stop"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_cycle": 0}, ValueError, r"`n_cycle` must be an int >= 1, got 0"),
        ({"n_cycle": -2}, ValueError, r"`n_cycle` must be an int >= 1, got -2"),
        ({"n_cycle": 2.5}, TypeError, r"`n_cycle` must be an int >= 1, got 2.5 of type float"),
        ({"n_cycle": True}, TypeError, r"`n_cycle`.*got True"),
        ({"ratio": 0.0}, ValueError, r"`ratio` must be in \(0, 1\], got 0.0"),
        ({"ratio": 1.5}, ValueError, r"`ratio` must be in \(0, 1\], got 1.5"),
        ({"ratio": float("nan")}, ValueError, r"`ratio` must be in \(0, 1\], got nan"),
        ({"ratio": "0.5"}, TypeError, r"`ratio` must be a real number, got '0.5'"),
        ({"start": float("inf")}, ValueError, r"`start` must be a finite real number, got inf"),
        ({"stop": float("nan")}, ValueError, r"`stop` must be a finite real number, got nan"),
        (
            {"shape": "cubic"},
            ValueError,
            r"`shape` must be one of \('linear', 'sigmoid', 'cosine', 'log'\), got 'cubic'",
        ),
        ({"ratio_zero": 0.5}, ValueError, r"`ratio_zero` must be in \[0, ratio\) = \[0, 0.5\), got 0.5"),
        ({"ratio_zero": -0.1}, ValueError, r"`ratio_zero` must be in \[0, ratio\)"),
        ({"total_steps": 0}, ValueError, r"`total_steps` must be an int >= 1, got 0"),
        ({"total_steps": 10.0}, TypeError, r"`total_steps` must be an int >= 1, got 10.0"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    call = {"step": 0, "total_steps": 100, **kwargs}
    with pytest.raises(exc, match=match):
        cyclical_beta(**call)
    call.pop("step")
    with pytest.raises(exc, match=match):
        cyclical_schedule(**call)


@pytest.mark.parametrize(("step", "exc"), [(-1, ValueError), (1.0, TypeError), (None, TypeError)])
def test_bad_step(step: object, exc: type) -> None:
    with pytest.raises(exc, match=r"`step` must be an int >= 0"):
        cyclical_beta(step, 100)  # type: ignore[arg-type]


def test_numpy_integers_accepted() -> None:
    beta = cyclical_beta(np.int64(3), np.int64(20), n_cycle=np.int32(4), ratio=np.float32(0.5))
    assert beta == 1.0 and type(beta) is float
    assert type(cyclical_beta(1, 20, start=np.float64(0.0))) is float


# ---------------------------------------------------------------- delay, period, phases


def test_delay_holds_start_then_fits_the_cycles_in_the_rest() -> None:
    total, delay = 100, 20
    betas = [cyclical_beta(t, total, n_cycle=4, ratio=0.5, start=0.1, delay=delay) for t in range(total + 5)]
    assert betas[:delay] == [0.1] * delay
    assert betas[delay:total] == [
        cyclical_beta(t, total - delay, n_cycle=4, ratio=0.5, start=0.1) for t in range(total - delay)
    ]
    assert betas[total:] == [1.0] * 5
    assert cycle_length(100, 4, delay=20) == 20


def test_period_repeats_then_stops() -> None:
    betas = [cyclical_beta(t, n_cycle=3, period=10, ratio=0.5, delay=4) for t in range(60)]
    assert betas[:4] == [0.0] * 4
    assert betas[4:14] == [cyclical_beta(t, 40, n_cycle=4) for t in range(10)]  # one cycle of 10 steps
    assert betas[4:14] == betas[14:24] == betas[24:34]
    assert betas[34:] == [1.0] * 26  # three cycles, then stop for good
    endless = [cyclical_beta(t, n_cycle=None, period=10) for t in range(1000)]
    assert endless[990:] == endless[:10]


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(total_steps=97, n_cycle=4, delay=13),
        dict(total_steps=50, n_cycle=2, period=7, delay=3),
        dict(total_steps=50, n_cycle=None, period=6),
        dict(total_steps=5, n_cycle=1, period=9, delay=8),
    ],
)
def test_schedule_equals_beta_with_delay_and_period(shape: str, kwargs: dict) -> None:
    kwargs = dict(kwargs, ratio=0.6, ratio_zero=0.1, start=0.2, stop=0.9, shape=shape)
    n = kwargs.pop("total_steps")
    sched = cyclical_schedule(n, **kwargs)
    total = None if kwargs.get("period") else n
    scalar = np.array([cyclical_beta(t, total, **kwargs) for t in range(n)])
    np.testing.assert_allclose(sched, scalar, rtol=1e-15, atol=1e-15)


def _phases_from_the_betas(
    total_steps: int | None, n_cycle: int | None, ratio: float, delay: int, period: int | None
) -> list[str]:
    """The phases read off the β sequence (start 0, stop 1): a step at 1 is on a plateau, which is
    final when β never drops below 1 again; a step below 1 after the delay is on a ramp, except, with
    ``ratio=1.0`` (no step at 1 inside a cycle), the step that closes a ramp: one more ramp step would
    reach 1."""
    horizon = 200
    betas = [cyclical_beta(t, total_steps, n_cycle, ratio, delay=delay, period=period) for t in range(horizon)]
    phases = []
    for t, beta in enumerate(betas):
        closes = ratio == 1.0 and t > delay and betas[t - 1] < beta and 2 * beta - betas[t - 1] >= 1.0 - 1e-12
        if t < delay:
            phases.append("delay")
        elif beta < 1.0 and not closes:
            phases.append("ramp")
        else:
            phases.append("plateau" if any(b < 1.0 for b in betas[t + 1 :]) else "final")
    return phases[:40]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(total_steps=20, n_cycle=4, ratio=0.5, delay=0, period=None),
        dict(total_steps=23, n_cycle=3, ratio=0.7, delay=5, period=None),
        dict(total_steps=10, n_cycle=4, ratio=0.5, delay=0, period=None),  # uneven: the last cycle is one step
        dict(total_steps=9, n_cycle=4, ratio=0.5, delay=0, period=None),  # uneven: cycles of 3 leave only 3 of 4
        dict(total_steps=None, n_cycle=2, ratio=0.5, delay=3, period=4),
        dict(total_steps=None, n_cycle=None, ratio=1.0, delay=0, period=5),
        dict(total_steps=12, n_cycle=3, ratio=1.0, delay=0, period=None),  # ramps to the end of each cycle
        dict(total_steps=10, n_cycle=4, ratio=1.0, delay=0, period=None),  # ... and a last cycle cut short
        dict(total_steps=13, n_cycle=3, ratio=1.0, delay=2, period=None),
        dict(total_steps=None, n_cycle=2, ratio=1.0, delay=1, period=4),
    ],
)
def test_phase_matches_its_definition(kwargs: dict) -> None:
    assert [cyclical_phase(t, **kwargs) for t in range(40)] == _phases_from_the_betas(**kwargs)


def test_phase_worked_example() -> None:
    assert [cyclical_phase(t, 8, n_cycle=2) for t in range(9)] == ["ramp"] * 2 + ["plateau"] * 2 + ["ramp"] * 2 + [
        "final"
    ] * 3
    assert (
        cyclical_phase(3, 10, n_cycle=1, ratio=1.0) == "ramp"
        and cyclical_phase(10, 10, n_cycle=1, ratio=1.0) == "final"
    )
    # ratio=1.0: the step that closes a ramp counts as the cycle's plateau (a warm-up to the end of the run)
    assert [cyclical_phase(t, 10, n_cycle=1, ratio=1.0) for t in (8, 9)] == ["ramp", "final"]
    assert [cyclical_phase(t, 8, n_cycle=2, ratio=1.0) for t in range(8)] == ["ramp"] * 3 + ["plateau"] + [
        "ramp"
    ] * 3 + ["final"]
    assert cyclical_phase(9, 10, n_cycle=4, ratio=1.0) == "ramp"  # the last cycle (one step) never closes


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: cyclical_beta(0, 10, delay=10), ValueError, r"`delay`=10 must be smaller than `total_steps`=10"),
        (
            lambda: cyclical_schedule(10, n_cycle=20),
            ValueError,
            r"`n_cycle`=20 cycles need more than 20 steps, but the schedule has 10",
        ),
        (
            lambda: cyclical_beta(0, 10, n_cycle=4, delay=6),
            ValueError,
            r"`n_cycle`=4 .* has 4 \(`total_steps`=10 minus `delay`=6\)",
        ),
        (
            lambda: cyclical_beta(0, 100, period=10),
            ValueError,
            r"`total_steps`=100 and `period`=10 both set the cycle length",
        ),
        (lambda: cyclical_beta(0), ValueError, r"`total_steps` is needed unless `period=`"),
        (lambda: cyclical_beta(0, 100, n_cycle=None), ValueError, r"`n_cycle=None` \(cycles forever\) needs `period=`"),
        (lambda: cyclical_beta(0, period=1), ValueError, r"`period` must be an int >= 2, got 1"),
        (lambda: cyclical_beta(0, period=2.0), TypeError, r"`period` must be an int >= 2, got 2.0"),
        (lambda: cyclical_beta(0, 10, delay=-1), ValueError, r"`delay` must be an int >= 0, got -1"),
        (lambda: cyclical_phase(0, 10, ratio=0), ValueError, r"`ratio` must be in \(0, 1\]"),
    ],
)
def test_bad_delay_and_period(call: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_positions_allow_as_many_cycles_as_steps() -> None:
    # e.g. a cosine learning-rate restart per cycle under fast_dev_run (T = 1)
    assert cycle_position(0, 1, 4) == 0.0 and cycle_length(1, 4) == 1
    with pytest.raises(ValueError, match=r"`n_cycle`=4 cycles need more than 4 steps"):
        cyclical_beta(0, 1, 4)


# ---------------------------------------------------------------- the schedule object


CONFIGS = [
    {"n_cycle": 4, "ratio": 0.5},
    {"n_cycle": 3, "ratio": 0.7, "start": 0.1, "stop": 0.9, "shape": "cosine", "ratio_zero": 0.2},
    {"n_cycle": 2, "ratio": 1.0, "shape": "sigmoid", "delay": 7},
    {"n_cycle": 3, "ratio": 0.5, "start": 1.0, "stop": 0.2},
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("total", [40, 37])
def test_schedule_object_equals_the_pure_functions(config: dict[str, Any], total: int) -> None:
    schedule = CyclicalSchedule(**config)
    phase_args = {k: v for k, v in config.items() if k in ("n_cycle", "ratio", "ratio_zero", "delay")}
    steps = range(total + 3)
    assert [schedule(t, total) for t in steps] == [cyclical_beta(t, total, **config) for t in steps]
    assert [schedule.phase(t, total) for t in steps] == [cyclical_phase(t, total, **phase_args) for t in steps]
    np.testing.assert_array_equal(schedule.values(total), cyclical_schedule(total, **config))
    assert schedule.length(total) == total


def test_schedule_object_with_period_ignores_total_steps() -> None:
    schedule = CyclicalSchedule(n_cycle=3, period=10, delay=5, start=0.2)
    assert [schedule(t) for t in range(50)] == [
        cyclical_beta(t, n_cycle=3, period=10, delay=5, start=0.2) for t in range(50)
    ]
    assert [schedule(t, 1000) for t in range(50)] == [schedule(t) for t in range(50)]  # the callback passes its T
    assert schedule.length() == 35 == 5 + 3 * 10
    assert CyclicalSchedule(n_cycle=None, period=4).length() is None  # endless
    assert [schedule.phase(t, 999) for t in (0, 6, 12, 40)] == ["delay", "ramp", "plateau", "final"]
    assert schedule.needs_total is False and CyclicalSchedule().needs_total is True


def test_schedule_object_hand_computed_values() -> None:
    # T = 10, M = 3: cycles of ceil(10 / 3) = 4 steps, tau = (t mod 4) * 3 / 10, ramp while tau < 0.5.
    schedule = CyclicalSchedule(n_cycle=3, ratio=0.5, start=0.2, stop=0.8)
    assert schedule(0, 10) == 0.2
    assert schedule(1, 10) == pytest.approx(0.2 + 0.6 * 0.3 / 0.5)  # 0.56
    assert schedule(2, 10) == 0.8  # tau = 0.6: plateau, exactly `stop`
    assert schedule(9, 10) == pytest.approx(0.56)  # the short last cycle (steps 8, 9) ends on its ramp
    assert schedule.phase(9, 10) == "ramp" and schedule.phase(10, 10) == "final" and schedule(10, 10) == 0.8


def test_schedule_object_without_total_steps() -> None:
    schedule = CyclicalSchedule()
    with pytest.raises(ValueError, match=r"`total_steps` is needed unless `period=`"):
        schedule(3)
    assert schedule.phase(3) is None  # unknown, as ScheduledAttribute reads it before T is known
    assert schedule.length() is None


def test_schedule_object_is_frozen_hashable_and_picklable() -> None:
    schedule = CyclicalSchedule(n_cycle=2, ratio=0.25, shape="cosine", delay=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.ratio = 0.5  # type: ignore[misc]
    clone = pickle.loads(pickle.dumps(schedule))
    assert clone == schedule and hash(clone) == hash(schedule)
    assert [clone(t, 30) for t in range(30)] == [schedule(t, 30) for t in range(30)]
    assert repr(schedule) == (
        "CyclicalSchedule(n_cycle=2, ratio=0.25, start=0.0, stop=1.0, shape='cosine', ratio_zero=0.0, period=None, delay=3)"
    )


def test_schedule_object_holds_plain_python_numbers() -> None:
    schedule = CyclicalSchedule(np.int64(2), np.float32(0.5), np.float64(0.1), stop=1, delay=np.int32(1))
    assert [type(v) for v in dataclasses.astuple(schedule)] == [int, float, float, float, str, float, type(None), int]
    assert type(schedule(2, 11)) is float


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_cycle": 2.5}, TypeError, r"`n_cycle` must be an int >= 1, got 2.5 of type float"),
        ({"n_cycle": 0}, ValueError, r"`n_cycle` must be an int >= 1, got 0"),
        ({"n_cycle": True}, TypeError, r"`n_cycle` must be an int >= 1, got True of type bool"),
        ({"ratio": 1.5}, ValueError, r"`ratio` must be in \(0, 1\], got 1.5"),
        ({"ratio": "0.5"}, TypeError, r"`ratio` must be a real number, got '0.5' of type str"),
        ({"start": math.inf}, ValueError, r"`start` must be a finite real number, got inf"),
        ({"shape": "cubic"}, ValueError, r"`shape` must be one of"),
        ({"period": 1}, ValueError, r"`period` must be an int >= 2, got 1"),
        ({"delay": -1}, ValueError, r"`delay` must be an int >= 0, got -1"),
        ({"n_cycle": None}, ValueError, r"`n_cycle=None` \(cycles forever\) needs `period=`"),
    ],
)
def test_schedule_object_bad_arguments(kwargs: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        CyclicalSchedule(**kwargs)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda s: s(-1, 10), ValueError, r"`step` must be an int >= 0, got -1"),
        (lambda s: s(1.0, 10), TypeError, r"`step` must be an int >= 0, got 1.0 of type float"),
        (lambda s: s(0, 4), ValueError, r"`n_cycle`=4 cycles need more than 4 steps"),
        (lambda s: s.phase(0, 0), ValueError, r"`total_steps` must be an int >= 1, got 0"),
        (lambda s: s.values(0), ValueError, r"`total_steps` must be an int >= 1, got 0"),
    ],
)
def test_schedule_object_bad_calls(call: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call(CyclicalSchedule())


# ---------------------------------------------------------------- behaviours pinned by hand (mutation probes)


def test_a_decreasing_schedule_plateaus_at_stop() -> None:
    # start > stop: the ramp falls from 1.0 to 0.2; the plateau and every step past T are `stop`, not max(start, stop).
    kwargs = {"n_cycle": 2, "ratio": 0.5, "start": 1.0, "stop": 0.2}
    assert [cyclical_beta(t, 8, **kwargs) for t in range(10)] == [1.0, 0.6, 0.2, 0.2, 1.0, 0.6, 0.2, 0.2, 0.2, 0.2]
    np.testing.assert_array_equal(cyclical_schedule(8, **kwargs), [1.0, 0.6, 0.2, 0.2, 1.0, 0.6, 0.2, 0.2])
    assert CyclicalSchedule(**kwargs)(3, 8) == 0.2


def test_phases_when_the_last_cycle_is_short() -> None:
    # T = 10, M = 3: cycles of 4, 4 and 2 steps; the last (tau 0, 0.3) never reaches its plateau, so the second
    # cycle's plateau is "plateau", not "final", and only steps past T are "final".
    assert [cyclical_phase(t, 10, 3) for t in range(11)] == (["ramp"] * 2 + ["plateau"] * 2) * 2 + ["ramp"] * 2 + [
        "final"
    ]
    # T = 11, M = 3: the last cycle (3 steps, tau 0, 3/11, 6/11) does reach its plateau: its step 10 is "final".
    assert [cyclical_phase(t, 11, 3) for t in range(8, 12)] == ["ramp", "ramp", "final", "final"]
    assert cyclical_phase(7, 11, 3) == "plateau"


def test_phases_when_uneven_cycles_leave_fewer_than_n_cycle() -> None:
    # T = 9, M = 4: cycles of ceil(9 / 4) = 3 steps start at 0, 3 and 6 only, so the third is the last and its
    # plateau is "final", not "plateau". tau = (t mod 3) * 4 / 9 = 0, 0.44 (ramp), 0.89 (plateau, >= 0.5).
    expected = ["ramp", "ramp", "plateau", "ramp", "ramp", "plateau", "ramp", "ramp", "final", "final"]
    assert [cyclical_phase(t, 9, n_cycle=4) for t in range(10)] == expected
    assert [CyclicalSchedule(n_cycle=4).phase(t, 9) for t in range(10)] == expected


def test_phase_refuses_a_delay_as_long_as_the_run() -> None:
    with pytest.raises(ValueError, match=r"^`delay`=5 must be smaller than `total_steps`=5$"):
        CyclicalSchedule(n_cycle=1, delay=5).phase(0, 5)
    # one step shorter: one cycle of one step, then the end
    assert [CyclicalSchedule(n_cycle=1, delay=4).phase(t, 5) for t in (3, 4, 5)] == ["delay", "ramp", "final"]


def test_cycle_position_during_and_after_a_delay() -> None:
    # delay 4, T = 20: 16 steps for 4 cycles of 4; tau = ((t - 4) mod 4) * 4 / 16.
    assert [cycle_position(t, 20, 4, delay=4) for t in range(10)] == [0.0] * 4 + [0.0, 0.25, 0.5, 0.75, 0.0, 0.25]
    assert cycle_position(20, 20, 4, delay=4) == 1.0
    assert cycle_length(20, 4, delay=4) == 4


# ---------------------------------------------------------------- the log-space ramp


def test_log_ramp_hand_computed_values() -> None:
    # One cycle of 4 steps, ramp over all of it: u = t / 4, β = 1e-4 · (1 / 1e-4)^u = 10^(4u - 4).
    kwargs = dict(n_cycle=1, ratio=1.0, start=1e-4, stop=1.0, shape="log")
    assert [cyclical_beta(t, 4, **kwargs) for t in range(6)] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1.0])
    assert cyclical_beta(4, 4, **kwargs) == 1.0  # the plateau is exactly `stop`
    np.testing.assert_allclose(cyclical_schedule(4, **kwargs), [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-15)
    assert CyclicalSchedule(**kwargs)(2, 4) == pytest.approx(1e-2)  # the geometric mean halfway up
    # Two cycles of 10 steps, ramp over 5, with a hold: ratio_zero 0.2 holds 2 steps, then u = (tau - 0.2) / 0.3.
    kw2 = dict(n_cycle=2, ratio=0.5, start=0.01, stop=0.64, shape="log", ratio_zero=0.2)
    assert [cyclical_beta(t, 20, **kw2) for t in range(6)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.01 * 64 ** (1 / 3), 0.01 * 64 ** (2 / 3), 0.64]  # 0.04, 0.16
    )
    assert cyclical_beta(10, 20, **kw2) == 0.01  # the next cycle starts over


def test_log_ramp_falls_too_and_keeps_the_phases() -> None:
    kwargs = dict(n_cycle=2, ratio=0.5, start=1.0, stop=1e-2, shape="log")
    assert [cyclical_beta(t, 8, **kwargs) for t in range(9)] == pytest.approx([1.0, 0.1, 0.01, 0.01] * 2 + [0.01])
    assert [cyclical_phase(t, 8, 2, 0.5) for t in range(4)] == ["ramp", "ramp", "plateau", "plateau"]


@settings(max_examples=100, deadline=None)
@given(
    st.integers(13, 3000),
    st.integers(1, 12),
    st.floats(0.01, 1.0),
    st.floats(1e-8, 10.0),
    st.floats(1e-8, 10.0),
)
def test_log_ramp_is_bounded_monotonic_and_geometric(
    total: int, n_cycle: int, ratio: float, a: float, b: float
) -> None:
    lo, hi = min(a, b), max(a, b)
    sched = cyclical_schedule(total, n_cycle, ratio, lo, hi, "log")
    assert np.all(np.isfinite(sched)) and np.all((sched >= lo * (1 - 1e-12)) & (sched <= hi * (1 + 1e-12)))
    period = cycle_length(total, n_cycle)
    for c in range(0, total, period):
        assert np.all(np.diff(sched[c : c + period]) >= -1e-12 * hi)
    # log β is linear in the ramp position: log β(t) = log lo + (log hi - log lo) · u, u = tau / ratio.
    tau = np.array([cycle_position(t, total, n_cycle) for t in range(total)])
    ramp = tau < ratio
    expected = np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * tau[ramp] / ratio)
    np.testing.assert_allclose(sched[ramp], expected, rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {},
            r"`shape`='log' ramps in log space.*got `start`=0.0; use a small positive value instead, e.g. `start`=1e-4",
        ),
        (
            {"start": -1e-3},
            r"`start` and `stop` must be > 0 \(the log of a non-positive value is undefined\), got `start`",
        ),
        ({"start": 1e-4, "stop": 0.0}, r"got `stop`=0.0; use a small positive value instead, e.g. `stop`=1e-4$"),
        ({"start": 1.0, "stop": -1.0}, r"got `stop`=-1.0"),
    ],
)
def test_log_ramp_refuses_non_positive_ends(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cyclical_beta(0, 100, shape="log", **kwargs)
    with pytest.raises(ValueError, match=match):
        cyclical_schedule(100, shape="log", **kwargs)
    with pytest.raises(ValueError, match=match):
        CyclicalSchedule(shape="log", **kwargs)  # at construction, before any step


# ---------------------------------------------------------------- schedules that compose


def linear_warmup(step: int, total_steps: int | None) -> float:  # module level: picklable
    return min(1.0, step / total_steps) if total_steps else 1.0


def test_join_each_part_sees_its_own_step_and_length() -> None:
    seen: list[tuple[int, int | None]] = []

    def spy(step: int, total: int | None) -> float:
        seen.append((step, total))
        return float(step)

    joined = join_schedules([spy, spy, spy], [3, 5])
    assert [joined(t, 9) for t in range(10)] == [0, 1, 2, 0, 1, 0, 1, 2, 3, 4]
    # stretches [0, 3), [3, 5), [5, T): the parts' T are 3, 2 and T - 5; past T the last part goes on counting
    assert seen == [(0, 3), (1, 3), (2, 3), (0, 2), (1, 2), (0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    seen.clear()
    assert joined(7) == 2.0 and seen == [(2, None)]  # T unknown: the last part gets None, as ScheduledAttribute does


def test_join_warmup_then_cycles_hand_computed() -> None:
    # A warm-up over 4 steps (ramp in its first half), then 2 cycles in the remaining 8 steps.
    joined = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=2)], [4])
    expected = [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
    assert [joined(t, 12) for t in range(12)] == expected
    assert joined.values(12).tolist() == expected
    assert joined(100, 12) == 1.0  # past the end: the last part's plateau
    phases = [joined.phase(t, 12) for t in range(13)]
    # the warm-up's "final" is a "plateau" of the joined schedule: cycles are to come
    assert phases == ["ramp", "ramp", "plateau", "plateau"] + ["ramp", "ramp", "plateau", "plateau"] + [
        "ramp",
        "ramp",
        "final",
        "final",
        "final",
    ]


def test_join_cycles_whose_stop_changes_and_a_constant_tail() -> None:
    parts = [CyclicalSchedule(n_cycle=1, stop=0.5), CyclicalSchedule(n_cycle=1, stop=1.0), ConstantSchedule(1.0)]
    joined = join_schedules(parts, [0.25, 0.5])  # fractions of the run: steps 4 and 8 of 16
    values = joined.values(16).tolist()
    assert values == [0.0, 0.25, 0.5, 0.5, 0.0, 0.5, 1.0, 1.0] + [1.0] * 8
    assert values == [joined(t, 16) for t in range(16)]
    assert [joined.phase(t, 16) for t in (1, 3, 5, 7, 8, 15)] == [
        "ramp",
        "plateau",
        "ramp",
        "plateau",
        "final",
        "final",
    ]
    assert joined.needs_total is True and join_schedules(parts, [4, 8]).needs_total is False
    assert join_schedules([ConstantSchedule(0.0), CyclicalSchedule()], [10]).needs_total is True  # the last part's


def test_join_fractions_round_to_the_nearest_step() -> None:
    joined = join_schedules([ConstantSchedule(0.0), ConstantSchedule(1.0)], [0.29])
    assert [joined(t, 100) for t in (28, 29)] == [0.0, 1.0]  # 0.29 * 100 = 28.999999999999996 -> step 29
    assert [joined(t, 10) for t in (2, 3)] == [0.0, 1.0]  # 2.9 -> 3


def test_join_int_boundary_at_step_0_skips_the_first_part() -> None:
    # optax's semantics: a part whose stretch is empty never runs; int boundaries may start at 0.
    joined = join_schedules([ConstantSchedule(0.0), ConstantSchedule(1.0)], [0])
    with pytest.warns(UserWarning, match=r"`schedules\[0\]` gets no step and never runs"):
        assert [joined(t, 3) for t in range(3)] == [1.0, 1.0, 1.0]
    assert joined(5) == 1.0
    assert joined.values(3).tolist() == [1.0, 1.0, 1.0]


def test_join_values_give_a_plain_function_its_own_stretch_as_t() -> None:
    # linear_warmup(step, T) = min(1, step / T): the first part has T = 4, the second T = 10 - 4 = 6.
    joined = join_schedules([linear_warmup, linear_warmup], [4])
    expected = [0.0, 0.25, 0.5, 0.75] + [k / 6 for k in range(6)]
    assert joined.values(10).tolist() == pytest.approx(expected, abs=1e-15)
    assert [joined(t, 10) for t in range(10)] == pytest.approx(expected, abs=1e-15)


def test_join_phases_of_parts_without_phases_and_holds() -> None:
    joined = join_schedules([ConstantSchedule(0.0, phase_name="delay"), linear_warmup], [5])
    assert [joined.phase(t, 20) for t in (0, 4, 5)] == ["delay", "delay", None]  # a plain function has no phases
    assert [joined(t, 20) for t in (4, 5, 10, 20)] == [0.0, 0.0, pytest.approx(1 / 3), 1.0]


def test_join_nests_and_pickles() -> None:
    inner = join_schedules([CyclicalSchedule(n_cycle=1), ConstantSchedule(1.0)], [4])
    outer = join_schedules([inner, CyclicalSchedule(n_cycle=2)], [8])
    assert outer.values(16).tolist() == [0.0, 0.5, 1.0, 1.0] + [1.0] * 4 + [0.0, 0.5, 1.0, 1.0] * 2
    clone = pickle.loads(pickle.dumps(join_schedules([linear_warmup, ConstantSchedule(1.0)], [0.5])))
    assert clone == join_schedules([linear_warmup, ConstantSchedule(1.0)], [0.5])
    assert [clone(t, 10) for t in range(10)] == [0.0, 0.2, 0.4, 0.6, 0.8] + [1.0] * 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        clone.boundaries = (3,)  # type: ignore[misc]
    assert isinstance(clone, JoinedSchedule) and clone.boundaries == (0.5,)
    assert join_schedules([ConstantSchedule(0.5)], []).values(3).tolist() == [0.5] * 3  # one part: itself


def test_join_does_not_keep_the_callers_lists() -> None:
    parts, bounds = [ConstantSchedule(0.0), ConstantSchedule(1.0)], [3]
    joined = join_schedules(parts, bounds)
    parts.append(ConstantSchedule(2.0))
    bounds.append(9)
    assert joined.schedules == (ConstantSchedule(0.0), ConstantSchedule(1.0)) and joined.boundaries == (3,)
    assert joined.boundaries == join_schedules(parts[:2], np.array([3], dtype=np.int64)).boundaries  # numpy ints


@pytest.mark.parametrize(
    ("schedules", "boundaries", "exc", "match"),
    [
        ([], [], ValueError, r"^`schedules` must name at least one schedule, got none$"),
        (
            [linear_warmup, 3],
            [5],
            TypeError,
            r"^`schedules\[1\]` must be callable as schedule\(step, total_steps\), got 3",
        ),
        (
            [linear_warmup] * 2,
            [],
            ValueError,
            r"one step per schedule after the first \(1 for 2 schedules\), got 0: \[\]",
        ),
        ([linear_warmup] * 2, [3, 5], ValueError, r"\(1 for 2 schedules\), got 2: \[3, 5\]$"),
        ([linear_warmup] * 3, [5, 5], ValueError, r"strictly increasing, got \[5, 5\]$"),
        ([linear_warmup] * 3, [6, 5], ValueError, r"strictly increasing, got \[6, 5\]$"),
        ([linear_warmup] * 2, [-1], ValueError, r"^`boundaries` must be steps \(ints >= 0\) or fractions"),
        (
            [linear_warmup] * 2,
            [1.0],
            ValueError,
            r"fractions of the run \(floats in \(0, 1\)\), strictly increasing, got \[1.0\]",
        ),
        ([linear_warmup] * 2, [0.0], ValueError, r"got \[0.0\]$"),
        ([linear_warmup] * 3, [0.5, 0.25], ValueError, r"got \[0.5, 0.25\]$"),
        ([linear_warmup] * 3, [0.5, 10], TypeError, r"not a mix of both or other types, got \[0.5, 10\]$"),
        ([linear_warmup] * 2, ["5"], TypeError, r"got \['5'\]$"),
        ([linear_warmup] * 2, [True], TypeError, r"got \[True\]$"),
    ],
)
def test_join_bad_arguments(schedules: list, boundaries: list, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        join_schedules(schedules, boundaries)


@pytest.mark.parametrize(
    ("boundaries", "call", "match"),
    [
        ([0.5], lambda j: j(0), r"`boundaries`=\[0.5\] are fractions of the run, so `total_steps` is needed"),
        ([3], lambda j: j(-1, 10), r"`step` must be an int >= 0, got -1"),
        ([3], lambda j: j(0, 0), r"`total_steps` must be an int >= 1 or None, got 0"),
    ],
)
def test_join_bad_calls(boundaries: list, call: Any, match: str) -> None:
    joined = join_schedules([linear_warmup] * (len(boundaries) + 1), boundaries)
    with pytest.raises(ValueError, match=match):
        call(joined)


@pytest.mark.parametrize(
    ("boundaries", "total", "match", "values"),
    [
        ([0.5], 1, r"`boundaries`=\[0.5\] fall on steps \[1\] of a run of `total_steps`=1: `schedules\[1\]` gets no step and never run", [0.0]),
        ([0.1, 0.2], 5, r"fall on steps \[1, 1\] of a run of `total_steps`=5: `schedules\[1\]` gets no step", [0, 2, 2, 2, 2]),
        ([0.3, 0.31], 10, r"fall on steps \[3, 3\] of a run of `total_steps`=10: `schedules\[1\]` gets", [0, 1, 2, 2, 2, 2, 2, 2, 2, 2]),
        ([10], 10, r"fall on steps \[10\] of a run of `total_steps`=10: `schedules\[1\]` gets no step", list(range(10))),
        ([12], 10, r"fall on steps \[12\] of a run of `total_steps`=10: `schedules\[1\]` gets no step", list(range(10))),
        ([0], 3, r"fall on steps \[0\] of a run of `total_steps`=3: `schedules\[0\]` gets no step", [1, 1, 1]),
    ],
)  # fmt: skip
def test_join_a_part_with_no_step_never_runs_with_a_warning(
    boundaries: list, total: int, match: str, values: list
) -> None:
    # optax's semantics (a part past the run never starts), warned: a short debug run still trains
    parts = [
        functools.partial(_index, k) for k in range(len(boundaries) + 1)
    ]  # part k returns k (+ its step for k = 0)
    joined = join_schedules(parts, boundaries)
    with pytest.warns(UserWarning, match=match):
        assert joined.values(total).tolist() == values
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")  # Python's own filter would hide repeats: the schedule must not make them
        assert [joined(t, total) for t in range(total)] == values
    assert again == []  # once per schedule and T, not at every step


def _index(k: int, step: int, total: int | None) -> float:
    return float(step if k == 0 else k)


def test_join_a_cyclical_part_too_short_for_its_cycles_holds_start_with_a_warning() -> None:
    # fast_dev_run (T = 1): the warm-up part gets no step, the cycles' part 1 step for 4 cycles; alone refused
    joined = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=4, start=0.1)], [0.2])
    with pytest.warns(
        UserWarning, match=r"`schedules\[1\]` of the joined schedule runs 1 step, but its `n_cycle`=4 cycles"
    ):
        assert joined(0, 1) == 0.1
    assert joined.phase(0, 1) == "delay" and joined.values(1).tolist() == [0.1]
    with pytest.warns(UserWarning, match=r"`schedules\[1\]` of the joined schedule runs 4 steps, but its `n_cycle`=4"):
        assert joined.values(5).tolist() == [0.0, 0.1, 0.1, 0.1, 0.1]
    delayed = join_schedules([ConstantSchedule(0.0), CyclicalSchedule(n_cycle=1, delay=5)], [3])
    with pytest.warns(UserWarning, match=r"runs 5 steps, but its `delay`=5 is not smaller than its stretch"):
        assert delayed.values(8).tolist() == [0.0] * 8
    assert joined.values(20).tolist()[4:8] == [0.1, 0.55, 1.0, 1.0]  # long enough: its cycles, no warning


def test_constant_schedule() -> None:
    assert ConstantSchedule(2)(5, 10) == 2.0 and type(ConstantSchedule(2).value) is float
    assert ConstantSchedule(0.5).phase(0) == "final" and ConstantSchedule(0.5, "plateau").phase(9) == "plateau"
    assert ConstantSchedule(0.5).needs_total is False
    with pytest.raises(ValueError, match=r"`value` must be a finite real number, got nan"):
        ConstantSchedule(math.nan)
    with pytest.raises(ValueError, match=r"`phase_name` must be one of \('delay', 'ramp', 'plateau', 'final'\)"):
        ConstantSchedule(0.0, "flat")  # type: ignore[arg-type]


# ---------------------------------------------------------------- one schedule object behind the pure functions


def test_the_pure_functions_build_one_validated_schedule_per_configuration() -> None:
    from lightning_kl_anneal.schedules import _PARAMETERS, _built

    assert _PARAMETERS == ("n_cycle", "ratio", "start", "stop", "shape", "ratio_zero", "period", "delay")
    assert cyclical_beta(0, 100, n_cycle=1) == 0.0  # cached with n_cycle=1 ...
    with pytest.raises(TypeError, match=r"`n_cycle` must be an int >= 1, got True of type bool"):
        cyclical_beta(0, 100, n_cycle=True)  # ... which must not answer for True (1 == True)
    with pytest.raises(TypeError, match=r"`ratio` must be a real number, got \[0.5\] of type list"):
        cyclical_beta(0, 100, ratio=[0.5])  # type: ignore[arg-type]  # unhashable: checked without the cache
    _built.cache_clear()
    for t in range(50):
        cyclical_beta(t, 100, n_cycle=3, ratio=0.4)
    assert _built.cache_info().misses == 1  # validated once, not at every step
