"""Issue 19's recipe, chosen again, in one call on a GPU machine: search, select, test; ends by ``--budget`` s.

    PYTHONPATH=. python3 examples/text_vae/recipe_device.py --data-dir .wordnet --out "$OUT"

1. **Search** (validation split only): ``recipe_search.search_configs()`` in its priority order, seed 0
   for every configuration, then seed 1, ``--search-jobs`` runs at once (worker processes sharing the
   GPU, or one CPU core each); each record goes into ``search.json`` as its run ends. The search stops
   early enough to leave the test phase the time it needs (estimated from the search's own run times).
2. **Select**: ``recipe_search.select`` (the rule written before the search, ``recipe_search.RULE``)
   writes the chosen configuration, and the ``compare.py`` flags that run it, into ``choice.json``.
3. **Test**: ``compare.py`` on the test split, seeds 0, 1, 2, for constant, monotonic, cyclical, the
   current recipe (``--recipe``) and the chosen one (``--recipe`` plus the chosen knobs), all at the
   same budget on the same device, one process per (row, seed), all at once; ``test.json`` gathers
   the per-seed test numbers, their means and the targets (MI >= 1 nat, AU >= 4, ELBO within 1 % of the
   best plain row).

Everything goes into ``--out`` (``$OUT`` on the device machine): ``search.json``, ``choice.json``,
``test.json`` and ``driver.log``; ``compare.py``'s own outputs (checkpoints, figures) stay in ``--scratch``.
A dry run on a CPU with tiny settings (the README's command) checks the wiring in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: make `examples` and `lightning_kl_anneal` importable
    sys.path.insert(0, str(ROOT))

import torch

from examples.text_vae import recipe_search
from examples.text_vae.compare import summarize

TEST_ROWS = ("constant", "monotonic", "cyclical", "recipe_current", "recipe_chosen")
PLAIN = ("constant", "monotonic", "cyclical")


class Log:
    """Lines to the console and to ``driver.log``, each with the seconds since the start."""

    def __init__(self, path: Path, t0: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: TextIO = path.open("a")
        self.t0 = t0

    def __call__(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            line = f"[{time.time() - self.t0:6.1f} s] {line}"
            print(line, flush=True)
            self.file.write(line + "\n")
        self.file.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=".wordnet", help="PTB-format folder (default: %(default)s)")
    p.add_argument("--out", default=os.environ.get("OUT", "runs/recipe_device"), help="default: $OUT")
    p.add_argument("--scratch", default="runs/recipe_device_scratch", help="compare.py's own outputs")
    p.add_argument("--budget", type=float, default=480.0, help="seconds from the start by which everything ends")
    p.add_argument("--margin", type=float, default=25.0, help="seconds kept free at the end (writing, stragglers)")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--search-jobs", type=int, default=0, help="0: the CPU cores less 2 (at least 1)")
    p.add_argument("--test-jobs", type=int, default=15, help="compare.py processes at once")
    p.add_argument("--configs", nargs="+", default=["search"], help="recipe_search configs ('search': all, in order)")
    p.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--test-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--test-guess", type=float, default=150.0, help="seconds a test run takes, before any run ended")
    p.add_argument("--train-sentences", type=int, default=4000)
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--probe-size", type=int, default=3000)
    return p.parse_args(argv)


def search_args(args: argparse.Namespace, accelerator: str) -> argparse.Namespace:
    """``recipe_search``'s settings: its defaults (the demo's model) with this call's data and budget."""
    ns = argparse.Namespace(
        data_dir=args.data_dir, max_epochs=args.max_epochs, batch_size=32, train_sentences=args.train_sentences,
        max_vocab=10_000, emb_dim=64, hidden_dim=128, latent_dim=16, dropout=0.5, dec_init="h0",
        accelerator=accelerator,
    )  # fmt: skip
    return ns


def seconds_for_test_phase(walls: list[float], guess: float, waves: int = 1) -> float:
    """Seconds the test phase needs: a compare.py run is a search run plus start-up, the test split, probes
    and figures, taken as 1.3 times the slowest search run plus 30 s (``guess`` before any run ended), times
    the ``waves`` of runs that ``--test-jobs`` at once make.

    Example:
        >>> seconds_for_test_phase([40.0, 50.0], guess=150.0), seconds_for_test_phase([], guess=150.0), seconds_for_test_phase([50.0], 150.0, waves=2)
        (95.0, 150.0, 190.0)
    """
    return waves * (1.3 * max(walls) + 30.0 if walls else guess)


class GpuFailing(RuntimeError):
    """The first search runs on the GPU all failed: the search goes on on the CPU."""


def compare_command(
    args: argparse.Namespace, accelerator: str, row: str, seed: int, flags: list[str], out: Path
) -> list[str]:
    base = [sys.executable, str(ROOT / "examples/text_vae/compare.py"), "--data-dir", args.data_dir,
            "--train-sentences", str(args.train_sentences), "--max-epochs", str(args.max_epochs),
            "--seeds", str(seed), "--jobs", "1", "--threads", "1", "--accelerator", accelerator,
            "--probe-size", str(args.probe_size), "--out", str(out)]  # fmt: skip
    if row in PLAIN:
        return [*base, "--rows", row]
    return [*base, *flags, "--rows", "recipe"]


def start_preflight(args: argparse.Namespace, accelerator: str, log: Log) -> subprocess.Popen | None:
    """On a GPU, a 5-step compare.py run of a recipe row with every knob (BN, log ramp, delay, scheduled free bits),
    started beside the search: if it fails, the test phase runs on the CPU instead (all its rows alike)."""
    if accelerator != "gpu":
        return None
    out = Path(args.scratch) / "preflight"
    out.mkdir(parents=True, exist_ok=True)
    flags = ["--recipe", "--recipe-bn-gamma", "0.5", "--recipe-shape", "log", "--recipe-delay", "0.1"]
    cmd = [*compare_command(args, accelerator, "preflight", 0, flags, out), "--max-steps", "5", "--probe-size", "50"]
    log("preflight (compare.py on the GPU, 5 steps): " + " ".join(cmd[1:]))
    return subprocess.Popen(
        cmd, stdout=(out / "stdout.log").open("w"), stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
    )


def preflight_ok(proc: subprocess.Popen | None, args: argparse.Namespace, end: float, log: Log) -> bool:
    if proc is None:
        return True
    try:
        proc.wait(timeout=max(1.0, end - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.returncode == 0:
        log("preflight: compare.py ran on the GPU")
        return True
    tail = (Path(args.scratch) / "preflight" / "stdout.log").read_text()[-2000:]
    log(f"preflight failed (exit {proc.returncode}); the test phase runs on the CPU:\n{tail}")
    return False


def child_env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (compare.py imports ``examples`` and the library)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }


def run_test_phase(
    args: argparse.Namespace, accelerator: str, flags: list[str] | None, end: float, log: Log
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every (row, seed) of the test comparison as its own compare.py process, ``--test-jobs`` at once, stopped at
    ``end``; returns each finished run's test metrics, alert and seconds by row and seed. ``flags``: the chosen
    recipe's compare.py flags (None: no chosen row)."""
    scratch = Path(args.scratch)
    env = child_env()
    tasks = []
    for seed in args.test_seeds:  # seed 0's five rows first: a cut-short test phase keeps whole seeds
        for row in TEST_ROWS:
            if row == "recipe_chosen" and flags is None:
                continue
            row_flags = ["--recipe"] if row == "recipe_current" else flags or []
            out = scratch / f"{row}_seed{seed}"
            tasks.append((row, seed, compare_command(args, accelerator, row, seed, row_flags, out), out))
    running: list[tuple[str, int, subprocess.Popen, Path, TextIO]] = []
    results: dict[str, dict[int, dict[str, Any]]] = {row: {} for row, *_ in tasks}
    queue = list(tasks)
    for row, seed, cmd, out in tasks:
        if row == "recipe_chosen" and seed == args.test_seeds[0]:
            log("test command (chosen recipe, first seed): " + " ".join(cmd[1:]))
    while (queue or running) and time.time() < end:
        while queue and len(running) < args.test_jobs:
            row, seed, cmd, out = queue.pop(0)
            out.mkdir(parents=True, exist_ok=True)
            stream = (out / "stdout.log").open("w")
            running.append((row, seed, subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT, env=env, cwd=ROOT),
                            out, stream))  # fmt: skip
        time.sleep(0.5)
        for item in [r for r in running if r[2].poll() is not None]:
            running.remove(item)
            row, seed, proc, out, stream = item
            stream.close()
            if proc.returncode != 0:
                tail = (out / "stdout.log").read_text()[-2000:]
                log(f"test {row} seed {seed}: compare.py failed (exit {proc.returncode}):\n{tail}")
                continue
            saved = json.loads((out / "results.json").read_text())
            name = "recipe" if row not in PLAIN else row
            metrics = saved[name]["per_seed"][str(seed)]
            results[row][seed] = {"metrics": metrics, "alert": saved[name]["alert"][str(seed)],
                                  "seconds": saved[name]["seconds"][str(seed)], "command": saved["config"]["command"]}  # fmt: skip
            m = metrics
            log(f"test {row:<15} seed {seed}: elbo {m['elbo']:8.3f} kl {m['kl']:6.3f} mi {m['mi']:6.3f} au {m['au']:4.0f} "
                f"dim90 {m.get('dim90', float('nan')):3.0f} ppl {m['ppl']:7.2f} ({saved[name]['seconds'][str(seed)]['wall']:.0f} s)")  # fmt: skip
    for row, seed, proc, _, stream in running:  # the deadline
        proc.kill()
        proc.wait()
        stream.close()
        log(f"test {row} seed {seed}: stopped at the deadline")
    for row, seed, _, _ in queue:
        log(f"test {row} seed {seed}: not started (deadline)")
    return results


def summarize_test_runs(results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per row: per-seed metrics, mean and sample std (compare.summarize); per seed of the recipes: the ELBO gap to the
    seed's best plain row; the targets on the means, against the plain row with the best mean ELBO."""
    rows = {row: summarize({s: r["metrics"] for s, r in per.items()}) for row, per in results.items() if per}
    common = sorted(set.intersection(*(set(per) for per in results.values()))) if all(results.values()) else []
    out: dict[str, Any] = {"rows": rows, "seeds_every_row": common}
    plain = {p: sum(results[p][s]["metrics"]["elbo"] for s in common) / len(common) for p in PLAIN} if common else {}
    if plain:
        ref_name = max(plain, key=plain.__getitem__)
        ref = plain[ref_name]
        out["reference"] = {"row": ref_name, "elbo": ref, "seeds": common}
        for row in [r for r in ("recipe_current", "recipe_chosen") if r in results]:
            mean = {
                k: sum(results[row][s]["metrics"][k] for s in common) / len(common)
                for k in ("elbo", "mi", "au", "dim90")
            }
            gap = (ref - mean["elbo"]) / abs(ref)
            per_seed_gap = {str(s): (max(results[p][s]["metrics"]["elbo"] for p in PLAIN) - results[row][s]["metrics"]["elbo"])
                            / abs(max(results[p][s]["metrics"]["elbo"] for p in PLAIN)) for s in common}  # fmt: skip
            out[row] = {**mean, "gap": gap, "gap_per_seed_vs_best_plain_of_seed": per_seed_gap,
                        "met": {"mi": mean["mi"] >= 1.0, "au": mean["au"] >= 4.0, "elbo": gap <= 0.01}}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    t0 = time.time()
    args = parse_args(argv)
    out = Path(args.out)
    log = Log(out / "driver.log", t0)
    end = t0 + args.budget - args.margin
    accelerator = args.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = args.search_jobs or max(1, cores - 2)
    if accelerator == "gpu":
        device = (
            torch.cuda.get_device_name(0)
            if torch.cuda.is_available()
            else "gpu requested, but torch sees no CUDA device"
        )
    else:
        device = f"cpu ({cores} cores)"
    log(f"recipe_device: {device}, torch {torch.__version__}, search jobs {jobs}, test jobs {args.test_jobs}, "
        f"budget {args.budget:.0f} s, data {args.data_dir}, {args.train_sentences} sentences x {args.max_epochs} epochs")  # fmt: skip

    # 1. the validation search, cut so that the test phase fits
    sargs = search_args(args, accelerator)
    tasks = recipe_search.plan(args.configs, args.search_seeds)
    search_log = out / "search.json"
    log(
        f"search: {len(tasks)} runs planned ({len(tasks) // len(args.search_seeds)} configs x seeds {args.search_seeds})"
    )

    def on_record(record: dict[str, Any]) -> None:
        recipe_search.append_record(search_log, record)
        log(recipe_search.format_record(record))

    n_test = len(args.test_seeds) * len(TEST_ROWS)
    waves = -(-n_test // args.test_jobs)

    def stop_at(walls: list[float]) -> float:
        return end - seconds_for_test_phase(walls, args.test_guess, waves)

    failed: list[tuple[str, int]] = []

    def on_error(name: str, seed: int, error: BaseException) -> None:
        log(f"search: {name} seed {seed} failed, the search goes on: {type(error).__name__}: {error}")
        failed.append((name, seed))
        if sargs.accelerator == "gpu" and len(failed) >= 3 and not search_log.exists():
            raise GpuFailing(f"the first {len(failed)} runs on the GPU failed")

    preflight = start_preflight(args, accelerator, log)
    try:
        left = recipe_search.run_tasks(tasks, sargs, jobs, on_record, stop_at, on_error)
    except GpuFailing as error:
        log(
            f"{error}: the search starts again on the CPU ({max(1, cores - 2)} jobs), and the test phase runs there too"
        )
        accelerator = sargs.accelerator = "cpu"
        device = f"cpu ({cores} cores), after the GPU failed"
        left = recipe_search.run_tasks(tasks, sargs, max(1, cores - 2), on_record, stop_at, on_error)
    log(f"search done: {len(tasks) - len(left)} of {len(tasks)} runs" + (f"; not run: {left}" if left else ""))
    if preflight is not None and accelerator != "gpu":  # the search left the GPU: no use for its answer
        preflight.kill()
        preflight.wait()
    if accelerator == "gpu" and not preflight_ok(preflight, args, end, log):
        accelerator, device = "cpu", f"cpu ({cores} cores; the GPU preflight failed)"

    # 2. the selection rule, on the validation records of this search only
    records = json.loads(search_log.read_text()) if search_log.exists() else []
    try:
        choice: dict[str, Any] | None = recipe_search.select(records)
    except ValueError as error:  # no plain schedule or no candidate finished: test the other rows all the same
        log(f"selection impossible: {error}; the test phase runs without a chosen recipe")
        choice = None
    else:
        (out / "choice.json").write_text(json.dumps(choice, indent=1) + "\n")
        log(recipe_search.format_selection(choice))

    # 3. the test comparison, 3 seeds, every row at the same budget on the same device
    results = run_test_phase(args, accelerator, choice["compare_flags"] if choice else None, end, log)
    summary = summarize_test_runs(results)
    payload = {
        "config": {"device": device, "accelerator": accelerator, "budget_s": args.budget, "data_dir": args.data_dir,
                   "train_sentences": args.train_sentences, "max_epochs": args.max_epochs, "test_seeds": args.test_seeds,
                   "chosen": choice and choice["name"], "chosen_flags": choice and choice["compare_flags"], "split": "test"},
        "summary": summary,
        "runs": {row: {str(s): r for s, r in per.items()} for row, per in results.items()},
    }  # fmt: skip
    (out / "test.json").write_text(json.dumps(payload, indent=1) + "\n")
    for row in ("recipe_current", "recipe_chosen"):
        if row in summary:
            r = summary[row]
            log(f"test, {row}: elbo {r['elbo']:.3f} (gap {100 * r['gap']:.2f} % to {summary['reference']['row']}), "
                f"mi {r['mi']:.3f}, au {r['au']:.1f}, dim90 {r['dim90']:.1f}; targets met: {r['met']}")  # fmt: skip
    log(f"done in {time.time() - t0:.0f} s; files in {out}: {sorted(p.name for p in out.iterdir())}")
    return payload


if __name__ == "__main__":
    main()
