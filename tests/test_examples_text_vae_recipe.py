"""The text VAE's ``--recipe`` row: built from library pieces, its threshold schedule, its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from examples.text_vae.compare import Config, compare, free_bits_callbacks, parse_args, schedules
from examples.text_vae.data import TextVAEDataModule
from examples.text_vae.model import TextVAE
from lightning_kl_anneal import CyclicalKLAnnealing, ScheduledAttribute


def recipe_row(**overrides: Any) -> dict[str, Any]:
    return schedules(Config(recipe=True, **overrides))["recipe"]


def test_recipe_row_only_with_the_flag_and_defaults_match_the_cli() -> None:
    assert "recipe" not in schedules(Config())
    assert list(schedules(Config(recipe=True))) == ["constant", "monotonic", "cyclical", "recipe"]
    d, cli = Config(), parse_args(["--recipe"])
    assert cli.recipe
    for key in ("recipe_free_bits", "recipe_free_bits_mode", "recipe_hold", "recipe_end", "recipe_floor"):
        assert getattr(cli, key) == getattr(d, key)


def test_recipe_threshold_is_held_then_decays_to_zero() -> None:
    row = recipe_row(
        recipe_free_bits=0.4, recipe_free_bits_mode="dim", recipe_hold=0.5, recipe_end=0.75, recipe_floor=0.0
    )
    assert row["anneal"] == schedules(Config())["cyclical"]["anneal"]  # the beta schedule is the cyclical row's
    assert row["model"] == {"free_bits": 0.4, "free_bits_mode": "dim"}
    (cb,) = free_bits_callbacks(row)
    assert isinstance(cb, ScheduledAttribute) and cb.attribute == "free_bits"
    values = [cb.value_at(t, 100) for t in (0, 49, 50, 55, 62, 70, 74, 75, 99, 100)]
    assert values[:3] == [0.4, 0.4, 0.4]
    assert values[3] == pytest.approx(0.4 * (1 - 5 / 25))
    assert values[4] == pytest.approx(0.4 * (1 - 12 / 25))
    assert values[5] > values[6] > 0.0
    assert values[7:] == [0.0, 0.0, 0.0]
    assert free_bits_callbacks(schedules(Config())["cyclical"]) == []
    (floored,) = free_bits_callbacks(
        recipe_row(recipe_free_bits=0.4, recipe_hold=0.5, recipe_end=0.75, recipe_floor=0.1)
    )
    assert floored.value_at(62, 100) == pytest.approx(0.4 - 0.3 * 12 / 25)
    assert floored.value_at(80, 100) == floored.value_at(100, 100) == 0.1


class SeenFreeBits(Callback):
    """What the training step reads: ``model.free_bits`` after every callback's per-step write."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.seen.append(float(pl_module.free_bits))


def test_training_step_sees_the_scheduled_threshold(tmp_path: Path) -> None:
    dm = TextVAEDataModule(None, batch_size=16, corpus_size=64, min_count=1)
    row = recipe_row(recipe_free_bits=0.5, recipe_hold=0.5, recipe_end=1.0, recipe_floor=0.0)
    model = TextVAE(vocab_size=dm.vocab_size, emb_dim=8, hidden_dim=8, latent_dim=2, **row["model"])
    spy = SeenFreeBits()
    trainer = L.Trainer(max_steps=8, callbacks=[CyclicalKLAnnealing(**row["anneal"]), *free_bits_callbacks(row), spy],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, dm)
    assert spy.seen == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5, 0.375, 0.25, 0.125])


def test_free_bits_attribute_and_mode_shape_the_training_loss() -> None:
    torch.manual_seed(0)
    batch = {"tokens": torch.randint(4, 12, (3, 5)), "lengths": torch.tensor([5, 4, 3])}
    losses = {}
    for key, fb, mode in (("off", 0.0, "dim"), ("dim", 3.0, "dim"), ("example", 3.0, "example")):
        torch.manual_seed(0)  # the same weights and z for every variant
        model = TextVAE(vocab_size=12, emb_dim=4, hidden_dim=4, latent_dim=2, dropout=0.0, free_bits_mode=mode)
        model.free_bits = fb  # what ScheduledAttribute writes
        losses[key] = float(model._shared_step(batch, "train")[0].detach())
    # at initialisation the KL is far below the floors: 3 nats per dimension (dim) lift the KL term to
    # 2 * 3 nats, 3 nats per sentence (example) to 3 nats
    assert losses["dim"] - losses["off"] == pytest.approx(6.0, abs=0.1)
    assert losses["example"] - losses["off"] == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"recipe_free_bits": 0.0}, "`recipe_free_bits` must be > 0"),
        ({"recipe_free_bits": math.nan}, "`recipe_free_bits` must be > 0"),
        ({"recipe_free_bits_mode": "total"}, "`recipe_free_bits_mode` must be one of"),
        ({"recipe_floor": -0.1}, "`recipe_floor` must be in"),
        ({"recipe_free_bits": 0.5, "recipe_floor": 2.0}, "`recipe_floor` must be in"),
        ({"recipe_hold": 0.8, "recipe_end": 0.5}, "`recipe_hold` and `recipe_end`"),
        ({"recipe_end": 1.5}, "`recipe_hold` and `recipe_end`"),
        ({"recipe_hold": -0.1}, "`recipe_hold` and `recipe_end`"),
    ],
)
def test_recipe_bad_arguments_fail_before_any_run(tmp_path: Path, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        # a tiny budget, so that a case that fails to raise costs seconds, not a full comparison
        compare(
            Config(
                out=str(tmp_path),
                recipe=True,
                seeds=[0],
                max_steps=2,
                corpus_size=60,
                emb_dim=4,
                hidden_dim=4,
                latent_dim=2,
                probe_size=10,
                rows=["recipe"],
                **overrides,
            )
        )
    assert not (tmp_path / "logs").exists()  # refused before the first run
    with pytest.raises(ValueError, match="`free_bits_mode` must be one of"):
        TextVAE(vocab_size=10, free_bits_mode="total")


def test_compare_with_recipe_writes_the_row(tmp_path: Path) -> None:
    # --jobs 1: a worker's start-up (about 5 s of imports) outweighs these runs
    cfg = parse_args(
        ["--out", str(tmp_path), "--seeds", "0", "--max-epochs", "1", "--corpus-size", "120", "--emb-dim", "8",
         "--hidden-dim", "8", "--latent-dim", "2", "--probe-size", "60", "--threads", "1", "--recipe",
         "--rows", "cyclical", "recipe", "--jobs", "1"]
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        compare(cfg)
    finally:
        torch.set_num_threads(threads)  # compare() sets it process-wide
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert list(on_disk) == ["config", "cyclical", "recipe"] and on_disk["config"]["rows"] == ["cyclical", "recipe"]
    for key in ("rec", "kl", "elbo", "ppl", "au", "mi"):
        assert math.isfinite(on_disk["recipe"]["mean"][key])
