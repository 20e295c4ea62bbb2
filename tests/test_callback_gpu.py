"""β on a CUDA device: a buffer filled in place, in full and in bf16-mixed precision, under torch.compile.

Every test here needs a CUDA device and is skipped without one (CI has none; `benchmarks/gpu.py`
runs the longer checks, CUDA graphs included, and prints them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_kl_anneal import CyclicalKLAnnealing, cyclical_beta

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class BufferVAE(L.LightningModule):
    """Reads β from a buffer inside a (maybe compiled) loss; records what the step saw."""

    def __init__(self, compile_mode: str | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 4)
        self.register_buffer("beta", torch.tensor(0.0))
        self.loss_fn = self._loss if compile_mode is None else torch.compile(self._loss, mode=compile_mode)
        self.seen: list[float] = []

    def _loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer(x).pow(2).mean() * (1.0 + self.beta), self.beta * 1.0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, beta_read = self.loss_fn(batch[0])
        self.seen.append(float(beta_read))
        self.where = (self.beta.device.type, self.beta.dtype)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _fit(tmp_path: Path, model: BufferVAE, steps: int, **kwargs: Any) -> None:
    trainer = L.Trainer(
        accelerator="cuda", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
        callbacks=[CyclicalKLAnnealing(n_cycle=2, ratio=0.5)], **kwargs,
    )  # fmt: skip
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(steps, 8)), batch_size=1))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_buffer_on_the_gpu_follows_the_schedule(tmp_path: Path, precision: str) -> None:
    model = BufferVAE()
    _fit(tmp_path, model, 20, precision=precision)
    assert model.seen == pytest.approx([cyclical_beta(t, 20, 2, 0.5) for t in range(20)], abs=1e-6)
    assert model.where == ("cuda", torch.float32)  # during training: written in place, as it was


def test_compiled_loss_reads_each_step_s_beta_with_one_graph(tmp_path: Path) -> None:
    torch._dynamo.reset()
    model = BufferVAE(compile_mode="default")
    _fit(tmp_path, model, 20)
    assert model.seen == pytest.approx([cyclical_beta(t, 20, 2, 0.5) for t in range(20)], abs=1e-6)
    assert len(set(model.seen)) > 2  # the value changed under the compiled graph, not baked in
