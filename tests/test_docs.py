"""The README and the documentation pages: every code block runs, or says that it is a sketch.

A fenced block is checked by its language: ``python`` blocks of one page run in order in one namespace (a later block
may use what an earlier one defined), in a temporary working directory; ``yaml`` blocks are parsed, and every
``class_path`` / ``_target_`` in them is instantiated with its arguments; ``text`` blocks are output or formulas,
not code. Any block whose info string carries ``title="Sketch...`` (shown as the block's title on the site) is not
run: a Python sketch must still compile. A block in any other language that is not marked as a sketch fails.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import lightning_kl_anneal

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[A-Za-z]*)(?P<info>.*)$")
SKETCH = re.compile(r'title="Sketch\b')


@dataclass
class Block:
    lang: str
    sketch: bool
    line: int
    code: str


def blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        assert i < len(lines), f"{page.name}:{start + 1}: unclosed code block"
        out.append(Block(m["lang"], bool(SKETCH.search(m["info"])), start + 1, "\n".join(lines[start + 1 : i]) + "\n"))
        i += 1
    return out


def _instantiate(node: Any) -> int:
    """Instantiate every ``class_path`` (LightningCLI) and ``_target_`` (Hydra) node; return how many."""
    count = 0
    if isinstance(node, dict):
        if "_target_" in node:
            from hydra.utils import instantiate

            instantiate(node)
            return 1
        if "class_path" in node:
            module, _, name = node["class_path"].rpartition(".")
            getattr(importlib.import_module(module), name)(**node.get("init_args", {}))
            return 1
        for value in node.values():
            count += _instantiate(value)
    elif isinstance(node, list):
        for value in node:
            count += _instantiate(value)
    return count


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_code_block_runs_or_is_a_sketch(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # what a block writes (lightning_logs/, checkpoints) stays out of the checkout
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for block in blocks(page):
        where = f"{page.relative_to(ROOT)}:{block.line}"
        if block.lang == "python":
            code = compile(block.code, where, "exec")
            if not block.sketch:
                exec(code, namespace)  # noqa: S102 - running the pages' own examples is this test's job
        elif block.lang == "yaml":
            config = yaml.safe_load(block.code)
            if not block.sketch:
                assert _instantiate(config), f"{where}: a YAML block with nothing to instantiate"
        elif block.lang != "text":
            assert block.sketch, (
                f'{where}: a `{block.lang or "(no language)"}` block that is neither run nor marked title="Sketch: ..."'
            )


def test_the_pages_have_blocks_that_run() -> None:
    runnable = [b for p in PAGES for b in blocks(p) if b.lang in ("python", "yaml") and not b.sketch]
    assert len(runnable) >= 10, "most examples in the docs should run, not be sketches"
    assert any(not b.sketch and b.lang == "python" for b in blocks(ROOT / "README.md")), "the README's example runs"


def test_block_parser_sees_language_and_sketch_mark(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text('text\n\n```python\nx = 1\n```\n\n```bash title="Sketch: shell"\nls\n```\n\n```\nplain\n```\n')
    assert [(b.lang, b.sketch, b.line, b.code) for b in blocks(page)] == [
        ("python", False, 3, "x = 1\n"),
        ("bash", True, 7, "ls\n"),
        ("", False, 11, "plain\n"),
    ]


def test_every_public_name_is_in_the_api_reference() -> None:
    entries = re.findall(r"^::: lightning_kl_anneal\.(\w+)$", (ROOT / "docs" / "api.md").read_text(), re.MULTILINE)
    assert sorted(entries) == sorted(lightning_kl_anneal.__all__)


def test_readme_is_a_front_page() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 20 * 1024, f"README.md is {size} bytes; the details belong in docs/"
