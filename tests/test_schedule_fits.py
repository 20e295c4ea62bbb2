"""The schedules of lightning_kl_anneal.schedules driven by a real Trainer: the log-space ramp and joined schedules.

Kept apart from tests/test_schedules.py, whose tests are pure (no Lightning), and from the callback's own tests:
these check that a schedule reaches ``training_step`` and the logger through the public callbacks unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TinyVAE, _csv_rows, make_trainer
from lightning.pytorch.loggers import CSVLogger

from lightning_kl_anneal import CyclicalKLAnnealing, cyclical_beta


def test_a_log_ramp_through_the_callback(tmp_path: Path) -> None:
    # 2 epochs x 10 batches = 20 steps, one cycle whose ramp fills it: β = 1e-4 · 10^(4 t / 20), a decade every 5 steps.
    model = TinyVAE(n_batches=10)
    logger = CSVLogger(tmp_path, name="csv")
    callback = CyclicalKLAnnealing(n_cycle=1, ratio=1.0, start=1e-4, shape="log")
    make_trainer(tmp_path, [callback], logger=logger, log_every_n_steps=1).fit(model)
    seen = [beta for _, _, beta in model.seen]
    assert len(seen) == 20
    assert seen[::5] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1], rel=1e-12)
    assert seen == [cyclical_beta(t, 20, 1, 1.0, 1e-4, 1.0, "log") for t in range(20)]
    logged = {int(r["step"]): float(r["beta"]) for r in _csv_rows(logger) if r.get("beta")}
    assert logged[10] == pytest.approx(1e-2, rel=1e-6)  # float32 in the log
    assert model.beta == 1.0  # eval_beta = stop after the fit


def test_a_log_ramp_from_zero_fails_at_construction() -> None:
    with pytest.raises(ValueError, match=r"`shape`='log' ramps in log space.*e\.g\. `start`=1e-4"):
        CyclicalKLAnnealing(shape="log")
