"""The tiny module and callbacks of the committed resume checkpoint (``tests/data``).

``python tests/resume_module.py`` rewrites the checkpoint; ``tests/test_checkpoint_compat.py`` resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_kl_anneal import CyclicalKLAnnealing, LatentMonitor, PlateauEarlyStopping, PlateauModelCheckpoint

DATA = Path(__file__).parent / "data"
# Written with lightning_kl_anneal 0.1.0 (after issue 15, before issue 18's refactor) and Lightning 2.6.6.
CHECKPOINT = DATA / "resume-0.1.0-lightning-2.6.6.ckpt.bin"
N_BATCHES, T, N_CYCLE, RATIO, START = 10, 40, 3, 0.5, 0.1  # 4 epochs of 10 steps; T = 40 from the Trainer
STOPPED_AT = 20  # the checkpoint is the one written at the end of epoch 2 (step 20, on a ramp)


class ResumeVAE(L.LightningModule):
    """Records (global_step, beta) at every training step; returns a posterior for LatentMonitor."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.beta = 0.0
        self.seen: list[tuple[int, float]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.global_step, float(self.beta)))
        mu, logvar = self.enc(batch[0]).chunk(2, dim=-1)
        return mu.pow(2).mean() + self.beta * logvar.pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        mu, logvar = self.enc(batch[0]).chunk(2, dim=-1)
        self.log("val_loss", mu.pow(2).mean())
        return {"mu": mu, "logvar": logvar}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(N_BATCHES * 2, 4, generator=gen)), batch_size=2)

    val_dataloader = train_dataloader


def callbacks(dirpath: Path) -> list[L.Callback]:
    return [
        CyclicalKLAnnealing(n_cycle=N_CYCLE, ratio=RATIO, start=START),
        LatentMonitor(kl_threshold=0.05, patience=2),
        PlateauModelCheckpoint(dirpath=dirpath, monitor="val_loss", save_last=True, filename="best"),
        PlateauEarlyStopping(monitor="val_loss", patience=100),
        L.pytorch.callbacks.ModelCheckpoint(dirpath=dirpath, every_n_epochs=1, save_top_k=-1),
    ]


def trainer(root: Path, max_epochs: int = 4) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root, max_epochs=max_epochs, callbacks=callbacks(root / "ckpt"), logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip


if __name__ == "__main__":
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        L.seed_everything(0)
        trainer(Path(tmp)).fit(ResumeVAE())
        DATA.mkdir(exist_ok=True)
        shutil.copy(Path(tmp) / "ckpt" / f"epoch=1-step={STOPPED_AT}.ckpt", CHECKPOINT)
    print(CHECKPOINT, CHECKPOINT.stat().st_size, "bytes")
