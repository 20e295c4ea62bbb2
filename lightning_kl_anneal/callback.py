"""Callbacks that bind a schedule to a run: write ``schedule(step)`` into the LightningModule.

:class:`ScheduledAttribute` is the general mechanism (any pure function of the step, like
optax's ``inject_hyperparams``); :class:`CyclicalKLAnnealing` is that callback configured
with :class:`~lightning_kl_anneal.CyclicalSchedule`. The math lives in
:mod:`lightning_kl_anneal.schedules`; how long a run is and which ``T`` a fit uses in
``_run.py``; writing the attribute in ``_attribute.py``; one fit's state and the per-step
path in ``_fit.py``; the words of the warnings in ``_advice.py``. Here are the hooks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import pickle
import reprlib
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, get_args

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from lightning_kl_anneal._advice import (
    changed_config,
    describe_schedule,
    manual_max_steps,
    off_plateau,
    too_short,
    unfinished,
)
from lightning_kl_anneal._attribute import AttributeWriter
from lightning_kl_anneal._checks import check_choice, check_int, check_real
from lightning_kl_anneal._fit import Fit, Lookahead
from lightning_kl_anneal._run import choose_total, read_step, run_length, step_counter
from lightning_kl_anneal.exceptions import misconfiguration
from lightning_kl_anneal.schedules import PHASES, CyclicalSchedule, JoinedSchedule, Phase, Shape, _declares_phases

__all__ = ["CyclicalKLAnnealing", "ScheduledAttribute", "Unit"]

Unit = Literal["step", "epoch"]
"""What the schedule's step counts: ``"step"``, optimizer steps (under manual optimization: training
batches); ``"epoch"``, epochs."""
UNITS: tuple[str, ...] = get_args(Unit)

# Steps of the library's (pure) schedule evaluated at once by the per-step hook; see `Lookahead`.
_LOOKAHEAD = 256


@functools.cache
def _parameters(cls: type) -> tuple[str, ...]:
    """The constructor's parameter names: the configuration, in the order of the signature."""
    return tuple(inspect.signature(cls).parameters)


def _check_log_name(log_name: Any, attribute: str) -> str | None:
    if log_name is True:
        return attribute
    if log_name is None or log_name is False:
        return None
    accepted = "a non-empty string, True (the attribute's name) or None (no logging)"
    if not isinstance(log_name, str):
        raise TypeError(f"`log_name` must be {accepted}, got {log_name!r} of type {type(log_name).__name__}")
    if not log_name:
        raise ValueError(f"`log_name` must be {accepted}, got {log_name!r}")
    return log_name


class ScheduledAttribute(Callback):
    r"""Writes ``schedule(step, total_steps)`` into a LightningModule attribute before every training step.

    Any pure function of the step drives any attribute: a KL weight, a free-bits threshold, a
    capacity C(t), a temperature, a word-dropout rate. Everything :class:`CyclicalKLAnnealing`
    guarantees holds here too, because it *is* this callback with the cyclical schedule:

    - The step counts optimizer steps (``trainer.global_step``); under manual optimization it
      counts training batches, and ``T`` too, whatever the number of optimizers or how often
      they step. With ``unit="epoch"`` it counts epochs and the value changes at epoch boundaries.
    - ``total_steps`` defaults to the Trainer's length in that unit
      (``estimated_stepping_batches``, made exact under a ``GradientAccumulationScheduler``, or
      ``max_epochs``). A checkpoint resumed with ``fit(ckpt_path=...)`` and a fit continued on the same
      Trainer keep the ``T`` of the run they continue; a fresh fit computes its own.
    - A tensor attribute (a buffer) is filled in place, so ``torch.compile`` never recompiles;
      any other attribute is set. Dotted paths reach into submodules, ``nn.ModuleList`` and
      ``nn.ModuleDict`` included (``"losses.0.beta"``).
    - During validation, test and predict the attribute holds ``eval_value``. Its default, None,
      leaves the attribute alone (it keeps the last training value): a general attribute has no
      natural evaluation value, so for a KL weight pass ``eval_value=1.0`` to validate on the ELBO.
    - The value is sent to every logger on the Trainer's logging steps, as ``log_name`` (by
      default the attribute's name).
    - The user's function is called once per step the run takes, in order, never ahead of time
      and never for a step the run did not take. On a fresh fit step 0 is evaluated before the
      sanity check (so a function that cannot run fails there, with the reason), and that value is
      the one written at step 0. A value that is not finite (NaN, inf) is an error at its step.
    - A schedule object with a ``phase(step, total_steps)`` method returning ``"delay"``,
      ``"ramp"``, ``"plateau"``, ``"final"`` or None declares its phases: :meth:`phase_at` uses it,
      so :class:`~lightning_kl_anneal.PlateauModelCheckpoint`, ``PlateauEarlyStopping`` and
      :class:`~lightning_kl_anneal.LatentMonitor` follow it as they follow :class:`CyclicalKLAnnealing`.
      ``phase`` must be pure: it is asked about any step.
    - A fit that ends before the schedule does (early stopping, ``max_time``, a crash) warns once.

    Args:
        schedule: ``schedule(step, total_steps) -> float``; ``total_steps`` is the resolved ``T``
            (None where ``T`` is neither given nor known, e.g. ``max_epochs=-1``). Optionally with
            a ``phase(step, total_steps)`` method (see above).
        attribute: the attribute to write, or a dotted path such as ``"loss_fn.beta"``.
        total_steps: ``T`` in ``unit``\ s; default: the Trainer's length.
        unit: ``"step"`` or ``"epoch"``.
        eval_value: the value during validation, test and predict; None (default) leaves the
            attribute at its last training value.
        log_name: metric name; True (default) logs under ``attribute``; None or False: no logging.

    Raises:
        TypeError, ValueError: at construction, for a bad argument.
        MisconfigurationException: before the first training step, for an attribute that is
            missing, read-only or an integer tensor, a clash with another scheduled attribute, or
            a function that cannot run at step 0.
        ValueError: at the step where the function returns NaN or inf (before it is written).

    Example:
        >>> import lightning as L
        >>> import torch
        >>> from lightning_kl_anneal import ScheduledAttribute
        >>> class Model(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.free_bits = 0.0
        ...         self.w = torch.nn.Parameter(torch.zeros(1))
        ...     def training_step(self, batch, batch_idx):
        ...         print(self.free_bits, end=" ")
        ...         return (self.w - batch).pow(2).mean()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> decay = ScheduledAttribute(lambda step, total: 0.5 * (1 - step / total), "free_bits")
        >>> trainer = L.Trainer(max_steps=4, callbacks=[decay], logger=False, enable_checkpointing=False,
        ...                     enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(Model(), torch.utils.data.DataLoader(torch.randn(4, 1)))  # doctest: +NORMALIZE_WHITESPACE
        0.5 0.375 0.25 0.125
    """

    def __init__(
        self,
        schedule: Callable[[int, int | None], float],
        attribute: str = "beta",
        *,
        total_steps: int | None = None,
        unit: Unit = "step",
        eval_value: float | None = None,
        log_name: str | bool | None = True,
    ) -> None:
        if not callable(schedule):
            raise TypeError(f"`schedule` must be a callable `schedule(step, total_steps) -> float`, got {schedule!r}")
        self._schedule = schedule
        # The library's own schedule: pure, so values are evaluated ahead, and its rules (T, length, advice) known.
        self._cyclical = schedule if isinstance(schedule, CyclicalSchedule) else None
        self._writer = AttributeWriter(attribute, type(self).__name__)
        self._total_steps: int | None = check_int("total_steps", total_steps, 1, optional=True)
        self._unit: Unit = check_choice("unit", unit, UNITS)
        self._log_name = _check_log_name(log_name, attribute)
        self._eval_value: float | None = check_real("eval_value", eval_value, optional=True)
        self._state_key = self._generate_state_key(attribute=attribute)
        self._label = f"{type(self).__name__}(`{attribute}`)"  # who speaks in messages
        self._loaded: dict[str, Any] | None = None  # a checkpoint's state, for the Trainer call that restores it
        self._fit = Fit()  # the current (or last) fit: all of its state, replaced whole by the next fit's

    # ------------------------------------------------------------------ configuration (read-only)

    @property
    def schedule(self) -> Callable[[int, int | None], float]:
        """The schedule function."""
        return self._schedule

    @property
    def attribute(self) -> str:
        """The attribute (or dotted path) written."""
        return self._writer.path

    @property
    def total_steps(self) -> int | None:
        """``T`` as given at construction; None means the Trainer's length."""
        return self._total_steps

    @property
    def total(self) -> int | None:
        """``T`` of the current (or last) fit, as resolved at its start; None before a fit resolves it."""
        return self._fit.total

    @property
    def unit(self) -> Unit:
        """``"step"`` or ``"epoch"``."""
        return self._unit

    @property
    def eval_value(self) -> float | None:
        """The value during validation, test and predict."""
        return self._eval_value

    @property
    def log_name(self) -> str | None:
        """The logged metric's name, or None."""
        return self._log_name

    @property
    @override
    def state_key(self) -> str:
        # Distinct per attribute, so one instance for `beta` and one for `beta_bow` coexist in a checkpoint.
        # Built once: Lightning reads it around every hook call.
        return self._state_key

    def __getstate__(self) -> dict[str, Any]:
        # Spawned processes (ddp_spawn) pickle callbacks; the fit pickles as its T only (see `Fit`).
        if getattr(self._schedule, "__self__", None) is not self:  # a method of this callback pickles with it
            _check_picklable(self._schedule, self._label)
        return dict(self.__dict__)

    def _init_args(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _parameters(ScheduledAttribute)}

    @reprlib.recursive_repr()  # a schedule that refers back to this callback (a bound method) prints as `...`
    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._init_args().items())})"

    def _config(self) -> dict[str, Any]:
        """The configuration saved in checkpoints (plain types), compared on resume: a cyclical schedule's
        parameters (as 0.2.0 saved them), any other schedule in words (:func:`describe_schedule`), and the unit."""
        if self._cyclical is not None:
            return {**dataclasses.asdict(self._cyclical), "unit": self._unit}
        return {"schedule": describe_schedule(self._schedule), "unit": self._unit}

    # ------------------------------------------------------------------ the schedule, asked

    def value_at(self, step: int, total_steps: int | None = None) -> float:
        """The value written at ``step``; ``total_steps`` defaults to the constructor's, then the current fit's ``T``.

        Example:
            >>> ScheduledAttribute(lambda step, total: step / total, total_steps=10).value_at(5)
            0.5
        """
        total = total_steps if total_steps is not None else self._known_total()
        if total is None and self._cyclical is not None and self._cyclical.needs_total:
            raise ValueError("`total_steps` is not known before the fit starts: pass `total_steps=`")
        return self._value_at(step, total)

    def _value_at(self, step: int, total: int | None) -> float:
        if self._cyclical is not None:
            return self._cyclical._value(step, total)  # finite by construction
        value = float(self._schedule(step, total))
        if value - value != 0.0:  # NaN or inf, in one subtraction: this runs at every step
            raise ValueError(
                f"{self._label}: `schedule({step}, {total})` returned {value}; the value is written into the model, "
                "so the schedule must return a finite number at every step"
            )
        return value

    def phase_at(self, step: int) -> Phase | None:
        """The schedule's phase at ``step`` (in ``unit``\\ s): ``schedule.phase(step, T)``; None where it has none.

        ``T`` is the constructor's ``total_steps``, else the current (or last) fit's (None before one).

        Example:
            >>> ScheduledAttribute(lambda step, total: 1.0).phase_at(3) is None
            True
            >>> class Warmup:
            ...     def __call__(self, step, total):
            ...         return min(1.0, step / 10)
            ...     def phase(self, step, total):
            ...         return "ramp" if step < 10 else "final"
            >>> ScheduledAttribute(Warmup()).phase_at(12)
            'final'
        """
        phase = getattr(self._schedule, "phase", None)
        if not callable(phase):
            return None
        value = phase(step, self._known_total())
        if value is not None and value not in PHASES:
            raise ValueError(
                f"{self._label}: `schedule.phase({step}, {self._known_total()})` must return one of {PHASES} or "
                f"None, got {value!r}"
            )
        return value

    @property
    def has_phases(self) -> bool:
        """Whether :meth:`phase_at` can say anything: the schedule declares phases (a ``phase`` method, or its own
        ``has_phases``, as a joined schedule of plain functions says False), or a subclass defines them."""
        own = type(self).phase_at is not ScheduledAttribute.phase_at  # a subclass's phases
        return own or _declares_phases(self._schedule)

    def current_phase(self, trainer: pl.Trainer) -> Phase | None:
        """The phase of the value that trained the model's current weights (the last step taken)."""
        step = trainer.current_epoch if self._unit == "epoch" else max(read_step(trainer, self._unit) - 1, 0)
        return self.phase_at(step)

    def _known_total(self) -> int | None:
        """``T``: the constructor's, else the current (or last) fit's; None before a fit resolves it."""
        return self._total_steps if self._total_steps is not None else self._fit.total

    # ------------------------------------------------------------------ a fit starts: check, then bind T

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # A checkpoint's state belongs to the Trainer call that restores it, which starts here.
        self._loaded = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Everything that can be checked is checked here, before the sanity check and the first step.
        self._writer.check(pl_module)
        _refuse_clashes(self, trainer.callbacks)  # type: ignore[attr-defined]
        fit = self._fit = self._new_fit(trainer)
        total = self._total_steps if self._total_steps is not None else fit.estimate
        if total == 0:
            return  # no training step will run
        if total is not None:
            self._check_total(total, trainer)
            self._warn_manual_max_steps(trainer, pl_module)
        if fit.estimate != 0 and self._loaded is None and read_step(trainer, self._unit, pl_module) == 0:
            # A fresh fit: step 0 is the first step it takes, so evaluating it now calls the function on no step
            # the run does not take (a resumed or continued fit starts elsewhere, and is not probed).
            fit.probe = (total, _probe(self._schedule, total, self._label, self._unit))

    def _new_fit(self, trainer: pl.Trainer) -> Fit:
        """A fit's state: the Trainer's length, and the ``T`` of the last fit on this Trainer (kept if it continues)."""
        last = self._fit
        continued = last.total if last.trainer is not None and last.trainer() is trainer else None
        needed = self._total_steps is None and bool(getattr(self._schedule, "needs_total", False))  # library schedules
        return Fit(weakref.ref(trainer), run_length(trainer, self._unit, needed=needed, who=self._label), continued)

    def _check_total(self, total: int, trainer: pl.Trainer) -> None:
        """Refuse a run too short for the schedule's cycles; in a debug run, or for too many cycles, warn once."""
        problem = too_short(self._cyclical, self._total_steps, self._unit, total)
        if problem is None:
            return
        fatal, message = problem[0], f"{type(self).__name__}: {problem[1]}"
        if fatal and not trainer.fast_dev_run:  # type: ignore[attr-defined]  # set at runtime by a connector
            raise misconfiguration(message)
        if not self._fit.warned_short:  # once: fast_dev_run and tiny debug runs still train
            self._fit.warned_short = True
            rank_zero_warn(message)

    def _warn_manual_max_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Under manual optimization `max_steps` counts every optimizer's steps, which no one knows per batch.
        if (
            self._total_steps is None and self._unit == "step" and not pl_module.automatic_optimization
            and trainer.max_steps != -1 and self._fit.estimate == trainer.max_steps
        ):  # fmt: skip
            rank_zero_warn(f"{self._label}: {manual_max_steps(trainer.max_steps)}")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit = self._fit
        fit.total = self._choose_total(trainer, pl_module)
        if fit.total is not None:
            self._check_total(fit.total, trainer)
        self._bind(trainer, pl_module)
        self._warn_if_run_ends_off_plateau()

    def _choose_total(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int | None:
        """This fit's ``T``: given, the resumed checkpoint's, the continued fit's, or the Trainer's (see choose_total)."""
        loaded, self._loaded = self._loaded, None
        if loaded is not None and (changed := changed_config(loaded.get("config"), self._config())) is not None:
            rank_zero_warn(f"{self._label}: {changed}")
        saved = None if loaded is None or loaded.get("total_steps") is None else int(loaded["total_steps"])
        continued = self._fit.continued if read_step(trainer, self._unit, pl_module) > 0 else None
        total, warning = choose_total(self._total_steps, saved, continued, self._fit.estimate, self._unit)
        if warning is not None:
            rank_zero_warn(f"{self._label}: {warning}")
        return total or None

    def _bind(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resolve once per fit what the per-step hook reads and writes (a submodule may change between fits)."""
        fit = self._fit
        fit.counter, fit.field = step_counter(trainer, self._unit, pl_module)
        fit.write = self._writer.bind(pl_module)
        cyc = self._cyclical
        values = (
            Lookahead(self._value_at, fit.total, 1) if cyc is None else Lookahead(cyc._value, fit.total, _LOOKAHEAD)
        )
        if fit.probe is not None and fit.probe[0] == fit.total and getattr(fit.counter, fit.field) == 0:
            values.keep(0, [fit.probe[1]])  # step 0's value, evaluated by the probe: not evaluated again
        fit.values = values
        fit.log_name, fit.log_every = self._log_name, trainer.log_every_n_steps  # type: ignore[attr-defined]
        fit.loggers = list(trainer.loggers) if self._log_name is not None and fit.log_every else []
        fit.log_between_changes = self._unit == "epoch"  # the value changes per epoch; logging steps don't
        fit.epoch_loop = trainer.fit_loop.epoch_loop

    # ------------------------------------------------------------------ every training step

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        fit = self._fit
        step = getattr(fit.counter, fit.field)
        if step != fit.step:
            fit.set(step)
        elif not fit.log_between_changes:
            return  # another micro-batch of the same optimizer step: the value is in place, and logged
        if fit.loggers and (trainer.should_stop or (fit.epoch_loop._batches_that_stepped + 1) % fit.log_every == 0):
            fit.log(force=True)  # on the Trainer's logging steps: `should_update_logs`, minus its lookups

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # A step that sets `should_stop` (in training_step, or in a callback before this one) has its losses
        # logged by the Trainer after this hook, whatever `log_every_n_steps` says: log the value beside them.
        # (Set later, it is seen in the next hook: on_validation_start or on_train_epoch_end.)
        if trainer.should_stop:
            self._log_if_stopped(trainer, trainer.fit_loop.epoch_loop._batches_that_stepped)

    # ------------------------------------------------------------------ evaluation

    def _write_eval_value(self, pl_module: pl.LightningModule) -> None:
        if self._eval_value is not None:
            self._writer.check(pl_module)
            self._writer.write(pl_module, self._eval_value)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._log_if_stopped(trainer, trainer.fit_loop.epoch_loop._batches_that_stepped)
        self._write_eval_value(pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The training value is back before the next step (and for hooks such as on_train_epoch_end),
        # also when validation interrupts the micro-batches of one optimizer step.
        if trainer.state.fn == TrainerFn.FITTING and self._fit.step >= 0:
            self._writer.write(pl_module, self._fit.value)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_eval_value(pl_module)

    on_predict_start = on_test_start

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After fit the model is evaluated (by hand, or by a later test) at the evaluation value.
        self._write_eval_value(pl_module)

    # ------------------------------------------------------------------ runs that end off the plateau, or early

    def _warn_if_run_ends_off_plateau(self) -> None:
        """Warn at the start when the run's known length makes its last step fall on a ramp (or the delay)."""
        fit = self._fit
        run = fit.estimate  # the Trainer's length in units; None when unknown
        if not run or not self.has_phases:
            return  # a schedule without phases cannot tell
        if fit.total is not None and too_short(self._cyclical, self._total_steps, self._unit, fit.total):
            return  # `_check_total` has said why: too many cycles, or a delay as long as the run
        phase = self.phase_at(run - 1)
        if phase in ("ramp", "delay"):
            fit.warned_end = run  # the end-of-fit warning would say it again
            joined = isinstance(self._schedule, JoinedSchedule)
            advice = off_plateau(self._cyclical, self._total_steps, self._unit, run, fit.total, phase, joined)
            rank_zero_warn(f"{self._label}: {advice}")

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_if_stopped(trainer, trainer.fit_loop.epoch_loop._batches_that_stepped - 1)  # counted after logging

    def _log_if_stopped(self, trainer: pl.Trainer, step: int) -> None:
        """Log beside the losses of ``step`` that the Trainer logs because ``should_stop`` is set, whatever
        ``log_every_n_steps`` says: asked in ``on_train_batch_end``, and again in the first hook after the
        Trainer's decision (for ``should_stop`` set by a later callback, or the module's own hook)."""
        fit, loop = self._fit, trainer.fit_loop.epoch_loop
        if not fit.loggers or fit.step < 0 or step == fit.stop_checked:
            return
        fit.stop_checked = step  # once per step: validation may set `should_stop` after the Trainer has logged
        if trainer.should_stop and not (loop._should_accumulate() and trainer.lightning_module.automatic_optimization):
            fit.log(force=True, step=step)  # the Trainer's own condition for logging a step's losses

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._warn_if_unfinished(trainer, pl_module)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._warn_if_unfinished(trainer, pl_module)

    def _warn_if_unfinished(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs in `on_exception` too: nothing here may call the user's function (a step the run never took) or
        # raise, so that the user's own exception reaches them as it is.
        fit = self._fit
        if fit.step < 0 or fit.ended:
            return  # no training step ran, or said already
        fit.ended = True
        length = _schedule_length(self._schedule, fit.total)
        reached = read_step(trainer, self._unit, pl_module)
        if length is not None and reached < length and reached != fit.warned_end:
            advice = unfinished(
                self._cyclical, self._total_steps, self._unit, self.attribute, reached, length, fit.value
            )
            rank_zero_warn(f"{self._label}: {advice}")

    # ------------------------------------------------------------------ checkpoints

    @override
    def state_dict(self) -> dict[str, Any]:
        # Plain Python types only, so `torch.load(ckpt, weights_only=True)` works.
        return {"total_steps": self.total or self._total_steps, "config": self._config()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)


def _schedule_length(schedule: Any, total: int | None) -> int | None:
    """Steps after which the schedule holds its final value: the library's schedule objects know theirs (``length``),
    anything else runs to ``T``; None when unknown. Never raises: it runs in ``on_exception`` too."""
    if isinstance(schedule, (CyclicalSchedule, JoinedSchedule)):
        return schedule.length(total)
    return total


def _check_picklable(schedule: Any, who: str) -> None:
    try:
        pickle.dumps(schedule)
    except Exception as err:  # pickle raises several types
        raise pickle.PicklingError(
            f"{who}: its schedule {schedule!r} cannot be pickled, which spawning strategies such as `ddp_spawn` "
            "need: define it with `def` at module level (or as `functools.partial` of such a function) instead of "
            "a lambda or a local function"
        ) from err


def _probe(schedule: Callable[[int, int | None], float], total: int | None, who: str, unit: str) -> float:
    """Step 0's value, evaluated before training, so that a function that cannot run fails there, with the reason."""
    if isinstance(schedule, CyclicalSchedule):
        return schedule._value(0, total)  # validated at construction; `_check_total` has judged T
    try:
        value = schedule(0, total)
    except Exception as err:  # any failure of the user's function is reported the same way
        hint = (
            f" This run's length is not known (the Trainer gives no number of {unit}s), so the schedule gets "
            "`total_steps=None`: pass `total_steps=` to the callback, bound the run, or make the function work "
            "without it."
        ) if total is None else ""  # fmt: skip
        raise misconfiguration(f"{who}: `schedule(0, {total})` raised {type(err).__name__}: {err}.{hint}") from err
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise misconfiguration(f"{who}: `schedule(0, {total})` must return a finite real number, got {value!r}")
    return float(value)


def _refuse_clashes(callback: ScheduledAttribute, callbacks: Iterable[Callback]) -> None:
    """Two scheduling callbacks that write one attribute, or log under one name, are refused before training."""
    for other in callbacks:
        if other is callback or not isinstance(other, ScheduledAttribute):
            continue
        if other.attribute == callback.attribute:
            raise misconfiguration(
                f"{type(callback).__name__} and {type(other).__name__} both write `{callback.attribute}`; "
                "keep one, or point one of them at another `attribute`"
            )
        if callback.log_name is not None and other.log_name == callback.log_name:
            raise misconfiguration(
                f"{callback._label} and {other._label} both log as `log_name={callback.log_name!r}`; "
                "give each its own `log_name`"
            )


class CyclicalKLAnnealing(ScheduledAttribute):
    r"""Cyclical KL annealing (Fu et al., NAACL 2019) for any LightningModule.

    Before every training step, writes
    ``cyclical_beta(step, T, n_cycle, ratio, start, stop, shape, ratio_zero, delay=, period=)``
    (see :func:`~lightning_kl_anneal.cyclical_beta`) into ``pl_module.<attribute>``;
    your ``training_step`` reads it: ``loss = rec + self.beta * kl``. This is
    :class:`ScheduledAttribute` with the cyclical schedule, so it shares its guarantees:

    - The step is ``trainer.global_step`` (optimizer steps: every micro-batch of an
      accumulated step sees the same β); under manual optimization it counts training batches,
      as ``T`` does. ``unit="epoch"`` counts epochs instead.
    - β is a function of the step only, so resuming from a checkpoint, DDP (every rank computes
      the same value, no communication) and ``torch.compile`` need nothing special. ``T`` and the
      whole configuration are saved in the checkpoint; a resumed or continued fit keeps ``T``, and
      a changed configuration is named in a warning.
    - ``period=P`` makes every cycle P units long and needs no run length (``max_epochs=-1``,
      ``max_time``, ``EarlyStopping``); ``n_cycle=None`` then cycles forever.
    - ``delay=D`` holds ``start`` for D units before the first cycle (Li et al. 2019: β = 0 first).
    - During validation, test and predict the attribute holds ``eval_beta`` (default ``stop``).
    - β is logged as ``log_name`` (default: the attribute's name) on the Trainer's logging steps.

    Every argument can be read back, read-only, as an attribute of the same name (``callback.n_cycle``,
    ``callback.eval_beta``, ...); the schedule's parameters are those of :attr:`schedule`.

    Args:
        n_cycle: number of cycles ``M``; 1 is monotonic annealing; None (with ``period``): endless.
        ratio: fraction ``R`` of each cycle spent rising, in (0, 1].
        start: β at the start of each cycle (the paper's language-model runs used 0.1).
        stop: β on the plateau.
        total_steps: ``T`` in ``unit``\ s; default: the Trainer's length. Excludes ``period``.
        shape: ``"linear"``, ``"sigmoid"``, ``"cosine"`` or ``"log"`` ramp (``"log"``: ``start`` and ``stop`` > 0).
        ratio_zero: leading fraction of each cycle held at ``start`` (Optimus), in [0, ratio).
        attribute: the LightningModule attribute to write; a dotted path such as
            ``"loss_fn.beta"`` reaches into submodules.
        eval_beta: β outside training; default ``stop``.
        log_name: name of the logged metric; default (True): the attribute's name; None: no logging.
        period: units per cycle, for runs of unknown length; an int >= 2.
        unit: ``"step"`` (optimizer steps) or ``"epoch"``.
        delay: units held at ``start`` before the first cycle.

    Raises:
        TypeError, ValueError: at construction, for a bad argument.
        MisconfigurationException: before the first training step, when the attribute is
            missing or read-only, ``T`` cannot be known, or ``delay >= T``.

    Example:
        >>> import lightning as L
        >>> import torch
        >>> from lightning_kl_anneal import CyclicalKLAnnealing
        >>> class VAE(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.beta = 0.0
        ...         self.w = torch.nn.Parameter(torch.zeros(1))
        ...     def training_step(self, batch, batch_idx):
        ...         print(self.beta, end=" ")
        ...         return (self.w - batch).pow(2).mean()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> trainer = L.Trainer(max_steps=8, callbacks=[CyclicalKLAnnealing(n_cycle=2, ratio=0.5)],
        ...                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...                     enable_model_summary=False)
        >>> trainer.fit(VAE(), torch.utils.data.DataLoader(torch.randn(8, 1)))  # doctest: +NORMALIZE_WHITESPACE
        0.0 0.5 1.0 1.0 0.0 0.5 1.0 1.0
    """

    def __init__(
        self,
        n_cycle: int | None = 4,
        ratio: float = 0.5,
        start: float = 0.0,
        stop: float = 1.0,
        *,
        total_steps: int | None = None,
        shape: Shape = "linear",
        ratio_zero: float = 0.0,
        attribute: str = "beta",
        eval_beta: float | None = None,
        log_name: str | bool | None = True,
        period: int | None = None,
        unit: Unit = "step",
        delay: int = 0,
    ) -> None:
        schedule = CyclicalSchedule(
            n_cycle, ratio, start, stop, shape=shape, ratio_zero=ratio_zero, period=period, delay=delay
        )
        if period is not None and total_steps is not None:
            raise ValueError(
                f"`total_steps`={total_steps} and `period`={period} both set the cycle length: pass one of them "
                "(`period` for runs of unknown length)"
            )
        if total_steps is not None:
            schedule._total(total_steps)  # `delay < T` and fewer cycles than steps, checked now that T is given
        eval_beta = check_real("eval_beta", eval_beta, optional=True)
        super().__init__(
            schedule, attribute, total_steps=total_steps, unit=unit,
            eval_value=schedule.stop if eval_beta is None else eval_beta, log_name=log_name,
        )  # fmt: skip

    if TYPE_CHECKING:  # the schedule's parameters, as read-only attributes (made below from its fields)

        def __getattr__(self, name: str) -> Any: ...

    @property
    def schedule(self) -> CyclicalSchedule:
        """The :class:`~lightning_kl_anneal.CyclicalSchedule` this callback writes; its phases are the callback's.

        Example:
            >>> callback = CyclicalKLAnnealing(n_cycle=2, total_steps=8)
            >>> callback.schedule.phase(3, 8), callback.phase_at(3)
            ('plateau', 'plateau')
        """
        return self._schedule  # type: ignore[return-value]

    @property
    def eval_beta(self) -> float | None:
        """β during validation, test and predict."""
        return self._eval_value

    def beta_at(self, step: int, total_steps: int | None = None) -> float:
        """β this callback writes at ``step``; ``total_steps`` defaults to the constructor's, then the current fit's ``T``.

        Example:
            >>> CyclicalKLAnnealing(n_cycle=1, ratio=0.5).beta_at(25, total_steps=100)
            0.5
            >>> CyclicalKLAnnealing(n_cycle=1, total_steps=100).beta_at(25)
            0.5
        """
        return self.value_at(step, total_steps)

    @override
    def _init_args(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _parameters(CyclicalKLAnnealing)}


def _schedule_parameter(name: str) -> property:
    def get(self: CyclicalKLAnnealing) -> Any:
        return getattr(self.schedule, name)

    return property(get, doc=f"``schedule.{name}`` (read-only): see the argument of that name.")


for _field in dataclasses.fields(CyclicalSchedule):  # n_cycle, ratio, ...: written out once, in CyclicalSchedule
    setattr(CyclicalKLAnnealing, _field.name, _schedule_parameter(_field.name))
del _field
