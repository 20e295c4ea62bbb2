"""Tests for the command line, ``python -m lightning_kl_anneal``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_kl_anneal import cyclical_schedule
from lightning_kl_anneal.__main__ import main
from lightning_kl_anneal.plot import plot_schedules


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


def test_plot_names_the_file_it_really_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "--total-steps", "100", "-o", str(tmp_path / "x")]) == 0
    assert f"wrote {tmp_path / 'x.png'}" in capsys.readouterr().out
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_unwritable_path_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "dir" / "beta.png"
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_kl_anneal", "plot", "--total-steps", "100", "-o", str(out)], capture_output=True, text=True, check=False
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"python -m lightning_kl_anneal: error: cannot write {str(out)!r}: No such file or directory"
    ]


def test_print_draws_delay_period_and_endless_cycles(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["print", "--total-steps", "12", "--n-cycle", "none", "--period", "4", "--delay", "2", "--unit", "epoch"])
        == 0
    )
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "epoch,beta"
    assert [float(r.split(",")[1]) for r in rows[1:]] == cyclical_schedule(12, None, period=4, delay=2).tolist()


def test_plot_draws_every_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_kl_anneal import plot

    drawn = []  # the figures the command draws, read back before they are saved
    monkeypatch.setattr(plot, "plot_schedules", lambda *a, **k: drawn.append(plot_schedules(*a, **k)) or drawn[-1])
    argv = ["plot", "--total-steps", "50", "--n-cycle", "2", "none", "--period", "10", "--delay", "5",
            "--start", "0.2", "-o", str(tmp_path / "p.png")]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (fig,) = drawn
    ys = [np.asarray(ax.get_lines()[0].get_ydata()) for ax in fig.axes]
    assert len(ys) == 2
    np.testing.assert_array_equal(ys[0], cyclical_schedule(50, 2, start=0.2, period=10, delay=5))
    np.testing.assert_array_equal(ys[1], cyclical_schedule(50, None, start=0.2, period=10, delay=5))
    # by hand: held at start for the delay, then ramps of 5 steps (ratio 0.5 of 10) up to 1, plateaus of 5
    ramp = [0.2 + 0.8 * k / 5 for k in range(5)] + [1.0] * 5
    assert ys[1].tolist() == pytest.approx([0.2] * 5 + ramp * 4 + [0.2 + 0.8 * k / 5 for k in range(5)])
    assert ys[0].tolist() == pytest.approx([0.2] * 5 + ramp * 2 + [1.0] * 25)  # two cycles, then stop
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0].startswith("cyclical (M=2)") and titles[1].startswith("cyclical (endless)")
    assert all("period=10" in t and "delay=5" in t for t in titles)


def test_bad_cycle_count_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["print", "--total-steps", "10", "--n-cycle", "many"])
    assert "must be an int >= 1 or 'none', got 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["print", "--total-steps", "10", "--n-cycle", "none"])
    assert "--n-cycle none (cycles forever) needs --period, the length of one cycle" in capsys.readouterr().err


def test_print_a_log_ramp(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["print", "--total-steps", "8", "--n-cycle", "1", "--ratio", "1.0", "--shape", "log", "--start", "1e-4"]
    assert main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert [float(r.split(",")[1]) for r in rows[1::2]] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])  # a decade a row


def test_a_log_ramp_from_zero_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["print", "--total-steps", "8", "--shape", "log"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--shape='log' ramps in log space" in err and "got --start=0.0; use a small positive value" in err
    assert "e.g. --start=1e-4" in err


def test_plot_a_log_ramp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "log.png"
    assert main(["plot", "--total-steps", "100", "--shape", "log", "--start", "1e-4", "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and f"wrote {out}" in capsys.readouterr().out
