"""Model selection that waits for the plateau: schedule-aware ``EarlyStopping`` and ``ModelCheckpoint``.

While β rises, the validation ELBO gets worse by design (every cyclical restart costs some
reconstruction), so Lightning's ``EarlyStopping`` spends its patience on the ramp and
``ModelCheckpoint`` ranks weights that were trained on a different objective. These
subclasses keep every argument of their parent and add two:

- ``schedule_attribute``: the attribute whose annealing callback they follow (``"beta"``);
- ``when``: ``"plateau"``, act on every plateau (β at ``stop``), or ``"final"``, only after the
  last ramp (the plateau that ends the schedule, and every step past its end).

Outside those phases they do nothing: no patience spent, no checkpoint ranked (``save_last``
still saves, so a run can always be resumed; a non-finite monitored value still stops the run
under ``check_finite``). Any :class:`~lightning_kl_anneal.ScheduledAttribute` whose schedule
declares its phases (``has_phases``) can be followed.
"""

from __future__ import annotations

import math
import os
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
        self._checked_reachable = False  # decided again for every fit, once its length is known
        callback = self._schedule(trainer)
        if not callback.has_phases:
            raise misconfiguration(
                f"{type(self).__name__} follows `{self.schedule_attribute}`, whose {type(callback).__name__} has no "
                "ramps and plateaus to wait for: give its schedule a `phase(step, total_steps)` method returning "
                "'delay', 'ramp', 'plateau' or 'final' (see ScheduledAttribute), use CyclicalKLAnnealing, or use "
                f"Lightning's {self._lightning_name}"
            )

    def _may_act(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False  # the parents act on no sanity check either; the run's length is not resolved yet
        schedule = self._schedule(trainer)
        phase = schedule.current_phase(trainer)
        if phase is None:  # T not known: nothing to select
            return False
        if not self._checked_reachable:
            self._checked_reachable = True
            self._warn_if_unreachable(schedule)
        return phase == "final" if self.when == "final" else phase in ("plateau", "final")

    # Steps of the run scanned, at most, for a plateau: one pass stops at the first plateau, which a
    # cyclical schedule reaches within its first cycle; only a run that has none is scanned to this bound.
    _SCAN = 200_000

    def _warn_if_unreachable(self, schedule: ScheduledAttribute) -> None:
        """Warn when this fit, by its resolved length, never has the phase this callback waits for."""
        total = schedule.total
        if total is None:
            return  # endless and unbounded: every phase the schedule has may come
        last = total - 1
        if self.when == "final":
            if schedule.phase_at(last) == "final":
                return
        elif total > self._SCAN or any(schedule.phase_at(s) in ("plateau", "final") for s in range(total)):
            return
        wanted = "final plateau" if self.when == "final" else "plateau"
        rank_zero_warn(
            f"{type(self).__name__}(when={self.when!r}) follows `{self.schedule_attribute}`, whose schedule has no "
            f"{wanted} in this fit's {total} {schedule.unit}s ({schedule!r}; {schedule.unit} {last} is in its "
            f"{schedule.phase_at(last)!r} phase), so it will never act. {self._unreachable_advice(schedule)}"
        )

    def _unreachable_advice(self, schedule: ScheduledAttribute) -> str:
        cycles = schedule.schedule  # the schedule object: a CyclicalSchedule says how its cycles are set
        if self.when == "final":
            if getattr(cycles, "period", None) is not None and getattr(cycles, "n_cycle", 1) is None:
                return "An endless schedule (`n_cycle=None`) has no final plateau: use `when='plateau'`, or a finite `n_cycle`."
            return "Use `when='plateau'`, or fit the schedule to the run (its `total_steps=`, or `n_cycle` × `period`)."
        if getattr(cycles, "period", None) is not None:
            return "Use a shorter `period` (the first ramp must end within the run), or a longer run."
        return "Fit the schedule to the run (its `total_steps=`), or run longer."


class PlateauEarlyStopping(_FollowsSchedule, EarlyStopping):
    r"""``EarlyStopping`` that spends no patience while the KL weight is rising.

    A validation counts only when the weights it measures were trained on a plateau of the
    schedule of ``schedule_attribute`` (``when="plateau"``), or after its last ramp
    (``when="final"``); the others are skipped as if they had not happened, except that with
    ``check_finite=True`` (the default) a NaN or inf monitored value stops the run at any
    validation, as in Lightning. All of ``EarlyStopping``'s arguments work as in Lightning; its
    state resumes from checkpoints.

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
        if self._may_act(trainer) or self._diverged(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._may_act(trainer) or self._diverged(trainer):
            super().on_validation_end(trainer, pl_module)

    def _diverged(self, trainer: pl.Trainer) -> bool:
        """``check_finite`` outside the counted phases: a NaN or inf is a diverged run, whatever β is doing."""
        if not self.check_finite or trainer.sanity_checking:
            return False
        current = trainer.callback_metrics.get(self.monitor)
        return current is not None and not math.isfinite(float(current))


class PlateauModelCheckpoint(_FollowsSchedule, ModelCheckpoint):
    r"""``ModelCheckpoint`` that ranks only checkpoints trained on a plateau of the KL schedule.

    The top-k (``monitor``, ``save_top_k``) is chosen only among weights trained with
    ``schedule_attribute`` on a plateau (``when="plateau"``) or after its last ramp
    (``when="final"``): ``best_model_path`` is never a model from the middle of a ramp.
    ``save_last`` saves the current weights at every trigger (validation end, epoch end,
    ``every_n_train_steps``, ``train_time_interval``) whatever the phase, so ``last.ckpt`` always
    holds the latest weights and resuming from it continues the run; ``save_last="link"`` links to
    a checkpoint saved at that step, or writes the file itself when none was. All of
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

        self._trigger_step = -1

    @override
    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        self._trigger_step = trainer.global_step  # the parent saves `last` after this only if a top-k file was saved
        if self._may_act(trainer):
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._keep_last_current(trainer)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._keep_last_current(trainer)

    def _keep_last_current(self, trainer: pl.Trainer) -> None:
        """After a trigger whose top-k saved nothing (a ramp, or not among the best), ``last`` still saves."""
        if self.save_last and self._trigger_step == trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if not (
            self.save_last == "link" and self.save_top_k != 0 and self._last_global_step_saved != trainer.global_step
        ):
            super()._save_last_checkpoint(trainer, monitor_candidates)
            return
        # `link` with no checkpoint of this step to link to: Lightning would link to an older one. Write the file,
        # replacing the link first so that the write does not go through it into that older checkpoint.
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if trainer.is_global_zero and os.path.islink(filepath):
            os.remove(filepath)
        previous, self.last_model_path = self.last_model_path, filepath
        self._save_checkpoint(trainer, filepath)
        if previous and previous != filepath and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)
