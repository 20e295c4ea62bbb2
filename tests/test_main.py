"""Tests for the command line, ``python -m lightning_kl_anneal``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightning_kl_anneal import cyclical_schedule
from lightning_kl_anneal.__main__ import main


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "beta.png"
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_kl_anneal", "plot", "--total-steps", "10000", "--n-cycle", "4", "--ratio", "0.5", "-o", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"wrote {out}" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_print_matches_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["print", "--total-steps", "20", "--n-cycle", "4", "--shape", "cosine"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "step,beta"
    values = [float(r.split(",")[1]) for r in rows[1:]]
    assert values == pytest.approx(cyclical_schedule(20, 4, shape="cosine").tolist(), abs=1e-6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "--total-steps", "0"], "--total-steps must be an int >= 1, got 0"),
        (["plot", "--total-steps", "10", "--ratio", "1.5"], "--ratio must be in (0, 1], got 1.5"),
        (["plot", "--total-steps", "10", "--n-cycle", "1", "0"], "--n-cycle must be an int >= 1, got 0"),
        (["print", "--total-steps", "10", "--every", "0"], "--every must be >= 1, got 0"),
    ],
)
def test_bad_flags_name_the_flag(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
