"""Merge compare.py results of the same configuration run for different seeds into one results JSON.

    python -m examples.text_vae.merge OUT.json A/results.json B/results.json ...

Every run seeds itself and builds its own data, so ``--seeds 0 1 2`` and ``--seeds 3 4`` are
the runs of ``--seeds 0 1 2 3 4`` (a test checks ``--jobs`` against this; the seed, not the process,
decides a run). The inputs must agree on everything but the seeds, the runs at once and the commit
may differ only if the code did not (it is refused otherwise). The merged file has the per-seed
values of all inputs, their mean, sample std, paired differences and tests recomputed, and a
``config`` block with every input's command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from examples.text_vae.compare import add_paired, summarize

SAME = ("steps", "schedule_steps", "persist_steps", "steps_per_epoch", "rows", "threads", "commit")


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from several with the same configuration and disjoint seeds.

    Raises:
        ValueError: If the inputs differ in a ``SAME`` key of their config, or share a seed.
    """
    if len(parts) < 2:
        raise ValueError(f"`parts` must hold at least 2 results to merge, got {len(parts)}")
    first = parts[0]["config"]
    for part in parts[1:]:
        bad = [k for k in SAME if part["config"].get(k) != first.get(k)]
        if bad:
            raise ValueError(f"results to merge must share {bad}; got {[part['config'].get(k) for k in bad]} "
                             f"against {[first.get(k) for k in bad]}")  # fmt: skip
    seeds = [s for part in parts for s in part["config"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"results to merge must have disjoint seeds, got {[p['config']['seeds'] for p in parts]}")
    rows = first["rows"]
    out: dict[str, Any] = {
        "config": {
            **{k: first[k] for k in SAME},
            "seeds": seeds,
            "command": " && ".join(p["config"]["command"] for p in parts),
            "merged_with": "python -m examples.text_vae.merge",
        }
    }
    for name in rows:
        per = {int(s): m for p in parts for s, m in p[name]["per_seed"].items()}
        out[name] = summarize(per)
        if "persist" in parts[0][name]:
            out[name]["persist"] = summarize(
                {int(s): m for p in parts for s, m in p[name]["persist"]["per_seed"].items()}
            )
        for key in ("alert", "seconds"):
            out[name][key] = {s: v for p in parts for s, v in p[name][key].items()}
    results = {name: out[name] for name in rows}
    add_paired(results)
    if all("persist" in r for r in results.values()):
        add_paired({name: r["persist"] for name, r in results.items()})
    return out


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        raise SystemExit("usage: python -m examples.text_vae.merge OUT.json A/results.json B/results.json ...")
    merged = merge([json.loads(Path(p).read_text()) for p in argv[1:]])
    Path(argv[0]).write_text(json.dumps(merged, indent=2) + "\n")
    print(f"{argv[0]}: seeds {merged['config']['seeds']}")


if __name__ == "__main__":
    main(sys.argv[1:])
