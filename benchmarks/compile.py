"""Recompiles and time under ``torch.compile``: β as a float attribute vs a buffer the callback fills in place.

    python benchmarks/compile.py [--steps 400] [--n-cycle 4] [--backend inductor]

A small VAE-style loss module is compiled and trained with Lightning over one full cyclical
run; the callback writes β into it every step. A Python float that changes is baked into the
graph as a constant, so dynamo recompiles (or, past its cache limit, falls back to eager);
a tensor buffer updated in place is a graph input, so one graph serves the whole run.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_kl_anneal import CyclicalKLAnnealing, cyclical_beta


class Loss(torch.nn.Module):
    """rec + β·KL of a Gaussian encoder, with β a float attribute or a buffer."""

    def __init__(self, buffer: bool) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(32, 16)
        self.dec = torch.nn.Linear(8, 32)
        if buffer:
            self.register_buffer("beta", torch.tensor(0.0))
        else:
            self.beta = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = (self.dec(z) - x).pow(2).sum(-1).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        return rec + self.beta * kl


class Module(L.LightningModule):
    def __init__(self, buffer: bool, backend: str) -> None:
        super().__init__()
        self.loss_fn = Loss(buffer)
        self.compiled = torch.compile(self.loss_fn, backend=backend)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.compiled(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def run(buffer: bool, steps: int, n_cycle: int, backend: str) -> dict[str, float]:
    torch._dynamo.reset()
    torch.manual_seed(0)
    torch._dynamo.utils.counters.clear()
    module = Module(buffer, backend)
    callback = CyclicalKLAnnealing(n_cycle=n_cycle, ratio=0.5, attribute="loss_fn.beta")
    trainer = L.Trainer(
        max_steps=steps, callbacks=[callback], logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    loader = DataLoader(TensorDataset(torch.randn(steps * 16, 32)), batch_size=16)
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - t0
    counters = torch._dynamo.utils.counters
    return {
        "seconds": seconds,
        "graphs": counters["stats"]["unique_graphs"],
        "distinct_beta": len({cyclical_beta(t, steps, n_cycle) for t in range(steps)}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--n-cycle", type=int, default=4)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor needs a C compiler)")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    # Every compile counted from scratch: no graphs reused from an earlier run's on-disk cache.
    torch._inductor.config.force_disable_caches = True
    print(f"torch {torch.__version__}, backend {args.backend}, {args.steps} steps, {args.n_cycle} cycles")
    print(f"{'β held as':<24}{'graphs compiled':>16}{'fit s (incl. compile)':>23}")
    results = {}
    for name, buffer in (("float attribute", False), ("buffer (in place)", True)):
        r = results[name] = run(buffer, args.steps, args.n_cycle, args.backend)
        print(f"{name:<24}{r['graphs']:>16}{r['seconds']:>23.2f}")
    f, b = results["float attribute"], results["buffer (in place)"]
    print(
        f"distinct β values in the run: {f['distinct_beta']}; float/buffer time ratio {f['seconds'] / b['seconds']:.2f}"
    )


if __name__ == "__main__":
    main()
