"""LatentMonitor: logs latent diagnostics at every validation and raises the collapse alert."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_kl_anneal.exceptions import misconfiguration
from lightning_kl_anneal.metrics import ActiveUnits, KLPerDimension, MutualInformation

__all__ = ["ON_COLLAPSE", "LatentCollapseError", "LatentMonitor", "OnCollapse"]

OnCollapse = Literal["warn", "raise", "stop"]
ON_COLLAPSE: tuple[str, ...] = get_args(OnCollapse)
_COUNTING_PHASES = ("plateau", "final", None)


class LatentCollapseError(RuntimeError):
    """Raised by :class:`LatentMonitor` with ``on_collapse="raise"`` when the posterior has collapsed."""


def _check_key(name: str, value: object, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"`{name}` must be a non-empty string{' or None' if optional else ''}, got {value!r}")


def _check_int(name: str, value: object, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}{' or None' if optional else ''}, got {value!r}")


def _check_real(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite real number >= 0{' or None' if optional else ''}, got {value!r}")


class LatentMonitor(Callback):
    r"""See KL vanishing as it happens: latent diagnostics at every validation, and a collapse alert.

    Reads the posterior parameters from the dict that your ``validation_step`` returns (nothing else
    in the LightningModule changes)::

        def validation_step(self, batch, batch_idx):
            ...
            return {"mu": mu, "logvar": logvar}        # CVAE: also "prior_mu", "prior_logvar"

    At the end of every validation (not the sanity check) it logs, with ``pl_module.log`` so every
    logger gets them at the step Lightning uses for validation metrics, and ``EarlyStopping`` /
    ``ModelCheckpoint`` can monitor them:

    - ``latent/kl``: KL(q(z|x) ‖ p) per example, summed over dimensions, in nats;
    - ``latent/active_units``: dimensions whose posterior mean varies over the validation set
      (variance > ``au_threshold``, Burda et al. 2016); with a conditional prior, of ``mu - prior_mu``;
    - ``latent/mi``: I(x; z), the whole-set estimator of :func:`~lightning_kl_anneal.mutual_information`
      on at most ``mi_max_samples`` rows per process (aggregate posterior over all of them, outer
      average over ``mi_outer_rows``); only with the unconditional prior N(0, I)
      (not logged when prior keys are given);
    - the KL of each dimension as a histogram ``latent/kl_per_dim`` on every ``TensorBoardLogger``
      (never as d scalars).

    The values come from :class:`~lightning_kl_anneal.ActiveUnits`, :class:`~lightning_kl_anneal.KLPerDimension`
    and :class:`~lightning_kl_anneal.MutualInformation`, so under DDP they cover every process's rows.

    **Collapse alert.** A validation is *collapsed* when ``latent/kl < kl_threshold`` or
    ``latent/active_units < min_active_units``. When ``patience`` consecutive counted validations are
    collapsed, the monitor acts once, as ``on_collapse`` says: ``"warn"`` (a warning on rank zero with
    the numbers and the remedies), ``"raise"`` (:class:`LatentCollapseError`), or ``"stop"`` (the
    warning, then ``trainer.should_stop = True``: the fit ends cleanly after this validation, which is
    what a hyper-parameter sweep wants). Only validations during ``fit`` count, and only those taken
    while β was at its plateau: for each callback in the Trainer with a ``phase_at(step)`` method
    (the library's :class:`~lightning_kl_anneal.CyclicalKLAnnealing` and
    :class:`~lightning_kl_anneal.ScheduledAttribute`), the phase of the last training step,
    ``current_phase(trainer)`` where the callback has it (it counts epochs for ``unit="epoch"``),
    else ``phase_at(global_step - 1)``, must be ``"plateau"``, ``"final"`` or ``None`` (unknown);
    without such a callback every validation counts. A low KL while β is still rising is expected
    and is not counted; a ramp also restarts the count, since every cycle is a new chance for the
    latent (the text example's cyclical runs that collapse on one plateau often recover in the next
    cycle). So the alert needs ``patience`` collapsed validations on one plateau, or after the last
    ramp: validate often enough that a plateau holds that many (``val_check_interval``), or lower
    ``patience``.

    Defaults, and why:

    - ``kl_threshold=0.05`` nats per example: far below one bit, so the code tells the decoder
      almost nothing about x (MI <= KL). On the text example (``examples/text_vae``), the constant-β
      runs end at 0.025-0.035 nats with no active unit; the cyclical runs keep 0.10-0.49.
    - ``min_active_units=1``: collapse when no dimension is active at all.
    - ``patience=3``: a single validation can dip (noise, a learning-rate spike); three in a row on
      the plateau, where nothing in the schedule will raise the KL again, is a trend.
    - ``au_threshold=0.01``: Burda et al.'s.

    Cost: no work on training steps (no per-step hook); per validation batch, keeping a reference
    to the posterior tensors, handed to the metrics every 4096 rows (O(rows x d) sums, and a copy
    of at most ``mi_max_samples`` rows); per validation one MI estimate over the n <=
    ``mi_max_samples`` rows kept (O(``mi_outer_rows`` x n x d), float64). State saved in checkpoints is plain Python
    (``torch.load(..., weights_only=True)`` works): the running count and whether the alert fired,
    so a resumed fit alerts at the same validation as an uninterrupted one.

    Args:
        mu_key: key of the posterior means (batch, d) in ``validation_step``'s dict; larger shapes
            are flattened to (batch, -1).
        logvar_key: key of the posterior log-variances, same shape.
        prior_mu_key: key of a conditional prior's means (CVAE); ``None`` for N(0, I).
        prior_logvar_key: key of a conditional prior's log-variances; ``None`` for unit variance.
        kl_threshold: KL per example (nats) below which a validation is collapsed; ``None`` ignores the KL.
        min_active_units: fewer active units than this makes a validation collapsed; ``None`` ignores AU.
        patience: consecutive collapsed validations (at the plateau) before the alert.
        on_collapse: ``"warn"``, ``"raise"`` or ``"stop"``.
        au_threshold: variance of the posterior mean above which a dimension is active.
        mi_samples: z draws per row for the MI estimate.
        mi_outer_rows: rows (evenly spaced) whose draws are scored against the aggregate posterior
            of all rows; ``None`` for all. On synthetic posteriors of 1000 rows (``benchmarks/monitor.py``),
            with one draw and 512 outer rows the MI's standard deviation over draws measured 0.005 nats at MI 0.008, 0.017 at 0.21
            and 0.049 at 1.46 (all rows: 0.004, 0.013, 0.033 at twice the cost; 4 draws and all rows:
            0.002, 0.008, 0.015 at 8 times the cost). The draws are seeded, so two validations of
            one model agree exactly. With these defaults the monitor took 4.4 % of the text VAE's
            validation loop (``benchmarks/monitor.py``, README).
        mi_max_samples: rows kept per process for the MI estimate; 0 turns MI off.
        log_prefix: the metrics are ``f"{log_prefix}/kl"`` etc.; change it to monitor two latents.

    Raises:
        ValueError: at construction, for a bad argument.
        MisconfigurationException: on the first validation batch, when ``validation_step`` does not
            return a dict with the keys.

    Example:
        >>> import lightning as L, torch
        >>> from lightning_kl_anneal import LatentMonitor
        >>> class Collapsed(L.LightningModule):  # its posterior is the prior: KL 0, no active unit
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = torch.nn.Parameter(torch.zeros(1))
        ...     def training_step(self, batch, batch_idx):
        ...         return (self.w - batch).pow(2).mean()
        ...     def validation_step(self, batch, batch_idx):
        ...         return {"mu": torch.zeros(len(batch), 4), "logvar": torch.zeros(len(batch), 4)}
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> monitor = LatentMonitor(patience=2, on_collapse="stop")
        >>> data = torch.utils.data.DataLoader(torch.randn(8, 1), batch_size=4)
        >>> trainer = L.Trainer(max_epochs=10, callbacks=[monitor], logger=False, enable_checkpointing=False,
        ...                     enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(Collapsed(), data, data)
        >>> trainer.current_epoch, monitor.alert_step  # stopped after the 2nd validation, at step 4
        (2, 4)
    """

    def __init__(
        self,
        mu_key: str = "mu",
        logvar_key: str = "logvar",
        *,
        prior_mu_key: str | None = None,
        prior_logvar_key: str | None = None,
        kl_threshold: float | None = 0.05,
        min_active_units: int | None = 1,
        patience: int = 3,
        on_collapse: OnCollapse = "warn",
        au_threshold: float = 0.01,
        mi_samples: int = 1,
        mi_outer_rows: int | None = 512,
        mi_max_samples: int = 4096,
        log_prefix: str = "latent",
    ) -> None:
        _check_key("mu_key", mu_key, optional=False)
        _check_key("logvar_key", logvar_key, optional=False)
        _check_key("prior_mu_key", prior_mu_key, optional=True)
        _check_key("prior_logvar_key", prior_logvar_key, optional=True)
        _check_key("log_prefix", log_prefix, optional=False)
        _check_real("kl_threshold", kl_threshold, optional=True)
        _check_int("min_active_units", min_active_units, 0, optional=True)
        _check_int("patience", patience, 1)
        _check_real("au_threshold", au_threshold)
        _check_int("mi_samples", mi_samples, 1)
        _check_int("mi_outer_rows", mi_outer_rows, 1, optional=True)
        _check_int("mi_max_samples", mi_max_samples, 0)
        if on_collapse not in ON_COLLAPSE:
            raise ValueError(f"`on_collapse` must be one of {ON_COLLAPSE}, got {on_collapse!r}")

        self.mu_key, self.logvar_key = mu_key, logvar_key
        self.prior_mu_key, self.prior_logvar_key = prior_mu_key, prior_logvar_key
        self.kl_threshold = None if kl_threshold is None else float(kl_threshold)
        self.min_active_units = None if min_active_units is None else int(min_active_units)
        self.patience = int(patience)
        self.on_collapse: OnCollapse = on_collapse
        self.log_prefix = log_prefix
        self.conditional = prior_mu_key is not None or prior_logvar_key is not None
        self._state_key = self._generate_state_key(mu_key=mu_key, log_prefix=log_prefix)

        self.kl_per_dim = KLPerDimension()
        self.active_units = ActiveUnits(threshold=au_threshold)
        self.mutual_information = (
            MutualInformation(n_samples=int(mi_samples), max_samples=int(mi_max_samples), outer_rows=mi_outer_rows)
            if mi_max_samples > 0 and not self.conditional
            else None
        )
        #: consecutive collapsed validations counted so far (the alert fires when it reaches ``patience``)
        self.collapsed_count = 0
        #: ``trainer.global_step`` at the validation that fired the alert, or None
        self.alert_step: int | None = None
        self._warned_rows = False
        #: the values of the last validation, e.g. ``{"kl": 0.01, "active_units": 0.0, "mi": 0.003}``
        self.last: dict[str, float] = {}
        self._buffer: list[dict[str, Tensor | None]] = []
        self._buffered = 0
        self._device = torch.device("cpu")

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    def _metrics(self) -> list[Any]:
        return [m for m in (self.kl_per_dim, self.active_units, self.mutual_information) if m is not None]

    # ------------------------------------------------------------------ reading validation outputs

    def _read(self, outputs: Any) -> dict[str, Tensor | None]:
        keys = {"mu": self.mu_key, "logvar": self.logvar_key,
                "prior_mu": self.prior_mu_key, "prior_logvar": self.prior_logvar_key}  # fmt: skip
        wanted = [k for k in keys.values() if k is not None]
        if not isinstance(outputs, Mapping) or any(k not in outputs for k in wanted):
            got = "returned None" if outputs is None else (
                f"returned a dict with keys {sorted(map(str, outputs))}" if isinstance(outputs, Mapping)
                else f"returned a {type(outputs).__name__}")  # fmt: skip
            missing = [k for k in wanted if not isinstance(outputs, Mapping) or k not in outputs]
            fix = ", ".join(f"{k!r}: {k.replace('/', '_')}" for k in wanted)
            raise misconfiguration(
                f"LatentMonitor reads {missing} from the dict that `validation_step` returns, but it {got}. "
                f"End `validation_step` with `return {{{fix}}}` (other entries may stay in the dict), "
                "or pass `mu_key=` / `logvar_key=` naming your keys."
            )
        out: dict[str, Tensor | None] = {}
        for name, key in keys.items():
            value = None if key is None else outputs[key]
            if value is not None:
                if not isinstance(value, Tensor) or value.dim() < 2:
                    shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                    raise misconfiguration(
                        f"LatentMonitor needs `{key}` of shape (batch, d) (or larger, flattened), got {shape}"
                    )
                value = value.detach().flatten(1)
            out[name] = value
        return out

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The metrics accumulate in float64, which Apple's MPS lacks: there they stay on the CPU.
        device = pl_module.device
        self._device = torch.device("cpu") if device.type == "mps" else device
        for metric in self._metrics():
            metric.to(self._device)
            metric.reset()
        self._buffer, self._buffered = [], 0

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        post = self._read(outputs)  # also during the sanity check: a missing key fails before training
        if trainer.sanity_checking:
            return
        # Batches are gathered and handed to the metrics a few thousand rows at a time: one metric
        # update per batch costs more than the small batches' own arithmetic (~0.2 ms a batch).
        self._buffer.append(post)
        self._buffered += len(post["mu"])  # type: ignore[arg-type]
        if self._buffered >= self._FLUSH_ROWS:
            self._flush()

    _FLUSH_ROWS = 4096

    def _flush(self) -> None:
        if not self._buffer:
            return
        post = {
            k: None if self._buffer[0][k] is None else torch.cat([b[k] for b in self._buffer]).to(self._device)  # type: ignore[misc]
            for k in self._buffer[0]
        }
        self._buffer, self._buffered = [], 0
        mu, logvar = post["mu"], post["logvar"]
        assert mu is not None and logvar is not None  # for type checkers; _read guarantees it
        self.kl_per_dim.update(mu, logvar, post["prior_mu"], post["prior_logvar"])
        self.active_units.update(mu, post["prior_mu"])
        if self.mutual_information is not None:
            self.mutual_information.update(mu, logvar)

    # ------------------------------------------------------------------ logging and the alert

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._flush()
        if not self.kl_per_dim.update_called:
            return
        kl_dim = self.kl_per_dim.compute()
        values = {"kl": float(kl_dim.sum())}
        try:
            values["active_units"] = float(self.active_units.compute())
        except ValueError as err:  # one validation row in all (fast_dev_run, batch size 1): no variance
            if not self._warned_rows:
                self._warned_rows = True
                rank_zero_warn(f"LatentMonitor: `latent/active_units` skipped: {err}. Validate on more rows to see it.")
        if self.mutual_information is not None:
            values["mi"] = float(self.mutual_information.compute())
        self.last = values
        # Every rank holds the same gathered values, so no sync: `pl_module.log` sends them to every
        # logger at the step Lightning uses for validation metrics, and to `trainer.callback_metrics`.
        pl_module.log_dict({f"{self.log_prefix}/{k}": v for k, v in values.items()}, on_step=False, on_epoch=True)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step of `pl_module.log`'s validation metrics
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # a distribution, not d scalars
                logger.experiment.add_histogram(f"{self.log_prefix}/kl_per_dim", kl_dim.float().cpu(), global_step=step)
        if trainer.state.fn == TrainerFn.FITTING and self.alert_step is None:
            if self._at_plateau(trainer):
                self._count(trainer, values, len(kl_dim))
            else:  # a ramp restarts the schedule: a new chance for the latent, so the count starts again
                self.collapsed_count = 0

    @staticmethod
    def _at_plateau(trainer: pl.Trainer) -> bool:
        step = max(trainer.global_step - 1, 0)  # the last training step that ran
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            # The library's callbacks know their own counter (epochs with `unit="epoch"`, batches under
            # manual optimization): ask them; anything else with `phase_at` is asked at the last step.
            current_phase, phase_at = getattr(callback, "current_phase", None), getattr(callback, "phase_at", None)
            if callable(current_phase) and callable(phase_at):
                phase = current_phase(trainer)
            elif callable(phase_at):
                phase = phase_at(step)
            else:
                continue
            if phase not in _COUNTING_PHASES:
                return False
        return True

    def is_collapsed(self, kl: float, active_units: float) -> bool:
        """Whether one validation's values count as collapsed under this monitor's thresholds.

        Example:
            >>> LatentMonitor().is_collapsed(kl=0.01, active_units=3), LatentMonitor().is_collapsed(0.5, 2)
            (True, False)
        """
        low_kl = self.kl_threshold is not None and kl < self.kl_threshold
        low_au = self.min_active_units is not None and active_units < self.min_active_units
        return low_kl or low_au

    def _count(self, trainer: pl.Trainer, values: dict[str, float], d: int) -> None:
        if not self.is_collapsed(values["kl"], values.get("active_units", math.nan)):
            self.collapsed_count = 0
            return
        self.collapsed_count += 1
        if self.collapsed_count < self.patience:
            return
        self.alert_step = trainer.global_step
        mi = f", MI {round(values['mi'], 4) + 0.0:.4f} nats" if "mi" in values else ""  # + 0.0: no "-0.0000"
        au = (
            f"{int(values['active_units'])}/{d} active units (min_active_units {self.min_active_units})"
            if "active_units" in values else "active units unknown (one validation row)"
        )  # fmt: skip
        message = (
            f"LatentMonitor: the posterior has collapsed (KL vanishing). For {self.patience} consecutive "
            f"validations at β's plateau (the last at step {trainer.global_step}): KL {values['kl']:.4f} nats per "
            f"example (kl_threshold {self.kl_threshold}), {au}{mi}. Remedies: a cyclical schedule, "
            "`CyclicalKLAnnealing(n_cycle=4, ratio=0.5)`; β starting above 0, `start=0.1`; free bits in the "
            "training loss, `free_bits_kl(gaussian_kl(mu, logvar), 0.5)`; a delay at β = 0 before annealing, "
            "`delay=` steps (Li et al. 2019) or `ratio_zero=0.25` of each cycle (Optimus)."
        )
        if self.on_collapse == "raise":
            raise LatentCollapseError(message)
        rank_zero_warn(message)
        if self.on_collapse == "stop":
            trainer.should_stop = True

    # ------------------------------------------------------------------ state

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # A new fit starts with no alert; a checkpoint being resumed is loaded after this hook.
        if stage == "fit":
            self.collapsed_count, self.alert_step, self.last = 0, None, {}

    @override
    def state_dict(self) -> dict[str, Any]:
        # Plain Python types only, so `torch.load(ckpt, weights_only=True)` works.
        return {"collapsed_count": self.collapsed_count, "alert_step": self.alert_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.collapsed_count = int(state_dict.get("collapsed_count", 0))
        step = state_dict.get("alert_step")
        self.alert_step = None if step is None else int(step)
