"""A checkpoint written by an earlier release resumes exactly (``tests/data``, made by ``tests/resume_module.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from resume_module import CHECKPOINT, N_CYCLE, RATIO, START, STOPPED_AT, ResumeVAE, T, trainer

from lightning_kl_anneal import CyclicalKLAnnealing, cyclical_beta


def test_committed_checkpoint_holds_plain_state() -> None:
    ckpt = torch.load(CHECKPOINT, weights_only=True)  # plain Python state only
    assert ckpt["global_step"] == STOPPED_AT
    state = ckpt["callbacks"]["CyclicalKLAnnealing{'attribute': 'beta'}"]
    assert state["total_steps"] == T
    assert state["config"]["n_cycle"] == N_CYCLE and state["config"]["start"] == START


@pytest.mark.parametrize("max_epochs", [4, 6])
def test_committed_checkpoint_resumes_exactly(tmp_path: Path, max_epochs: int) -> None:
    # Resumed by a Trainer of the same length, and by a longer one: the checkpoint's T (40) is kept either way.
    model = ResumeVAE()
    fit = trainer(tmp_path, max_epochs=max_epochs)
    if max_epochs == 4:
        fit.fit(model, ckpt_path=CHECKPOINT)
    else:
        with pytest.warns(UserWarning, match="spans 40 steps but this Trainer would run 60; keeping 40"):
            fit.fit(model, ckpt_path=CHECKPOINT)
    steps = [s for s, _ in model.seen]
    assert steps == list(range(STOPPED_AT, 10 * max_epochs))
    assert [b for _, b in model.seen] == [cyclical_beta(s, T, N_CYCLE, RATIO, START) for s in steps]
    # by hand: cycles of ceil(40 / 3) = 14 steps; step 20 is 6 steps into the second, tau = 6 * 3 / 40 = 0.45,
    # β = 0.1 + 0.9 * 0.45 / 0.5 = 0.91; from step 40 on (past T) β is `stop`.
    assert model.seen[0][1] == pytest.approx(0.91, abs=1e-12)
    assert all(b == 1.0 for s, b in model.seen if s >= T)
    annealing = next(c for c in fit.callbacks if isinstance(c, CyclicalKLAnnealing))
    assert annealing.total == T
