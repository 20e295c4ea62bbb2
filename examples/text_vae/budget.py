"""How the cyclical - monotonic gap grows with the training budget: ``figures/budget.{json,png}``.

    python -m examples.text_vae.budget

after the 20-epoch runs (the 1x runs are the demo's, the 4x the 40-epoch comparison's end of schedule)::

    for s in 0 1 2; do python examples/text_vae/compare.py --rows monotonic cyclical --seeds $s \\
        --max-epochs 20 --out runs/text_20ep_s$s; done
    python -m examples.text_vae.merge examples/text_vae/figures/results_20ep.json runs/text_20ep_s{0,1,2}/results.json

Reads the committed comparisons of monotonic and cyclical at several budgets, each its own runs
(a budget's schedule has its own cycles: a 1x run is not the first quarter of a 4x run), and
plots the per-seed paired differences of test KL and MI against the number of training steps,
seeds as points. Each budget comes from one results JSON (``SOURCES``); with a persistence phase
the budget's own numbers are the end of its schedule (``results[row]``), never the persistence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from examples.text_vae.compare import sign_test_p

FIGURES = Path(__file__).resolve().parent / "figures"
COMMAND = "python -m examples.text_vae.budget"
# (label, results file): the demo's 10 epochs, 20, and the paper's 40
SOURCES: tuple[tuple[str, str], ...] = (
    ("1x (10 epochs, the demo)", "results.json"),
    ("2x (20 epochs)", "results_20ep.json"),
    ("4x (40 epochs)", "results_40ep.json"),
)


def budget_row(label: str, name: str) -> dict[str, Any]:
    """The paired cyclical - monotonic KL and MI differences of one results file."""
    r = json.loads((FIGURES / name).read_text())
    cfg = r["config"]
    mono, cyc = r["monotonic"]["per_seed"], r["cyclical"]["per_seed"]
    seeds = [s for s in mono if s in cyc]
    kl = {s: cyc[s]["kl"] - mono[s]["kl"] for s in seeds}
    mi = {s: cyc[s]["mi"] - mono[s]["mi"] for s in seeds}
    return {
        "label": label,
        "source": name,
        "steps": cfg["schedule_steps"],
        "command": cfg["command"],
        "commit": cfg["commit"],
        "kl_diff": kl,
        "mi_diff": mi,
        "kl_diff_mean": float(np.mean(list(kl.values()))),
        "mi_diff_mean": float(np.mean(list(mi.values()))),
        "kl_sign_test_p": sign_test_p(list(kl.values())),
        "mi_sign_test_p": sign_test_p(list(mi.values())),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharex=True)
    for ax, key, title in zip(axes, ("kl_diff", "mi_diff"), ("KL", "MI")):
        for row in rows:
            values = list(row[key].values())
            ax.scatter([row["steps"]] * len(values), values, s=18, alpha=0.7, color="C0")
        ax.plot([r["steps"] for r in rows], [r[f"{key}_mean"] for r in rows], "-o", color="C1", label="mean over seeds")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["steps"] for r in rows], [f"{r['steps']}" for r in rows])
        ax.set_xlabel("training steps (schedule)")
        ax.set_ylabel(f"cyclical − monotonic {title} (nats)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle("test split, best-validation checkpoint; each point a seed")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> dict[str, Any]:
    rows = [budget_row(label, name) for label, name in SOURCES]
    out = {"config": {"command": COMMAND, "sources": [name for _, name in SOURCES],
                      "steps": [r["steps"] for r in rows], "seeds": {r["label"]: list(r["kl_diff"]) for r in rows},
                      "commit": sorted({r["commit"] for r in rows})},
           "budgets": rows}  # fmt: skip
    (FIGURES / "budget.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(rows, FIGURES / "budget.png")
    for r in rows:
        print(f"{r['label']:<28} {r['steps']:>6} steps  KL diff mean {r['kl_diff_mean']:+.3f} (sign p {r['kl_sign_test_p']:.3f})"
              f"  MI diff mean {r['mi_diff_mean']:+.3f}")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
