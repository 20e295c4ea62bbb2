"""The text example's committed results: config blocks, merged seeds, and the README tables against their JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from examples.text_vae import budget, tables
from examples.text_vae.compare import compare, parse_args
from examples.text_vae.merge import merge

FIGURES = Path(tables.FIGURES)


def _tiny(out: Path, *seeds: str) -> dict:
    cfg = parse_args(
        ["--out", str(out), "--seeds", *seeds, "--rows", "monotonic", "cyclical", "--max-epochs", "2", "--persist-epochs",
         "1", "--n-cycle", "2", "--corpus-size", "120", "--emb-dim", "8", "--hidden-dim", "8", "--latent-dim", "2", "--probe-size", "60",
         "--threads", "1", "--jobs", "1"]
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        compare(cfg)
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "results.json").read_text())


def test_merge_of_seed_groups_equals_one_run_of_all_seeds(tmp_path: Path) -> None:
    whole = _tiny(tmp_path / "whole", "0", "1", "2")
    merged = merge([_tiny(tmp_path / "a", "0", "2"), _tiny(tmp_path / "b", "1")])
    assert merged["config"]["seeds"] == [0, 2, 1] and " && " in merged["config"]["command"]
    for name in ("monotonic", "cyclical"):
        for key in ("per_seed", "alert"):
            assert merged[name][key] == {s: whole[name][key][s] for s in ("0", "2", "1")}, (name, key)
        assert merged[name]["mean"] == pytest.approx(whole[name]["mean"])
        assert merged[name]["std"] == pytest.approx(whole[name]["std"])
        assert merged[name]["persist"]["mean"] == pytest.approx(whole[name]["persist"]["mean"])
    for key in ("paired", "paired_mi", "paired_elbo"):
        got, want = merged["cyclical"][key], whole["cyclical"][key]
        assert got["per_seed"] == pytest.approx(want["per_seed"]) and got["sign_test_p"] == want["sign_test_p"]
    assert merged["cyclical"]["persist"]["paired"]["per_seed"] == pytest.approx(
        whole["cyclical"]["persist"]["paired"]["per_seed"]
    )
    with pytest.raises(ValueError, match="disjoint seeds"):
        merge([whole, whole])
    other = json.loads(json.dumps(whole))
    other["config"]["steps"] += 1
    with pytest.raises(ValueError, match=r"must share \['steps'\]"):
        merge([whole, {**other, "config": {**other["config"], "seeds": [7]}}])


def committed_results() -> list[Path]:
    return sorted(
        p for p in FIGURES.rglob("*.json") if p.name.startswith(("results", "valid_")) or p.name == "budget.json"
    )


@pytest.mark.parametrize("path", committed_results(), ids=lambda p: str(p.relative_to(FIGURES)))
def test_every_committed_results_json_has_a_config_block(path: Path) -> None:
    block = json.loads(path.read_text())["config"]
    for key in ("steps", "seeds", "command", "commit"):
        assert block.get(key) not in (None, "", []), key
    commits = block["commit"] if isinstance(block["commit"], list) else [block["commit"]]
    assert all(re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", c) for c in commits)


def test_readme_tables_match_their_json() -> None:
    """Every marked table in the READMEs is exactly what tables.py renders from the committed JSON."""
    found = {}
    for readme in tables.READMES:
        for name, body in tables.tables_in(readme.read_text()).items():
            assert body == tables.TABLES[name](), f"{readme.name}: table {name!r} differs from its JSON"
            found[name] = readme
    assert {"text-demo", "text-40ep", "text-40ep-paired", "text-budget", "text-corpus"} <= set(found)


def test_a_cell_that_disagrees_with_its_json_is_caught() -> None:
    text = "intro\n<!-- table:text-corpus -->\n\n" + tables.corpus_table() + "\n\n<!-- /table:text-corpus -->\n"
    assert tables.render(text) == text
    stats = json.loads((FIGURES / "corpus_stats.json").read_text())
    cell = f"**{stats['sentence_information_nats']:.3f}**"
    wrong = text.replace(cell, "**9.999**")
    assert wrong != text and tables.tables_in(wrong)["text-corpus"] != tables.corpus_table()
    assert tables.render(wrong) == text  # --write puts the JSON's number back


def test_budget_json_is_what_budget_py_computes_from_its_sources() -> None:
    committed = json.loads((FIGURES / "budget.json").read_text())
    rows = [budget.budget_row(label, name) for label, name in budget.SOURCES]
    assert committed["budgets"] == json.loads(json.dumps(rows))
    assert [r["steps"] for r in rows] == sorted(r["steps"] for r in rows) and len(rows) >= 2
