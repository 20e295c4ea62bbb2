"""Re-open probe: how many steps this model needs to start using a collapsed latent again, per β.

    python examples/dialog_cvae/probe.py --betas 0 0.05 0.15 1 --seeds 0 1 --out runs/dialog_probe

Each run trains the compare model (small preset, built-in corpus, the table's optimiser and BoW weight)
at β = 1 for ``--collapse-steps`` steps (a first cycle's plateau: the latent collapses, or not; 0 starts from
the untrained model, whose latent carries nothing), then holds β at one fixed value for ``--hold-steps`` steps, validating every ``--val-every`` steps at β = 1. The
*re-open time* of a run is the number of steps after the switch until the validation KL first exceeds
``--threshold`` nats (None: it never did). A cyclical schedule gives the latent a chance to re-open only
if its low-β window lasts well beyond that time; ``compare.py --period`` is chosen from it.
``--out`` receives ``probe.json``: per run the validation KL curve, the KL at the switch, the re-open
time, and the ``config`` (command, commit).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples.dialog_cvae` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples._runs import git_commit  # noqa: I001  (first: the commit at start)

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from examples._runs import lightning_to_file
from examples.dialog_cvae.data import DialogDataModule
from examples.dialog_cvae.model import SMALL_PRESET, DialogCVAE
from lightning_kl_anneal import ScheduledAttribute


def hold_after(step: int, total: int | None, switch: int, beta: float) -> float:
    """β = 1 before ``switch``, ``beta`` from then on (a pure function of the step)."""
    return 1.0 if step < switch else beta


def probe_one(beta: float, seed: int, args: argparse.Namespace, dm: DialogDataModule, out: Path) -> dict:
    L.seed_everything(seed, workers=True, verbose=False)
    model = DialogCVAE(
        vocab_size=dm.vocab_size, lr=args.lr, bow_weight=args.bow_weight, max_decode_len=dm.max_len,
        val_gen_contexts=0, **SMALL_PRESET,
    )  # fmt: skip
    logger = CSVLogger(out / "logs", name=f"beta{beta:g}", version=f"seed{seed}")
    schedule = ScheduledAttribute(
        functools.partial(hold_after, switch=args.collapse_steps, beta=beta), "beta", eval_value=1.0, log_name="beta"
    )
    trainer = L.Trainer(
        max_steps=args.collapse_steps + args.hold_steps,
        logger=logger,
        callbacks=[schedule],
        gradient_clip_val=5.0,
        val_check_interval=args.val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=args.val_every,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    curve: list[tuple[int, float]] = []

    class _Record(L.Callback):
        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            curve.append((trainer.global_step, float(trainer.callback_metrics["val/kl"])))

    trainer.callbacks.append(_Record())
    trainer.fit(model, datamodule=dm)
    at_switch = next((kl for step, kl in curve if step >= args.collapse_steps), float("nan"))
    before = [kl for step, kl in curve if step <= args.collapse_steps]
    reopen = next(
        (step - args.collapse_steps for step, kl in curve if step > args.collapse_steps and kl > args.threshold), None
    )
    return {
        "beta": beta,
        "seed": seed,
        "val_kl_at_switch": before[-1] if before else at_switch,
        "reopen_steps": reopen,
        "val_kl_end": curve[-1][1],
        "curve": curve,
    }


def probe_table(saved: dict) -> str:
    """The README's markdown for a ``probe.json`` (a test regenerates it from the committed file)."""
    cfg = saved["config"]
    held = (
        "β held from step 0" if cfg["collapse_steps"] == 0 else f"β held after {cfg['collapse_steps']} steps at β = 1"
    )
    header = (
        f"| {held} | seed | validation KL at the {'first check' if cfg['collapse_steps'] == 0 else 'switch'} | "
        f"steps until validation KL > {cfg['threshold']:g} nats | validation KL after {cfg['hold_steps']} steps |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|"]
    for run in saved["runs"]:
        first = run["curve"][0][1] if cfg["collapse_steps"] == 0 else run["val_kl_at_switch"]
        reopen = "not within the run" if run["reopen_steps"] is None else f"≤ {run['reopen_steps']}"
        lines.append(f"| {run['beta']:g} | {run['seed']} | {first:.3f} | {reopen} | {run['val_kl_end']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/dialog_probe")
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.05, 0.15, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--collapse-steps", type=int, default=500)
    p.add_argument("--hold-steps", type=int, default=800)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--threshold", type=float, default=1.0, help="validation KL (nats) that counts as re-opened")
    p.add_argument("--bow-weight", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.collapse_steps < 0:
        p.error(f"--collapse-steps must be >= 0 (0: hold beta from the start), got {args.collapse_steps}")
    for name in ("hold_steps", "val_every", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive int, got {getattr(args, name)}")
    if not all(0 <= b <= 1 for b in args.betas):
        p.error(f"--betas must be in [0, 1], got {args.betas}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    dm = DialogDataModule(batch_size=args.batch_size, num_test=200)
    runs, t0 = [], time.perf_counter()

    def write() -> dict:  # after every run: an interrupted probe keeps what finished
        config = dict(vars(args), steps=args.collapse_steps + args.hold_steps, commit=git_commit(),
                      wall_seconds=round(time.perf_counter() - t0, 1),
                      command="python examples/dialog_cvae/probe.py " + " ".join(sys.argv[1:]) if argv is None else None)  # fmt: skip
        result = {"config": config, "runs": runs}
        (out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    with lightning_to_file(out / "logs" / "lightning.log"):
        for beta in args.betas:
            for seed in args.seeds:
                t = time.perf_counter()
                run = probe_one(beta, seed, args, dm, out)
                runs.append(run)
                result = write()
                print(
                    f"beta {beta:g} seed {seed}: val KL {run['val_kl_at_switch']:.3f} at the switch, "
                    f"{run['val_kl_end']:.3f} at the end; re-opened (> {args.threshold} nats) after "
                    f"{run['reopen_steps']} steps ({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
    return result


if __name__ == "__main__":
    main()
