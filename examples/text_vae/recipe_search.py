"""Research script behind ``compare.py --recipe``: which schedule keeps the latent on real text?

    python examples/text_vae/recipe_search.py --data-dir ../shared/data/wordnet --seeds 0 --log search.json \
        --configs monotonic cyclical "recipe=cyclical,fb=4.0,fb_mode=example,fb_hold=0.75,fb_end=1.0"
    python examples/text_vae/recipe_search.py --log search.json --plot search.png

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
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `examples` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from examples.text_vae.data import TextVAEDataModule
from examples.text_vae.model import TextVAE
from lightning_kl_anneal import CyclicalKLAnnealing, ScheduledAttribute, cyclical_beta

Schedule = Callable[[int, int], float]
#: the model and code a record was made with; records of the first search round, made before the
#: library pieces were merged, carry "h0c0-emulated" (see README): z -> h0 and c0, pieces emulated here
CODE = "h0-library"


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
    fb_end: float = 1.0  # ... then decays linearly to `fb_floor`, reached at this fraction (hold == 1: constant)
    fb_floor: float = 0.0  # λ at the end; 0 makes the end of training optimise the true ELBO


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


def threshold_schedule(r: Recipe) -> Schedule:
    """λ(step, T): held for ``fb_hold`` of the run, then linearly down to ``fb_floor`` at ``fb_end``.

    The library's cyclical function with one cycle, ``start=λ`` and ``stop=0`` is exactly this shape,
    so the schedule is a library function, not example-only math.
    """
    return partial(cyclical_beta, n_cycle=1, ratio=r.fb_end, ratio_zero=r.fb_hold, start=r.fb, stop=r.fb_floor)


def callbacks(r: Recipe, total_steps: int) -> list[Callback]:
    """The library's callbacks for one recipe: the β schedule and, if λ decays, the λ schedule."""
    out: list[Callback] = [CyclicalKLAnnealing(n_cycle=r.n_cycle, ratio=r.ratio, start=r.start, stop=r.stop,
                                               delay=round(r.delay * total_steps))]  # fmt: skip
    if r.fb > 0 and r.fb_hold < 1.0:
        out.append(ScheduledAttribute(threshold_schedule(r), "free_bits", log_name="free_bits"))
    return out


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
    model = TextVAE(vocab_size=dm.vocab_size, emb_dim=args.emb_dim, hidden_dim=args.hidden_dim, latent_dim=args.latent_dim,
                    dropout=args.dropout, dec_init=args.dec_init, free_bits=recipe.fb, free_bits_mode=recipe.fb_mode)  # fmt: skip
    rec = ValRecorder()
    total = len(dm.train_dataloader()) * args.max_epochs
    trainer = L.Trainer(
        max_epochs=args.max_epochs, accelerator="cpu", devices=1, gradient_clip_val=5.0, logger=False,
        callbacks=[*callbacks(recipe, total), rec],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, dm)
    best = min(rec.epochs, key=lambda m: m["ppl"])
    return {"best": best, "last": rec.epochs[-1], "epochs": rec.epochs}


BASELINES = ("constant", "monotonic", "cyclical")


def plot_search(records: list[dict[str, Any]], path: Path, which: str = "best") -> None:
    """Validation MI against validation ELBO, one point per run: the trade-off the search explored.

    Runs of this code are dots (baselines black); runs of the first round (``code`` "h0c0-emulated")
    are grey crosses. The shaded band is the ELBO target (at most 2 % below the best baseline of
    this code, seed 0), the dashed line MI = 0.5 nats.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    base = [r for r in records if r["name"] in BASELINES and r.get("code") == CODE and r["seed"] == 0]
    if base:
        best = max(r[which]["elbo"] for r in base)
        ax.axvspan(
            best * 1.02, best - 0.01 * best, color="tab:green", alpha=0.1, label="ELBO within 2 % of the best baseline"
        )
        ax.axvline(best, color="k", lw=0.8, ls=":")
    ax.axhline(0.5, color="tab:green", lw=0.8, ls="--", label="MI = 0.5 nats")
    for r in records:
        m, current = r[which], r.get("code") == CODE
        if current:
            ax.scatter(
                m["elbo"], m["mi"], s=12 + 4 * m["au"], c="k" if r["name"] in BASELINES else "tab:blue", alpha=0.85
            )
        else:
            ax.scatter(m["elbo"], m["mi"], s=20, c="0.6", marker="x")
        ax.annotate(f"{r['name']} s{r['seed']}", (m["elbo"], m["mi"]), fontsize=6, xytext=(3, 2), textcoords="offset points",
                    color="k" if current else "0.5")  # fmt: skip
    ax.set_xlabel(f"validation ELBO (nats per sentence, {which} epoch by validation PPL); right is better")
    ax.set_ylabel("validation MI (nats)")
    ax.set_title("recipe search, WordNet glosses, 4000 training sentences (dot size ~ active units)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="PTB-format folder (required unless --plot)")
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
    p.add_argument("--dec-init", default="h0")
    p.add_argument("--log", required=True, help="JSON file; records are appended")
    p.add_argument("--plot", default=None, help="only draw the log's MI-vs-ELBO figure into this file, train nothing")
    args = p.parse_args(argv)
    if args.plot:
        plot_search(json.loads(Path(args.log).read_text()), Path(args.plot))
        return
    if args.data_dir is None or not args.configs:
        p.error("training needs --data-dir and --configs (or pass --plot to draw the log)")
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
                                                                      "hidden_dim", "latent_dim", "dropout", "dec_init")},
                            "data_dir": args.data_dir, "code": CODE, "wall_s": round(time.time() - t0, 1), **res})  # fmt: skip
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
