"""The dialog example evaluates every example exactly once, on any number of processes."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import DIALOG_TINY

from examples.dialog_cvae.data import DialogDataModule, EvalDistributedSampler
from examples.dialog_cvae.model import DialogCVAE

TINY = DIALOG_TINY


@pytest.mark.parametrize(("n", "world"), [(7, 2), (8, 2), (5, 3), (1, 1)])
def test_eval_sampler_covers_every_example_once(n: int, world: int) -> None:
    seen = [i for rank in range(world) for i in EvalDistributedSampler(range(n), world, rank)]
    assert sorted(seen) == list(range(n))
    assert sum(len(EvalDistributedSampler(range(n), world, r)) for r in range(world)) == n


def _test_metrics(devices: int) -> dict[str, float]:
    # 7 test contexts in batches of 2: Lightning's DistributedSampler would pad rank 1 with a repeat of example 0.
    dm = DialogDataModule(num_train=16, num_valid=4, num_test=7, batch_size=2)
    torch.manual_seed(0)
    model = DialogCVAE(vocab_size=dm.vocab_size, bow_weight=1.0, **TINY)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return {k: float(v) for k, v in trainer.test(model, datamodule=dm, verbose=False)[0].items()}


def test_ddp_spawn_on_two_processes_equals_one_process() -> None:
    single = _test_metrics(devices=1)
    double = _test_metrics(devices=2)
    assert set(single) == set(double)
    assert {"test/elbo", "test/kl", "test/bleu4_r", "test/emb_avg_p", "test/distinct2", "test/factor_acc"} <= set(
        single
    )
    for key in single:
        assert double[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key


def test_evaluation_does_not_depend_on_the_batch_size() -> None:
    results = []
    for batch_size in (7, 3):
        dm = DialogDataModule(num_train=16, num_valid=4, num_test=7, batch_size=batch_size)
        torch.manual_seed(0)
        model = DialogCVAE(vocab_size=dm.vocab_size, bow_weight=1.0, **TINY)
        trainer = L.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        results.append(trainer.test(model, datamodule=dm, verbose=False)[0])
    for key, value in results[0].items():
        assert results[1][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
