"""Research script behind ``compare.py --recipe``: which schedule keeps the latent on real text?

    python examples/text_vae/recipe_search.py --data-dir ../shared/data/wordnet --configs constant cyclical ... \
        --seeds 0 --log examples/text_vae/figures/recipe_search.json

Trains the example's ``TextVAE`` once per (config, seed) at the demo's budget and records the
*validation* numbers (rec, kl, elbo, ppl, au, mi at β = 1) of the epoch with the best validation
PPL, and of the last epoch, into a JSON log (one record per run, appended). The test split is never
read here: choices are made on validation, the test split is reported once by ``compare.py``.

A config combines three pieces, each a pure function of (step, total_steps):

* β: ``delay`` steps (a fraction of the run) held at ``start``, then ``n_cycle`` cyclical cycles
  over the remaining steps (``CyclicalKLAnnealing(delay=...)``; Li et al. 2019 use ``start=0``);
* the free-bits threshold λ(t): constant, or held then decayed linearly to 0 (``cyclical_beta``
  with ``start=λ, stop=0, n_cycle=1``), so that the end of training optimises the true ELBO;
* the free-bits variant, named as in the library's ``free_bits_kl``: ``"dim"`` (Kingma et al. 2016:
  ``Σ_d max(λ, mean_batch KL_d)``), ``"example_dim"`` (Li et al. 2019's code:
  ``mean_batch Σ_d max(λ, KL_d)``) or ``"example"`` (a floor on each sentence's total KL,
  ``mean_batch max(λ, Σ_d KL_d)``; λ is then per sentence, not per dimension).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `examples` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from examples.text_vae.data import TextVAEDataModule
from examples.text_vae.model import TextVAE
from lightning_kl_anneal import cyclical_beta

Schedule = Callable[[int, int], float]


@dataclass(frozen=True)
class Recipe:
    """One point of the search: the β schedule, the free-bits threshold schedule and variant."""

    n_cycle: int = 4
    ratio: float = 0.5
    start: float = 0.1
    stop: float = 1.0
    delay: float = 0.0  # fraction of the run held at `start` before the cycles
    fb: float = 0.0  # λ in nats (per dimension, or per sentence in mode "example"); 0 = off
    fb_mode: str = "dim"
    fb_hold: float = 1.0  # λ is held for this fraction of the run ...
    fb_end: float = 1.0  # ... then decays linearly to 0, reached at this fraction (hold == end == 1: constant)


# the baselines and the candidates, by name; more are given on the command line as name=key:value,...
CONFIGS: dict[str, Recipe] = {
    "constant": Recipe(n_cycle=1, start=1.0),
    "monotonic": Recipe(n_cycle=1),
    "cyclical": Recipe(),
}


def parse_config(text: str) -> tuple[str, Recipe]:
    """``name`` (a key of CONFIGS) or ``name=base,key=value,...`` (keys of ``Recipe``)."""
    if "=" not in text.split(",")[0]:
        return text, CONFIGS[text]
    name, rest = text.split("=", 1)
    base, *pairs = rest.split(",")
    recipe = CONFIGS[base]
    types = {k: type(v) for k, v in asdict(recipe).items()}
    for pair in pairs:
        key, value = pair.split("=")
        recipe = replace(recipe, **{key: types[key](value)})
    return name, recipe


def beta_schedule(r: Recipe) -> Schedule:
    """β(step, T): ``start`` for the first ``delay`` of the run, then the cyclical schedule."""

    def beta(step: int, total: int) -> float:
        d = int(round(r.delay * total))
        if step < d:
            return r.start
        return cyclical_beta(step - d, total - d, n_cycle=r.n_cycle, ratio=r.ratio, start=r.start, stop=r.stop)

    return beta


def threshold_schedule(r: Recipe) -> Schedule:
    """λ(step, T): constant, or held for ``fb_hold`` of the run and decayed to 0 by ``fb_end``."""
    if r.fb_hold >= 1.0:
        return lambda step, total: r.fb
    # the library's cyclical function with start=λ, stop=0 and one cycle is exactly "hold, then ramp down"
    return lambda step, total: cyclical_beta(step, total, n_cycle=1, ratio=r.fb_end, start=r.fb, stop=0.0, ratio_zero=r.fb_hold)


def free_bits_kl(kl_per_dim: Tensor, threshold: float, mode: str) -> Tensor:
    """The training KL term with a floor (emulates the library's ``free_bits_kl`` until it lands)."""
    if threshold <= 0:
        return kl_per_dim.sum(1).mean()
    if mode == "dim":
        return kl_per_dim.mean(0).clamp(min=threshold).sum()
    if mode == "example_dim":
        return kl_per_dim.clamp(min=threshold).sum(1).mean()
    if mode == "example":
        return kl_per_dim.sum(1).clamp(min=threshold).mean()
    raise ValueError(f"`fb_mode` must be 'dim', 'example_dim' or 'example', got {mode!r}")


class SearchVAE(TextVAE):
    """``TextVAE`` whose training KL term reads a scheduled threshold ``self.fb`` and a variant."""

    def __init__(self, *args: Any, fb_mode: str = "dim", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fb = 0.0
        self.fb_mode = fb_mode

    @override
    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, dict[str, Tensor]]:
        if stage != "train":
            return super()._shared_step(batch, stage)
        out = self(batch["tokens"], batch["lengths"])
        rec, kl = out["rec"].mean(), out["kl_dim"].sum(1).mean()
        loss = rec + self.beta * free_bits_kl(out["kl_dim"], self.fb, self.fb_mode)
        return loss, {"loss": loss, "rec": rec, "kl": kl, "beta": torch.as_tensor(self.beta)}


class Scheduled(Callback):
    """Writes ``schedule(global_step, T)`` into an attribute before every training step; ``eval_value``
    outside training (emulates the library's ``ScheduledAttribute`` until it lands)."""

    def __init__(self, schedule: Schedule, attribute: str, eval_value: float | None = None) -> None:
        self.schedule, self.attribute, self.eval_value = schedule, attribute, eval_value

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        setattr(pl_module, self.attribute, self.schedule(trainer.global_step, int(trainer.estimated_stepping_batches)))

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_value is not None:
            setattr(pl_module, self.attribute, self.eval_value)


class ValRecorder(Callback):
    """Keeps the model's validation metrics after every validation epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.last_eval:
            self.epochs.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **pl_module.last_eval})


def run(recipe: Recipe, seed: int, args: argparse.Namespace, dm: TextVAEDataModule) -> dict[str, Any]:
    L.seed_everything(seed, workers=True, verbose=False)
    model = SearchVAE(vocab_size=dm.vocab_size, emb_dim=args.emb_dim, hidden_dim=args.hidden_dim,
                      latent_dim=args.latent_dim, dropout=args.dropout, fb_mode=recipe.fb_mode)  # fmt: skip
    rec = ValRecorder()
    trainer = L.Trainer(
        max_epochs=args.max_epochs, accelerator="cpu", devices=1, gradient_clip_val=5.0, logger=False,
        callbacks=[Scheduled(beta_schedule(recipe), "beta", eval_value=1.0),
                   Scheduled(threshold_schedule(recipe), "fb", eval_value=0.0), rec],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, dm)
    best = min(rec.epochs, key=lambda m: m["ppl"])
    return {"best": best, "last": rec.epochs[-1], "epochs": rec.epochs}


BASELINES = ("constant", "monotonic", "cyclical")


def plot_search(records: list[dict[str, Any]], path: Path, which: str = "best") -> None:
    """Validation MI against validation ELBO, one point per run: the trade-off the search explored.

    The baselines are black; the shaded band is the target (ELBO at most 2 % below the best
    baseline, MI >= 0.5 nats).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    base = [r for r in records if r["name"] in BASELINES]
    if base:
        best = max(r[which]["elbo"] for r in base)
        ax.axvspan(best * 1.02, best + 0.02 * abs(best), color="tab:green", alpha=0.1, label="ELBO within 2 % of best baseline")
        ax.axvline(best, color="k", lw=0.8, ls=":")
    ax.axhline(0.5, color="tab:green", lw=0.8, ls="--", label="MI = 0.5 nats")
    for r in records:
        m = r[which]
        colour = "k" if r["name"] in BASELINES else None
        ax.scatter(m["elbo"], m["mi"], s=18 + 6 * m["au"], c=colour, alpha=0.8)
        ax.annotate(f"{r['name']} s{r['seed']}", (m["elbo"], m["mi"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel(f"validation ELBO (nats/sentence, {which} epoch by val PPL) →better")
    ax.set_ylabel("validation MI (nats)")
    ax.set_title("recipe search on real text (point size ~ active units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--configs", nargs="+", default=[], help="names or name=base,key=value,...")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-sentences", type=int, default=4000, help="seeded subsample of the training split")
    p.add_argument("--max-vocab", type=int, default=10_000)
    p.add_argument("--emb-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--log", required=True, help="JSON file; records are appended")
    p.add_argument("--plot", default=None, help="only draw the log's MI-vs-ELBO figure into this file, train nothing")
    args = p.parse_args(argv)
    if args.plot:
        plot_search(json.loads(Path(args.log).read_text()), Path(args.plot))
        return
    torch.set_num_threads(1)
    log = Path(args.log)
    records = json.loads(log.read_text()) if log.exists() else []
    for seed in args.seeds:
        dm = TextVAEDataModule(args.data_dir, batch_size=args.batch_size, max_vocab=args.max_vocab,
                               train_sentences=args.train_sentences, seed=seed)  # fmt: skip
        for text in args.configs:
            name, recipe = parse_config(text)
            t0 = time.time()
            res = run(recipe, seed, args, dm)
            b, last = res["best"], res["last"]
            print(f"{name:<28} seed {seed}  best ep {b['epoch']}: elbo {b['elbo']:8.3f} kl {b['kl']:6.3f} mi {b['mi']:6.3f} "
                  f"au {b['au']:4.0f} | last: elbo {last['elbo']:8.3f} kl {last['kl']:6.3f} mi {last['mi']:6.3f} au {last['au']:4.0f}"
                  f"  ({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
            records.append({"name": name, "seed": seed, "recipe": asdict(recipe), "split": "valid",
                            "budget": {k: getattr(args, k) for k in ("max_epochs", "batch_size", "train_sentences", "max_vocab", "emb_dim",
                                                                      "hidden_dim", "latent_dim", "dropout")},
                            "data_dir": args.data_dir, "wall_s": round(time.time() - t0, 1), **res})  # fmt: skip
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
