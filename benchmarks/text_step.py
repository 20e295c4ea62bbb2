"""Time of one training step of the text VAE example at compare.py's size, on one CPU thread.

    python benchmarks/text_step.py [--steps 150] [--profile]

The comparison's cost is its steps: ``compare.py`` trains emb 64, hidden 128, latent 16, batch 32
on the built-in corpus, and a run is ``epochs x ~310`` steps. This prints the CPU time
(``time.process_time``, which neighbours on a shared machine disturb far less than wall time) of

* the bare step: forward, backward, gradient clipping at 5 and Adam, on the data module's batches;
* the step inside a ``Trainer`` with compare.py's callbacks (the schedule, ``LatentMonitor``, the
  curve recorder) and a ``CSVLogger``, validation off, so the difference is Lightning's share;

and, with ``--profile``, the operators that take the bare step's time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from examples.text_vae.compare import Config, CurveRecorder, make_datamodule
from examples.text_vae.model import TextVAE
from lightning_kl_anneal import CyclicalKLAnnealing, LatentMonitor

WARMUP = 20


class StepClock(Callback):
    """CPU and wall time from step ``WARMUP`` to the end of the fit."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == WARMUP:
            self.cpu, self.wall = time.process_time(), time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = trainer.global_step - WARMUP
        self.result = ((time.process_time() - self.cpu) / n, (time.perf_counter() - self.wall) / n)


def model_for(cfg: Config, vocab_size: int) -> TextVAE:
    L.seed_everything(0, verbose=False)
    return TextVAE(vocab_size=vocab_size, emb_dim=cfg.emb_dim, hidden_dim=cfg.hidden_dim, latent_dim=cfg.latent_dim,
                   dropout=cfg.dropout, dec_init=cfg.dec_init, lr=cfg.lr)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = Config()
    dm = make_datamodule(cfg, 0)
    dm.setup("fit")
    batches = [b for _, b in zip(range(WARMUP + args.steps), dm.train_dataloader())]
    tokens = sum(int(b["lengths"].sum()) for b in batches) / len(batches)
    model = model_for(cfg, dm.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def step(b: dict[str, torch.Tensor]) -> None:
        out = model(b["tokens"], b["lengths"])
        loss = out["rec"].mean() + model.beta * out["kl_dim"].sum(1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    for b in batches[:WARMUP]:
        step(b)
    cpu, wall = time.process_time(), time.perf_counter()
    for b in batches[WARMUP:]:
        step(b)
    bare = ((time.process_time() - cpu) / args.steps, (time.perf_counter() - wall) / args.steps)

    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_steps=WARMUP + args.steps, limit_val_batches=0, gradient_clip_val=5.0, logger=CSVLogger(tmp),
            callbacks=[CyclicalKLAnnealing(n_cycle=4, ratio=0.5, start=0.1), LatentMonitor(mi_max_samples=0),
                       CurveRecorder(), clock],
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        )  # fmt: skip
        trainer.fit(model_for(cfg, dm.vocab_size), dm)
    print(f"text VAE step, emb {cfg.emb_dim} hidden {cfg.hidden_dim} latent {cfg.latent_dim} batch {cfg.batch_size}, "
          f"{tokens:.0f} target tokens per batch, 1 thread, {args.steps} steps:")  # fmt: skip
    print(f"  bare step      {bare[0] * 1e3:6.1f} ms CPU  ({bare[1] * 1e3:6.1f} ms wall)")
    print(f"  Trainer step   {clock.result[0] * 1e3:6.1f} ms CPU  ({clock.result[1] * 1e3:6.1f} ms wall)")
    steps_per_epoch = len(dm.train_dataloader())
    print(f"  {steps_per_epoch} steps per epoch: a 10-epoch run ~ {10 * steps_per_epoch * clock.result[0]:.0f} s CPU, "
          f"a 40-epoch run ~ {40 * steps_per_epoch * clock.result[0]:.0f} s CPU (training steps only)")  # fmt: skip
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches[WARMUP : WARMUP + 40]:
                step(b)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
