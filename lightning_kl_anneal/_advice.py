"""What a run's length means for a schedule, in words: the errors and warnings of the scheduling callbacks.

Pure functions of the schedule (a :class:`~lightning_kl_anneal.CyclicalSchedule`, or None for a user's
function), the ``total_steps`` the user gave (``given``), the unit and the run's numbers. Each message
names the arguments that set what it reports, and says how to fix it; the callback adds who it is.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from lightning_kl_anneal.schedules import CyclicalSchedule, JoinedSchedule, _span_problem

__all__ = ["changed_config", "describe_schedule", "manual_max_steps", "off_plateau", "too_short", "unfinished"]


def too_short(cyc: CyclicalSchedule | None, given: int | None, unit: str, total: int) -> tuple[bool, str] | None:
    """``(fatal, message)`` when a schedule over ``total`` units cannot cycle (a delay as long as the run, more
    cycles than units); None when it can, or has no ``T`` to judge (a user's function, ``period=``).

    Example:
        >>> too_short(CyclicalSchedule(n_cycle=3, delay=3), None, "step", 6)[1][:60]
        '`n_cycle`=3 cycles need more than 3 steps, but the schedule '
    """
    if cyc is None or cyc.period is not None:
        return None
    problem = _span_problem(total, cyc.n_cycle, cyc.delay)
    if problem is None:
        return None
    where = f"`total_steps`={total}" if given is not None else f"the run's {total} {unit}s"
    if problem == "delay":
        return (
            True,
            f"`delay`={cyc.delay} must be smaller than {where}: no cycle would run. Use a shorter delay or a longer run.",
        )
    n_cycle, span = cyc.n_cycle or 1, total - cyc.delay
    return False, (
        f"`n_cycle`={n_cycle} cycles need more than {n_cycle} {unit}s, but the schedule has {span} ({where}"
        f"{f' minus `delay`={cyc.delay}' if cyc.delay else ''}); every cycle would be one {unit} long and β would "
        f"never leave `start`. Use fewer cycles{' or a longer run' if given is None else ' or a larger `total_steps`'}."
    )


def unfinished(
    cyc: CyclicalSchedule | None, given: int | None, unit: str, attribute: str, reached: int, length: int, value: float
) -> str:
    """The warning for a fit that ended after ``reached`` of the schedule's ``length`` units, ``value`` written last.

    Example:
        >>> unfinished(CyclicalSchedule(n_cycle=2), None, "step", "beta", 10, 50, 0.72)[:70]
        "the fit ended after 10 of the schedule's 50 steps (the Trainer's plann"
    """
    held = f"`{attribute}` last held {value:.6g}"
    if cyc is None:
        held += f"; the rest of the schedule did not run. {_unfinished_advice(cyc, given)}"
    elif value == cyc.stop:
        held += ", its final value, but the rest of the schedule did not run."
    else:
        held += f", not its final value {cyc.stop:.6g}. {_unfinished_advice(cyc, given)}"
    return f"the fit ended after {reached} of the schedule's {length} {unit}s ({_length_source(cyc, given)}); {held}"


def _length_source(cyc: CyclicalSchedule | None, given: int | None) -> str:
    """Where the schedule's length came from, in the words of the arguments that set it."""
    if cyc is not None and cyc.period is not None:
        delay = f"`delay`={cyc.delay} + " if cyc.delay else ""
        return f"{delay}`n_cycle`={cyc.n_cycle} × `period`={cyc.period}"
    return "`total_steps`" if given is not None else "the Trainer's planned length"


def _unfinished_advice(cyc: CyclicalSchedule | None, given: int | None) -> str:
    if cyc is None:
        if given is not None:
            return "If the run was meant to be shorter, pass `total_steps=` to match it."
        return "For a run that may stop early, pass `total_steps=` (the length to schedule over)."
    if cyc.period is not None:
        fit = "pass a smaller `n_cycle`, or `n_cycle=None` to cycle for as long as the run lasts"
    elif given is not None:
        fit = "pass `total_steps=` matching the run's real length"
    else:
        fit = "for a run that may stop early, pass `period=` (units per cycle) instead of relying on its planned length"
    return f"A model whose β never reached `stop` was not trained on the ELBO: {fit}."


def off_plateau(
    cyc: CyclicalSchedule | None,
    given: int | None,
    unit: str,
    run: int,
    total: int | None,
    phase: str,
    joined: bool = False,
) -> str:
    """The warning, before the first step, that the run's last unit (of ``run``) falls in a ``phase`` off the plateau.

    Example:
        >>> off_plateau(CyclicalSchedule(n_cycle=None, period=100), None, "step", 30, None, "ramp")[:97]
        "this run's last step (29, of 30) is in the schedule's ramp phase, at β = 0.58 instead of `stop`=1"
    """
    last = run - 1
    detail = "" if cyc is None else f", at β = {cyc._value(last, total):.6g} instead of `stop`={cyc.stop:g}"
    return (
        f"this run's last {unit} ({last}, of {run}) is in the schedule's {phase} phase{detail}, so training ends off "
        f"the plateau. {_off_plateau_advice(cyc, given, unit, run, total, joined)}"
    )


def _off_plateau_advice(
    cyc: CyclicalSchedule | None, given: int | None, unit: str, run: int, total: int | None, joined: bool = False
) -> str:
    if joined:
        return (
            "Move the `boundaries` of the joined schedule, or change its last parts (fewer cycles, a shorter `period`, "
            f"a constant tail), so that its last ramp ends before {unit} {run}; or run longer."
        )
    if cyc is None:
        return f"Fit the schedule to the run's {run} {unit}s (`total_steps=`), or run longer."
    if cyc.period is not None:
        first = cyc.delay + math.ceil(cyc.ratio * cyc.period)
        return (
            f"With `period`={cyc.period} the first plateau starts at {unit} {first}: use a shorter `period` "
            f"(the last cycle's ramp must end before {unit} {run}), or a longer run."
        )
    total = total if total is not None else run
    if total > run:
        return f"`total_steps`={total} is longer than the run: pass `total_steps={run}`, or run longer."
    n_cycle, span = cyc.n_cycle or 1, total - cyc.delay
    fits = sorted((m for m in range(1, span) if span % m == 0), key=lambda m: (abs(m - n_cycle), m))[:2]
    return (
        f"`n_cycle`={cyc.n_cycle} cuts the {span} {unit}s{' after `delay`' if cyc.delay else ''} into cycles of "
        f"{-(-span // n_cycle)} and a shorter last one that ends on its ramp: use an `n_cycle` that divides {span} "
        f"(e.g. {' or '.join(map(str, fits))})"
        + (f", or a run length that {cyc.n_cycle} divides." if given is None else ".")
    )


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_schedule(schedule: Any) -> str:
    """A schedule in words that stay the same from one process to the next, saved in checkpoints and compared on
    resume: its ``repr`` when that holds no memory address (the library's schedule objects, dataclasses), the
    qualified name of a function, a ``functools.partial`` with its arguments, else the type's qualified name.

    Example:
        >>> from lightning_kl_anneal.schedules import ConstantSchedule, join_schedules
        >>> describe_schedule(join_schedules([ConstantSchedule(0.0), min], [0.5]))
        "JoinedSchedule(schedules=(ConstantSchedule(value=0.0, phase_name='final'), builtins.min), boundaries=(0.5,))"
    """
    if isinstance(schedule, functools.partial):
        args = [describe_schedule(schedule.func), *map(repr, schedule.args)]
        return f"functools.partial({', '.join([*args, *(f'{k}={v!r}' for k, v in schedule.keywords.items())])})"
    if hasattr(schedule, "__qualname__") and hasattr(schedule, "__module__") and callable(schedule):
        return f"{schedule.__module__}.{schedule.__qualname__}"  # a function, a builtin, a class
    if isinstance(schedule, JoinedSchedule):  # its parts described alike (its repr would show their addresses)
        parts = schedule.schedules
        described = ", ".join(map(describe_schedule, parts)) + ("," if len(parts) == 1 else "")
        return f"JoinedSchedule(schedules=({described}), boundaries={schedule.boundaries!r})"
    text = repr(schedule)
    return f"{type(schedule).__module__}.{type(schedule).__qualname__}" if _ADDRESS.search(text) else text


def changed_config(saved: Any, now: dict[str, Any]) -> str | None:
    """The warning for a checkpoint trained with another configuration than ``now``; None when it is the same.

    Example:
        >>> changed_config({"n_cycle": 3, "unit": "step"}, {"n_cycle": 4, "unit": "step"})
        'the checkpoint was trained with another schedule (n_cycle: 3 -> 4); the values change from the resumed step on'
    """
    if not isinstance(saved, dict):
        return None
    changed = [f"{k}: {saved[k]!r} -> {now.get(k)!r}" for k in saved if saved[k] != now.get(k)]
    if not changed:
        return None
    return (
        f"the checkpoint was trained with another schedule ({'; '.join(changed)}); the values change from the "
        "resumed step on"
    )


def manual_max_steps(max_steps: int) -> str:
    """The warning for a run under manual optimization whose ``T`` comes from ``max_steps``."""
    return (
        f"under manual optimization the schedule counts training batches, but the run is bounded by "
        f"`max_steps={max_steps}`, which counts every optimizer's steps. T = {max_steps} batches assumes one optimizer "
        "step per batch; if `training_step` steps several optimizers (or steps every k batches), pass `total_steps=` "
        "in batches, or bound the run with `max_epochs`."
    )
