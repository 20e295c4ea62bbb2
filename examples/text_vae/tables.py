"""The README tables of the text example, rendered from the committed results JSON files.

    python -m examples.text_vae.tables            # rewrites every table between its markers in the READMEs
    python -m examples.text_vae.tables --check    # exits 1 if a README table differs from its JSON

A table lives in a README between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` (blank lines around it); ``TABLES``
says which function renders it from which file. ``tests/test_examples_text_vae_tables.py`` fails
the suite when a cell disagrees with its JSON, so the numbers in the READMEs are the files' numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIGURES = Path(__file__).resolve().parent / "figures"
READMES = (ROOT / "docs" / "examples.md", ROOT / "examples" / "text_vae" / "README.md")


def load(name: str) -> dict[str, Any]:
    return json.loads((FIGURES / name).read_text())


def ms(row: dict[str, Any], key: str, digits: int) -> str:
    """``mean ± sample std`` of one metric of one row."""
    m, s = row["mean"][key], row["std"][key]
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def signed(x: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f}"


def p_value(p: float) -> str:
    """Exact values as they are: 0.375, 0.0625, 1."""
    return f"{p:.3g}"


COLUMNS = (("Rec ↓", "rec", 2), ("KL", "kl", 3), ("ELBO ↑", "elbo", 2), ("PPL ↓", "ppl", 2), ("AU", "au", 1),
           ("MI", "mi", 3))  # fmt: skip


def metric_table(rows: dict[str, Any], names: list[str], probes: bool = False) -> str:
    """One line per schedule: mean ± sample std of every metric (and the probes' mean accuracy)."""
    factors = [k[len("probe_") :] for k in rows[names[0]]["mean"] if k.startswith("probe_")] if probes else []
    head = ["schedule", *(c for c, _, _ in COLUMNS), *factors]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in names:
        cells = [ms(rows[name], key, d) for _, key, d in COLUMNS]
        cells += [f"{rows[name]['mean'][f'probe_{f}']:.2f}" for f in factors]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(rows: dict[str, Any], label: str = "") -> str:
    """Per seed: KL of both schedules, and the cyclical - monotonic differences of KL, MI and ELBO with their tests."""
    seeds = list(rows["monotonic"]["per_seed"])
    cyc = rows["cyclical"]
    head = ["", *(f"seed {s}" for s in seeds), "mean", "sign test p", "bootstrap 95 %"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in ("monotonic", "cyclical"):
        per = rows[name]["per_seed"]
        lines.append(f"| KL {label}{name} | " + " | ".join(f"{per[s]['kl']:.3f}" for s in seeds)
                     + f" | {rows[name]['mean']['kl']:.3f} | | |")  # fmt: skip
    for key, field in (("KL", "paired"), ("MI", "paired_mi"), ("ELBO", "paired_elbo")):
        p = cyc[field]
        lo, hi = p["bootstrap_95"]
        lines.append(f"| {key} cyclical − monotonic | " + " | ".join(signed(p["per_seed"][s]) for s in seeds)
                     + f" | {signed(p['mean'])} | {p_value(p['sign_test_p'])} ({p['greater']} of {p['n']} > 0) "
                     f"| [{signed(lo)}, {signed(hi)}] |")  # fmt: skip
    return "\n".join(lines)


def demo_table() -> str:
    r = load("results.json")
    return metric_table(r, ["constant", "monotonic", "cyclical"], probes=True)


def demo_table_short() -> str:
    """The demo's table without the probes (docs/examples.md)."""
    return metric_table(load("results.json"), ["constant", "monotonic", "cyclical"])


def demo_paired() -> str:
    return paired_table(load("results.json"))


def paper_budget_table() -> str:
    """The 40-epoch comparison: each schedule at the end of the schedule and after the persistence phase."""
    r = load("results_40ep.json")
    phases = {f"{name}, end of schedule": r[name] for name in ("monotonic", "cyclical")}
    phases.update({f"{name}, after persistence": r[name]["persist"] for name in ("monotonic", "cyclical")})
    return metric_table(phases, list(phases))


def paper_budget_paired() -> str:
    return paired_table(load("results_40ep.json"))


def paper_budget_paired_persist() -> str:
    r = load("results_40ep.json")
    return paired_table({name: r[name]["persist"] for name in ("monotonic", "cyclical")})


def budget_table() -> str:
    """Cyclical - monotonic KL and MI per seed at each budget (``figures/budget.json``)."""
    b = load("budget.json")
    lines = ["| budget | steps | seeds | KL cyclical − monotonic, per seed | mean | sign test p | MI, per seed | mean |",
             "|---|---:|---:|---|---:|---:|---|---:|"]  # fmt: skip
    for row in b["budgets"]:
        kl, mi = row["kl_diff"], row["mi_diff"]
        lines.append(
            f"| {row['label']} | {row['steps']} | {len(kl)} | {' / '.join(signed(v) for v in kl.values())} "
            f"| {signed(row['kl_diff_mean'])} | {p_value(row['kl_sign_test_p'])} "
            f"| {' / '.join(signed(v) for v in mi.values())} | {signed(row['mi_diff_mean'])} |"
        )
    return "\n".join(lines)


def corpus_table() -> str:
    s = load("corpus_stats.json")
    head = (
        "| factor | values | entropy (nats) | words per sentence | bag-of-words test accuracy | information ≥ (nats) |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for name, f in s["factors"].items():
        lines.append(f"| {name} | {f['values']} | {f['entropy_nats']:.3f} | {f['words_per_sentence']:.2f} "
                     f"| {f['bow_test_accuracy']:.3f} | {f['information_lower_bound_nats']:.3f} |")  # fmt: skip
    lines.append(f"| all | {'·'.join(str(f['values']) for f in s['factors'].values())} | {s['factor_entropy_nats']:.3f} "
                 f"| | | **{s['sentence_information_nats']:.3f}** |")  # fmt: skip
    return "\n".join(lines)


def v1_five_seeds() -> str:
    """The previous corpus's five-seed table: seeds 0-2 of the demo+delay command, 3-4 of their own command."""
    a, b = load("corpus_v1/results_delay.json"), load("results_seeds34.json")
    per = {name: {**a[name]["per_seed"], **b[name]["per_seed"]} for name in ("monotonic", "cyclical")}
    seeds = list(per["monotonic"])

    def row(label: str, values: list[float], fmt: Callable[[float], str]) -> str:
        m, sd = float(np.mean(values)), float(np.std(values, ddof=1))
        return f"| {label} | " + " | ".join(fmt(v) for v in values) + f" | {fmt(m)} ± {sd:.3f} |"

    kl = {n: [per[n][s]["kl"] for s in seeds] for n in per}
    lines = ["| seed | " + " | ".join(seeds) + " | mean ± sample std |", "|---|" + "---:|" * (len(seeds) + 1)]
    lines.append(row("monotonic", kl["monotonic"], lambda v: f"{v:.3f}"))
    lines.append(row("cyclical", kl["cyclical"], lambda v: f"{v:.3f}"))
    lines.append(row("cyclical − monotonic", [c - m for c, m in zip(kl["cyclical"], kl["monotonic"])], signed))
    elbo = [per["cyclical"][s]["elbo"] - per["monotonic"][s]["elbo"] for s in seeds]
    lines.append(row("ELBO, cyclical − monotonic", elbo, signed))
    return "\n".join(lines)


def v1_demo() -> str:
    return metric_table(load("corpus_v1/results_delay.json"), ["constant", "monotonic", "cyclical", "delay+cyclical"],
                        probes=True)  # fmt: skip


def v1_start0() -> str:
    return metric_table(load("results_start0.json"), ["constant", "monotonic", "cyclical"], probes=True)


def v1_extra() -> str:
    return metric_table(load("results_extra.json"), ["cyclical+fb", "cyclical+lr"], probes=True)


TABLES: dict[str, Callable[[], str]] = {
    "text-v1-demo": v1_demo,
    "text-v1-five-seeds": v1_five_seeds,
    "text-v1-start0": v1_start0,
    "text-v1-extra": v1_extra,
    "text-demo": demo_table,
    "text-demo-short": demo_table_short,
    "text-demo-paired": demo_paired,
    "text-40ep": paper_budget_table,
    "text-40ep-paired": paper_budget_paired,
    "text-40ep-paired-persist": paper_budget_paired_persist,
    "text-budget": budget_table,
    "text-corpus": corpus_table,
}

# blank lines around the table: Markdown then renders it as a table whatever the comment lines do
MARKER = re.compile(r"<!-- table:(?P<name>[\w-]+) -->\n\n(?P<body>.*?)\n\n<!-- /table:(?P=name) -->", re.DOTALL)


def tables_in(text: str) -> dict[str, str]:
    """``{name: body}`` of every marked table in a README's text (a name may appear more than once: last wins)."""
    return {m["name"]: m["body"] for m in MARKER.finditer(text)}


def render(text: str) -> str:
    """The README text with every marked table replaced by its rendering from the JSON."""
    return MARKER.sub(
        lambda m: f"<!-- table:{m['name']} -->\n\n{TABLES[m['name']]()}\n\n<!-- /table:{m['name']} -->", text
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if a table differs")
    args = p.parse_args(argv)
    stale = []
    for readme in READMES:
        text = readme.read_text()
        new = render(text)
        if new != text:
            stale.append(readme)
            if not args.check:
                readme.write_text(new)
    for readme in stale:
        print(f"{'differs' if args.check else 'rewritten'}: {readme.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
