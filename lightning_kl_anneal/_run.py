"""Binding a schedule to a run: which ``T`` a fit uses, as a pure choice (no Trainer needed to test it)."""

from __future__ import annotations

__all__ = ["choose_total"]


def choose_total(
    given: int | None, saved: int | None, continued: int | None, estimate: int | None, unit: str = "step"
) -> tuple[int | None, str | None]:
    """The ``T`` a fit schedules over, and the warning the choice implies (None: nothing to say).

    In order: the ``T`` the user gave (``total_steps=``) wins, with a warning when it reschedules a
    resumed run; else the ``T`` saved in the checkpoint the fit resumes, else the ``T`` of the fit it
    continues on the same Trainer, both kept so the values continue exactly (with a warning when the
    Trainer would run another length); else the Trainer's estimate (None when unknown, 0 when no
    training step will run).

    Args:
        given: the callback's ``total_steps``, or None.
        saved: ``T`` in the checkpoint being resumed, or None (no checkpoint, or none saved).
        continued: ``T`` of the previous fit this one continues on the same Trainer, or None.
        estimate: the Trainer's length in ``unit``\\ s, or None.
        unit: ``"step"`` or ``"epoch"``, for the message.

    Example:
        >>> choose_total(None, None, None, 100)
        (100, None)
        >>> choose_total(None, 40, None, 60)
        (40, "the checkpoint's schedule spans 40 steps but this Trainer would run 60; keeping 40 so the values continue exactly. Pass `total_steps=60` to reschedule.")
        >>> choose_total(50, 40, None, 60)
        (50, 'resuming a run scheduled over 40 steps with `total_steps=50`; the values change from here on')
    """
    if given is not None:
        if saved is not None and saved != given:
            return given, (
                f"resuming a run scheduled over {saved} {unit}s with `total_steps={given}`; the values change from here on"
            )
        return given, None
    for kept, what in ((saved, "the checkpoint's schedule"), (continued, "the continued fit's schedule")):
        if kept is not None:
            if estimate and estimate != kept:
                return kept, (
                    f"{what} spans {kept} {unit}s but this Trainer would run {estimate}; keeping {kept} so the values "
                    f"continue exactly. Pass `total_steps={estimate}` to reschedule."
                )
            return kept, None
    return estimate, None
