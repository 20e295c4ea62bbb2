"""Figures of a schedule, to look at β before training (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from lightning_kl_anneal.schedules import Shape, _schedule_from

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_schedules"]


def _pyplot() -> ModuleType:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display needed
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plotting needs matplotlib: `pip install lightning-kl-anneal[plot]` (or `pip install matplotlib`)"
        ) from err
    return plt


def plot_schedules(
    total_steps: int,
    n_cycles: Sequence[int | None] = (1, 4),
    ratio: float = 0.5,
    start: float = 0.0,
    stop: float = 1.0,
    shape: Shape = "linear",
    ratio_zero: float = 0.0,
    *,
    delay: int = 0,
    period: int | None = None,
    unit: str = "step",
) -> Figure:
    """One panel per cycle count, β against the step (the idea of Fu et al.'s Figure 1).

    Args:
        total_steps: ``T``: with ``period``, only the number of steps drawn.
        n_cycles: the cycle counts to draw, one panel each; 1 is monotonic annealing; None
            (with ``period``) cycles forever.
        ratio, start, stop, shape, ratio_zero, delay, period: as in
            :func:`~lightning_kl_anneal.cyclical_beta`; ``shape="log"`` draws β on a log axis.
        unit: what a step counts, for the axis label (``"step"`` or ``"epoch"``).

    Returns:
        A matplotlib ``Figure``; save it with ``fig.savefig("beta.png")``.

    Example:
        >>> fig = plot_schedules(1000, n_cycles=(1, 4))
        >>> len(fig.axes)
        2
    """
    arguments = locals()  # the schedule's parameters, as this function's signature names them
    if not isinstance(n_cycles, Sequence) or isinstance(n_cycles, str):
        raise TypeError(
            f"`n_cycles` must be a sequence of cycle counts, one panel each, e.g. `n_cycles=({n_cycles!r},)`; "
            f"got {n_cycles!r} of type {type(n_cycles).__name__}"
        )
    if not n_cycles:
        raise ValueError(f"`n_cycles` must name at least one cycle count, got {n_cycles!r}")
    schedules = [_schedule_from(arguments, n_cycle=m) for m in n_cycles]
    curves = [schedule.values(total_steps) for schedule in schedules]  # every error before any drawing
    plt = _pyplot()
    fig, axes = plt.subplots(len(n_cycles), 1, figsize=(7, 1.9 * len(n_cycles) + 0.4), sharex=True, squeeze=False)
    steps = np.arange(total_steps)
    for ax, m, betas in zip(axes[:, 0], n_cycles, curves):
        ax.plot(steps, betas, color="C0" if m == 1 else "C3")
        label = "monotonic (M=1)" if m == 1 else "cyclical (endless)" if m is None else f"cyclical (M={m})"
        extra = "".join(f", {k}={v}" for k, v in (("period", period), ("delay", delay)) if v)
        ax.set_title(f"{label}, R={ratio:g}, {shape}{extra}", fontsize=10, loc="left")
        ax.set_ylabel("β")
        lo, hi = min(start, stop), max(start, stop)
        if shape == "log":  # a ramp in log space is a straight line on a log axis
            ax.set_yscale("log")
            ax.set_ylim(lo / 1.5, hi * 1.5)
        else:
            pad = 0.05 * (hi - lo or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch" if unit == "epoch" else "optimizer step")
    fig.tight_layout()
    return fig
