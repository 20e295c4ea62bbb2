"""Callbacks that bind a schedule to a run: write ``schedule(step)`` into the LightningModule.

:class:`ScheduledAttribute` is the general mechanism (any pure function of the step, like
optax's ``inject_hyperparams``); :class:`CyclicalKLAnnealing` is that callback configured
with :func:`~lightning_kl_anneal.cyclical_beta`. The math lives in
:mod:`lightning_kl_anneal.schedules`; here is only how the step counter and ``T`` are bound
to a Lightning run.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import pickle
import reprlib
import weakref
from collections.abc import Callable
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, GradientAccumulationScheduler, Timer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from lightning_kl_anneal._checks import check_choice, check_int, check_real
from lightning_kl_anneal._run import choose_total
from lightning_kl_anneal.exceptions import misconfiguration
from lightning_kl_anneal.schedules import PHASES, CyclicalSchedule, Phase, Shape

__all__ = ["CyclicalKLAnnealing", "ScheduledAttribute", "Unit"]

Unit = Literal["step", "epoch"]
"""What the schedule's step counts: ``"step"``, optimizer steps (under manual optimization: training
batches); ``"epoch"``, epochs."""
UNITS: tuple[str, ...] = get_args(Unit)

_TENSOR, _DICT, _SETATTR = 0, 1, 2  # how `_write` reaches the attribute, chosen once per fit


def _has_setter(owner: object, name: str) -> bool:
    """Whether ``owner.name`` is a data descriptor on the class (a property), whose setter must be used."""
    static = inspect.getattr_static(type(owner), name, None)
    return hasattr(type(static), "__set__") and not isinstance(static, type)


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
        path = "an attribute name or dotted path such as 'beta', 'loss_fn.beta' or 'losses.0.beta'"
        if not isinstance(attribute, str):
            raise TypeError(f"`attribute` must be {path}, got {attribute!r} of type {type(attribute).__name__}")
        if not all(part.isidentifier() or part.isdigit() for part in attribute.split(".")):
            raise ValueError(f"`attribute` must be {path}, got {attribute!r}")
        total_steps = check_int("total_steps", total_steps, 1, optional=True)
        check_choice("unit", unit, UNITS)
        if log_name is True:
            log_name = attribute
        elif log_name is False:
            log_name = None
        if log_name is not None and (not isinstance(log_name, str) or not log_name):
            accepted = "a non-empty string, True (the attribute's name) or None (no logging)"
            if isinstance(log_name, str):
                raise ValueError(f"`log_name` must be {accepted}, got {log_name!r}")
            raise TypeError(f"`log_name` must be {accepted}, got {log_name!r} of type {type(log_name).__name__}")
        self._schedule = schedule
        # The library's own schedule: pure, so values are evaluated ahead, and its rules (T, length, advice) known.
        self._cyclical = schedule if isinstance(schedule, CyclicalSchedule) else None
        self._warned_cycles = False
        self._attribute = attribute
        self._path = tuple(attribute.split("."))
        self._total_steps = total_steps
        self._unit = unit
        self._eval_value = check_real("eval_value", eval_value, optional=True)
        self._log_name: str | None = log_name
        self._state_key = self._generate_state_key(attribute=attribute)

        self._total: int | None = None  # T of the current (or last) fit
        self._estimate: int | None = None  # the Trainer's T, read in on_fit_start
        self._loaded: dict[str, Any] | None = None  # state restored from a checkpoint by this Trainer call
        self._last_run: tuple[weakref.ref[pl.Trainer], int | None] | None = None
        self._counter: tuple[Any, str] | None = None  # (object, attribute) holding the step counter
        self._kind = _SETATTR
        self._target: Any = None
        self._name = ""
        self._cached_step = -1
        self._value: float | None = None
        self._probed: tuple[int | None, float] | None = None  # (T, value at step 0) of a fresh fit's probe
        self._warned_end: int | None = None  # the run length at whose end a warning at the start said β is off
        self._ahead: list[float] = []  # values for steps `_ahead_start + i`, evaluated in one batch
        self._ahead_start = 0
        self._ahead_len = 0
        self._loggers: list[Any] = []
        self._log_every = 0
        self._epoch_loop: Any = None
        self._logged_step = -1
        self._log_between_changes = False

    # ------------------------------------------------------------------ configuration (read-only)

    @property
    def schedule(self) -> Callable[[int, int | None], float]:
        """The schedule function."""
        return self._schedule

    @property
    def attribute(self) -> str:
        """The attribute (or dotted path) written."""
        return self._attribute

    @property
    def total_steps(self) -> int | None:
        """``T`` as given at construction; None means the Trainer's length."""
        return self._total_steps

    @property
    def total(self) -> int | None:
        """``T`` of the current (or last) fit, as resolved at its start; None before a fit resolves it."""
        return self._total

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
        # Spawned processes (ddp_spawn) pickle callbacks: leave out what binds this object to one run.
        if getattr(self._schedule, "__self__", None) is not self:
            try:
                pickle.dumps(self._schedule)
            except Exception as err:  # pickle raises several types
                raise pickle.PicklingError(
                    f"{type(self).__name__}(`{self._attribute}`): its schedule {self._schedule!r} cannot be pickled, "
                    "which spawning strategies such as `ddp_spawn` need: define it with `def` at module level (or "
                    "as `functools.partial` of such a function) instead of a lambda or a local function"
                ) from err
        state = self.__dict__.copy()
        state.update(
            _last_run=None,
            _counter=None,
            _target=None,
            _epoch_loop=None,
            _loggers=[],
            _kind=_SETATTR,
            _ahead=[],
            _ahead_start=0,
            _ahead_len=0,
        )
        return state

    def _init_args(self) -> dict[str, Any]:
        return {
            "schedule": self._schedule, "attribute": self._attribute, "total_steps": self._total_steps,
            "unit": self._unit, "eval_value": self._eval_value, "log_name": self._log_name,
        }  # fmt: skip

    @reprlib.recursive_repr()  # a schedule that refers back to this callback (a bound method) prints as `...`
    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._init_args().items())})"

    # ------------------------------------------------------------------ what subclasses specialise

    def _value_at(self, step: int, total: int | None) -> float:
        if self._cyclical is not None:
            return self._cyclical._value(step, total)  # finite by construction; checked once per fit
        value = float(self._schedule(step, total))
        if value - value != 0.0:  # NaN or inf, in one subtraction: this runs at every step
            raise ValueError(
                f"{type(self).__name__}(`{self._attribute}`): `schedule({step}, {total})` returned {value}; the value "
                "is written into the model, so the schedule must return a finite number at every step"
            )
        return value

    # Steps evaluated at once by the per-step hook when the schedule is known to be pure (the library's
    # CyclicalSchedule): one tight loop every `_LOOKAHEAD` steps costs less than one call per step, each with
    # caches cold from Lightning's work in between. A user's function may keep state: called on its own step only.
    _LOOKAHEAD = 256

    def _evaluate(self, step: int) -> float:
        """The value at ``step``, for the per-step hook; looks ahead where the schedule allows."""
        total = self._total
        if self._cyclical is None:
            return self._value_at(step, total)
        end = step + self._LOOKAHEAD if total is None else max(step + 1, min(step + self._LOOKAHEAD, total))
        value_at = self._cyclical._value
        ahead = self._ahead = [value_at(s, total) for s in range(step, end)]  # the same function, step by step
        self._ahead_start, self._ahead_len = step, len(ahead)
        return ahead[0]

    def _needs_total(self) -> bool:
        """Whether the schedule needs ``T``; a user's function gets None where it is not known."""
        return self._cyclical is not None and self._cyclical.needs_total

    def _schedule_length(self, total: int | None) -> int | None:
        """Units after which the schedule has reached its end (None: no end)."""
        return total if self._cyclical is None else self._cyclical.length(total)

    def _check_total(self, total: int, trainer: pl.Trainer) -> None:
        """Checks that need ``T``, before the first step."""
        cyc = self._cyclical
        if cyc is None or cyc.period is not None:
            return
        where = f"`total_steps`={total}" if self._total_steps is not None else f"the run's {total} {self._unit}s"
        if cyc.delay >= total:
            message = (
                f"{type(self).__name__}: `delay`={cyc.delay} must be smaller than {where}: no cycle would run. "
                "Use a shorter delay or a longer run."
            )
            if not trainer.fast_dev_run:  # type: ignore[attr-defined]  # set at runtime by a connector
                raise misconfiguration(message)
            if not self._warned_cycles:  # a debug run: say it, and let it run at `start`
                self._warned_cycles = True
                rank_zero_warn(message)
            return
        if cyc.n_cycle is not None and cyc.n_cycle >= total - cyc.delay and not self._warned_cycles:
            self._warned_cycles = True  # once: fast_dev_run and tiny debug runs still train
            span = total - cyc.delay
            rank_zero_warn(
                f"{type(self).__name__}: `n_cycle`={cyc.n_cycle} cycles need more than {cyc.n_cycle} {self._unit}s, "
                f"but the schedule has {span} ({where}{f' minus `delay`={cyc.delay}' if cyc.delay else ''}); every "
                f"cycle would be one {self._unit} long and β would never leave `start`. Use fewer cycles"
                f"{' or a longer run' if self._total_steps is None else ' or a larger `total_steps`'}."
            )

    def _config(self) -> dict[str, Any]:
        """The configuration saved in checkpoints (plain types), compared on resume."""
        if self._cyclical is None:
            return {"unit": self._unit}
        return {**dataclasses.asdict(self._cyclical), "unit": self._unit}

    def _unbounded_hint(self) -> str:
        period = ", or `period=` (units per cycle) to cycle without knowing the run's length," if self._cyclical else ""
        if self._unit == "epoch":
            return f"pass `total_steps=` (in epochs) to the callback{period or ','} or set `max_epochs`"
        return f"pass `total_steps=` to the callback{period or ','} or bound the run with `max_steps` / `max_epochs`"

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
                f"{type(self).__name__}(`{self._attribute}`): `schedule.phase({step}, {self._known_total()})` must "
                f"return one of {PHASES} or None, got {value!r}"
            )
        return value

    @property
    def has_phases(self) -> bool:
        """Whether :meth:`phase_at` can say anything: the schedule has a ``phase`` method, or a subclass defines phases."""
        return type(self).phase_at is not ScheduledAttribute.phase_at or callable(
            getattr(self._schedule, "phase", None)
        )

    def current_phase(self, trainer: pl.Trainer) -> Phase | None:
        """The phase of the value that trained the model's current weights (the last step taken)."""
        if self._unit == "epoch":
            return self.phase_at(trainer.current_epoch)
        return self.phase_at(max(self._read_counter(trainer) - 1, 0))

    def _known_total(self) -> int | None:
        """``T``: the constructor's, else the current (or last) fit's; None before a fit resolves it."""
        return self._total_steps if self._total_steps is not None else self._total

    def value_at(self, step: int, total_steps: int | None = None) -> float:
        """The value written at ``step``; ``total_steps`` defaults to the constructor's, then the current fit's ``T``.

        Example:
            >>> ScheduledAttribute(lambda step, total: step / total, total_steps=10).value_at(5)
            0.5
        """
        total = total_steps if total_steps is not None else self._known_total()
        if total is None and self._needs_total():
            raise ValueError("`total_steps` is not known before the fit starts: pass `total_steps=`")
        return self._value_at(step, total)

    # ------------------------------------------------------------------ binding T and the counter to a run

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # A checkpoint's state belongs to the Trainer call that restores it, which starts here.
        self._loaded = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Everything that can be checked is checked here, before the sanity check and the first step.
        self._probed = None
        self._check_attribute(pl_module, writing=True)
        self._check_other_schedules(trainer)
        self._estimate = self._estimate_total(trainer)
        if self._estimate == 0 and self._total_steps is None:
            return  # no training step will run
        total = self._total_steps if self._total_steps is not None else self._estimate
        if total is not None:
            self._check_total(total, trainer)
            self._warn_manual_max_steps(trainer, pl_module)
        if self._estimate != 0 and self._loaded is None and self._read_counter(trainer, pl_module) == 0:
            # A fresh fit: step 0 is the first step it takes, so evaluating it now calls the function on no step
            # the run does not take (a resumed or continued fit starts elsewhere, and is not probed).
            self._probed = (total, self._probe_schedule(trainer, total))

    def _warn_manual_max_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Under manual optimization `max_steps` counts every optimizer's steps, which no one knows per batch.
        if (
            self._total_steps is None and self._unit == "step" and not pl_module.automatic_optimization
            and trainer.max_steps != -1 and self._estimate == trainer.max_steps
        ):  # fmt: skip
            rank_zero_warn(
                f"{type(self).__name__}(`{self._attribute}`): under manual optimization the schedule counts training "
                f"batches, but the run is bounded by `max_steps={trainer.max_steps}`, which counts every optimizer's "
                f"steps. T = {trainer.max_steps} batches assumes one optimizer step per batch; if `training_step` "
                "steps several optimizers (or steps every k batches), pass `total_steps=` in batches, or bound the "
                "run with `max_epochs`."
            )

    def _probe_schedule(self, trainer: pl.Trainer, total: int | None) -> float:
        """Step 0's value, evaluated before training, so that a function that cannot run fails there."""
        if self._cyclical is not None:
            return self._cyclical._value(0, total)  # validated at construction; `_check_total` has judged T
        try:
            value = self._schedule(0, total)
        except Exception as err:  # any failure of the user's function is reported the same way
            hint = (
                f" This run's length is not known (the Trainer gives no number of {self._unit}s), so the schedule "
                "gets `total_steps=None`: pass `total_steps=` to the callback, bound the run, or make the "
                "function work without it."
            ) if total is None else ""  # fmt: skip
            raise misconfiguration(
                f"{type(self).__name__}(`{self._attribute}`): `schedule(0, {total})` raised "
                f"{type(err).__name__}: {err}.{hint}"
            ) from err
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise misconfiguration(
                f"{type(self).__name__}(`{self._attribute}`): `schedule(0, {total})` must return a finite real "
                f"number, got {value!r}"
            )
        return float(value)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaded, self._loaded = self._loaded, None
        if loaded is not None:
            self._warn_changed_config(loaded)
        saved = None if loaded is None or loaded.get("total_steps") is None else int(loaded["total_steps"])
        continued = self._continued_total(trainer, pl_module)
        total, warning = choose_total(self._total_steps, saved, continued, self._estimate, self._unit)
        if warning is not None:
            rank_zero_warn(f"{type(self).__name__}(`{self._attribute}`): {warning}")
        if total:
            self._check_total(total, trainer)
        self._total = total or None
        self._last_run = (weakref.ref(trainer), self._total)
        self._bind(trainer, pl_module)
        self._reuse_probe(trainer, pl_module)
        self._warn_if_run_ends_off_plateau(trainer)

    def _continued_total(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int | None:
        """``T`` of the previous fit on this Trainer, when this fit continues it (past step 0); else None."""
        last_run, self._last_run = self._last_run, None
        if last_run is None or last_run[0]() is not trainer or self._read_counter(trainer, pl_module) == 0:
            return None
        return last_run[1]

    def _reuse_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Step 0's value, evaluated by the probe in ``on_fit_start``, is the one written: not called twice."""
        probed, self._probed = self._probed, None
        if probed is not None and probed[0] == self._total and self._read_counter(trainer, pl_module) == 0:
            self._ahead, self._ahead_start, self._ahead_len = [float(probed[1])], 0, 1

    def _warn_changed_config(self, loaded: dict[str, Any]) -> None:
        saved = loaded.get("config")
        if not isinstance(saved, dict):
            return
        now = self._config()
        changed = [f"{k}: {saved[k]!r} -> {now.get(k)!r}" for k in saved if saved[k] != now.get(k)]
        if changed:
            rank_zero_warn(
                f"{type(self).__name__}(`{self._attribute}`): the checkpoint was trained with another schedule "
                f"({'; '.join(changed)}); the values change from the resumed step on"
            )

    def _estimate_total(self, trainer: pl.Trainer) -> int | None:
        """The Trainer's length in ``unit``\\ s; 0 when no training step will run; None when unknown."""
        if trainer.limit_train_batches == 0:
            return 0  # a fit that only validates; Lightning's estimate reads -1 here
        if self._unit == "epoch":
            total: float = trainer.max_epochs if trainer.max_epochs is not None else -1
            total = math.inf if total < 0 else total
        else:
            total = trainer.estimated_stepping_batches
            exact = self._accumulation_scheduler_total(trainer)
            total = exact if exact is not None else total
        if not math.isfinite(total) or total < 0:
            if self._needs_total() and self._total_steps is None:
                raise misconfiguration(self._unbounded_message(trainer, total))
            return None
        return int(total)

    def _unbounded_message(self, trainer: pl.Trainer, estimate: float) -> str:
        name = f"{type(self).__name__}(`{self._attribute}`)"
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
        if timer is not None and timer._duration is not None:
            why = (
                f"the run is bounded only by `max_time` ({timer._duration} s), which gives no number of "
                f"{self._unit}s to schedule over"
            )
        elif self._unit == "epoch":
            why = f"`max_epochs={trainer.max_epochs}` sets no number of epochs"
            if trainer.max_steps != -1:
                why += f" (`max_steps={trainer.max_steps}` counts steps, not epochs)"
        else:
            why = (
                f"the Trainer estimates {estimate} optimizer steps (`max_epochs=-1`, or an iterable dataset "
                "without `max_steps`)"
            )
        return f"{name} needs the run's length, but {why}: {self._unbounded_hint()}."

    def _accumulation_scheduler_total(self, trainer: pl.Trainer) -> int | None:
        # `estimated_stepping_batches` ignores a GradientAccumulationScheduler; count its steps epoch by epoch.
        scheduler = next((c for c in trainer.callbacks if isinstance(c, GradientAccumulationScheduler)), None)  # type: ignore[attr-defined]
        module = trainer.lightning_module
        if scheduler is None or module is None or not module.automatic_optimization:
            return None
        batches, epochs = trainer.num_training_batches, trainer.max_epochs
        if not math.isfinite(batches) or epochs is None or epochs < 0:
            return None
        total = sum(math.ceil(batches / scheduler.get_accumulate_grad_batches(e)) for e in range(epochs))
        return min(total, trainer.max_steps) if trainer.max_steps != -1 else total

    def _counter_source(self, trainer: pl.Trainer, pl_module: pl.LightningModule | None) -> tuple[Any, str]:
        """``(object, attribute)`` holding the step counter: read once per step, so resolved once per fit."""
        loop = trainer.fit_loop
        if self._unit == "epoch":
            return loop.epoch_progress.current, "completed"  # `trainer.current_epoch`
        if pl_module is None or pl_module.automatic_optimization:
            return (
                loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total,
                "completed",
            )  # `global_step`
        # Manual optimization: `global_step` counts every optimizer's steps; batches are what T counts.
        return loop.epoch_loop, "_batches_that_stepped"

    def _read_counter(self, trainer: pl.Trainer, pl_module: pl.LightningModule | None = None) -> int:
        obj, field = self._counter_source(trainer, pl_module if pl_module is not None else trainer.lightning_module)
        return getattr(obj, field)

    def _bind(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resolve once per fit what the per-step hook reads and writes (a submodule may change between fits)."""
        self._counter = self._counter_source(trainer, pl_module)
        owner, name = self._owner(pl_module)
        current = getattr(owner, name)
        instance_dict = getattr(owner, "__dict__", None)  # None with __slots__
        if _has_setter(owner, name):
            self._kind, self._target = _SETATTR, owner  # a property (or other descriptor): through its setter
        elif isinstance(current, torch.Tensor):
            self._kind, self._target = _TENSOR, current
        elif (
            instance_dict is not None
            and name in instance_dict
            and not (isinstance(owner, torch.nn.Module) and name in owner._modules)
        ):
            self._kind, self._target = _DICT, instance_dict  # plain instance attribute: skip nn.Module.__setattr__
        else:
            self._kind, self._target = _SETATTR, owner
        self._name = name
        self._cached_step = -1
        self._ahead, self._ahead_start, self._ahead_len = [], 0, 0  # T may differ from the last fit's
        self._logged_step = -1
        self._log_between_changes = self._unit == "epoch"  # the value changes per epoch; logging steps don't
        self._log_every = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set at runtime by a connector
        self._loggers = list(trainer.loggers) if self._log_name is not None and self._log_every else []
        self._epoch_loop = trainer.fit_loop.epoch_loop

    # ------------------------------------------------------------------ checks

    def _owner(self, pl_module: pl.LightningModule) -> tuple[Any, str]:
        *path, name = self._path
        owner: Any = pl_module
        for i, part in enumerate(path):
            if not hasattr(owner, part):
                raise misconfiguration(
                    f"{type(pl_module).__name__} has no attribute `{'.'.join(path[: i + 1])}` on the way to "
                    f"`{self._attribute}` for {type(self).__name__}; check the `attribute` argument"
                )
            owner = getattr(owner, part)
        return owner, name

    def _check_attribute(self, pl_module: pl.LightningModule, writing: bool = False) -> None:
        owner, name = self._owner(pl_module)
        cls = type(self).__name__
        if not hasattr(owner, name):
            raise misconfiguration(
                f"{type(pl_module).__name__} has no attribute `{self._attribute}` for {cls} to write; "
                f"add `self.{self._attribute} = 0.0` in __init__ (or "
                f"`self.register_buffer({name!r}, torch.tensor(0.0))`), or pass `attribute=` naming yours"
            )
        value = getattr(owner, name)
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point():
                raise misconfiguration(
                    f"`{self._attribute}` is a {value.dtype} tensor; {cls} needs a floating-point one, "
                    "e.g. `torch.tensor(0.0)`"
                )
            if value.requires_grad:
                raise misconfiguration(
                    f"`{self._attribute}` is a tensor that requires grad (a Parameter?); {cls} writes a "
                    "schedule into it: use a buffer, `self.register_buffer(...)`, or a float"
                )
            return
        static = inspect.getattr_static(type(owner), name, None)
        if writing and isinstance(static, property) and static.fset is None:
            raise misconfiguration(
                f"`{self._attribute}` is a read-only property of {type(owner).__name__}, so {cls} cannot write "
                f"it; give it a setter, or store the value in a plain attribute (`self.{name} = 0.0`)"
            )

    def _check_other_schedules(self, trainer: pl.Trainer) -> None:
        for other in trainer.callbacks:  # type: ignore[attr-defined]
            if other is self or not isinstance(other, ScheduledAttribute):
                continue
            if other._attribute == self._attribute:
                raise misconfiguration(
                    f"{type(self).__name__} and {type(other).__name__} both write `{self._attribute}`; "
                    "keep one, or point one of them at another `attribute`"
                )
            if self._log_name is not None and other._log_name == self._log_name:
                raise misconfiguration(
                    f"{type(self).__name__}(`{self._attribute}`) and {type(other).__name__}(`{other._attribute}`) "
                    f"both log as `log_name={self._log_name!r}`; give each its own `log_name`"
                )

    # ------------------------------------------------------------------ writing the value

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        obj, field = self._counter  # type: ignore[misc]
        step = getattr(obj, field)
        if step != self._cached_step:
            self._cached_step = step
            i = step - self._ahead_start
            value = self._value = self._ahead[i] if 0 <= i < self._ahead_len else self._evaluate(step)
            kind = self._kind
            if kind == _DICT:
                self._target[self._name] = value
            elif kind == _TENSOR:
                self._target.fill_(value)  # in place: same object, dtype and device, so compiled graphs stay valid
            else:
                setattr(self._target, self._name, value)
        elif not self._log_between_changes:
            return  # another micro-batch of the same optimizer step: the value is in place, and logged
        if self._loggers:
            # Straight to the loggers, as LearningRateMonitor does: `self.log` costs far more per step.
            # `_batches_that_stepped` is the step the Trainer logs this step's losses at, and the
            # condition is the Trainer's own `should_update_logs` for the fit loop, minus its lookups.
            logged_step = self._epoch_loop._batches_that_stepped
            if ((logged_step + 1) % self._log_every == 0 or trainer.should_stop) and logged_step != self._logged_step:
                self._logged_step = logged_step
                for logger in self._loggers:
                    logger.log_metrics({self._log_name: self._value}, step=logged_step)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # A step that sets `should_stop` (in training_step, or in a callback before this one) has its losses
        # logged by the Trainer after this hook, whatever `log_every_n_steps` says: log the value beside them.
        if trainer.should_stop and self._loggers and self._cached_step >= 0:
            logged_step = self._epoch_loop._batches_that_stepped
            if logged_step != self._logged_step:
                self._logged_step = logged_step
                for logger in self._loggers:
                    logger.log_metrics({self._log_name: self._value}, step=logged_step)

    def _write_slow(self, pl_module: pl.LightningModule, value: float) -> None:
        owner, name = self._owner(pl_module)
        current = getattr(owner, name)
        if isinstance(current, torch.Tensor) and not _has_setter(owner, name):
            current.fill_(value)
        else:
            setattr(owner, name, value)

    def _write_eval_value(self, pl_module: pl.LightningModule) -> None:
        if self._eval_value is not None:
            self._check_attribute(pl_module)
            self._write_slow(pl_module, self._eval_value)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_eval_value(pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The training value is back before the next step (and for hooks such as on_train_epoch_end),
        # also when validation interrupts the micro-batches of one optimizer step.
        if trainer.state.fn == TrainerFn.FITTING and self._cached_step >= 0 and self._value is not None:
            self._write_slow(pl_module, self._value)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_eval_value(pl_module)

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_eval_value(pl_module)

    # ------------------------------------------------------------------ runs that end early

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._warn_if_unfinished(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After fit the model is evaluated (by hand, or by a later test) at the evaluation value.
        self._write_eval_value(pl_module)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._warn_if_unfinished(trainer, pl_module)

    def _warn_if_unfinished(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs in `on_exception` too: nothing here may call the user's function (a step the run never took) or
        # raise, so that the user's own exception reaches them as it is.
        if self._counter is None or self._cached_step < 0:
            return  # no training step ran
        self._counter = None  # once per fit
        length = self._schedule_length(self._total)
        reached = self._read_counter(trainer, pl_module)
        if length is None or reached >= length or reached == self._warned_end:
            return  # finished, endless, or ended where the warning at the start said it would
        final = self._final_value()
        held = f"`{self._attribute}` last held {self._value:.6g}"
        if final is None:
            held += f"; the rest of the schedule did not run. {self._unfinished_advice()}"
        elif self._value == final:
            held += ", its final value, but the rest of the schedule did not run."
        else:
            held += f", not its final value {final:.6g}. {self._unfinished_advice()}"
        rank_zero_warn(
            f"{type(self).__name__}(`{self._attribute}`): the fit ended after {reached} of the schedule's "
            f"{length} {self._unit}s ({self._length_source()}); {held}"
        )

    def _final_value(self) -> float | None:
        """The value at the schedule's end, where it is known without calling the user's function."""
        return None if self._cyclical is None else self._cyclical.stop

    def _length_source(self) -> str:
        """Where the schedule's length came from, in the words of the arguments that set it."""
        cyc = self._cyclical
        if cyc is not None and cyc.period is not None:
            delay = f"`delay`={cyc.delay} + " if cyc.delay else ""
            return f"{delay}`n_cycle`={cyc.n_cycle} × `period`={cyc.period}"
        return "`total_steps`" if self._total_steps is not None else "the Trainer's planned length"

    def _unfinished_advice(self) -> str:
        cyc = self._cyclical
        if cyc is not None:
            if cyc.period is not None:
                fit = "pass a smaller `n_cycle`, or `n_cycle=None` to cycle for as long as the run lasts"
            elif self._total_steps is not None:
                fit = "pass `total_steps=` matching the run's real length"
            else:
                fit = "for a run that may stop early, pass `period=` (units per cycle) instead of relying on its planned length"
            return f"A model whose β never reached `stop` was not trained on the ELBO: {fit}."
        if self._total_steps is not None:
            return "If the run was meant to be shorter, pass `total_steps=` to match it."
        return "For a run that may stop early, pass `total_steps=` (the length to schedule over)."

    def _warn_if_run_ends_off_plateau(self, trainer: pl.Trainer) -> None:
        """Warn at the start when the run's known length makes its last step fall on a ramp (or the delay)."""
        self._warned_end = None
        cyc, total = self._cyclical, self._total
        if cyc is not None and cyc.period is None and total is not None and (cyc.n_cycle or 1) >= total - cyc.delay:
            return  # `_check_total` has said why: too many cycles, or a delay as long as the run
        run = self._estimate  # the Trainer's length in units; None when unknown
        if not run or not self.has_phases:
            return  # a schedule without phases cannot tell
        last = run - 1
        phase = self.phase_at(last)
        if phase not in ("ramp", "delay"):
            return
        self._warned_end = run  # the end-of-fit warning would say it again
        rank_zero_warn(
            f"{type(self).__name__}(`{self._attribute}`): this run's last {self._unit} ({last}, of {run}) is in the "
            f"schedule's {phase} phase{self._ends_off_plateau_detail(last)}, so training ends off the plateau. "
            f"{self._ends_off_plateau_advice(run)}"
        )

    def _ends_off_plateau_detail(self, last: int) -> str:
        if self._cyclical is None:
            return ""
        return f", at β = {self._cyclical._value(last, self._total):.6g} instead of `stop`={self._cyclical.stop:g}"

    def _ends_off_plateau_advice(self, run: int) -> str:
        cyc, unit = self._cyclical, self._unit
        if cyc is None:
            return f"Fit the schedule to the run's {run} {unit}s (`total_steps=`), or run longer."
        if cyc.period is not None:
            first = cyc.delay + math.ceil(cyc.ratio * cyc.period)
            return (
                f"With `period`={cyc.period} the first plateau starts at {unit} {first}: use a shorter `period` "
                f"(the last cycle's ramp must end before {unit} {run}), or a longer run."
            )
        total = self._total if self._total is not None else run
        if total > run:
            return f"`total_steps`={total} is longer than the run: pass `total_steps={run}`, or run longer."
        n_cycle, span = cyc.n_cycle or 1, total - cyc.delay
        fits = sorted((m for m in range(1, span) if span % m == 0), key=lambda m: (abs(m - n_cycle), m))[:2]
        return (
            f"`n_cycle`={cyc.n_cycle} cuts the {span} {unit}s{' after `delay`' if cyc.delay else ''} into cycles of "
            f"{-(-span // n_cycle)} and a shorter last one that ends on its ramp: use an `n_cycle` that divides {span} "
            f"(e.g. {' or '.join(map(str, fits))})"
            + (f", or a run length that {cyc.n_cycle} divides." if self._total_steps is None else ".")
        )

    # ------------------------------------------------------------------ checkpoints

    @override
    def state_dict(self) -> dict[str, Any]:
        # Plain Python types only, so `torch.load(ckpt, weights_only=True)` works.
        total = self._total if self._total is not None else self._total_steps
        return {"total_steps": total, "config": self._config()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = dict(state_dict)


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

    Args:
        n_cycle: number of cycles ``M``; 1 is monotonic annealing; None (with ``period``): endless.
        ratio: fraction ``R`` of each cycle spent rising, in (0, 1].
        start: β at the start of each cycle (the paper's language-model runs used 0.1).
        stop: β on the plateau.
        total_steps: ``T`` in ``unit``\ s; default: the Trainer's length. Excludes ``period``.
        shape: ``"linear"``, ``"sigmoid"`` or ``"cosine"`` ramp.
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

    @property
    def schedule(self) -> CyclicalSchedule:
        """The :class:`~lightning_kl_anneal.CyclicalSchedule` this callback writes; its phases are the callback's.

        Example:
            >>> callback = CyclicalKLAnnealing(n_cycle=2, total_steps=8)
            >>> callback.schedule.phase(3, 8), callback.phase_at(3)
            ('plateau', 'plateau')
        """
        return self._cyclical  # type: ignore[return-value]

    @property
    def n_cycle(self) -> int | None:
        """Number of cycles ``M`` (None: endless)."""
        return self.schedule.n_cycle

    @property
    def ratio(self) -> float:
        """Fraction ``R`` of each cycle spent rising."""
        return self.schedule.ratio

    @property
    def start(self) -> float:
        """β at the start of each cycle."""
        return self.schedule.start

    @property
    def stop(self) -> float:
        """β on the plateau."""
        return self.schedule.stop

    @property
    def shape(self) -> Shape:
        """The ramp's shape."""
        return self.schedule.shape

    @property
    def ratio_zero(self) -> float:
        """Leading fraction of each cycle held at ``start``."""
        return self.schedule.ratio_zero

    @property
    def period(self) -> int | None:
        """Units per cycle, or None (derived from ``T``)."""
        return self.schedule.period

    @property
    def delay(self) -> int:
        """Units held at ``start`` before the first cycle."""
        return self.schedule.delay

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
        cyc = self.schedule
        return {
            "n_cycle": cyc.n_cycle, "ratio": cyc.ratio, "start": cyc.start, "stop": cyc.stop,
            "total_steps": self._total_steps, "shape": cyc.shape, "ratio_zero": cyc.ratio_zero,
            "attribute": self._attribute, "eval_beta": self._eval_value, "log_name": self._log_name,
            "period": cyc.period, "unit": self._unit, "delay": cyc.delay,
        }  # fmt: skip
