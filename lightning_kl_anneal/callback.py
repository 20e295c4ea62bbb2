"""The Lightning callback: writes the scheduled KL weight into the LightningModule."""

from __future__ import annotations

import math
import numbers
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from lightning_kl_anneal.schedules import Shape, _beta, cyclical_beta, validate_schedule_args

__all__ = ["CyclicalKLAnnealing"]


class CyclicalKLAnnealing(Callback):
    r"""Cyclical KL annealing (Fu et al., NAACL 2019) for any LightningModule.

    Before every training step, writes
    ``cyclical_beta(trainer.global_step, T, n_cycle, ratio, start, stop, shape, ratio_zero)``
    (see :func:`~lightning_kl_anneal.cyclical_beta`) into ``pl_module.<attribute>``;
    your ``training_step`` reads it: ``loss = rec + self.beta * kl``.

    - ``global_step`` counts optimizer steps, so with gradient accumulation all
      micro-batches of one step see the same β, and ``T`` counts optimizer steps too.
    - β is a function of ``global_step`` only, so resuming from a checkpoint, DDP (every
      rank computes the same value, no communication) and ``torch.compile`` need nothing
      special. The resolved ``T`` is saved in the checkpoint and reused on resume.
    - If the attribute holds a ``torch.Tensor`` (a buffer), it is updated in place, so
      compiled code sees the new value without recompiling; otherwise a float is set.
    - During validation, test and predict the attribute holds ``eval_beta`` (default
      ``stop``), so validation losses are comparable across the cycle.
    - β is sent to every logger of the Trainer as ``log_name`` on the Trainer's
      logging steps (``log_every_n_steps``), at the same step as the losses it produced.

    Args:
        n_cycle: number of cycles ``M``; 1 is monotonic annealing.
        ratio: fraction ``R`` of each cycle spent rising, in (0, 1].
        start: β at the start of each cycle (the paper's language-model runs used 0.1).
        stop: β on the plateau.
        total_steps: ``T``; default ``trainer.estimated_stepping_batches``.
        shape: ``"linear"``, ``"sigmoid"`` or ``"cosine"`` ramp.
        ratio_zero: leading fraction of each cycle held at ``start`` (Optimus), in [0, ratio).
        attribute: the LightningModule attribute to write; a dotted path such as
            ``"loss_fn.beta"`` reaches into submodules.
        eval_beta: β outside training; default ``stop``.
        log_name: name of the logged metric; ``None`` disables logging.

    Raises:
        TypeError, ValueError: at construction, for a bad argument.
        MisconfigurationException: before the first training step, when the attribute is
            missing or ``T`` cannot be known.

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
        n_cycle: int = 4,
        ratio: float = 0.5,
        start: float = 0.0,
        stop: float = 1.0,
        *,
        total_steps: int | None = None,
        shape: Shape = "linear",
        ratio_zero: float = 0.0,
        attribute: str = "beta",
        eval_beta: float | None = None,
        log_name: str | None = "beta",
    ) -> None:
        validate_schedule_args(n_cycle, ratio, start, stop, shape, ratio_zero, total_steps)
        if not isinstance(attribute, str) or not all(part.isidentifier() for part in attribute.split(".")):
            raise ValueError(
                f"`attribute` must be an attribute name or dotted path such as 'beta' or 'loss_fn.beta', got {attribute!r}"
            )
        if eval_beta is not None and (
            isinstance(eval_beta, bool) or not isinstance(eval_beta, numbers.Real) or not math.isfinite(eval_beta)
        ):
            raise ValueError(f"`eval_beta` must be a finite real number or None (meaning `stop`), got {eval_beta!r}")
        if log_name is not None and (not isinstance(log_name, str) or not log_name):
            raise ValueError(f"`log_name` must be a non-empty string or None (no logging), got {log_name!r}")

        self.n_cycle = int(n_cycle)
        self.ratio = float(ratio)
        self.start = float(start)
        self.stop = float(stop)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.shape = shape
        self.ratio_zero = float(ratio_zero)
        self.attribute = attribute
        self._path = tuple(attribute.split("."))
        self._state_key = self._generate_state_key(attribute=attribute)
        self.eval_beta = self.stop if eval_beta is None else float(eval_beta)
        self.log_name = log_name

        self._resolved_total_steps: int | None = None  # T used for this fit
        self._checkpoint_total_steps: int | None = None  # T found in a checkpoint being resumed
        self._cached_step = -1
        self._beta = self.start

    # ------------------------------------------------------------------ the schedule

    def beta_at(self, step: int, total_steps: int | None = None) -> float:
        """β this callback writes at ``step``; ``total_steps`` defaults to the ``T`` of the current fit.

        Example:
            >>> CyclicalKLAnnealing(n_cycle=1, ratio=0.5).beta_at(25, total_steps=100)
            0.5
        """
        total = self._resolved_total_steps if total_steps is None else total_steps
        if total is None:
            raise ValueError("`total_steps` is not known before fit starts: pass `total_steps=`")
        return cyclical_beta(step, total, self.n_cycle, self.ratio, self.start, self.stop, self.shape, self.ratio_zero)

    @property
    @override
    def state_key(self) -> str:
        # Distinct per attribute, so one instance for `beta` and one for `beta_bow` coexist in a checkpoint.
        # Built once: Lightning reads it around every hook call, so a fresh repr() per read costs ~20 µs a step.
        return self._state_key

    # ------------------------------------------------------------------ checks before training

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_attribute(pl_module)
        if self.total_steps is None:
            self._estimate_total_steps(trainer)  # fail here, before the sanity check runs

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Checkpoints are restored after `on_fit_start` by some strategies, so T is settled here.
        # Used once: a later fit with the same callback and no checkpoint starts a fresh schedule.
        resumed, self._checkpoint_total_steps = self._checkpoint_total_steps, None
        if self.total_steps is not None:
            total = self.total_steps
            if resumed is not None and resumed != total:
                rank_zero_warn(
                    f"CyclicalKLAnnealing: resuming a run scheduled over {resumed} steps with "
                    f"`total_steps={total}`; the β sequence changes from here on"
                )
        elif resumed is not None:
            total = resumed
            estimate = self._estimate_total_steps(trainer)
            if estimate != resumed:
                rank_zero_warn(
                    f"CyclicalKLAnnealing: the checkpoint's schedule spans {resumed} steps but this Trainer "
                    f"would run {estimate}; keeping {resumed} so β continues exactly. "
                    "Pass `total_steps=` to reschedule."
                )
        else:
            total = self._estimate_total_steps(trainer)
        self._resolved_total_steps = total
        self._cached_step = -1

    def _estimate_total_steps(self, trainer: pl.Trainer) -> int:
        estimate = trainer.estimated_stepping_batches
        if not math.isfinite(estimate) or estimate < 1:
            raise MisconfigurationException(
                f"CyclicalKLAnnealing needs the total number of optimizer steps, but the Trainer estimates "
                f"{estimate} (unbounded training: `max_epochs=-1`, or an iterable dataset without `max_steps`). "
                "Pass `total_steps=` to the callback, or set `max_steps` on the Trainer."
            )
        return int(estimate)

    def _check_attribute(self, pl_module: pl.LightningModule) -> None:
        owner, name = self._owner(pl_module)
        if not hasattr(owner, name):
            raise MisconfigurationException(
                f"{type(pl_module).__name__} has no attribute `{self.attribute}` for CyclicalKLAnnealing to write; "
                f"add `self.{self.attribute} = 0.0` in __init__ (or "
                f"`self.register_buffer({name!r}, torch.tensor(0.0))`), or pass `attribute=` naming yours"
            )
        value = getattr(owner, name)
        if isinstance(value, torch.Tensor) and not value.is_floating_point():
            raise MisconfigurationException(
                f"`{self.attribute}` is a {value.dtype} tensor; β needs a floating-point one, "
                f"e.g. `torch.tensor(0.0)`"
            )

    def _owner(self, pl_module: pl.LightningModule) -> tuple[Any, str]:
        *path, name = self._path
        if not path:
            return pl_module, name
        owner: Any = pl_module
        for i, part in enumerate(path):
            if not hasattr(owner, part):
                raise MisconfigurationException(
                    f"{type(pl_module).__name__} has no attribute `{'.'.join(path[: i + 1])}` on the way to "
                    f"`{self.attribute}` for CyclicalKLAnnealing; check the `attribute` argument"
                )
            owner = getattr(owner, part)
        return owner, name

    # ------------------------------------------------------------------ writing β

    def _write(self, pl_module: pl.LightningModule, beta: float) -> None:
        owner, name = self._owner(pl_module)
        current = getattr(owner, name)
        if isinstance(current, torch.Tensor):
            # In place: same object, dtype and device, so torch.compile guards stay valid.
            with torch.no_grad():
                current.fill_(beta)
        else:
            setattr(owner, name, beta)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._cached_step:
            return  # another micro-batch of the same optimizer step: β is already in place
        if self._resolved_total_steps is None:
            raise RuntimeError("CyclicalKLAnnealing.on_train_start did not run before the first training step")
        self._cached_step = step
        self._beta = _beta(
            step, self._resolved_total_steps, self.n_cycle, self.ratio,
            self.start, self.stop, self.shape, self.ratio_zero,
        )  # fmt: skip
        self._write(pl_module, self._beta)
        every = trainer.log_every_n_steps
        if self.log_name is not None and every and trainer.loggers:
            # Straight to the loggers, as LearningRateMonitor does: `self.log` costs far more per step.
            # `_batches_that_stepped` is the step the Trainer logs this step's losses at, and the
            # condition is the Trainer's own `should_update_logs` for the fit loop, minus its lookups.
            logged_step = trainer.fit_loop.epoch_loop._batches_that_stepped
            if (logged_step + 1) % every == 0 or trainer.should_stop:
                for logger in trainer.loggers:
                    logger.log_metrics({self.log_name: self._beta}, step=logged_step)

    def _write_eval_beta(self, pl_module: pl.LightningModule) -> None:
        self._check_attribute(pl_module)
        self._write(pl_module, self.eval_beta)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_eval_beta(pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The training β is back before the next step (and for hooks such as on_train_epoch_end),
        # also when validation interrupts the micro-batches of one optimizer step.
        if trainer.state.fn == TrainerFn.FITTING and self._cached_step >= 0:
            self._write(pl_module, self._beta)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_eval_beta(pl_module)

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_eval_beta(pl_module)

    # ------------------------------------------------------------------ checkpoints

    @override
    def state_dict(self) -> dict[str, Any]:
        # Plain Python types only, so `torch.load(ckpt, weights_only=True)` works.
        total = self._resolved_total_steps if self._resolved_total_steps is not None else self.total_steps
        return {"total_steps": total}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        total = state_dict.get("total_steps")
        self._checkpoint_total_steps = None if total is None else int(total)
