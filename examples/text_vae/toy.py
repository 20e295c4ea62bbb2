"""The paper's toy experiment: ten sequences, a 2-D latent, q(z|x) snapshots per schedule.

    python examples/text_vae/toy.py

Ten random sequences of ten tokens are learnt by the text VAE with a 2-D latent under constant,
monotonic and cyclical beta. Once the decoder has memorised them, only the *first* token is
uncertain, so the most information z can usefully carry is log 10 = 2.3 nats. Snapshots of
q(z|x) (one ellipse per sequence, radius one standard deviation) at the end of each cycle's rise
and of each cycle show what Fu et al. (NAACL 2019, figure 4) show: constant beta = 1 puts every
sequence on the prior, monotonic leaves them overlapping, cyclical separates them again after each
restart. Writes ``--out/toy.png`` (default ``runs/text_vae/toy.png``) and prints the final
KL / ELBO. The paper trained 40K steps; the default here is 4K (1-2 minutes on a CPU).

Settings that differ from the language-model runs, and why (each measured at 4K steps, seed 0):
beta starts each cycle at 0.1, because at beta = 0 nothing anchors the posterior mean, which drifts
to a large offset shared by all ten sequences and the encoder never separates them; Adam's learning
rate is 5e-3, because at 1e-3 the encoder lags behind the decoder for the whole short budget; and
there is no dropout, because ten memorised sequences need no regularisation and with 0.5 the
latent is still unused at 4K steps by every schedule but cyclical (final KL 0.24).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from examples.text_vae.model import TextVAE
from lightning_kl_anneal import CyclicalKLAnnealing


def schedules(start: float) -> dict[str, dict[str, Any]]:
    return {
        "constant": {"n_cycle": 1, "start": 1.0, "stop": 1.0},
        "monotonic": {"n_cycle": 1, "ratio": 0.5, "start": start},
        "cyclical": {"n_cycle": 4, "ratio": 0.5, "start": start},
    }


def toy_sequences(n: int = 10, length: int = 10, vocab: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` random sequences of ``length`` tokens from ``vocab`` words, each ending in ``<eos>``.

    Example:
        >>> b = toy_sequences(n=3, length=4, vocab=50)
        >>> tuple(b["tokens"].shape), b["lengths"].tolist()
        ((3, 5), [5, 5, 5])
    """
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(4, vocab + 4, (n, length), generator=g)  # ids 0..3 are <pad> <bos> <eos> <unk>
    tokens = torch.cat([words, torch.full((n, 1), 2)], dim=1)
    return {"tokens": tokens, "lengths": torch.full((n,), length + 1)}


class Repeat(Dataset):
    """The same full batch ``steps`` times: one epoch is the whole run, without per-epoch overhead."""

    def __init__(self, batch: dict[str, torch.Tensor], steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


class Snapshots(Callback):
    """Posterior parameters of the ten sequences after the given global steps."""

    def __init__(self, batch: dict[str, torch.Tensor], at: list[int]) -> None:
        self.batch, self.at = batch, set(at)
        self.taken: list[dict[str, Any]] = []

    @override
    @override
    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step in self.at:
            mu, logvar = pl_module.encode(self.batch["tokens"], self.batch["lengths"])
            self.taken.append({"step": trainer.global_step, "beta": float(pl_module.beta), "mu": mu.numpy().copy(),
                               "std": (0.5 * logvar).exp().numpy().copy(), "kl": float(outputs["kl"])})  # fmt: skip


def run(
    name: str, anneal: dict[str, Any], steps: int, seed: int, hidden: int, dropout: float, lr: float
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    L.seed_everything(seed, verbose=False)
    batch = toy_sequences(seed=seed)
    quarter = steps // 4
    at = sorted({quarter // 2, quarter, 2 * quarter, 3 * quarter, steps})  # end of the first rise, then cycle ends
    snaps = Snapshots(batch, at)
    # dec_init="h0c0": the README's figure and numbers were measured with z setting h0 and c0
    model = TextVAE(
        vocab_size=1004, emb_dim=hidden, hidden_dim=hidden, latent_dim=2, dropout=dropout, lr=lr, dec_init="h0c0"
    )
    trainer = L.Trainer(max_steps=steps, callbacks=[CyclicalKLAnnealing(**anneal), snaps], logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=True,
                        gradient_clip_val=5.0, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, DataLoader(Repeat(batch, steps), batch_size=None))
    model.eval()
    with torch.no_grad():  # evaluation at beta = 1, averaged over z samples because there are only ten sequences
        outs = [model(batch["tokens"], batch["lengths"]) for _ in range(50)]
    rec = float(torch.stack([o["rec"].mean() for o in outs]).mean())
    kl = float(outs[0]["kl_dim"].sum(1).mean())
    return snaps.taken, {"rec": rec, "kl": kl, "elbo": -(rec + kl)}


def plot(results: dict[str, tuple[list[dict[str, Any]], dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    n_col = max(len(s) for s, _ in results.values())
    fig, axes = plt.subplots(len(results), n_col, figsize=(2.3 * n_col, 2.4 * len(results)), squeeze=False)
    colours = plt.get_cmap("tab10")(np.arange(10))
    for row, (name, (snaps, final)) in zip(axes, results.items()):
        for ax, snap in zip(row, snaps):
            for i, (m, s) in enumerate(zip(snap["mu"], snap["std"])):
                ax.add_patch(Ellipse(tuple(m), 2 * s[0], 2 * s[1], color=colours[i], alpha=0.35))
                ax.plot(*m, ".", color=colours[i], ms=3)
            ax.add_patch(Ellipse((0, 0), 2, 2, fill=False, ls="--", color="k", lw=0.8))  # the prior, 1 std
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"step {snap['step']}, β={snap['beta']:.2f}\nKL={snap['kl']:.2f}", fontsize=8)
        row[0].set_ylabel(f"{name}\nfinal KL {final['kl']:.2f}\nELBO {final['elbo']:.2f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/text_vae")
    p.add_argument("--steps", type=int, default=4000, help="training steps per schedule (paper: 40000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=64, help="embedding and LSTM size")
    p.add_argument("--dropout", type=float, default=0.0, help="0 here: see the module docstring")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam; 1e-3 leaves the encoder lagging in a 4K-step budget")
    p.add_argument("--start", type=float, default=0.1, help="beta at each cycle's start (see the module docstring)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    a = p.parse_args(argv)
    if a.steps < 8:
        raise ValueError(f"`--steps` must be >= 8 (4 cycles of a rise and a plateau), got {a.steps}")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    results = {
        name: run(name, anneal, a.steps, a.seed, a.hidden, a.dropout, a.lr)
        for name, anneal in schedules(a.start).items()
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "toy.png")
    for name, (_, final) in results.items():
        print(f"{name:<10} KL {final['kl']:.3f}  Rec {final['rec']:.3f}  ELBO {final['elbo']:.3f}")
    print(f"figure: {out / 'toy.png'}")
    return {name: final for name, (_, final) in results.items()}


if __name__ == "__main__":
    main()
