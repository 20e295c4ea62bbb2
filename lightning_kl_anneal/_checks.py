"""Argument checks, one policy for the whole library.

A wrong type is a ``TypeError``, a wrong value a ``ValueError``; both name the argument, echo the
value and say what is accepted::

    `n_cycle` must be an int >= 1, got 2.5 of type float      (TypeError)
    `n_cycle` must be an int >= 1, got 0                      (ValueError)

``bool`` is an ``int`` subclass, but ``n_cycle=True`` is always a mistake: it is a wrong type
everywhere a number is expected.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "check_boundaries",
    "check_choice",
    "check_flag",
    "check_fraction",
    "check_fractions",
    "check_int",
    "check_name",
    "check_positive",
    "check_real",
    "check_rows",
]


def _or_none(optional: bool) -> str:
    return " or None" if optional else ""


def _wrong_type(name: str, value: object, accepted: str) -> TypeError:
    return TypeError(f"`{name}` must be {accepted}, got {value!r} of type {type(value).__name__}")


def check_int(name: str, value: Any, minimum: int | None = None, *, optional: bool = False) -> Any:
    """``value`` as an ``int`` (None passes with ``optional``).

    Example:
        >>> check_int("n_cycle", 4, 1)
        4
        >>> check_int("n_cycle", 2.5, 1)
        Traceback (most recent call last):
        ...
        TypeError: `n_cycle` must be an int >= 1, got 2.5 of type float
        >>> check_int("patience", 0, 1, optional=True)
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be an int >= 1 or None, got 0
    """
    if value is None and optional:
        return None
    accepted = ("an int" if minimum is None else f"an int >= {minimum}") + _or_none(optional)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _wrong_type(name, value, accepted)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}")
    return int(value)


def check_real(
    name: str, value: Any, minimum: float | None = None, *, finite: bool = True, optional: bool = False
) -> Any:
    """``value`` as a ``float``: finite (any real with ``finite=False``, for a caller that checks a range), >= ``minimum``.

    Example:
        >>> check_real("start", 0.1)
        0.1
        >>> check_real("kl_threshold", -1.0, 0.0)
        Traceback (most recent call last):
        ...
        ValueError: `kl_threshold` must be a finite real number >= 0, got -1.0
        >>> check_real("stop", "1")
        Traceback (most recent call last):
        ...
        TypeError: `stop` must be a finite real number, got '1' of type str
    """
    if value is None and optional:
        return None
    accepted = (
        ("a finite real number" if finite else "a real number")
        + ("" if minimum is None else f" >= {minimum:g}")
        + _or_none(optional)
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong_type(name, value, accepted)
    value = float(value)
    if (finite and not math.isfinite(value)) or (minimum is not None and not value >= minimum):
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}")
    return value


def check_positive(name: str, value: Any, maximum: float | None = None) -> float:
    """``value`` as a ``float`` that is finite and > 0 (and <= ``maximum`` when given).

    Example:
        >>> check_positive("gamma", 0.5)
        0.5
        >>> check_positive("gamma", 0.0)
        Traceback (most recent call last):
        ...
        ValueError: `gamma` must be a finite real number > 0, got 0.0
        >>> check_positive("momentum", 1.5, 1.0)
        Traceback (most recent call last):
        ...
        ValueError: `momentum` must be a finite real number in (0, 1], got 1.5
    """
    accepted = "a finite real number " + ("> 0" if maximum is None else f"in (0, {maximum:g}]")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong_type(name, value, accepted)
    value = float(value)
    if not (math.isfinite(value) and value > 0.0 and (maximum is None or value <= maximum)):
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (``1`` or ``"yes"`` are a ``TypeError``: a flag is True or False).

    Example:
        >>> check_flag("learn_shift", 1)
        Traceback (most recent call last):
        ...
        TypeError: `learn_shift` must be True or False, got 1 of type int
    """
    if not isinstance(value, bool):
        raise _wrong_type(name, value, "True or False")
    return value


def check_boundaries(name: str, values: tuple[Any, ...]) -> tuple[int, ...] | tuple[float, ...]:
    """``values`` as strictly increasing steps (ints >= 0) or fractions of a run (floats in (0, 1)), not a mix.

    Example:
        >>> check_boundaries("boundaries", (0.25, 0.5))
        (0.25, 0.5)
        >>> check_boundaries("boundaries", (5, 3))
        Traceback (most recent call last):
        ...
        ValueError: `boundaries` must be steps (ints >= 0) or fractions of the run (floats in (0, 1)), strictly increasing, got [5, 3]
    """
    accepted = "steps (ints >= 0) or fractions of the run (floats in (0, 1)), strictly increasing"
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        steps = tuple(int(v) for v in values)
        if any(v < 0 for v in steps) or any(a >= b for a, b in itertools.pairwise(steps)):
            raise ValueError(f"`{name}` must be {accepted}, got {list(values)}")
        return steps
    if all(isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral)) for v in values):
        fractions = tuple(float(v) for v in values)
        if any(not 0.0 < v < 1.0 for v in fractions) or any(a >= b for a, b in itertools.pairwise(fractions)):
            raise ValueError(f"`{name}` must be {accepted}, got {list(values)}")
        return fractions
    raise TypeError(f"`{name}` must be {accepted}, not a mix of both or other types, got {list(values)}")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices`` (a ``ValueError`` otherwise, whatever its type).

    Example:
        >>> check_choice("shape", "cubic", ("linear", "cosine"))
        Traceback (most recent call last):
        ...
        ValueError: `shape` must be one of ('linear', 'cosine'), got 'cubic'
    """
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}")
    return value


def check_name(name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is a non-empty string (a key, a metric name); None passes with ``optional``.

    Example:
        >>> check_name("mu_key", "")
        Traceback (most recent call last):
        ...
        ValueError: `mu_key` must be a non-empty string, got ''
    """
    if value is None and optional:
        return None
    accepted = "a non-empty string" + _or_none(optional)
    if not isinstance(value, str):
        raise _wrong_type(name, value, accepted)
    if not value:
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}")
    return value


def check_rows(name: str, value: Any, *, min_rows: int = 0, what: str = "") -> Tensor:
    """``value`` if it is a (batch, d) tensor with at least ``min_rows`` rows.

    Args:
        name: the argument's name.
        value: the tensor.
        min_rows: the fewest rows accepted.
        what: a reason appended to the message for too few rows (e.g. "a variance needs two").

    Example:
        >>> import torch
        >>> check_rows("mu", torch.zeros(3)).shape
        Traceback (most recent call last):
        ...
        ValueError: `mu` must be a (batch, d) tensor, got shape (3,)
    """
    from torch import Tensor  # here: the schedules import this module and need no torch

    if not isinstance(value, Tensor):
        raise _wrong_type(name, value, "a (batch, d) tensor")
    if value.dim() != 2:
        raise ValueError(f"`{name}` must be a (batch, d) tensor, got shape {tuple(value.shape)}")
    if value.shape[0] < min_rows:
        raise ValueError(
            f"`{name}` must be a (batch, d) tensor with at least {min_rows} row{'s' if min_rows != 1 else ''}, got shape {tuple(value.shape)}"
            + (f": {what}" if what else "")
        )
    return value


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a ``float`` in (0, 1]: a share, a fraction.

    Example:
        >>> check_fraction("share", 0.9)
        0.9
        >>> check_fraction("share", 0.0)
        Traceback (most recent call last):
        ...
        ValueError: `share` must be a real number in (0, 1], got 0.0
    """
    accepted = "a real number in (0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong_type(name, value, accepted)
    value = float(value)
    if not 0.0 < value <= 1.0:  # NaN fails too
        raise ValueError(f"`{name}` must be {accepted}, got {value!r}")
    return value


def check_fractions(name: str, value: Any, *, allow_empty: bool = False) -> tuple[float, ...]:
    """``value`` as a tuple of floats in (0, 1], each checked by :func:`check_fraction` as ``name[i]``.

    Example:
        >>> check_fractions("shares", [0.9, 0.99])
        (0.9, 0.99)
        >>> check_fractions("shares", (0.9, 1.5))
        Traceback (most recent call last):
        ...
        ValueError: `shares[1]` must be a real number in (0, 1], got 1.5
    """
    accepted = "a list or tuple of real numbers in (0, 1]"
    if not isinstance(value, (list, tuple)):
        raise _wrong_type(name, value, accepted)
    if not value and not allow_empty:
        raise ValueError(f"`{name}` must be a non-empty {accepted[2:]}, got {value!r}")
    return tuple(check_fraction(f"{name}[{i}]", v) for i, v in enumerate(value))
