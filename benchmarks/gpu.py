"""Checks on a CUDA machine, printed as JSON: compiled β buffers (CUDA graphs too), bf16, overhead.

    python benchmarks/gpu.py [--steps 240] [--vae-steps 200] [--repeats 5]

1. A β buffer on the GPU, filled in place by ``CyclicalKLAnnealing`` and read inside a compiled
   module, under ``torch.compile(mode="default")`` and ``mode="reduce-overhead"`` (CUDA graphs): the
   value the graph reads must equal the value written before each step, every step, and one graph
   must serve the whole cyclical run.
2. ``precision="bf16-mixed"``: the β seen in every step equals the schedule's, and the buffer keeps
   its dtype.
3. The text VAE's training step on the GPU with and without the callback (median of interleaved pairs).

Without CUDA it prints one line saying it skipped, and exits 0. Runs in well under 5 minutes on one H100.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `examples` for the text VAE row

from lightning_kl_anneal import CyclicalKLAnnealing, cyclical_beta


class Loss(nn.Module):
    """The part that gets compiled: reads the β buffer of its parent through an attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("beta", torch.tensor(0.0))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rec = (x @ w).pow(2).mean()
        return rec * (1.0 + self.beta), self.beta * 1.0  # the second output is the β the graph read


class CompiledVAE(L.LightningModule):
    def __init__(self, mode: str | None) -> None:
        super().__init__()
        self.layer = nn.Linear(16, 4)
        self.loss_fn = Loss()
        self.compiled = torch.compile(self.loss_fn, mode=mode) if mode else self.loss_fn
        self.read: list[float] = []
        self.written: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.written.append(float(self.loss_fn.beta))  # what the callback wrote before this step
        loss, beta_read = self.compiled(batch[0], self.layer.weight.t())
        self.read.append(float(beta_read))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _trainer(callbacks: list, root: str, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cuda", devices=1, callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=root, **kwargs,
    )  # fmt: skip


def check_compile(mode: str, steps: int, root: str) -> dict[str, Any]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = CompiledVAE(mode)
    cb = CyclicalKLAnnealing(n_cycle=4, ratio=0.5, attribute="loss_fn.beta")
    t0 = time.perf_counter()
    _trainer([cb], root, max_steps=steps).fit(model, DataLoader(TensorDataset(torch.randn(steps, 16)), batch_size=1))
    expected = [cyclical_beta(t, steps, 4, 0.5) for t in range(steps)]
    return {
        "mode": mode,
        "steps": steps,
        "distinct_beta": len(set(model.written)),
        "read_equals_written_every_step": model.read == model.written,
        "written_equals_schedule": all(abs(a - b) < 1e-6 for a, b in zip(model.written, expected)),
        "graphs_compiled": int(torch._dynamo.utils.counters["stats"]["unique_graphs"]),
        "fit_seconds": round(time.perf_counter() - t0, 2),
    }


def check_bf16(steps: int, root: str) -> dict[str, Any]:
    model = CompiledVAE(None)
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5, shape="cosine", attribute="loss_fn.beta")
    _trainer([cb], root, max_steps=steps, precision="bf16-mixed").fit(
        model, DataLoader(TensorDataset(torch.randn(steps, 16)), batch_size=1)
    )
    expected = [cyclical_beta(t, steps, 2, 0.5, shape="cosine") for t in range(steps)]
    return {
        "precision": "bf16-mixed",
        "beta_seen_equals_schedule": all(abs(a - b) < 1e-6 for a, b in zip(model.written, expected)),
        "buffer_dtype": str(model.loss_fn.beta.dtype),
    }


def check_overhead(steps: int, repeats: int, root: str) -> dict[str, Any]:
    from examples.text_vae.data import TextVAEDataModule
    from examples.text_vae.model import TextVAE

    dm = TextVAEDataModule(batch_size=32, corpus_size=10_000, seed=0)

    def fit(callbacks: list) -> float:
        torch.manual_seed(0)
        model = TextVAE(vocab_size=dm.vocab_size, emb_dim=256, hidden_dim=256, latent_dim=32)  # the paper's sizes
        trainer = _trainer(callbacks, root, max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.fit(model, dm)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    fit([])  # warm-up
    without, with_cb = [], []
    for _ in range(repeats):
        without.append(fit([]))
        with_cb.append(fit([CyclicalKLAnnealing(n_cycle=4)]))
    return {
        "text_vae_step_ms_without": round(1e3 * statistics.median(without) / steps, 3),
        "text_vae_step_ms_with": round(1e3 * statistics.median(with_cb) / steps, 3),
        "median_paired_ratio_with_without": round(statistics.median(w / o for w, o in zip(with_cb, without)), 4),
        "steps": steps,
        "repeats": repeats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--vae-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: skipped, no CUDA device on this machine")
        return 0
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as root:
        report = {
            "device": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "compile": [check_compile(mode, args.steps, root) for mode in ("default", "reduce-overhead")],
            "bf16": check_bf16(args.steps, root),
            "overhead": check_overhead(args.vae_steps, args.repeats, root),
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
