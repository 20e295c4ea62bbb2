"""LatentMonitor: logs latent diagnostics at every validation and raises the collapse alert.

The callback reads as four named steps, one section each below: reading the outputs
(:func:`_read_posterior`), buffering rows for the metrics (:class:`_Rows`), computing and logging,
and counting and alerting (one fit's count lives in :class:`_FitState`, made when the fit starts).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_kl_anneal._checks import check_choice, check_fractions, check_int, check_name, check_real
from lightning_kl_anneal.exceptions import misconfiguration
from lightning_kl_anneal.metrics import ActiveUnits, KLPerDimension, LatentDimensionality, MutualInformation

__all__ = ["ON_COLLAPSE", "LatentCollapseError", "LatentMonitor", "OnCollapse"]

OnCollapse = Literal["warn", "raise", "stop"]
ON_COLLAPSE: tuple[str, ...] = get_args(OnCollapse)
_COUNTING_PHASES = ("plateau", "final", None)
_FAR = 2**62  # a step past the end of any fit: where a finite schedule says "final"
_NOT_FINITE = r".*the posterior is not finite.*"  # the diagnostics' own warning: the monitor words its own
_JUDGED = ("kl", "active_units", "mi")  # the statistics the alert reads (and a checkpoint keeps)

Posterior = dict[str, "Tensor | None"]  # "mu", "logvar", "prior_mu", "prior_logvar": (batch, d) or None


class LatentCollapseError(RuntimeError):
    """Raised by :class:`LatentMonitor` with ``on_collapse="raise"`` when the posterior has collapsed."""


@dataclass
class _FitState:
    """One fit's collapse count, made when the fit starts; plain Python, saved in checkpoints."""

    collapsed_count: int = 0  # consecutive collapsed validations among those counted
    counted_validations: int = 0  # validations counted (on a plateau or after the last ramp, finite)
    alert_step: int | None = None  # the step the alerting validation's metrics were logged under
    streak_end: dict[str, float] = field(default_factory=dict)  # step and values of the streak's last validation
    seen_plateau: bool = False  # a plateau with more cycles after it: the schedule is already cyclical
    d: int = 0  # the latent size, for the alert
    warned_not_finite: bool = False  # not saved: a resumed fit may warn again

    def count(self, collapsed: bool, step: int, values: Mapping[str, float]) -> None:
        """One judged validation: a collapsed one extends the streak, a healthy one ends it."""
        self.counted_validations += 1
        if not collapsed:
            self.collapsed_count = 0
            return
        self.collapsed_count += 1
        self.streak_end = {"step": step, **{k: v for k, v in values.items() if k in _JUDGED}}

    def state_dict(self) -> dict[str, Any]:
        """Plain Python types only, so ``torch.load(ckpt, weights_only=True)`` works."""
        return {
            "collapsed_count": self.collapsed_count,
            "counted_validations": self.counted_validations,
            "alert_step": self.alert_step,
            "streak_end": dict(self.streak_end),
            "seen_plateau": self.seen_plateau,
            "d": self.d,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> _FitState:
        """The state :meth:`state_dict` saved; the keys a 0.1 checkpoint lacks take their defaults."""
        collapsed, step = int(state.get("collapsed_count", 0)), state.get("alert_step")
        return cls(
            collapsed_count=collapsed,
            counted_validations=int(state.get("counted_validations", collapsed)),
            alert_step=None if step is None else int(step),
            streak_end={k: float(v) for k, v in state.get("streak_end", {}).items()},
            seen_plateau=bool(state.get("seen_plateau", False)),
            d=int(state.get("d", 0)),
        )


class _Rows:
    """The posterior rows of one validation, handed to the metrics a few thousand at a time.

    One metric update per batch costs more than a small batch's own arithmetic (~0.2 ms a batch).
    """

    def __init__(self) -> None:
        self.parts: list[Posterior] = []
        self.count = 0

    def add(self, post: Posterior) -> None:
        self.parts.append(post)
        self.count += len(post["mu"])  # type: ignore[arg-type]

    def take(self, device: torch.device) -> Posterior | None:
        """Every row added since the last ``take``, concatenated on ``device``; None when there is none."""
        if not self.parts:
            return None
        parts, self.parts, self.count = self.parts, [], 0
        return {k: None if parts[0][k] is None else torch.cat([p[k] for p in parts]).to(device) for k in parts[0]}  # type: ignore[misc]


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
    - ``latent/dim90``, ``latent/dim95``, ``latent/dim99`` (one per share in ``dim_shares``, named by its
      percentage): the principal components of the posterior means (of ``mu - prior_mu`` with a
      conditional prior) that hold 90, 95 and 99 % of their variance,
      :func:`~lightning_kl_anneal.latent_dimensionality`; never more than ``d``, and below the active
      units when active dimensions move together;
    - ``latent/mi``: I(x; z), the whole-set estimator of :func:`~lightning_kl_anneal.mutual_information`
      on at most ``mi_max_samples`` rows per process (aggregate posterior over all of them, outer
      average over ``mi_outer_rows``); only with the unconditional prior N(0, I)
      (not logged when prior keys are given);
    - the KL of each dimension as a histogram ``latent/kl_per_dim`` on every ``TensorBoardLogger``
      (never as d scalars).

    The values come from :class:`~lightning_kl_anneal.ActiveUnits`, :class:`~lightning_kl_anneal.KLPerDimension`,
    :class:`~lightning_kl_anneal.LatentDimensionality` and :class:`~lightning_kl_anneal.MutualInformation`,
    so under DDP they cover every process's rows. The dimensionality is logged, not judged: the
    collapse alert reads the KL and the active units only.

    **Collapse alert.** A validation is *collapsed* when ``latent/kl < kl_threshold`` or
    ``latent/active_units < min_active_units``. Only validations during ``fit`` are judged, and only
    those taken on a plateau of the schedule or after its last ramp: for each callback in the Trainer
    with a ``phase_at(step)`` method (the library's :class:`~lightning_kl_anneal.CyclicalKLAnnealing` and
    :class:`~lightning_kl_anneal.ScheduledAttribute`), the phase of the last training step,
    ``current_phase(trainer)`` where the callback has it (it counts epochs for ``unit="epoch"``), else
    ``phase_at(global_step - 1)``, must be ``"plateau"``, ``"final"`` or ``None`` (no phases); without
    such a callback every validation is judged. The rule:

    - a validation during a ramp (or a delay) neither counts nor resets: a low KL while β rises is
      expected, and a sparse validation schedule (one validation per cycle) still adds up;
    - a judged validation that is not collapsed resets the count; a collapsed one adds one;
    - a validation with a non-finite statistic (a NaN or inf posterior: a diverged model, not a
      collapsed one) neither counts nor resets; it is logged as NaN with one warning per fit;
    - at ``patience`` collapsed validations in a row, ``"warn"`` warns at once (saying when a later cycle
      may still re-open the latent). ``"raise"`` and ``"stop"`` wait until no ramp is left (every phase
      is ``"final"`` or ``None``), so a run that a later cycle rescues is never ended; a schedule that
      never ends (``n_cycle=None``: ``phase_at`` is not ``"final"`` past any step) is acted on after
      ``patience`` collapsed plateau validations;
    - at the end of the fit (``on_train_end``), a collapse not yet alerted is alerted if the count has
      reached ``patience`` or covers every validation judged in the fit (fewer than ``patience`` were
      taken on a plateau). So a latent collapsed at every judged validation is alerted by the end of
      the fit at the latest, however validations and cycles line up.

    The monitor acts once: ``"warn"`` (a warning on rank zero with the numbers and the remedies),
    ``"raise"`` (:class:`LatentCollapseError`), or ``"stop"`` (the warning, then
    ``trainer.should_stop = True``: the fit ends cleanly after this validation, which is what a
    hyper-parameter sweep wants; at the end of the fit, the warning alone). ``alert_step`` is the step
    Lightning logged that validation's metrics under. With a ramp-to-the-end schedule (``ratio=1.0``,
    the capacity recipe) every validation before the last step is on the ramp: only a validation after
    the last step can be judged, and an alert comes at the end of the fit at the earliest.

    Defaults, and why:

    - ``kl_threshold=0.05`` nats per example: far below one bit, so the code tells the decoder
      almost nothing about x (MI <= KL); measured on the text example in ``docs/monitor-measurements.md``.
    - ``min_active_units=1``: collapse when no dimension is active at all.
    - ``patience=3``: a single validation can dip (noise, a learning-rate spike); three in a row
      judged on a plateau is a trend.
    - ``au_threshold=0.01``: Burda et al.'s.

    Cost: nothing on training steps (no per-step hook); per validation, running sums over the rows and
    one MI estimate over at most ``mi_max_samples`` rows (figures in ``docs/monitor-measurements.md``).
    State saved in checkpoints is plain Python (``torch.load(..., weights_only=True)`` works): the
    running count, the validations judged, the last collapsed values and whether the alert fired, so a
    resumed fit alerts at the same validation as an uninterrupted one.

    Args:
        mu_key: key of the posterior means (batch, d) in ``validation_step``'s dict; larger shapes
            are flattened to (batch, -1).
        logvar_key: key of the posterior log-variances, same shape.
        prior_mu_key: key of a conditional prior's means (CVAE); ``None`` for N(0, I).
        prior_logvar_key: key of a conditional prior's log-variances; ``None`` for unit variance.
        kl_threshold: KL per example (nats) below which a validation is collapsed; ``None`` ignores the KL.
        min_active_units: fewer active units than this makes a validation collapsed; ``None`` ignores AU.
        patience: consecutive collapsed validations, judged on a plateau or after the last ramp, before the alert.
        on_collapse: ``"warn"``, ``"raise"`` or ``"stop"``.
        au_threshold: variance of the posterior mean above which a dimension is active.
        dim_shares: the shares of the means' variance whose dimensionality is logged, each in (0, 1],
            as ``f"dim{100 * share:g}"``; ``()`` or None turns it off (it costs O(rows x d²) per validation).
        mi_samples: z draws per row for the MI estimate.
        mi_outer_rows: rows (evenly spaced) whose draws are scored against the aggregate posterior
            of all rows; ``None`` for all. The draws are seeded, so two validations of one model agree
            exactly. The estimate's spread and cost for each setting: ``docs/monitor-measurements.md``.
        mi_max_samples: rows kept per process for the MI estimate; 0 turns MI off.
        log_prefix: the metrics are ``f"{log_prefix}/kl"`` etc.; to monitor two latents, give each
            monitor its own (two monitors with one ``log_prefix`` are refused before the first step).

    Raises:
        ValueError: at construction, for a bad argument.
        MisconfigurationException: on the first validation batch, when ``validation_step`` does not
            return a dict with the keys; when the fit (or validation) starts, when another
            ``LatentMonitor`` in the Trainer has the same ``log_prefix``.
        LatentCollapseError: with ``on_collapse="raise"``, as described above.

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
        >>> trainer.current_epoch, monitor.alert_step  # stopped after the 2nd validation, logged at step 3
        (2, 3)
    """

    _FLUSH_ROWS = 4096  # rows buffered before the metrics are updated

    def __init__(
        self, mu_key: str = "mu", logvar_key: str = "logvar", *, prior_mu_key: str | None = None,
        prior_logvar_key: str | None = None, kl_threshold: float | None = 0.05, min_active_units: int | None = 1,
        patience: int = 3, on_collapse: OnCollapse = "warn", au_threshold: float = 0.01,
        dim_shares: Sequence[float] | None = (0.9, 0.95, 0.99), mi_samples: int = 1, mi_outer_rows: int | None = 512,
        mi_max_samples: int = 4096, log_prefix: str = "latent",
    ) -> None:  # fmt: skip
        self.mu_key, self.logvar_key = check_name("mu_key", mu_key), check_name("logvar_key", logvar_key)
        self.prior_mu_key = check_name("prior_mu_key", prior_mu_key, optional=True)
        self.prior_logvar_key = check_name("prior_logvar_key", prior_logvar_key, optional=True)
        self.log_prefix = check_name("log_prefix", log_prefix)
        self.kl_threshold = check_real("kl_threshold", kl_threshold, 0.0, optional=True)
        self.min_active_units = check_int("min_active_units", min_active_units, 0, optional=True)
        self.patience = check_int("patience", patience, 1)
        self.on_collapse: OnCollapse = check_choice("on_collapse", on_collapse, ON_COLLAPSE)
        self.conditional = prior_mu_key is not None or prior_logvar_key is not None
        self._state_key = self._generate_state_key(mu_key=mu_key, log_prefix=log_prefix)
        self._make_metrics(au_threshold, dim_shares, mi_samples, mi_outer_rows, mi_max_samples)
        #: the values of the last validation, e.g. ``{"kl": 0.01, "active_units": 0.0, "dim90": 0.0, ..., "mi": 0.003}``
        self.last: dict[str, float] = {}
        self._fit = _FitState()
        self._rows = _Rows()
        self._device = torch.device("cpu")
        self._warned_rows = False

    def _make_metrics(
        self, au_threshold: float, dim_shares: Sequence[float] | None, mi_samples: int, mi_outer_rows: int | None,
        mi_max_samples: int,
    ) -> None:  # fmt: skip
        self.active_units = ActiveUnits(threshold=check_real("au_threshold", au_threshold, 0.0))
        shares = () if dim_shares is None else check_fractions("dim_shares", dim_shares, allow_empty=True)
        self._dim_names = _dim_names(shares)
        self.dimensionality = LatentDimensionality(share=list(shares)) if shares else None
        mi_samples, mi_max_samples = (
            check_int("mi_samples", mi_samples, 1),
            check_int("mi_max_samples", mi_max_samples, 0),
        )
        mi_outer_rows = check_int("mi_outer_rows", mi_outer_rows, 1, optional=True)
        self.kl_per_dim = KLPerDimension()
        self.mutual_information = (
            MutualInformation(n_samples=mi_samples, max_samples=mi_max_samples, outer_rows=mi_outer_rows)
            if mi_max_samples > 0 and not self.conditional
            else None
        )

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @property
    def collapsed_count(self) -> int:
        """Consecutive collapsed validations among those counted (validations during a ramp are skipped)."""
        return self._fit.collapsed_count

    @property
    def counted_validations(self) -> int:
        """Validations of this fit that were counted (taken on a plateau or after the last ramp, finite)."""
        return self._fit.counted_validations

    @property
    def alert_step(self) -> int | None:
        """The step Lightning logged the alerting validation's metrics under, or None."""
        return self._fit.alert_step

    def _metrics(self) -> list[Any]:
        candidates = (self.kl_per_dim, self.active_units, self.dimensionality, self.mutual_information)
        return [m for m in candidates if m is not None]

    # ------------------------------------------------------------------ reading and buffering the outputs

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The metrics accumulate in float64, which Apple's MPS lacks: there they stay on the CPU.
        self._device = torch.device("cpu") if pl_module.device.type == "mps" else pl_module.device
        for metric in self._metrics():
            metric.to(self._device)
            metric.reset()
        self._rows = _Rows()

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        post = _read_posterior(outputs, self._keys())  # also in the sanity check: a missing key fails before training
        if trainer.sanity_checking:
            return
        self._rows.add(post)
        if self._rows.count >= self._FLUSH_ROWS:
            self._update(self._rows.take(self._device))

    def _keys(self) -> dict[str, str | None]:
        return {"mu": self.mu_key, "logvar": self.logvar_key,
                "prior_mu": self.prior_mu_key, "prior_logvar": self.prior_logvar_key}  # fmt: skip

    def _update(self, post: Posterior | None) -> None:
        """Hand rows to the metrics."""
        if post is None:
            return
        mu, logvar = post["mu"], post["logvar"]
        assert mu is not None and logvar is not None  # for type checkers; _read_posterior guarantees it
        self.kl_per_dim.update(mu, logvar, post["prior_mu"], post["prior_logvar"])
        self.active_units.update(mu, post["prior_mu"])
        if self.dimensionality is not None:
            self.dimensionality.update(mu, post["prior_mu"])
        if self.mutual_information is not None:
            self.mutual_information.update(mu, logvar)

    # ------------------------------------------------------------------ computing and logging

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._update(self._rows.take(self._device))  # the rows still buffered
        if not self.kl_per_dim.update_called:
            return
        kl_dim = self.kl_per_dim.compute()
        self.last, self._fit.d = self._compute(kl_dim), len(kl_dim)
        step = self._log(trainer, pl_module, kl_dim)
        if trainer.state.fn == TrainerFn.FITTING and self.alert_step is None:
            self._judge(trainer, self.last, step)

    def _compute(self, kl_dim: Tensor) -> dict[str, float]:
        """The validation's statistics: KL, active units and dimensionality (where there is a variance), MI."""
        values = {"kl": float(kl_dim.sum())}
        with warnings.catch_warnings():  # a non-finite posterior gets one warning, the monitor's, in _judge
            warnings.filterwarnings("ignore", message=_NOT_FINITE)
            values.update(self._spread())
            if self.mutual_information is not None:
                values["mi"] = float(self.mutual_information.compute())
        return values

    def _spread(self) -> dict[str, float]:
        """The statistics of the means' spread (active units, dimensionality); {} with one row, which has none."""
        try:
            values = {"active_units": float(self.active_units.compute())}
            if self.dimensionality is not None:
                values.update(zip(self._dim_names, self.dimensionality.compute().reshape(-1).tolist()))
        except ValueError as err:  # one validation row in all (fast_dev_run, batch size 1): no variance
            if not self._warned_rows:
                self._warned_rows = True
                also = "".join(f", `{self.log_prefix}/{name}`" for name in self._dim_names)
                rank_zero_warn(
                    f"LatentMonitor: `{self.log_prefix}/active_units` skipped{also and f' (and{also[1:]})'}: {err}. "
                    "Validate on more rows to see it."
                )
            return {}
        return values

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, kl_dim: Tensor) -> int:
        """Log ``last`` (and the KL per dimension as a histogram); returns the step they are logged at."""
        # Every rank holds the same gathered values, so no sync: `pl_module.log` sends them to every
        # logger at the step Lightning uses for validation metrics, and to `trainer.callback_metrics`.
        pl_module.log_dict({f"{self.log_prefix}/{k}": v for k, v in self.last.items()}, on_step=False, on_epoch=True)
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step of `pl_module.log`'s validation metrics
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # a distribution, not d scalars
                logger.experiment.add_histogram(f"{self.log_prefix}/kl_per_dim", kl_dim.float().cpu(), global_step=step)
        return step

    # ------------------------------------------------------------------ counting and alerting

    def _judge(self, trainer: pl.Trainer, values: dict[str, float], step: int) -> None:
        """One validation of the fit: count it (or not), and act when the rule says so."""
        if not all(math.isfinite(v) for v in values.values()):  # a diverged model, not a collapsed one
            self._warn_not_finite(values, step)
            return
        phases = _phases(trainer)
        self._fit.seen_plateau |= any(phase == "plateau" for _, phase in phases)
        if any(phase not in _COUNTING_PHASES for _, phase in phases):
            return  # during a ramp (or delay) a low KL is expected: neither counted nor a reset
        self._fit.count(self.is_collapsed(values["kl"], values.get("active_units", math.nan)), step, values)
        if self._fit.collapsed_count < self.patience:
            return
        no_ramp_left = all(phase in ("final", None) or _endless(callback) for callback, phase in phases)
        if self.on_collapse == "warn" or no_ramp_left:
            self._alert(trainer, no_ramp_left, at_end=False)

    def _warn_not_finite(self, values: dict[str, float], step: int) -> None:
        if self._fit.warned_not_finite:
            return
        self._fit.warned_not_finite = True
        rank_zero_warn(
            f"LatentMonitor: the posterior is not finite at step {step} (NaN or inf in `{self.mu_key}` or "
            f"`{self.logvar_key}`): {', '.join(f'{self.log_prefix}/{k}' for k in values)} logged as "
            f"{', '.join(str(v) for v in values.values())}. A diverged model is not a collapsed one: such "
            "validations neither count towards the collapse alert nor reset its count."
        )

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Property (a): a latent collapsed at every counted validation is alerted by the end of the fit,
        # however validations and cycles lined up (too few on the last plateau, a fit stopped early).
        fit = self._fit
        if trainer.state.fn != TrainerFn.FITTING or fit.alert_step is not None or fit.collapsed_count == 0:
            return
        if fit.collapsed_count >= self.patience or fit.collapsed_count == fit.counted_validations:
            self._alert(trainer, no_ramp_left=True, at_end=True)

    def is_collapsed(self, kl: float, active_units: float) -> bool:
        """Whether one validation's values count as collapsed under this monitor's thresholds.

        Example:
            >>> LatentMonitor().is_collapsed(kl=0.01, active_units=3), LatentMonitor().is_collapsed(0.5, 2)
            (True, False)
        """
        low_kl = self.kl_threshold is not None and kl < self.kl_threshold
        low_au = self.min_active_units is not None and active_units < self.min_active_units
        return low_kl or low_au

    def _alert(self, trainer: pl.Trainer, no_ramp_left: bool, at_end: bool) -> None:
        self._fit.alert_step = int(self._fit.streak_end["step"])
        message = _alert_message(self, self._fit, _phases(trainer), no_ramp_left, at_end)
        if self.on_collapse == "raise":
            raise LatentCollapseError(message)
        rank_zero_warn(message)
        if self.on_collapse == "stop" and not at_end:
            trainer.should_stop = True

    # ------------------------------------------------------------------ state

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _refuse_a_shared_prefix(self, trainer)
        if stage == "fit":  # a new fit starts with no alert; a checkpoint being resumed is loaded after this hook
            self._fit, self.last = _FitState(), {}

    @override
    def state_dict(self) -> dict[str, Any]:
        return self._fit.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fit = _FitState.from_state_dict(state_dict)


# ---------------------------------------------------------------------- reading the outputs


def _read_posterior(outputs: Any, keys: Mapping[str, str | None]) -> Posterior:
    """The posterior tensors in ``validation_step``'s dict, detached and flattened to (batch, d)."""
    _check_keys(outputs, [key for key in keys.values() if key is not None])
    values = {name: None if key is None else outputs[key] for name, key in keys.items()}
    return {name: None if value is None else _as_rows(keys[name], value) for name, value in values.items()}  # type: ignore[arg-type]


def _check_keys(outputs: Any, wanted: list[str]) -> None:
    if isinstance(outputs, Mapping) and all(k in outputs for k in wanted):
        return
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


def _as_rows(key: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor) or value.dim() < 2:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise misconfiguration(f"LatentMonitor needs `{key}` of shape (batch, d) (or larger, flattened), got {shape}")
    return value.detach().flatten(1)


def _dim_names(shares: tuple[float, ...]) -> tuple[str, ...]:
    """``dim90`` for the share 0.9: the logged names, refused when two shares would share one."""
    names = tuple(f"dim{100 * share:g}" for share in shares)
    if len(set(names)) < len(names):
        raise ValueError(f"`dim_shares` must name distinct percentages, got {shares!r} (logged as {names})")
    return names


def _refuse_a_shared_prefix(monitor: LatentMonitor, trainer: pl.Trainer) -> None:
    for other in trainer.callbacks:  # type: ignore[attr-defined]
        if other is not monitor and isinstance(other, LatentMonitor) and other.log_prefix == monitor.log_prefix:
            raise misconfiguration(
                f"Two LatentMonitor callbacks log under `log_prefix`={monitor.log_prefix!r} (mu_key "
                f"{other.mu_key!r} and {monitor.mu_key!r}): Lightning would average their metrics into one. Give "
                "each its own `log_prefix`, e.g. `LatentMonitor(..., log_prefix='latent2')`, or keep one."
            )


# ---------------------------------------------------------------------- the schedule, by duck typing


def _phases(trainer: pl.Trainer) -> list[tuple[Any, Any]]:
    """``(callback, phase)`` of the last training step for each callback that has phases; [] when none does."""
    step = max(trainer.global_step - 1, 0)  # the last training step that ran
    out = []
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        # The library's callbacks know their own counter (epochs with `unit="epoch"`, batches under
        # manual optimization): ask them; anything else with `phase_at` is asked at the last step.
        current_phase, phase_at = getattr(callback, "current_phase", None), getattr(callback, "phase_at", None)
        if callable(current_phase) and callable(phase_at):
            out.append((callback, current_phase(trainer)))
        elif callable(phase_at):
            out.append((callback, phase_at(step)))
    return out


def _endless(callback: Any) -> bool:
    """Whether a schedule never reaches ``"final"``: asked past any step a fit takes (``n_cycle=None``)."""
    try:
        return callback.phase_at(_FAR) in ("delay", "ramp", "plateau")
    except Exception:  # noqa: BLE001 - a schedule that cannot say is treated as finite: the action waits
        return False


def _name(callback: Any) -> str:
    return f"`{getattr(callback, 'attribute', type(callback).__name__)}`"


# ---------------------------------------------------------------------- the alert's words


def _alert_message(
    monitor: LatentMonitor, fit: _FitState, phases: list[tuple[Any, Any]], no_ramp_left: bool, at_end: bool
) -> str:
    """The alert, worded for the run at hand: what was seen, when it is said, and the remedies left."""
    parts = [_what_was_seen(monitor, fit, phases)]
    if at_end:
        n, patience = fit.collapsed_count, monitor.patience
        fewer = f" (fewer than patience={patience}, but every validation it counted)" if n < patience else ""
        parts.append(f"Alerted at the end of the fit{fewer}.")
    elif not no_ramp_left:
        parts.append(
            "A later cycle may still re-open the latent: `on_collapse='stop'` or `'raise'` would wait until "
            "no ramp is left."
        )
    parts.append(_remedies(phases, fit.seen_plateau))
    return " ".join(parts)


def _what_was_seen(monitor: LatentMonitor, fit: _FitState, phases: list[tuple[Any, Any]]) -> str:
    """The streak: how many validations, where they were taken, and the last one's numbers."""
    values, n = fit.streak_end, fit.collapsed_count
    phased = " and ".join(_name(c) for c, phase in phases if phase is not None)  # those that have a plateau
    where = (
        f" taken on a plateau of {phased} or after its last ramp (validations during a ramp are not counted)"
        if phased
        else ""
    )
    mi = f", MI {round(values['mi'], 4) + 0.0:.4f} nats" if "mi" in values else ""  # + 0.0: no "-0.0000"
    au = (
        f"{int(values['active_units'])}/{fit.d} active units (min_active_units {monitor.min_active_units})"
        if "active_units" in values else "active units unknown (one validation row)"
    )  # fmt: skip
    return (
        f"LatentMonitor: the posterior has collapsed (KL vanishing). {n} consecutive validation{'s' * (n != 1)}"
        f"{where} {'were' if n != 1 else 'was'} collapsed, the last at step {int(values['step'])}: KL "
        f"{values['kl']:.4f} nats per example (kl_threshold {monitor.kl_threshold}), {au}{mi}."
    )


def _remedies(phases: list[tuple[Any, Any]], seen_plateau: bool) -> str:
    """What to try next, without proposing the schedule already in place."""
    if not phases:
        return (
            "Remedies: anneal β, `CyclicalKLAnnealing(n_cycle=4, ratio=0.5)` (a cyclical schedule, Fu et al. "
            "2019); free bits in the training loss, `free_bits_kl(gaussian_kl(mu, logvar), 0.5)`; a hold at "
            "β = 0 before annealing, `CyclicalKLAnnealing(delay=...)` (Li et al. 2019)."
        )
    names = " and ".join(_name(c) for c, _ in phases)  # every schedule callback, with phases or not
    more = "" if seen_plateau else "; a cyclical schedule, `CyclicalKLAnnealing(n_cycle=4)` (Fu et al. 2019)"
    return (
        f"Remedies, with {names} already scheduled: free bits in the training loss, "
        "`free_bits_kl(gaussian_kl(mu, logvar), 0.5)`; β starting above 0, `start=0.1`; a hold at β = 0 "
        f"before annealing, `delay=` steps (Li et al. 2019) or `ratio_zero=0.25` of each cycle (Optimus){more}."
    )
