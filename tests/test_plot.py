"""Tests for lightning_kl_anneal.plot."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_kl_anneal import cyclical_schedule
from lightning_kl_anneal.plot import plot_schedules


def test_one_panel_per_cycle_count_with_the_schedule_drawn() -> None:
    fig = plot_schedules(400, n_cycles=(1, 2, 4), ratio=0.5, start=0.1, shape="cosine")
    assert len(fig.axes) == 3
    for ax, m in zip(fig.axes, (1, 2, 4)):
        (line,) = ax.get_lines()
        np.testing.assert_array_equal(line.get_ydata(), cyclical_schedule(400, m, 0.5, 0.1, 1.0, "cosine"))
    assert fig.axes[0].get_title(loc="left").startswith("monotonic")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cycles": ()}, r"`n_cycles` must name at least one"),
        ({"n_cycles": (0,)}, r"`n_cycle` must be an int >= 1, got 0"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plot_schedules(100, **kwargs)


@pytest.mark.parametrize("n_cycles", [4, "14"])
def test_n_cycles_not_a_sequence_is_named(n_cycles: object) -> None:
    with pytest.raises(TypeError, match=r"^`n_cycles` must be a sequence of cycle counts, one panel each, e\.g\."):
        plot_schedules(100, n_cycles)  # type: ignore[arg-type]


def test_the_delay_is_drawn() -> None:
    fig = plot_schedules(30, n_cycles=(2,), start=0.1, delay=10)
    (line,) = fig.axes[0].get_lines()
    ys = np.asarray(line.get_ydata())
    np.testing.assert_array_equal(ys[:10], [0.1] * 10)  # held at `start` for the delay
    np.testing.assert_array_equal(ys, cyclical_schedule(30, 2, start=0.1, delay=10))
    assert ys[10:20].tolist() == pytest.approx([0.1 + 0.9 * k / 5 for k in range(5)] + [1.0] * 5)  # by hand
    assert "delay=10" in fig.axes[0].get_title(loc="left")


def test_a_log_ramp_is_drawn_on_a_log_axis() -> None:
    fig = plot_schedules(40, n_cycles=(1, 2), ratio=1.0, start=1e-4, shape="log")
    for ax, m in zip(fig.axes, (1, 2)):
        assert ax.get_yscale() == "log"
        (line,) = ax.get_lines()
        np.testing.assert_array_equal(line.get_ydata(), cyclical_schedule(40, m, 1.0, 1e-4, 1.0, "log"))
        lo, hi = ax.get_ylim()
        assert lo == pytest.approx(1e-4 / 1.5) and hi == pytest.approx(1.5)  # both ends in view, with a margin
    assert fig.axes[0].get_lines()[0].get_ydata()[20] == pytest.approx(1e-2)  # halfway up: the geometric mean
    assert plot_schedules(40, n_cycles=(1,)).axes[0].get_yscale() == "linear"


def test_a_log_ramp_from_zero_is_refused_before_drawing() -> None:
    with pytest.raises(ValueError, match=r"`shape`='log' ramps in log space.*got `start`=0.0"):
        plot_schedules(40, shape="log")


@pytest.mark.parametrize(("start", "stop"), [(0.1, 1.0), (1.0, 0.1)])
def test_the_axis_spans_the_schedule_upwards_with_a_margin(start: float, stop: float) -> None:
    fig = plot_schedules(40, n_cycles=(2,), start=start, stop=stop)
    # 5 % of the span (0.9) on each side, lowest value at the bottom whichever way β moves
    assert fig.axes[0].get_ylim() == pytest.approx((0.1 - 0.045, 1.0 + 0.045))
