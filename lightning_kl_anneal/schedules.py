"""Cyclical KL-weight schedules as pure functions of the step.

Fu et al., "Cyclical Annealing Schedule: A Simple Approach to Mitigating KL
Vanishing", NAACL 2019 (arXiv:1903.10145). With a 0-based step ``t``, ``T`` total
steps, ``M`` cycles and ramp ratio ``R``::

    tau(t)  = (t mod ceil(T / M)) / (T / M)           # position in the cycle, in [0, 1)
    beta(t) = start + (stop - start) * f(tau / R)     if tau < R
            = stop                                    otherwise, and for every t >= T

``f`` is the ramp's shape (``"linear"``, ``"sigmoid"`` or ``"cosine"``). ``M = 1``
is the classic monotonic warm-up. With ``ratio_zero > 0`` (Optimus, Li et al.
2020) β holds ``start`` for ``tau < ratio_zero`` and the ramp runs from
``ratio_zero`` to ``ratio``.

Everything here is a function of its arguments only: no counters, no precomputed
arrays. That is what makes checkpoint resume, DDP and gradient accumulation
correct for free in :class:`~lightning_kl_anneal.CyclicalKLAnnealing`.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = [
    "Shape",
    "SHAPES",
    "cycle_length",
    "cycle_position",
    "cyclical_beta",
    "cyclical_schedule",
    "frange_cycle_cosine",
    "frange_cycle_linear",
    "frange_cycle_sigmoid",
    "validate_schedule_args",
]

Shape = Literal["linear", "sigmoid", "cosine"]
SHAPES: tuple[str, ...] = get_args(Shape)


# ----------------------------------------------------------------------------- validation


def _check_int(name: str, value: object, minimum: int) -> int:
    # bool is an int subclass, but `n_cycle=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r} of type {type(value).__name__}")
    return float(value)


def _check_finite(name: str, value: object) -> float:
    value = _check_real(name, value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite real number, got {value!r}")
    return value


def validate_schedule_args(
    n_cycle: int = 4,
    ratio: float = 0.5,
    start: float = 0.0,
    stop: float = 1.0,
    shape: str = "linear",
    ratio_zero: float = 0.0,
    total_steps: int | None = None,
) -> None:
    """Check a schedule configuration and raise an error that says how to fix it.

    Called by every public function here and by the callback's constructor, so
    bad input fails once, early, with the same message everywhere.

    Args:
        n_cycle: number of cycles ``M``, an int >= 1.
        ratio: fraction ``R`` of each cycle spent rising, in (0, 1].
        start: β at the beginning of each cycle, finite.
        stop: β on the plateau and after the last step, finite.
        shape: one of ``"linear"``, ``"sigmoid"``, ``"cosine"``.
        ratio_zero: leading fraction of each cycle held at ``start``, in [0, ratio).
        total_steps: ``T``, an int >= 1, or None when not known yet.

    Raises:
        TypeError: an argument has the wrong type (e.g. ``n_cycle=2.5``).
        ValueError: an argument is out of range.

    Example:
        >>> validate_schedule_args(n_cycle=4, ratio=0.5)
        >>> validate_schedule_args(ratio=1.5)
        Traceback (most recent call last):
        ...
        ValueError: `ratio` must be in (0, 1], got 1.5
    """
    _check_int("n_cycle", n_cycle, 1)
    ratio = _check_real("ratio", ratio)
    if not 0.0 < ratio <= 1.0:  # also rejects NaN, which compares False with everything
        raise ValueError(f"`ratio` must be in (0, 1], got {ratio!r}")
    _check_finite("start", start)
    _check_finite("stop", stop)
    if shape not in SHAPES:
        raise ValueError(f"`shape` must be one of {SHAPES}, got {shape!r}")
    ratio_zero = _check_real("ratio_zero", ratio_zero)
    if not 0.0 <= ratio_zero < ratio:
        raise ValueError(f"`ratio_zero` must be in [0, ratio) = [0, {ratio}), got {ratio_zero!r}")
    if total_steps is not None:
        _check_int("total_steps", total_steps, 1)


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


def _tau(step: int, total_steps: int, n_cycle: int) -> float:
    """:func:`cycle_position` without checks, for ``step < total_steps``."""
    # One rounding only: (k * M) is exact in integers, then a single division by T.
    return (step % _period(total_steps, n_cycle)) * n_cycle / total_steps


def cycle_length(total_steps: int, n_cycle: int = 4) -> int:
    """Number of steps in one cycle, ``ceil(T / M)``; the last cycle may be shorter.

    Args:
        total_steps: ``T``, total number of (optimizer) steps.
        n_cycle: ``M``, number of cycles.

    Returns:
        The period of the schedule in steps.

    Example:
        >>> cycle_length(10_000, 4)
        2500
        >>> cycle_length(10, 4)
        3
    """
    validate_schedule_args(n_cycle=n_cycle, total_steps=total_steps)
    return _period(total_steps, n_cycle)


def cycle_position(step: int, total_steps: int, n_cycle: int = 4) -> float:
    """Position ``tau`` of ``step`` inside its cycle, in [0, 1); 1.0 from ``total_steps`` on.

    ``tau = (step mod ceil(T / M)) / (T / M)`` (Fu et al., NAACL 2019). Useful to drive
    anything else that should restart with the cycles, e.g. a cosine learning rate.

    Args:
        step: 0-based step ``t``, an int >= 0.
        total_steps: ``T``.
        n_cycle: ``M``.

    Returns:
        ``tau`` as a float.

    Example:
        >>> [cycle_position(t, 20, 4) for t in range(6)]
        [0.0, 0.2, 0.4, 0.6, 0.8, 0.0]
        >>> cycle_position(20, 20, 4)
        1.0
    """
    validate_schedule_args(n_cycle=n_cycle, total_steps=total_steps)
    _check_int("step", step, 0)
    if step >= total_steps:
        return 1.0
    return _tau(step, total_steps, n_cycle)


def cyclical_beta(
    step: int,
    total_steps: int,
    n_cycle: int = 4,
    ratio: float = 0.5,
    start: float = 0.0,
    stop: float = 1.0,
    shape: Shape = "linear",
    ratio_zero: float = 0.0,
) -> float:
    """β at one step of the cyclical annealing schedule (Fu et al., NAACL 2019).

    ``tau = (step mod ceil(T/M)) / (T/M)``; β is ``start`` while ``tau < ratio_zero``,
    rises from ``start`` to ``stop`` along ``shape`` while ``tau < ratio``, then holds
    ``stop`` to the end of the cycle. For every ``step >= total_steps`` β is ``stop``.
    Closed form: O(1) time and memory, no accumulated rounding, and the plateau is
    exactly ``stop``.

    Args:
        step: 0-based step ``t`` (in the callback: ``trainer.global_step``).
        total_steps: ``T``, total number of steps the schedule spans.
        n_cycle: ``M``, number of cycles; 1 gives monotonic annealing.
        ratio: ``R``, fraction of each cycle spent rising, in (0, 1].
        start: β at the beginning of each cycle.
        stop: β on the plateau (the true ELBO weight is 1.0).
        shape: ``"linear"`` (``f(u) = u``), ``"sigmoid"`` (``1 / (1 + exp(-(12u - 6)))``,
            never exactly 0) or ``"cosine"`` (``0.5 - 0.5 cos(pi u)``).
        ratio_zero: leading fraction of each cycle held at ``start`` (Optimus), in [0, ratio).

    Returns:
        β as a Python float.

    Raises:
        TypeError, ValueError: see :func:`validate_schedule_args`; also a negative ``step``.

    Example:
        >>> [cyclical_beta(t, 20, n_cycle=4, ratio=0.5) for t in range(6)]
        [0.0, 0.4, 0.8, 1.0, 1.0, 0.0]
        >>> cyclical_beta(19, 20), cyclical_beta(10**9, 20)
        (1.0, 1.0)
        >>> round(cyclical_beta(1, 20, shape="cosine"), 4)
        0.3455
    """
    validate_schedule_args(n_cycle, ratio, start, stop, shape, ratio_zero, total_steps)
    _check_int("step", step, 0)
    return _beta(int(step), int(total_steps), int(n_cycle), float(ratio), float(start), float(stop), shape, float(ratio_zero))


def _beta(
    step: int,
    total_steps: int,
    n_cycle: int,
    ratio: float,
    start: float,
    stop: float,
    shape: str,
    ratio_zero: float,
) -> float:
    """:func:`cyclical_beta` without argument checks, for callers that validated once (the callback)."""
    if step >= total_steps:
        return float(stop)
    tau = _tau(step, total_steps, n_cycle)
    if tau >= ratio:
        return float(stop)
    if tau < ratio_zero:
        return float(start)
    u = (tau - ratio_zero) / (ratio - ratio_zero)
    return start + (stop - start) * _ramp(u, shape)


def cyclical_schedule(
    total_steps: int,
    n_cycle: int = 4,
    ratio: float = 0.5,
    start: float = 0.0,
    stop: float = 1.0,
    shape: Shape = "linear",
    ratio_zero: float = 0.0,
) -> npt.NDArray[np.float64]:
    """The whole schedule as an array: element ``t`` is :func:`cyclical_beta` at step ``t``.

    Vectorised with numpy (no Python loop over steps), for plotting or for training
    loops that prefer a lookup table. Same arguments as :func:`cyclical_beta`.
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
    """
    validate_schedule_args(n_cycle, ratio, start, stop, shape, ratio_zero, total_steps)
    # β depends on t only through t mod period: compute one cycle, then repeat it. Operations run
    # in place and in the same order as in `_beta`, so the values match it (bit for bit when linear).
    period = _period(total_steps, n_cycle)
    tau = np.arange(period, dtype=np.float64)  # exact integers: period < 2**53
    tau *= n_cycle
    tau /= total_steps
    beta = tau - ratio_zero
    beta /= ratio - ratio_zero
    np.clip(beta, 0.0, 1.0, out=beta)
    _ramp_array_(beta, shape)
    beta *= stop - start
    beta += start
    beta[tau >= ratio] = stop
    beta[tau < ratio_zero] = start
    del tau
    return np.resize(beta, total_steps)


# ----------------------------------------------------------------------------- drop-ins


def frange_cycle_linear(
    n_iter: int, start: float = 0.0, stop: float = 1.0, n_cycle: int = 4, ratio: float = 0.5
) -> npt.NDArray[np.float64]:
    """Drop-in for the reference code's ``frange_cycle_linear`` (same name, signature, values).

    Equal to the reference within 1e-9 wherever it is well defined (``n_iter`` a multiple
    of ``n_cycle``, ``ratio < 1``). Where the reference is faulty this follows the
    paper's equation instead (see :func:`cyclical_beta`) and never raises: no float
    accumulation, cycles stay aligned when ``n_iter`` is not a multiple of ``n_cycle``.

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
