"""Model selection that waits for the plateau: schedule-aware ``EarlyStopping`` and ``ModelCheckpoint``.

While β rises, the validation ELBO gets worse by design (every cyclical restart costs some
reconstruction), so Lightning's ``EarlyStopping`` spends its patience on the ramp and
``ModelCheckpoint`` ranks weights that were trained on a different objective. These
subclasses keep every argument of their parent and add two:

- ``schedule_attribute``: the attribute whose annealing callback they follow (``"beta"``);
- ``when``: ``"plateau"``, act on every plateau (β at ``stop``), or ``"final"``, only after the
  last ramp (the plateau that ends the schedule, and every step past its end).

Outside those phases they do nothing: no patience spent, no checkpoint ranked (``save_last``
still saves, so a run can always be resumed).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_kl_anneal.callback import ScheduledAttribute
from lightning_kl_anneal.exceptions import misconfiguration

__all__ = ["PlateauEarlyStopping", "PlateauModelCheckpoint", "When"]

When = Literal["plateau", "final"]
WHENS: tuple[str, ...] = get_args(When)


class _FollowsSchedule:
    """Finds the annealing callback of ``schedule_attribute`` and says whether its phase allows acting."""

    _lightning_name = ""

    def _init_follow(self, schedule_attribute: str, when: When) -> None:
        if not isinstance(schedule_attribute, str) or not schedule_attribute:
            raise ValueError(
                f"`schedule_attribute` must name the annealed attribute, e.g. 'beta', got {schedule_attribute!r}"
            )
        if when not in WHENS:
            raise ValueError(f"`when` must be one of {WHENS}, got {when!r}")
        self.schedule_attribute = schedule_attribute
        self.when = when
        self._checked_reachable = False

    def _schedule(self, trainer: pl.Trainer) -> ScheduledAttribute:
        found = [c for c in trainer.callbacks if isinstance(c, ScheduledAttribute)]  # type: ignore[attr-defined]
        for callback in found:
            if callback.attribute == self.schedule_attribute:
                return callback
        names = [c.attribute for c in found] or "none"
        raise misconfiguration(
            f"{type(self).__name__} follows the schedule of `{self.schedule_attribute}`, but no annealing callback "
            f"in the Trainer writes it (scheduled attributes: {names}); add `CyclicalKLAnnealing(attribute="
            f"{self.schedule_attribute!r})` or pass `schedule_attribute=` naming one of them"
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_schedule(trainer)  # before the sanity check and the first step

    def _check_schedule(self, trainer: pl.Trainer) -> None:
        callback = self._schedule(trainer)
        if type(callback).phase_at is ScheduledAttribute.phase_at:
            raise misconfiguration(
                f"{type(self).__name__} follows `{self.schedule_attribute}`, whose {type(callback).__name__} has no "
                f"ramps and plateaus to wait for; use it with CyclicalKLAnnealing, or use Lightning's {self._lightning_name}"
            )

    def _may_act(self, trainer: pl.Trainer) -> bool:
        schedule = self._schedule(trainer)
        phase = schedule.current_phase(trainer)
        if phase is None:  # T not known yet (before the first training step): nothing to select
            return False
        if not self._checked_reachable:
            self._checked_reachable = True
            self._warn_if_unreachable(schedule)
        return phase == "final" if self.when == "final" else phase in ("plateau", "final")

    def _warn_if_unreachable(self, schedule: ScheduledAttribute) -> None:
        """A schedule whose run never has the phase this callback waits for would silently disable it."""
        length = schedule._schedule_length(schedule._total)
        last = None if length is None else schedule.phase_at(length - 1)
        if self.when == "final":
            reachable = last == "final"
        else:
            reachable = last in ("plateau", "final") or getattr(schedule, "ratio", 1.0) < 1.0
        if not reachable:
            rank_zero_warn(
                f"{type(self).__name__}(when={self.when!r}) follows `{self.schedule_attribute}`, whose schedule has "
                f"no {'final plateau' if self.when == 'final' else 'plateau'} in this run ({schedule!r}"
                f"{'' if length is None else f' over {length} {schedule.unit}s'}), so it will never act. Use a "
                "`ratio` below 1, a finite `n_cycle`, or `when='plateau'`."
            )


class PlateauEarlyStopping(_FollowsSchedule, EarlyStopping):
    r"""``EarlyStopping`` that spends no patience while the KL weight is rising.

    A validation counts only when the weights it measures were trained on a plateau of the
    schedule of ``schedule_attribute`` (``when="plateau"``), or after its last ramp
    (``when="final"``); the others are skipped as if they had not happened. All of
    ``EarlyStopping``'s arguments work as in Lightning; its state resumes from checkpoints.

    Args:
        schedule_attribute: the annealed attribute whose callback to follow.
        when: ``"plateau"`` or ``"final"``.
        *args: ``EarlyStopping``'s positional arguments.
        **kwargs: ``EarlyStopping``'s keyword arguments (``monitor``, ``patience``, ``mode``, ...).

    Example:
        >>> from lightning_kl_anneal import CyclicalKLAnnealing, PlateauEarlyStopping
        >>> callbacks = [CyclicalKLAnnealing(n_cycle=4), PlateauEarlyStopping(monitor="val/elbo", mode="max", patience=3)]
        >>> callbacks[1].when
        'plateau'
    """

    _lightning_name = "EarlyStopping"

    def __init__(self, *args: Any, schedule_attribute: str = "beta", when: When = "plateau", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_follow(schedule_attribute, when)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._may_act(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._may_act(trainer):
            super().on_validation_end(trainer, pl_module)


class PlateauModelCheckpoint(_FollowsSchedule, ModelCheckpoint):
    r"""``ModelCheckpoint`` that ranks only checkpoints trained on a plateau of the KL schedule.

    The top-k (``monitor``, ``save_top_k``) is chosen only among weights trained with
    ``schedule_attribute`` on a plateau (``when="plateau"``) or after its last ramp
    (``when="final"``): ``best_model_path`` is never a model from the middle of a ramp.
    ``save_last`` keeps saving at every trigger, so a run can always be resumed. All of
    ``ModelCheckpoint``'s arguments work as in Lightning; its state resumes from checkpoints.

    Args:
        schedule_attribute: the annealed attribute whose callback to follow.
        when: ``"plateau"`` or ``"final"``.
        *args: ``ModelCheckpoint``'s positional arguments.
        **kwargs: ``ModelCheckpoint``'s keyword arguments (``monitor``, ``mode``, ``save_top_k``, ...).

    Example:
        >>> from lightning_kl_anneal import PlateauModelCheckpoint
        >>> PlateauModelCheckpoint(monitor="val/elbo", mode="max", when="final").when
        'final'
    """

    _lightning_name = "ModelCheckpoint"

    def __init__(self, *args: Any, schedule_attribute: str = "beta", when: When = "plateau", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_follow(schedule_attribute, when)

    @override
    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if self._may_act(trainer):
            super()._save_topk_checkpoint(trainer, monitor_candidates)
