"""The text VAE of Fu et al. (NAACL 2019, section 4.1) as a LightningModule.

    python examples/text_vae/train.py fit --trainer.max_epochs 5

1-layer LSTM encoder -> diagonal Gaussian q(z|x) -> 1-layer LSTM decoder that sees z twice: through
its initial hidden state h0 (a linear layer; the cell state c0 starts at zero, as in the paper's
reference code) and concatenated to every input embedding. ``self.beta`` is the
KL weight that ``lightning_kl_anneal.CyclicalKLAnnealing`` writes before every training step;
the validation and test metrics do not depend on it: they are the ELBO's parts at beta = 1.
``validation_step`` returns the posterior (``mu``, ``logvar``), which is what
``lightning_kl_anneal.LatentMonitor`` reads to log the latent diagnostics and raise its collapse alert.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torchmetrics.aggregation import SumMetric
from typing_extensions import override

from examples.text_vae.metrics import perplexity
from lightning_kl_anneal import (
    FREE_BITS_MODES,
    ActiveUnits,
    BatchNormPosterior,
    FreeBitsMode,
    KLPerDimension,
    MutualInformation,
    free_bits_kl,
    gaussian_kl,
)

Stage = Literal["train", "val", "test"]


class TextVAE(L.LightningModule):
    """LSTM VAE language model; all hyperparameters live in this signature (LightningCLI reads it).

    Args:
        vocab_size: Number of word ids (LightningCLI links it from ``data.vocab_size``).
        emb_dim: Word embedding size (paper: 256).
        hidden_dim: LSTM size of encoder and decoder (paper: 256).
        latent_dim: Size of z (paper: 32).
        dropout: On decoder input embeddings and before the output layer (paper: 0.5); it weakens
            the decoder's token path, which is one of the reasons the paper's model uses z at all.
        lr: Adam learning rate (paper: 1e-3).
        free_bits: Per-dimension KL floor in nats in the *training* objective; 0 turns it off.
            It is also kept as the attribute ``self.free_bits``, which the training step reads, so
            ``ScheduledAttribute(schedule, attribute="free_bits")`` can schedule it.
        free_bits_mode: The free-bits variant, a ``mode`` of ``lightning_kl_anneal.free_bits_kl``
            (default ``"dim"``: Kingma et al. 2016's floor on each dimension's batch-mean KL).
        lr_restart_cycles: If > 0, a cosine learning-rate schedule restarted that many times over
            training (the paper's cyclical runs used one restart per beta cycle: set it to the
            callback's ``n_cycle``), torch's ``CosineAnnealingWarmRestarts`` with ``T_0`` the cycle's
            ``ceil(T / n_cycle)`` steps; 0 keeps the learning rate constant.
        init_range: Parameters start uniform in (-init_range, init_range) (paper: 0.1).
        dec_init: How z sets the decoder's initial state: ``"h0"`` (the paper's reference code:
            a linear map of z to h0, c0 = 0) or ``"h0c0"`` (z to both h0 and c0); measured
            against each other in the README.
        beta: KL weight before the callback's first write; 1.0 makes a model without the callback
            the constant-beta baseline.
        pad_id: Padding id of the data (``data.Vocab``: 0); BOS is ``pad_id + 1``.
        bn_gamma: If set (> 0), the posterior mean goes through
            ``lightning_kl_anneal.BatchNormPosterior(latent_dim, gamma=bn_gamma)`` (BN-VAE, Zhu et al.
            2020: mu batch-normalised with a fixed scale, so the batch's KL cannot fall below
            ``latent_dim * bn_gamma**2 / 2`` nats); None or 0 (the default) leaves mu as it is.
    """

    def __init__(
        self,
        vocab_size: int = 10_000,
        emb_dim: int = 256,
        hidden_dim: int = 256,
        latent_dim: int = 32,
        dropout: float = 0.5,
        lr: float = 1e-3,
        free_bits: float = 0.0,
        free_bits_mode: FreeBitsMode = "dim",
        lr_restart_cycles: int = 0,
        init_range: float = 0.1,
        dec_init: Literal["h0", "h0c0"] = "h0",
        beta: float = 1.0,
        pad_id: int = 0,
        bn_gamma: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("emb_dim", emb_dim),
            ("hidden_dim", hidden_dim),
            ("latent_dim", latent_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        if not free_bits >= 0.0:
            raise ValueError(f"`free_bits` must be >= 0 (nats per dimension; 0 = off), got {free_bits!r}")
        if free_bits_mode not in FREE_BITS_MODES:
            raise ValueError(f"`free_bits_mode` must be one of {FREE_BITS_MODES}, got {free_bits_mode!r}")
        if isinstance(lr_restart_cycles, bool) or not isinstance(lr_restart_cycles, int) or lr_restart_cycles < 0:
            raise ValueError(f"`lr_restart_cycles` must be an int >= 0 (0 = constant lr), got {lr_restart_cycles!r}")
        if dec_init not in ("h0", "h0c0"):
            raise ValueError(
                f"`dec_init` must be 'h0' (z -> h0, as in the paper's code) or 'h0c0' (z -> h0 and c0), got {dec_init!r}"
            )
        if bn_gamma is not None and (isinstance(bn_gamma, bool) or not bn_gamma >= 0.0 or not math.isfinite(bn_gamma)):
            raise ValueError(f"`bn_gamma` must be None or a finite number >= 0 (0 or None = off), got {bn_gamma!r}")
        self.save_hyperparameters()
        self.beta = beta
        self.free_bits = free_bits
        self.enc_emb = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.encoder = nn.LSTM(emb_dim, hidden_dim, batch_first=True)
        self.to_posterior = nn.Linear(hidden_dim, 2 * latent_dim)
        self.dec_emb = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.to_state = nn.Linear(latent_dim, hidden_dim * (2 if dec_init == "h0c0" else 1))
        self.decoder = nn.LSTM(emb_dim + latent_dim, hidden_dim, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        # made after the uniform initialisation: it keeps its own (shift 0), and the other weights are
        # drawn exactly as without it, so a run with and without BN starts from the same weights
        self.mu_norm = BatchNormPosterior(latent_dim, gamma=bn_gamma) if bn_gamma else None
        # Evaluation sums and latent diagnostics are torchmetrics metrics: under DDP they are reduced
        # over every process once per epoch (and the data module shards without repeats), so each
        # sentence counts exactly once. Their states are not saved in checkpoints.
        self.eval_sums = nn.ModuleDict({k: SumMetric().set_dtype(torch.float64) for k in ("rec", "n", "tokens")})
        self.eval_kl = KLPerDimension()
        self.eval_au = ActiveUnits()
        self.eval_mi = MutualInformation()  # z draws seeded: differences between models are not sampling noise
        #: the metrics of the last validation or test epoch, for scripts (compare.py) to read
        self.last_eval: dict[str, float] = {}

    def encode(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(mu, logvar)``, each (batch, latent)."""
        states, _ = self.encoder(self.enc_emb(tokens))
        # the LSTM is unidirectional, so the state at the last real token ignores any padding after it
        last = states[torch.arange(len(lengths), device=tokens.device), lengths - 1]
        mu, logvar = self.to_posterior(last).chunk(2, dim=-1)
        if self.mu_norm is not None:
            mu = self.mu_norm(mu)
        return mu, logvar

    def decode(self, tokens: Tensor, z: Tensor) -> Tensor:
        """Next-token logits (batch, length, vocab) for targets ``tokens`` given z (teacher forcing)."""
        bos = torch.full_like(tokens[:, :1], self.hparams.pad_id + 1)
        inputs = self.drop(self.dec_emb(torch.cat([bos, tokens[:, :-1]], dim=1)))
        inputs = torch.cat([inputs, z[:, None, :].expand(-1, inputs.shape[1], -1)], dim=-1)
        state = self.to_state(z)
        if self.hparams.dec_init == "h0c0":
            h0, c0 = state.chunk(2, dim=-1)
        else:
            h0, c0 = state, torch.zeros_like(state)
        states, _ = self.decoder(inputs, (h0[None].contiguous(), c0[None].contiguous()))
        return self.out(self.drop(states))

    def forward(self, tokens: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Per-sentence reconstruction NLL and per-dimension KL for one z sample per sentence."""
        mu, logvar = self.encode(tokens, lengths)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        logits = self.decode(tokens, z)
        nll = F.cross_entropy(logits.transpose(1, 2), tokens, ignore_index=self.hparams.pad_id, reduction="none")
        return {"rec": nll.sum(1), "kl_dim": gaussian_kl(mu, logvar), "mu": mu, "logvar": logvar}

    def _shared_step(
        self, batch: dict[str, Tensor], stage: Stage
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """The loss, its scalar parts for logging, and the forward's outputs (posterior included)."""
        out = self(batch["tokens"], batch["lengths"])
        rec, kl = out["rec"].mean(), out["kl_dim"].sum(1).mean()
        if stage == "train":
            # free bits only shape the training objective; reported KL is always the raw one
            kl_term = free_bits_kl(out["kl_dim"], self.free_bits, self.hparams.free_bits_mode)
        else:
            kl_term = kl
            self._update_eval(batch, out)
        loss = rec + self.beta * kl_term
        beta = torch.as_tensor(self.beta, dtype=loss.dtype)
        return loss, {"loss": loss, "rec": rec, "kl": kl, "beta": beta}, out

    @override
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss, metrics, _ = self._shared_step(batch, "train")
        # beta itself is logged by the callback; on_epoch gives per-epoch means next to per-step values
        self.log_dict(
            {f"train/{k}": v for k, v in metrics.items() if k != "beta"},
            on_step=True,
            on_epoch=True,
            prog_bar=False,
            batch_size=len(batch["lengths"]),
        )
        # detached copies for callbacks (curves, progress bar); only "loss" keeps its graph
        return {**{k: v.detach() for k, v in metrics.items()}, "loss": loss}

    @override
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # the posterior goes out for `lightning_kl_anneal.LatentMonitor` (its default keys)
        return self._eval_step(batch, "val")

    @override
    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def _eval_step(self, batch: dict[str, Tensor], stage: Stage) -> dict[str, Tensor]:
        loss, _, out = self._shared_step(batch, stage)
        return {"loss": loss, "mu": out["mu"], "logvar": out["logvar"]}

    def _update_eval(self, batch: dict[str, Tensor], out: dict[str, Tensor]) -> None:
        self.eval_sums["rec"].update(out["rec"].detach())
        self.eval_sums["n"].update(torch.ones_like(out["rec"]))
        self.eval_sums["tokens"].update(batch["lengths"])  # <eos> included
        self.eval_kl.update(out["mu"], out["logvar"])
        self.eval_au.update(out["mu"])
        self.eval_mi.update(out["mu"], out["logvar"])

    def _eval_metrics(self) -> list:
        return [*self.eval_sums.values(), self.eval_kl, self.eval_au, self.eval_mi]

    @override
    def on_validation_epoch_start(self) -> None:
        for metric in self._eval_metrics():
            metric.reset()

    @override
    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    @staticmethod
    def eval_metrics(rec_sum: float, kl_per_example: float, n: float, tokens: float) -> dict[str, float]:
        """Rec, KL, ELBO (per sentence) and PPL (Fu et al. 2019, section 4.1) from an evaluation's sums.

        Args:
            rec_sum: Reconstruction NLL summed over the sentences.
            kl_per_example: Mean KL per sentence (summed over latent dimensions).
            n: Number of sentences.
            tokens: Number of target tokens, ``<eos>`` counted.

        Example:
            >>> m = TextVAE.eval_metrics(rec_sum=30.0, kl_per_example=2.0, n=3, tokens=12)
            >>> m["rec"], m["elbo"], round(m["ppl"], 4)  # exp((30 + 6) / 12)
            (10.0, -12.0, 20.0855)
        """
        rec = rec_sum / n
        return {
            "rec": rec,
            "kl": kl_per_example,
            "elbo": -(rec + kl_per_example),
            "ppl": perplexity(rec_sum, kl_per_example * n, int(tokens)),
        }

    def _log_eval(self, stage: Stage) -> None:
        if self.trainer.sanity_checking or self.eval_sums["n"].update_count == 0:
            return
        # compute() reduces over every DDP process; every process calls it, every process logs the same values
        n = float(self.eval_sums["n"].compute())
        metrics = self.eval_metrics(float(self.eval_sums["rec"].compute()), float(self.eval_kl.compute().sum()), n,
                                    float(self.eval_sums["tokens"].compute()))  # fmt: skip
        metrics["au"] = float(self.eval_au.compute()) if n > 1 else math.nan
        metrics["mi"] = float(self.eval_mi.compute())
        self.last_eval = metrics
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()})

    @override
    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        cycles = self.hparams.lr_restart_cycles
        if cycles == 0:
            return optimizer
        # lr * (1 + cos(pi * (t mod P) / P)) / 2, restarted with every beta cycle: P = ceil(T / n_cycle) steps,
        # where the schedule's cycles restart (stepped per optimizer step: Lightning's interval="step")
        cycle = math.ceil(self.trainer.estimated_stepping_batches / cycles)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cycle)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
