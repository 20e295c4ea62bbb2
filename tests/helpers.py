"""What the callback, selection and checkpoint tests share: tiny modules that record what they see, Trainer factories.

Module level, so that spawned processes (``ddp_spawn``) can import them.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_kl_anneal import CyclicalKLAnnealing, cyclical_beta

# ---------------------------------------------------------------- a tiny "VAE" that records what it sees


class TinyVAE(L.LightningModule):
    """Records (global_step, batch_idx, beta) in every training step and beta in every eval step."""

    def __init__(self, n_batches: int = 10, batch_size: int = 2, buffer: bool = False, crash_at: int | None = None):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        if buffer:
            self.register_buffer("beta", torch.tensor(0.0))
        elif type(self).beta_value is TinyVAE.beta_value:
            self.beta = 0.0
        self.n_batches = n_batches
        self.batch_size = batch_size
        self.crash_at = crash_at
        self.seen: list[tuple[int, int, float]] = []
        self.eval_seen: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.crash_at is not None and len(self.seen) == self.crash_at:
            raise RuntimeError("simulated crash")
        beta = self.beta_value()
        self.seen.append((self.global_step, batch_idx, beta))
        loss = self.layer(batch[0]).pow(2).mean() * (1.0 + beta)
        self.log("beta_seen", beta)
        self.log("train_loss", loss)
        return loss

    def beta_value(self) -> float:
        return float(self.beta)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.eval_seen.append(float(self.beta))
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    test_step = validation_step

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.eval_seen.append(float(self.beta))
        return self.layer(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def _loader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(self.n_batches * self.batch_size, 4)), batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    val_dataloader = test_dataloader = predict_dataloader = train_dataloader


class WithLossFn(TinyVAE):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.loss_fn = nn.Module()
        self.loss_fn.beta = 0.0
        self.loss_fn.register_buffer("beta_bow", torch.tensor(0.0, dtype=torch.float64))

    def beta_value(self) -> float:
        return self.loss_fn.beta


class NoBeta(TinyVAE):
    def __init__(self) -> None:
        super().__init__()
        del self.beta


class Stream(IterableDataset):
    def __iter__(self):
        while True:
            yield (torch.randn(4),)


class Unbounded(TinyVAE):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(Stream(), batch_size=2)


class CLIModel(TinyVAE):
    """TinyVAE with a signature LightningCLI can read (the tests that configure the callbacks from YAML)."""

    def __init__(self, n_batches: int = 4) -> None:
        super().__init__(n_batches=n_batches)


class StopAt(L.Callback):
    """Stops the fit after an arbitrary optimizer step, as a time limit or a user's signal would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def make_trainer(tmp_path: Path, callbacks: list, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        default_root_dir=tmp_path,
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(callbacks=callbacks, **defaults)


def expected(step: int, total: int, **kwargs: Any) -> float:
    return cyclical_beta(step, total, **kwargs)


def _csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def _fit_with_crash(tmp_path: Path, crash_at: int, accumulate: int, **trainer_kwargs: Any) -> tuple[list, str]:
    model = TinyVAE(n_batches=10, crash_at=crash_at)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer = make_trainer(
        tmp_path, [CyclicalKLAnnealing(n_cycle=3, ratio=0.5, start=0.1), ckpt],
        enable_checkpointing=True, accumulate_grad_batches=accumulate, max_epochs=3, **trainer_kwargs,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.fit(model)
    last = max((tmp_path / "ckpt").glob("step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    return model.seen, str(last)


#: The dialog example's CVAE at test size (tests/test_examples_dialog_*.py).
DIALOG_TINY: dict[str, int] = dict(
    embed_dim=8,
    utt_hidden=8,
    ctx_hidden=12,
    dec_hidden=12,
    latent_dim=4,
    prior_hidden=8,
    bow_hidden=8,
    max_decode_len=6,
    num_samples=3,
)


class Warmup:
    """A user's schedule object that declares its phases (a linear warm-up over `steps`, then 1), with state of its
    own (``steps``) that a fit must not touch."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, step: int, total: int | None) -> float:
        return min(1.0, step / self.steps)

    def phase(self, step: int, total: int | None) -> str:
        return "ramp" if step < self.steps else "final"
