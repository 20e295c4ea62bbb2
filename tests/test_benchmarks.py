"""Tests for benchmarks/: the documented commands still run (their figures are checked by reading them, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_monitor_benchmark_runs_as_documented_and_times_the_monitors_hooks(tmp_path: Path) -> None:
    # `python benchmarks/monitor.py` from the checkout, as docs/collapse.md says (it failed twice unnoticed:
    # `examples` not importable, and a class attribute a lint fix removed)
    out = tmp_path / "monitor.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/monitor.py", "--repeats", "1", "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LatentMonitor's own hooks: median" in run.stdout
    result = json.loads(out.read_text())
    assert set(result["seconds"]) == {"without", "with LatentMonitor", "with it, MI off"}
    assert all(len(times) == 1 and times[0] > 0 for times in result["seconds"].values())
    assert len(result["monitor_hook_seconds"]) == 1  # one timed validation: the warm-up is not counted
    assert 0 < result["monitor_hook_seconds"][0] < result["seconds"]["with LatentMonitor"][0]
    assert set(result["mi_spread"]) == {"near collapse", "weak", "informative"}
