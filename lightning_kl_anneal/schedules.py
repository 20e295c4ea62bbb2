"""Cyclical KL-weight schedules as pure functions of the step.

Fu et al., "Cyclical Annealing Schedule: A Simple Approach to Mitigating KL
Vanishing", NAACL 2019 (arXiv:1903.10145). With a 0-based step ``t``, ``T`` total
steps, ``M`` cycles and ramp ratio ``R``::

    tau(t)  = (t mod ceil(T / M)) / (T / M)           # position in the cycle, in [0, 1)
    beta(t) = start + (stop - start) * f(tau / R)     if tau < R
            = stop                                    otherwise, and for every t >= T

``f`` is the ramp's shape (``"linear"``, ``"sigmoid"`` or ``"cosine"``). ``shape="log"`` ramps in
log space instead, for β that spans orders of magnitude: ``beta = start * (stop / start) ** u`` with
``u = tau / R`` (``start`` and ``stop`` > 0). ``M = 1`` is the classic monotonic warm-up. With ``ratio_zero > 0`` (Optimus, Li et al.
2020) β holds ``start`` for ``tau < ratio_zero`` and the ramp runs from
``ratio_zero`` to ``ratio``.

Two options make the schedule fit runs whose length is not known up front, or that need a
warm-up phase (all measured in the same unit as ``t``)::

    delay  = D    beta(t) = start for t < D; the cycles then fill the remaining T - D
                  (Li et al. 2019's autoencoder phase at beta = 0, then annealing)
    period = P    every cycle lasts P; no T needed: tau(t) = ((t - D) mod P) / P for the
                  first M cycles, then stop for good (M = None: cycles forever)

Everything here is a function of its arguments only: no counters, no precomputed
arrays. That is what makes checkpoint resume, DDP and gradient accumulation
correct for free in :class:`~lightning_kl_anneal.CyclicalKLAnnealing`.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from lightning_kl_anneal._checks import check_boundaries, check_choice, check_int, check_real

__all__ = [
    "PHASES",
    "SHAPES",
    "ConstantSchedule",
    "CyclicalSchedule",
    "JoinedSchedule",
    "Phase",
    "Shape",
    "cycle_length",
    "cycle_position",
    "cyclical_beta",
    "cyclical_phase",
    "cyclical_schedule",
    "frange_cycle_cosine",
    "frange_cycle_linear",
    "frange_cycle_sigmoid",
    "join_schedules",
    "validate_schedule_args",
]

Shape = Literal["linear", "sigmoid", "cosine", "log"]
SHAPES: tuple[str, ...] = get_args(Shape)

Phase = Literal["delay", "ramp", "plateau", "final"]
"""Where a step lies: the leading ``delay``; a cycle's rising part (its ``ratio_zero`` hold included);
a ``plateau`` at ``stop`` with more cycles to come; the ``final`` plateau, after the last ramp."""
PHASES: tuple[str, ...] = get_args(Phase)


# ----------------------------------------------------------------------------- validation


def validate_schedule_args(
    n_cycle: int | None = 4,
    ratio: float = 0.5,
    start: float = 0.0,
    stop: float = 1.0,
    shape: str = "linear",
    ratio_zero: float = 0.0,
    total_steps: int | None = None,
    *,
    delay: int = 0,
    period: int | None = None,
) -> None:
    """Check a schedule configuration and raise an error that says how to fix it.

    Called by every public function here and by the callback's constructor, so
    bad input fails once, early, with the same message everywhere.

    Args:
        n_cycle: number of cycles ``M``, an int >= 1; None (cycles forever) only with ``period``.
        ratio: fraction ``R`` of each cycle spent rising, in (0, 1].
        start: β at the beginning of each cycle, finite.
        stop: β on the plateau and after the last step, finite.
        shape: one of ``"linear"``, ``"sigmoid"``, ``"cosine"``, ``"log"`` (then ``start`` and ``stop`` must be > 0).
        ratio_zero: leading fraction of each cycle held at ``start``, in [0, ratio).
        total_steps: ``T``, an int >= 1, or None when not known yet. When given (and no
            ``period``), ``delay < T`` and ``n_cycle < T - delay`` are checked too: with as
            many cycles as steps every cycle is one step long and β never leaves ``start``.
        delay: ``D``, steps held at ``start`` before the first cycle, an int >= 0.
        period: ``P``, steps per cycle, an int >= 2, or None to derive it from ``T``.

    Raises:
        TypeError: an argument has the wrong type (e.g. ``n_cycle=2.5``).
        ValueError: an argument is out of range.

    Example:
        >>> validate_schedule_args(n_cycle=4, ratio=0.5)
        >>> validate_schedule_args(ratio=1.5)
        Traceback (most recent call last):
        ...
        ValueError: `ratio` must be in (0, 1], got 1.5
        >>> validate_schedule_args(n_cycle=20, total_steps=10)
        Traceback (most recent call last):
        ...
        ValueError: `n_cycle`=20 cycles need more than 20 steps, but the schedule has 10 (`total_steps`=10 minus `delay`=0); every cycle would be one step long and β would never leave `start`. Use fewer cycles or more steps.
    """
    _check_total(_schedule_from(locals()), total_steps)


def _check_total(schedule: CyclicalSchedule, total_steps: int | None) -> int | None:
    """``T`` as an int (None passes), checked against the schedule where ``T`` sets the cycles."""
    if total_steps is not None:
        total_steps = check_int("total_steps", total_steps, 1)
        if schedule.period is None:
            _check_span(total_steps, schedule.n_cycle, schedule.delay)  # type: ignore[arg-type]
    return total_steps


def _check_log_range(start: float, stop: float) -> None:
    for name, value in (("start", start), ("stop", stop)):
        if not value > 0.0:
            raise ValueError(
                f"`shape`='log' ramps in log space, β = start·(stop/start)^u, so `start` and `stop` must be > 0 "
                f"(the log of a non-positive value is undefined), got `{name}`={value!r}; "
                f"use a small positive value instead, e.g. `{name}`=1e-4"
            )


def _span_problem(total_steps: int, n_cycle: int | None, delay: int) -> Literal["delay", "cycles"] | None:
    """What ``total_steps`` steps cannot hold: the ``delay`` (as long as the run), or the cycles (at least as many as
    the steps after the delay, so β never leaves ``start``); None when they fit. The one test of a span: the pure
    functions refuse either, the callback refuses the first and warns of the second, a joined schedule's part
    holds ``start``."""
    if delay >= total_steps:
        return "delay"
    if (n_cycle or 1) >= total_steps - delay:
        return "cycles"
    return None


def _check_span(total_steps: int, n_cycle: int, delay: int) -> None:
    """The checks that need ``T``; the callback runs them once ``T`` is known (and only warns on the second)."""
    problem = _span_problem(total_steps, n_cycle, delay)
    if problem == "delay":
        raise ValueError(
            f"`delay`={delay} must be smaller than `total_steps`={total_steps}: no step would be left for the cycles"
        )
    if problem == "cycles":
        raise ValueError(_too_many_cycles(total_steps, n_cycle, delay))


def _too_many_cycles(total_steps: int, n_cycle: int, delay: int) -> str:
    return (
        f"`n_cycle`={n_cycle} cycles need more than {n_cycle} steps, but the schedule has {total_steps - delay} "
        f"(`total_steps`={total_steps} minus `delay`={delay}); every cycle would be one step long and "
        "β would never leave `start`. Use fewer cycles or more steps."
    )


# ----------------------------------------------------------------------------- ramp shapes


def _ramp(u: float, shape: str) -> float:
    """The shape ``f`` on [0, 1); the plateau is handled by the caller, so f(1) is never needed."""
    if shape == "linear":
        return u
    if shape == "cosine":
        return 0.5 - 0.5 * math.cos(math.pi * u)
    return 1.0 / (1.0 + math.exp(-(12.0 * u - 6.0)))


def _ramp_array_(u: npt.NDArray[np.float64], shape: str) -> None:
    """``u <- f(u)`` in place, with the same floating-point operations as :func:`_ramp`."""
    if shape == "cosine":
        u *= np.pi
        np.cos(u, out=u)
        u *= 0.5
        np.subtract(0.5, u, out=u)
    elif shape == "sigmoid":
        u *= 12.0
        u -= 6.0
        np.negative(u, out=u)
        np.exp(u, out=u)
        u += 1.0
        np.divide(1.0, u, out=u)


# ----------------------------------------------------------------------------- the schedule


def _period(total_steps: int, n_cycle: int) -> int:
    return -(-total_steps // n_cycle)  # ceil(T / M) in integers


def _locate(
    step: int, total_steps: int | None, n_cycle: int | None, delay: int, period: int | None
) -> tuple[int, float]:
    """``(cycle index, tau)`` of a step at or after ``delay``; the index is -1 past the last cycle."""
    step -= delay
    if period is None:
        span = total_steps - delay  # type: ignore[operator]
        if step >= span:
            return -1, 1.0
        length = _period(span, n_cycle)  # type: ignore[arg-type]
        return step // length, (step % length) * n_cycle / span  # type: ignore[operator]
    if n_cycle is not None and step >= n_cycle * period:
        return -1, 1.0
    return step // period, (step % period) / period


def _last_cycle(total_steps: int | None, n_cycle: int | None, delay: int, period: int | None) -> int | None:
    """Index of the last cycle that starts (uneven cycles can leave fewer than ``n_cycle``); None: endless."""
    if period is not None:
        return None if n_cycle is None else n_cycle - 1
    span = total_steps - delay  # type: ignore[operator]
    return -(-span // _period(span, n_cycle)) - 1  # type: ignore[arg-type]


def _functional_args(schedule: CyclicalSchedule, step: object, total_steps: int | None) -> tuple[int, int | None]:
    """The pure functions' checks of one call: ``T`` as :func:`validate_schedule_args` checks it, then the step."""
    total_steps = _check_total(schedule, total_steps)
    _check_step_args(step, total_steps, schedule.period)
    return int(step), total_steps  # type: ignore[call-overload]


def _check_step_args(step: object, total_steps: int | None, period: int | None) -> None:
    check_int("step", step, 0)
    if period is None and total_steps is None:
        raise ValueError("`total_steps` is needed unless `period=` sets the length of a cycle")
    if period is not None and total_steps is not None:
        raise ValueError(
            f"`total_steps`={total_steps} and `period`={period} both set the cycle length: pass one of them"
        )


def _validate_position_args(n_cycle: int | None, total_steps: int | None, delay: int, period: int | None) -> None:
    # Positions are well defined with as many cycles as steps (each cycle one step long, tau = 0), which
    # e.g. a learning-rate restart under `fast_dev_run` meets; only the β functions refuse that.
    validate_schedule_args(n_cycle=n_cycle, delay=delay, period=period)
    if total_steps is not None:
        check_int("total_steps", total_steps, 1)
        if period is None and delay >= total_steps:
            raise ValueError(f"`delay`={delay} must be smaller than `total_steps`={total_steps}")


def cycle_length(total_steps: int, n_cycle: int = 4, *, delay: int = 0) -> int:
    """Number of steps in one cycle, ``ceil((T - delay) / M)``; the last cycle may be shorter.

    Args:
        total_steps: ``T``, total number of (optimizer) steps.
        n_cycle: ``M``, number of cycles.
        delay: steps before the first cycle.

    Returns:
        The period of the schedule in steps.

    Example:
        >>> cycle_length(10_000, 4)
        2500
        >>> cycle_length(10, 4)
        3
        >>> cycle_length(10_000, 4, delay=2_000)
        2000
    """
    _validate_position_args(n_cycle, total_steps, delay, None)
    return _period(total_steps - delay, n_cycle)


def cycle_position(
    step: int, total_steps: int | None = None, n_cycle: int | None = 4, *, delay: int = 0, period: int | None = None
) -> float:
    """Position ``tau`` of ``step`` inside its cycle, in [0, 1); 0.0 during the delay, 1.0 after the last cycle.

    ``tau = (step mod ceil(T / M)) / (T / M)`` (Fu et al., NAACL 2019), or
    ``((step - delay) mod period) / period`` with ``period``. Useful to drive anything else
    that should restart with the cycles, e.g. a cosine learning rate.

    Args:
        step: 0-based step ``t``, an int >= 0.
        total_steps: ``T`` (None with ``period``).
        n_cycle: ``M`` (None: endless, with ``period``).
        delay: steps before the first cycle.
        period: steps per cycle, instead of ``total_steps``.

    Returns:
        ``tau`` as a float.

    Example:
        >>> [cycle_position(t, 20, 4) for t in range(6)]
        [0.0, 0.2, 0.4, 0.6, 0.8, 0.0]
        >>> cycle_position(20, 20, 4)
        1.0
        >>> cycle_position(7, n_cycle=None, period=4, delay=2)
        0.25
    """
    _validate_position_args(n_cycle, total_steps, delay, period)
    _check_step_args(step, total_steps, period)
    if step < delay:
        return 0.0
    return _locate(int(step), total_steps, n_cycle, delay, period)[1]


def cyclical_beta(
    step: int,
    total_steps: int | None = None,
    n_cycle: int | None = 4,
    ratio: float = 0.5,
    start: float = 0.0,
    stop: float = 1.0,
    shape: Shape = "linear",
    ratio_zero: float = 0.0,
    *,
    delay: int = 0,
    period: int | None = None,
) -> float:
    """β at one step of the cyclical annealing schedule (Fu et al., NAACL 2019).

    ``tau = (step mod ceil(T/M)) / (T/M)``; β is ``start`` while ``tau < ratio_zero``,
    rises from ``start`` to ``stop`` along ``shape`` while ``tau < ratio``, then holds
    ``stop`` to the end of the cycle. For every ``step >= total_steps`` β is ``stop``.
    With ``delay=D`` β holds ``start`` for the first D steps and the M cycles fill the
    remaining ``T - D``. With ``period=P`` instead of ``T``, every cycle lasts P steps
    (from step D on): ``M`` cycles, then ``stop`` for good, or forever with ``n_cycle=None``.
    Closed form: O(1) time and memory, no accumulated rounding, and the plateau is
    exactly ``stop``.

    Args:
        step: 0-based step ``t`` (in the callback: ``trainer.global_step``, or the epoch).
        total_steps: ``T``, total number of steps the schedule spans; None with ``period``.
        n_cycle: ``M``, number of cycles; 1 gives monotonic annealing; None (with
            ``period`` only) repeats cycles forever.
        ratio: ``R``, fraction of each cycle spent rising, in (0, 1].
        start: β at the beginning of each cycle (and during the delay).
        stop: β on the plateau (the true ELBO weight is 1.0).
        shape: ``"linear"`` (``f(u) = u``), ``"sigmoid"`` (``1 / (1 + exp(-(12u - 6)))``,
            never exactly 0), ``"cosine"`` (``0.5 - 0.5 cos(pi u)``) or ``"log"``: a ramp in log
            space, ``β = start · (stop / start) ** u``, which needs ``start > 0`` and ``stop > 0``
            (with ``start=1e-4, stop=1``: 1e-3, 1e-2, 1e-1 at u = 1/4, 1/2, 3/4). As for every shape,
            with ``ratio=1.0`` the last step of a cycle is one ramp step short of ``stop``: in log space
            that is a factor ``(stop / start) ** (1 / steps of the ramp)`` below it (0.16 after 5 epochs
            from 1e-4), so keep a plateau (``ratio < 1``) when the model must end at ``stop``.
        ratio_zero: leading fraction of each cycle held at ``start`` (Optimus), in [0, ratio).
        delay: ``D``, steps held at ``start`` before the first cycle (Li et al. 2019's
            autoencoder phase with ``start=0``); ``D < T``.
        period: ``P``, steps per cycle, for runs whose length is not known; excludes ``total_steps``.

    Returns:
        β as a Python float.

    Raises:
        TypeError, ValueError: see :func:`validate_schedule_args`; also a negative ``step``,
            neither or both of ``total_steps`` and ``period``, and ``n_cycle >= T - delay``.

    Example:
        >>> [cyclical_beta(t, 20, n_cycle=4, ratio=0.5) for t in range(6)]
        [0.0, 0.4, 0.8, 1.0, 1.0, 0.0]
        >>> cyclical_beta(19, 20), cyclical_beta(10**9, 20)
        (1.0, 1.0)
        >>> round(cyclical_beta(1, 20, shape="cosine"), 4)
        0.3455
        >>> [cyclical_beta(t, n_cycle=None, period=4, delay=2) for t in range(8)]
        [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
        >>> [cyclical_beta(t, 4, n_cycle=1, ratio=1.0, start=1e-4, shape="log") for t in range(5)]
        [0.0001, 0.001, 0.01, 0.1, 1.0]
    """
    schedule = _schedule_from(locals())
    return schedule._value(*_functional_args(schedule, step, total_steps))


def cyclical_phase(
    step: int,
    total_steps: int | None = None,
    n_cycle: int | None = 4,
    ratio: float = 0.5,
    ratio_zero: float = 0.0,
    *,
    delay: int = 0,
    period: int | None = None,
) -> Phase:
    """Which part of the schedule ``step`` is in: ``"delay"``, ``"ramp"``, ``"plateau"`` or ``"final"``.

    ``"ramp"`` is the rising part of a cycle (its ``ratio_zero`` hold included), ``"plateau"`` a
    cycle's flat top at ``stop`` with another cycle to come, ``"final"`` the plateau after the
    last ramp (and every step past the end). With ``ratio=1.0`` the ramp fills the cycle and β
    reaches ``stop`` only at the next cycle's start, so the last step of each full cycle counts as
    its plateau (``"final"`` for the last cycle), one ramp step below ``stop``: that is the step
    that closes the ramp, e.g. the end of a warm-up that runs to the end of training. Schedule-aware model selection uses it: losses
    measured during a ramp are not comparable with losses at ``stop``. Arguments as in
    :func:`cyclical_beta` (``start``, ``stop`` and ``shape`` do not move the phases).

    Returns:
        One of :data:`PHASES`.

    Example:
        >>> [cyclical_phase(t, 8, n_cycle=2, ratio=0.5) for t in range(0, 9, 2)]
        ['ramp', 'plateau', 'ramp', 'final', 'final']
        >>> [cyclical_phase(t, n_cycle=None, period=10, delay=5) for t in (0, 7, 12)]
        ['delay', 'ramp', 'plateau']
        >>> [cyclical_phase(t, 4, n_cycle=1, ratio=1.0) for t in range(5)]
        ['ramp', 'ramp', 'ramp', 'final', 'final']
    """
    schedule = _schedule_from(locals())
    return schedule._phase(*_functional_args(schedule, step, total_steps))


def _ends_full_cycle(step: int, total_steps: int | None, n_cycle: int | None, delay: int, period: int | None) -> bool:
    """Whether ``step`` (counted from the delay) is the last step of a cycle whose ramp spans all of it (ratio 1).

    Its next position, one step on, is ``tau >= 1``: the step closes the ramp. A last cycle cut short by an
    uneven ``T / M`` ends before that and has no such step.
    """
    if period is not None:
        return step % period == period - 1
    span = total_steps - delay  # type: ignore[operator]
    return (step % _period(span, n_cycle) + 1) * n_cycle >= span  # type: ignore[arg-type,operator]


def cyclical_schedule(
    total_steps: int,
    n_cycle: int | None = 4,
    ratio: float = 0.5,
    start: float = 0.0,
    stop: float = 1.0,
    shape: Shape = "linear",
    ratio_zero: float = 0.0,
    *,
    delay: int = 0,
    period: int | None = None,
) -> npt.NDArray[np.float64]:
    """The whole schedule as an array: element ``t`` is :func:`cyclical_beta` at step ``t``.

    Vectorised with numpy (no Python loop over steps), for plotting or for training
    loops that prefer a lookup table. Same arguments as :func:`cyclical_beta`; with
    ``period``, ``total_steps`` is only the length of the array.
    Linear schedules equal :func:`cyclical_beta` bit for bit; for sigmoid and cosine,
    numpy's vectorised ``exp``/``cos`` may differ from :mod:`math` in the last bit
    (relative error below 1e-15).

    Returns:
        A float64 array of shape ``(total_steps,)``.

    Example:
        >>> cyclical_schedule(20, n_cycle=4, ratio=0.5).reshape(4, 5)[0].tolist()
        [0.0, 0.4, 0.8, 1.0, 1.0]
        >>> cyclical_schedule(10, n_cycle=4, ratio=0.5).round(3).tolist()
        [0.0, 0.8, 1.0, 0.0, 0.8, 1.0, 0.0, 0.8, 1.0, 0.0]
        >>> cyclical_schedule(10, n_cycle=2, period=4, delay=1).tolist()
        [0.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    """
    return _schedule_from(locals()).values(total_steps)


# ----------------------------------------------------------------------------- the schedule object


@dataclasses.dataclass(frozen=True)
class CyclicalSchedule:
    r"""The cyclical schedule as one frozen, validated, picklable object (optax's factory style).

    The module's formula (Fu et al., NAACL 2019, arXiv:1903.10145) with its parameters bound once;
    the pure functions above take the same parameters one call at a time and give the same values.
    ``ScheduledAttribute(CyclicalSchedule(n_cycle=4), "beta", eval_value=1.0)`` writes it into a model
    exactly as ``CyclicalKLAnnealing(n_cycle=4)`` does (``CyclicalKLAnnealing`` *is* that callback, with
    ``eval_beta=stop`` by default). Without ``eval_value``, ``ScheduledAttribute`` leaves the last training β
    in place during validation, test and predict, so pass ``eval_value=1.0`` to validate on the ELBO.

    Args:
        n_cycle: ``M``, number of cycles; 1 is monotonic annealing; None (with ``period``): endless.
        ratio: ``R``, fraction of each cycle spent rising, in (0, 1].
        start: β at the start of each cycle and during the delay, finite.
        stop: β on the plateau and after the last step, finite.
        shape: ``"linear"``, ``"sigmoid"`` or ``"cosine"`` ramp, or ``"log"``: ``start · (stop / start) ** u``
            (``start`` and ``stop`` > 0; ``start=1e-4, stop=1`` passes 1e-2 halfway up the ramp).
        ratio_zero: leading fraction of each cycle held at ``start`` (Optimus), in [0, ratio).
        period: ``P``, steps per cycle (an int >= 2), for runs of unknown length; then ``total_steps``
            is ignored.
        delay: ``D``, steps held at ``start`` before the first cycle.

    Raises:
        TypeError: an argument of the wrong type (``n_cycle=2.5``).
        ValueError: an argument out of range (``ratio=1.5``).

    Example:
        >>> schedule = CyclicalSchedule(n_cycle=4, ratio=0.5)
        >>> [schedule(t, 20) for t in range(6)]
        [0.0, 0.4, 0.8, 1.0, 1.0, 0.0]
        >>> schedule.phase(3, 20), schedule.length(20)
        ('plateau', 20)
        >>> CyclicalSchedule(n_cycle=2, period=4, delay=1).values(10).tolist()
        [0.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0]
        >>> CyclicalSchedule(n_cycle=1, ratio=1.0, start=1e-4, shape="log")(2, 4)
        0.01
    """

    n_cycle: int | None = 4
    ratio: float = 0.5
    start: float = 0.0
    stop: float = 1.0
    _: dataclasses.KW_ONLY
    shape: Shape = "linear"
    ratio_zero: float = 0.0
    period: int | None = None
    delay: int = 0

    def __post_init__(self) -> None:
        # The one place the parameters are checked (every function of this module builds a schedule). Each is
        # kept as a plain Python number (numpy scalars in, floats out), so values and checkpoints hold plain types.
        keep = functools.partial(object.__setattr__, self)
        if self.n_cycle is None:
            if self.period is None:
                raise ValueError("`n_cycle=None` (cycles forever) needs `period=`, the length of one cycle")
        else:
            keep("n_cycle", check_int("n_cycle", self.n_cycle, 1))
        keep("ratio", check_real("ratio", self.ratio, finite=False))
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"`ratio` must be in (0, 1], got {self.ratio!r}")
        keep("start", check_real("start", self.start))
        keep("stop", check_real("stop", self.stop))
        if check_choice("shape", self.shape, SHAPES) == "log":
            _check_log_range(self.start, self.stop)
        keep("ratio_zero", check_real("ratio_zero", self.ratio_zero, finite=False))
        if not 0.0 <= self.ratio_zero < self.ratio:
            raise ValueError(f"`ratio_zero` must be in [0, ratio) = [0, {self.ratio}), got {self.ratio_zero!r}")
        keep("delay", check_int("delay", self.delay, 0))
        if self.period is not None:
            keep("period", check_int("period", self.period, 2))  # a cycle of one step never leaves `start`

    @property
    def needs_total(self) -> bool:
        """Whether the schedule needs ``total_steps`` (``T``): it does unless ``period`` sets the cycles."""
        return self.period is None

    def _total(self, total_steps: int | None) -> int | None:
        if self.period is not None:
            return None
        if total_steps is None:
            raise ValueError("`total_steps` is needed unless `period=` sets the length of a cycle")
        total_steps = check_int("total_steps", total_steps, 1)
        _check_span(total_steps, self.n_cycle, self.delay)  # type: ignore[arg-type]
        return total_steps

    def __call__(self, step: int, total_steps: int | None = None) -> float:
        """β at ``step`` (0-based) of a run of ``total_steps`` steps: :func:`cyclical_beta` with these parameters."""
        total = self._total(total_steps)
        return self._value(check_int("step", step, 0), total)

    def _value(self, step: int, total_steps: int | None) -> float:
        """β without argument checks, for the callback's per-step path (its checks ran once per fit)."""
        if step < self.delay:
            return self.start
        tau = _locate(step, total_steps, self.n_cycle, self.delay, self.period)[1]  # 1.0 past the last cycle
        if tau >= self.ratio:
            return self.stop
        if tau < self.ratio_zero:
            return self.start
        u = (tau - self.ratio_zero) / (self.ratio - self.ratio_zero)
        if self.shape == "log":
            return self.start * (self.stop / self.start) ** u
        return self.start + (self.stop - self.start) * _ramp(u, self.shape)

    def phase(self, step: int, total_steps: int | None = None) -> Phase | None:
        """:func:`cyclical_phase` at ``step``; None where ``T`` is needed and not given (the phase is unknown)."""
        step = check_int("step", step, 0)
        if self.period is None:
            if total_steps is None:
                return None
            total_steps = check_int("total_steps", total_steps, 1)
            if self.delay >= total_steps:
                raise ValueError(f"`delay`={self.delay} must be smaller than `total_steps`={total_steps}")
        return self._phase(step, total_steps)

    def _phase(self, step: int, total_steps: int | None) -> Phase:
        """:func:`cyclical_phase` without argument checks."""
        n_cycle, delay, period = self.n_cycle, self.delay, self.period
        if step < delay:
            return "delay"
        cycle, tau = _locate(step, total_steps, n_cycle, delay, period)
        if cycle < 0:
            return "final"
        if tau < self.ratio and not (
            self.ratio == 1.0 and _ends_full_cycle(step - delay, total_steps, n_cycle, delay, period)
        ):
            return "ramp"
        return "final" if cycle == _last_cycle(total_steps, n_cycle, delay, period) else "plateau"

    def values(self, total_steps: int) -> npt.NDArray[np.float64]:
        """β at steps ``0 .. total_steps - 1``: :func:`cyclical_schedule` with these parameters.

        With ``period`` set, ``total_steps`` is only the length of the array.
        """
        total_steps = check_int("total_steps", total_steps, 1)
        _check_total(self, total_steps)
        # β depends on t only through the position in its cycle: compute one cycle, then repeat it.
        out = np.empty(total_steps, dtype=np.float64)
        head = min(self.delay, total_steps)
        out[:head] = self.start
        rest = total_steps - head
        if rest == 0:
            return out
        if self.period is None:
            cycles = cast(int, self.n_cycle)  # validated: an int whenever `period` is None
            tau = np.arange(_period(rest, cycles), dtype=np.float64)  # exact integers: length < 2**53
            tau *= cycles
            tau /= rest
        else:
            tau = np.arange(self.period, dtype=np.float64)
            tau /= self.period
        out[head:] = np.resize(self._cycle_values(tau), rest)
        if self.period is not None and self.n_cycle is not None:
            out[head + self.n_cycle * self.period :] = self.stop
        return out

    def _cycle_values(self, tau: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """β at positions ``tau`` of one cycle, with the same floating-point operations as :meth:`_value`."""
        start, stop, ratio, ratio_zero = self.start, self.stop, self.ratio, self.ratio_zero
        beta = tau - ratio_zero
        beta /= ratio - ratio_zero
        np.clip(beta, 0.0, 1.0, out=beta)
        if self.shape == "log":
            np.power(stop / start, beta, out=beta)
            beta *= start
        else:
            _ramp_array_(beta, self.shape)
            beta *= stop - start
            beta += start
        beta[tau >= ratio] = stop
        beta[tau < ratio_zero] = start
        return beta

    def length(self, total_steps: int | None = None) -> int | None:
        """Steps after which β holds ``stop`` for good: ``T``, or ``delay + n_cycle * period``; None: endless.

        Example:
            >>> CyclicalSchedule(n_cycle=3, period=10, delay=5).length(), CyclicalSchedule().length(100)
            (35, 100)
        """
        if self.period is None:
            return None if total_steps is None else check_int("total_steps", total_steps, 1)
        return None if self.n_cycle is None else self.delay + self.n_cycle * self.period


#: The schedule's parameters, in the order of its fields; written out once, as :class:`CyclicalSchedule`'s fields.
_PARAMETERS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(CyclicalSchedule))


def _schedule_from(arguments: Mapping[str, Any], **override: Any) -> CyclicalSchedule:
    """The :class:`CyclicalSchedule` of the schedule parameters found in ``arguments``, e.g. a function's own
    arguments (``locals()`` as its first statement) or parsed command-line flags; other names are ignored.

    Example:
        >>> _schedule_from({"ratio": 0.25, "total_steps": 100, "unit": "step"}, n_cycle=2)
        CyclicalSchedule(n_cycle=2, ratio=0.25, start=0.0, stop=1.0, shape='linear', ratio_zero=0.0, period=None, delay=0)
    """
    parameters = {**{name: arguments[name] for name in _PARAMETERS if name in arguments}, **override}
    values = tuple(parameters.values())
    try:
        hash(values)
    except TypeError:  # an unhashable argument: built (and refused, with the reason) without the cache
        return CyclicalSchedule(**parameters)
    return _built(tuple(parameters), *values)


@functools.lru_cache(maxsize=256, typed=True)  # typed: `n_cycle=True` is not `n_cycle=1`, and fails as it should
def _built(names: tuple[str, ...], *values: Any) -> CyclicalSchedule:
    """One frozen schedule per configuration, so a pure function called every step validates it once."""
    return CyclicalSchedule(**dict(zip(names, values)))


# ----------------------------------------------------------------------------- schedules that compose

ScheduleFn = Callable[[int, "int | None"], float]


def _declares_phases(schedule: object) -> bool:
    """Whether a schedule says which phase each step is in: its ``has_phases`` if it has one, else whether it has a
    ``phase(step, total_steps)`` method. The plateau-aware callbacks refuse a schedule that does not.

    Example:
        >>> _declares_phases(CyclicalSchedule()), _declares_phases(min)
        (True, False)
        >>> _declares_phases(join_schedules([min, max], [10]))  # it has `phase`, but no part answers
        False
    """
    declared = getattr(schedule, "has_phases", None)
    if isinstance(declared, bool):
        return declared
    return callable(getattr(schedule, "phase", None))


@dataclasses.dataclass(frozen=True)
class ConstantSchedule:
    """One value at every step, with a declared phase: a tail or a hold to join with other schedules.

    optax's ``constant_schedule``, with the phase that the plateau-aware callbacks and
    :class:`~lightning_kl_anneal.LatentMonitor` read: ``"final"`` by default (nothing left to rise; inside
    :func:`join_schedules`, before another part, it reads ``"plateau"``), ``"delay"`` for a hold that
    selection should not count (β = 0 before a warm-up).

    Args:
        value: the value, finite.
        phase_name: the phase of every step, one of :data:`PHASES`.

    Example:
        >>> tail = ConstantSchedule(1.0)
        >>> tail(0, 100), tail(10**6, None), tail.phase(5, None)
        (1.0, 1.0, 'final')
        >>> ConstantSchedule(0.0, phase_name="delay").values(3).tolist()
        [0.0, 0.0, 0.0]
    """

    value: float
    phase_name: Phase = "final"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_real("value", self.value))
        check_choice("phase_name", self.phase_name, PHASES)

    needs_total = False  #: the value does not depend on ``T``

    def __call__(self, step: int, total_steps: int | None = None) -> float:
        """``value``, whatever the step."""
        return self.value

    def phase(self, step: int, total_steps: int | None = None) -> Phase:
        """``phase_name``, whatever the step."""
        return self.phase_name

    def values(self, total_steps: int) -> npt.NDArray[np.float64]:
        """``value`` at steps ``0 .. total_steps - 1``."""
        return np.full(check_int("total_steps", total_steps, 1), self.value)


@functools.lru_cache(maxsize=64)
def _resolve_edges(boundaries: tuple[float, ...], total_steps: int | None) -> tuple[int, ...]:
    """Boundaries as steps: ints as they are; fractions of ``T`` rounded to the nearest step (``T`` needed for them)."""
    fractions = isinstance(boundaries[0], float)
    if fractions:
        if total_steps is None:
            raise ValueError(
                f"`boundaries`={list(boundaries)} are fractions of the run, so `total_steps` is needed; "
                "pass steps (ints) to join schedules in a run of unknown length"
            )
        edges = tuple(int(b * total_steps + 0.5) for b in boundaries)
    else:
        edges = cast("tuple[int, ...]", boundaries)
    return edges


def _empty_parts(edges: tuple[int, ...], total_steps: int) -> list[int]:
    """The parts whose stretch holds no step of a run of ``total_steps``: they never run (optax's semantics)."""
    spans = [edges[0], *(b - a for a, b in itertools.pairwise(edges)), total_steps - edges[-1]]
    return [i for i, span in enumerate(spans) if span < 1]


def _short_cyclical_part(part: object, span: int) -> str | None:
    """Why a cyclical part's stretch of ``span`` steps cannot hold its cycles (or its delay); None if it can.

    Alone, such a schedule is refused (β would never leave ``start``); inside a joined schedule, whose parts'
    lengths follow the run's, it holds ``start`` with a warning, as ``CyclicalKLAnnealing`` does in a debug run.
    """
    if not isinstance(part, CyclicalSchedule) or part.period is not None:
        return None
    problem = _span_problem(span, part.n_cycle, part.delay)
    if problem == "delay":
        return f"its `delay`={part.delay} is not smaller than its stretch"
    if problem == "cycles":
        return f"its `n_cycle`={part.n_cycle} cycles need more than {part.n_cycle} steps after `delay`={part.delay}"
    return None


@dataclasses.dataclass(frozen=True)
class JoinedSchedule:
    """Schedules one after another, each seeing the step counted from its own start: see :func:`join_schedules`."""

    schedules: tuple[ScheduleFn, ...]
    boundaries: tuple[int, ...] | tuple[float, ...]

    def __post_init__(self) -> None:
        schedules, boundaries = tuple(self.schedules), tuple(self.boundaries)
        if not schedules:
            raise ValueError("`schedules` must name at least one schedule, got none")
        for i, part in enumerate(schedules):
            if not callable(part):
                raise TypeError(
                    f"`schedules[{i}]` must be callable as schedule(step, total_steps), "
                    f"got {part!r} of type {type(part).__name__}"
                )
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                f"`boundaries` must hold one step per schedule after the first ({len(schedules) - 1} for "
                f"{len(schedules)} schedules), got {len(boundaries)}: {list(boundaries)}"
            )
        object.__setattr__(self, "schedules", schedules)
        object.__setattr__(self, "boundaries", check_boundaries("boundaries", boundaries))
        object.__setattr__(self, "_warned", set())  # (what, T) already warned about: once each, per instance

    def _warn_once(self, key: tuple[Any, ...], message: str) -> None:
        if key not in self._warned:  # type: ignore[attr-defined]
            self._warned.add(key)  # type: ignore[attr-defined]
            warnings.warn(message, UserWarning, stacklevel=3)

    def _edges(self, total: int | None) -> tuple[int, ...]:
        """The boundaries as steps of a run of ``total``, warning once about parts that get no step."""
        edges = _resolve_edges(self.boundaries, total)
        if total is not None and (empty := _empty_parts(edges, total)):
            self._warn_once(("empty", total), (
                f"`boundaries`={list(self.boundaries)} fall on steps {list(edges)} of a run of `total_steps`={total}: "
                f"{', '.join(f'`schedules[{i}]`' for i in empty)} "
                f"{'gets no step and never runs' if len(empty) == 1 else 'get no step and never run'}; "
                "use fewer parts, boundaries further apart, or a longer run"
            ))  # fmt: skip
        return edges

    @property
    def needs_total(self) -> bool:
        """Whether ``T`` is needed: for fractions of the run, or when the last part needs it."""
        return bool(self._fractions or getattr(self.schedules[-1], "needs_total", False))

    @property
    def _fractions(self) -> bool:
        return bool(self.boundaries) and isinstance(self.boundaries[0], float)

    def _locate(self, step: Any, total_steps: Any) -> tuple[int, int, int | None]:
        """``(part index, step within the part, the part's total)``."""
        step = check_int("step", step, 0)
        total = check_int("total_steps", total_steps, 1, optional=True)
        if not self.boundaries:
            return 0, step, total
        edges = self._edges(total)
        i = bisect.bisect_right(edges, step)
        begin = edges[i - 1] if i else 0
        if i < len(edges):
            return i, step - begin, edges[i] - begin
        return i, step - begin, None if total is None else total - begin

    @property
    def has_phases(self) -> bool:
        """Whether any part declares phases (a ``phase`` method, or ``has_phases``): if none does, no step has one.

        Example:
            >>> join_schedules([CyclicalSchedule(n_cycle=1), ConstantSchedule(1.0)], [0.5]).has_phases
            True
            >>> join_schedules([min, max], [10]).has_phases  # plain functions: nothing to follow
            False
        """
        return any(_declares_phases(part) for part in self.schedules)

    def _short(self, i: int, total: int | None) -> bool:
        """Whether part ``i`` is a cyclical schedule whose stretch of ``total`` steps cannot hold its cycles (warned once)."""
        if total is None:
            return False
        problem = _short_cyclical_part(self.schedules[i], total)
        if problem is not None:
            self._warn_once(("short", i, total), (
                f"`schedules[{i}]` of the joined schedule runs {total} step{'s' if total > 1 else ''}, but {problem}: "
                "it holds its `start` there; give it a longer stretch (boundaries, or a longer run) or fewer cycles"
            ))  # fmt: skip
        return problem is not None

    def __call__(self, step: int, total_steps: int | None = None) -> float:
        """The active part's value at the step counted from its start, with the part's own length as its ``T``."""
        i, local, total = self._locate(step, total_steps)
        if self._short(i, total):
            return self.schedules[i].start  # type: ignore[attr-defined]  # a CyclicalSchedule: see _short
        return float(self.schedules[i](local, total))

    def phase(self, step: int, total_steps: int | None = None) -> Phase | None:
        """The active part's phase; a part's ``"final"`` reads ``"plateau"`` before the last part.

        A part without phases (a plain function) reads ``"ramp"`` while another part follows, since the
        callbacks cannot tell its values from a ramp's (no selection there, no collapse counted, and
        ``on_collapse="raise"`` waits for the parts to come), and None as the last part. None, too, when
        nothing can be said: no part declares phases, or the boundaries are fractions and ``T`` is unknown.

        Example:
            >>> joined = join_schedules([min, CyclicalSchedule(n_cycle=1)], [10])
            >>> joined.phase(3, 20), joined.phase(19, 20), join_schedules([min, max], [0.5]).phase(3)
            ('ramp', 'final', None)
        """
        if not self.has_phases or (total_steps is None and self._fractions):
            return None
        i, local, total = self._locate(step, total_steps)
        phase_of = getattr(self.schedules[i], "phase", None)
        if not callable(phase_of):
            return "ramp" if i < len(self.schedules) - 1 else None
        if self._short(i, total):
            return "delay"  # held at `start`: not a phase to select or judge a model in
        phase: Phase | None = phase_of(local, total)
        return "plateau" if phase == "final" and i < len(self.schedules) - 1 else phase

    def length(self, total_steps: int | None = None) -> int | None:
        """Steps after which the last part holds its final value for good, as :meth:`CyclicalSchedule.length`:
        the last part's start plus its own ``length`` (any other part runs to ``T``); None when unknown.

        Example:
            >>> join_schedules([ConstantSchedule(0.0), CyclicalSchedule(n_cycle=2, period=40)], [10]).length()
            90
            >>> join_schedules([min, CyclicalSchedule()], [0.25]).length(100), join_schedules([min, max], [5]).length()
            (100, None)
        """
        total = check_int("total_steps", total_steps, 1, optional=True)
        if total is None and self._fractions:
            return None
        begin = self._edges(total)[-1] if self.boundaries else 0
        last = self.schedules[-1]
        if not isinstance(last, (CyclicalSchedule, JoinedSchedule)):
            return total  # a function (or a constant): it runs to the end
        own = last.length(None if total is None else max(total - begin, 1))
        return None if own is None else begin + own

    def values(self, total_steps: int) -> npt.NDArray[np.float64]:
        """The value at steps ``0 .. total_steps - 1``; parts with a ``values`` method are asked for their stretch."""
        total = check_int("total_steps", total_steps, 1)
        edges = self._edges(total) if self.boundaries else ()
        out = np.empty(total, dtype=np.float64)
        for i, (part, begin, end) in enumerate(zip(self.schedules, (0, *edges), (*edges, total))):
            span = end - begin  # the part's own T, even where the run ends inside it (boundaries past T)
            if span > 0 and begin < total:
                values_of = getattr(part, "values", None)
                values: Any
                if self._short(i, span):
                    values = np.full(span, part.start)  # type: ignore[attr-defined]
                else:
                    values = values_of(span) if callable(values_of) else [part(s, span) for s in range(span)]
                out[begin : min(end, total)] = np.asarray(values, dtype=np.float64)[: total - begin]
        return out


def join_schedules(schedules: Sequence[ScheduleFn], boundaries: Sequence[int] | Sequence[float]) -> JoinedSchedule:
    """Chain schedules: ``schedules[i]`` runs from ``boundaries[i - 1]`` to ``boundaries[i]`` (optax's semantics).

    Each schedule sees the step counted from its own start, and as its ``total_steps`` the length of its
    own stretch: ``boundaries[i] - boundaries[i - 1]`` (``boundaries[0]`` for the first), and for the last
    one the rest of the run, ``T - boundaries[-1]`` (None while ``T`` is unknown). So a
    :class:`CyclicalSchedule` fits its cycles into its stretch, as it fits them into a whole run alone.

    ``boundaries`` are steps (ints) or, since a run's length is often not known when it is configured,
    fractions of the run (floats in (0, 1), e.g. ``[0.25]``: the second schedule starts a quarter of the
    way in), rounded to the nearest step once ``T`` is known; not a mix of both. A part whose stretch is
    empty in a run of ``T`` steps never runs, with a warning, and a :class:`CyclicalSchedule` part whose
    stretch is too short for its cycles holds its ``start``, with a warning: so ``fast_dev_run`` and short
    debug runs still train (alone, such a schedule is refused).

    Phases: :meth:`JoinedSchedule.phase` is the active part's ``phase`` when it has one (None otherwise),
    so :class:`~lightning_kl_anneal.PlateauModelCheckpoint`, ``PlateauEarlyStopping`` and
    :class:`~lightning_kl_anneal.LatentMonitor` follow the parts through ``ScheduledAttribute``. A part's
    ``"final"`` reads ``"plateau"`` while another part is to come: the joined schedule may still ramp.

    The result is frozen and picklable when its parts are (module-level functions, ``CyclicalSchedule``,
    :class:`ConstantSchedule`, ``functools.partial``; not lambdas). ``needs_total`` is True when the
    boundaries are fractions or the last part needs ``T``.

    Args:
        schedules: one or more ``schedule(step, total_steps) -> float`` callables.
        boundaries: ``len(schedules) - 1`` strictly increasing steps (>= 0) or fractions in (0, 1).

    Returns:
        A :class:`JoinedSchedule`: ``__call__(step, total_steps)``, ``phase(step, total_steps)``,
        ``values(total_steps)``, ``needs_total``.

    Raises:
        TypeError: a schedule that is not callable; boundaries that are neither all ints nor all floats.
        ValueError: the wrong number of boundaries, or boundaries out of range or not increasing; when
            called, fractions without ``T``.

    Example:
        >>> warmup_then_cycles = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=2)], [4])
        >>> warmup_then_cycles.values(12).tolist()
        [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
        >>> warmup_then_cycles.phase(3, 12), warmup_then_cycles.phase(11, 12)
        ('plateau', 'final')
        >>> join_schedules([CyclicalSchedule(n_cycle=1), ConstantSchedule(1.0)], [0.5])(50, 100)
        1.0
    """
    return JoinedSchedule(tuple(schedules), tuple(boundaries))


# ----------------------------------------------------------------------------- drop-ins


def frange_cycle_linear(
    n_iter: int, start: float = 0.0, stop: float = 1.0, n_cycle: int = 4, ratio: float = 0.5
) -> npt.NDArray[np.float64]:
    """Drop-in for the reference code's ``frange_cycle_linear`` (same name, signature, values).

    Equal to the reference within 1e-9 wherever it is well defined (``n_iter`` a multiple
    of ``n_cycle``, ``ratio < 1``). Where the reference is faulty this follows the
    paper's equation instead (see :func:`cyclical_beta`): no float accumulation, cycles stay
    aligned when ``n_iter`` is not a multiple of ``n_cycle``. ``n_cycle >= n_iter``, where the
    reference silently returns ``start`` everywhere, is a ``ValueError``.

    Example:
        >>> frange_cycle_linear(10, n_cycle=4, ratio=0.5).round(3).tolist()
        [0.0, 0.8, 1.0, 0.0, 0.8, 1.0, 0.0, 0.8, 1.0, 0.0]
    """
    return cyclical_schedule(n_iter, n_cycle, ratio, start, stop, "linear")


def frange_cycle_sigmoid(
    n_iter: int, start: float = 0.0, stop: float = 1.0, n_cycle: int = 4, ratio: float = 0.5
) -> npt.NDArray[np.float64]:
    """Drop-in for the reference code's ``frange_cycle_sigmoid``.

    Differences from the reference, all deliberate: the curve is scaled to
    ``[start, stop]`` and the plateau is ``stop`` (the reference evaluates the sigmoid
    at ``v`` in ``[start, stop]`` and always plateaus at 1.0); at the single step where
    ``tau == ratio`` exactly, the reference writes ``f(1) = 0.99753`` while the equation
    is on its plateau (``stop``); ``ratio = 1`` and uneven cycles work instead of raising
    ``IndexError``. With ``start=0, stop=1`` every other step matches within 1e-9.

    Example:
        >>> frange_cycle_sigmoid(20)[:5].round(4).tolist()
        [0.0025, 0.2315, 0.9734, 1.0, 1.0]
    """
    return cyclical_schedule(n_iter, n_cycle, ratio, start, stop, "sigmoid")


def frange_cycle_cosine(
    n_iter: int, start: float = 0.0, stop: float = 1.0, n_cycle: int = 4, ratio: float = 0.5
) -> npt.NDArray[np.float64]:
    """Drop-in for the reference code's ``frange_cycle_cosine``.

    Same differences as :func:`frange_cycle_sigmoid` (scaled to ``[start, stop]``,
    plateau at ``stop``, no ``IndexError``); the cosine reaches exactly 1 at the end
    of its ramp, so with ``start=0, stop=1`` it matches the reference within 1e-9
    wherever the reference is well defined.

    Example:
        >>> frange_cycle_cosine(20)[:5].round(4).tolist()
        [0.0, 0.3455, 0.9045, 1.0, 1.0]
    """
    return cyclical_schedule(n_iter, n_cycle, ratio, start, stop, "cosine")
