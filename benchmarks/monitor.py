"""Cost of LatentMonitor: the validation loop of the text VAE with and without it.

    python benchmarks/monitor.py [--size compare|paper] [--repeats 15] [--json benchmarks/monitor.json]

Builds the text VAE of ``examples/text_vae`` on the built-in corpus (1000 validation sentences,
batches of 32) at its ``compare.py`` size (emb 64, hidden 128, latent 16) or at the paper's (emb 256,
hidden 256, latent 32), and times ``trainer.validate`` from ``on_validation_start`` to
``on_validation_end`` (every callback's epoch-end work included) on one Trainer per variant, reused
for every validation as in a fit (after one warm-up validation each: a new Trainer pays Lightning's
first ``log`` of each key again, about 0.7 ms a key), interleaving runs without a
monitor, with ``LatentMonitor()`` (defaults: KL, active units, and MI over all 1000 rows, one draw
each) and with ``LatentMonitor(mi_max_samples=0)`` (no MI). All use the same subclass whose
``validation_step`` returns ``mu`` and ``logvar`` (the only change LatentMonitor asks of a model), so
the callback is the only difference; CSVLogger in all. Prints medians and the medians of the paired
ratios, and the time LatentMonitor spends in its own hooks (timed inside the "with" runs) as a
share of the loop without it, which a loaded machine blurs far less than a difference of two loops.
Target with/without <= 1.05. One thread (``torch.set_num_threads(1)``).

It also measures the spread of LatentMonitor's MI estimate (standard deviation over 20 seeds of the
z draws) on synthetic posteriors of 1000 rows, d = 16, with 3 informative dimensions at three
strengths, for one draw and all rows, one draw and 512 or 256 outer rows, and 4 draws and all rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `examples`, for the text VAE

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from examples.text_vae.data import TextVAEDataModule
from examples.text_vae.model import TextVAE
from lightning_kl_anneal import LatentMonitor, mutual_information


class ReturnsPosterior(TextVAE):
    """The text VAE with ``validation_step`` returning the posterior it already computed.

    The example's own evaluation aggregation (its AU and MI over the validation set, which the
    library's metrics replace) is switched off, so the baseline is the model's forward pass and
    losses alone: the monitor's share is not diluted by work it makes redundant.
    """

    def _accumulate(self, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        pass

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        self._out = super().forward(tokens, lengths)
        return self._out

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        super().validation_step(batch, batch_idx)
        return {"mu": self._out["mu"], "logvar": self._out["logvar"]}


class LoopTimer(L.Callback):
    """Wall time from the start to the end of the validation loop (all epoch-end hooks inside)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._t0)


class TimedMonitor(LatentMonitor):
    """LatentMonitor that also adds up the wall time spent in its own hooks (less noisy than a difference of loops)."""

    hook_seconds: ClassVar[list[float]] = []  # one entry per timed validation, over every instance

    def _timed(self, hook: Any, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        hook(*args, **kwargs)
        self.spent += time.perf_counter() - t0

    def on_validation_epoch_start(self, *args: Any) -> None:
        self.spent = 0.0
        self._timed(super().on_validation_epoch_start, *args)

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().on_validation_batch_end, *args, **kwargs)

    def on_validation_epoch_end(self, *args: Any) -> None:
        self._timed(super().on_validation_epoch_end, *args)
        TimedMonitor.hook_seconds.append(self.spent)


VARIANTS = {
    "without": list,
    "with LatentMonitor": lambda: [TimedMonitor()],
    "with it, MI off": lambda: [LatentMonitor(mi_max_samples=0)],
}
SIZES = {
    "compare": dict(emb_dim=64, hidden_dim=128, latent_dim=16),
    "paper": dict(emb_dim=256, hidden_dim=256, latent_dim=32),
}


def make_trainer(variant: str, root: str) -> tuple[L.Trainer, LoopTimer]:
    """One Trainer per variant, reused for every validation, as in a fit (Lightning's first `log` of a key costs more)."""
    timer = LoopTimer()
    callbacks: list[Any] = [timer, *VARIANTS[variant]()]  # timer first: it starts before the monitor
    trainer = L.Trainer(
        callbacks=callbacks, logger=CSVLogger(root), enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    return trainer, timer


def validate_seconds(model: TextVAE, dm: TextVAEDataModule, trainer: L.Trainer, timer: LoopTimer) -> float:
    trainer.validate(model, datamodule=dm, verbose=False)
    return timer.seconds[-1]


MI_SETTINGS = {"1 draw, all rows": (1, None), "1 draw, 512 outer rows": (1, 512), "1 draw, 256 outer rows": (1, 256),
               "4 draws, all rows": (4, None)}  # fmt: skip


def mi_spread(seeds: int = 20) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and sample std (ddof=1) of the MI estimate over seeds of the z draws, per posterior and setting."""
    g = torch.Generator().manual_seed(0)
    n, d = 1000, 16
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, scale in (("near collapse", 0.05), ("weak", 0.3), ("informative", 1.0)):
        mu = torch.randn(n, d, generator=g) * torch.tensor([scale] * 3 + [0.01] * (d - 3))
        logvar = torch.zeros(n, d)
        logvar[:, :3] = -0.5
        perm = torch.randperm(n, generator=g)
        mu, logvar = mu[perm], logvar[perm]
        out[label] = {}
        for name, (draws, outer) in MI_SETTINGS.items():
            values = [mutual_information(mu, logvar, draws, outer_rows=outer, generator=torch.Generator().manual_seed(s))
                      for s in range(seeds)]  # fmt: skip
            out[label][name] = {"mean": statistics.mean(values), "std": statistics.stdev(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="compare")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default=None, help="write the measurements to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)
    dm = TextVAEDataModule(batch_size=32, corpus_size=10_000)
    model = ReturnsPosterior(vocab_size=dm.vocab_size, **SIZES[args.size])
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as root:
        trainers = {name: make_trainer(name, root) for name in VARIANTS}
        for trainer, timer in trainers.values():  # warm-up: first calls, data set-up, each metric's first `log`
            validate_seconds(model, dm, trainer, timer)
        TimedMonitor.hook_seconds.clear()
        names = list(VARIANTS)
        for i in range(args.repeats):
            for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate which goes first
                times[name].append(validate_seconds(model, dm, *trainers[name]))
    n_val = len(dm.split("valid"))
    base = times["without"]
    paired = {name: [t / b for t, b in zip(ts, base)] for name, ts in times.items() if name != "without"}
    ratio = statistics.median(paired["with LatentMonitor"])
    print(
        f"text VAE ({args.size} size) validation loop, {n_val} sentences, {args.repeats} interleaved runs each, 1 thread"
    )
    for name, ts in times.items():
        line = f"{name:<20} median {statistics.median(ts):.3f} s   min {min(ts):.3f} s"
        if name in paired:
            line += f"   paired ratio median {statistics.median(paired[name]):.3f} (min/min {min(ts) / min(base):.3f})"
        print(line)
    hooks = statistics.median(TimedMonitor.hook_seconds)
    share = hooks / statistics.median(base)
    print(
        f"LatentMonitor's own hooks: median {1e3 * hooks:.1f} ms per validation = {100 * share:.1f}% of the loop without it"
    )
    print(
        f"target with/without <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'} ({ratio:.3f}); "
        f"hooks' share {'met' if share <= 0.05 else 'NOT met'} ({100 * share:.1f}%)"
    )
    spread = mi_spread()
    print("MI estimate over 20 seeds of the draws, 1000 rows, d = 16: mean ± std (ddof=1)")
    for label, row in spread.items():
        print(f"  {label:<14}" + "  ".join(f"{name}: {v['mean']:.4f} ± {v['std']:.4f}" for name, v in row.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "command": f"python benchmarks/monitor.py --size {args.size} --repeats {args.repeats} --json {args.json}",
                "machine": {"python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__,
                            "threads": 1, "device": "cpu"},
                "size": args.size, "model": SIZES[args.size], "validation_sentences": n_val,
                "seconds": times,
                "paired_ratios": paired,
                "median_paired_ratio": {name: statistics.median(r) for name, r in paired.items()},
                "monitor_hook_seconds": TimedMonitor.hook_seconds,
                "monitor_hook_share_of_loop_without": share,
                "mi_spread": spread,
            }, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
