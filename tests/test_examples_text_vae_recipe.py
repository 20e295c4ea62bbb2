"""The text VAE's ``--recipe`` row: built from library pieces, its threshold schedule, its errors."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from examples.text_vae import recipe_search
from examples.text_vae.compare import (
    Config,
    check_recipe,
    compare,
    free_bits_callbacks,
    parse_args,
    schedule_callback,
    schedules,
)
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


# ------------------------------------------------------------------ every recipe knob, and the search behind it
@pytest.mark.parametrize(
    "name",
    ["cyc+fbex4decay.75-1", "cyc+bn0.5", "const+bn0.5", "cyc+bn0.5+fbex4decay.75-1", "delay.25+cyc0+fbex4decay.75-1",
     "cyc+fb0.5decay.75-1floor.05", "cyc+fbexdim0.5decay.75-1", "mono+bn0.5", "cyclog+fbex4decay.75-1", "monolog",
     "delay.25+cyc+bn0.5"],
)  # fmt: skip
def test_compare_flags_give_the_search_configuration(name: str) -> None:
    """compare.py's recipe row, from recipe_search.compare_flags, trains what the search measured: the same beta
    and lambda at every step, the same model settings."""
    recipe = recipe_search.search_configs()[name]
    cfg = parse_args(recipe_search.compare_flags(recipe))
    check_recipe(cfg)
    row = schedules(cfg)["recipe"]
    total = 1240
    searched = recipe_search.callbacks(recipe, total)
    beta, mine = searched[0], schedule_callback(row, None, total)
    steps = [0, 1, 100, 155, 309, 310, 311, 620, 929, 930, 1100, 1239, 1240]
    assert [mine.value_at(t, total) for t in steps] == pytest.approx([beta.value_at(t, total) for t in steps])
    lam = free_bits_callbacks(row)
    assert len(lam) == len(searched) - 1
    if lam:
        assert [lam[0].value_at(t, total) for t in steps] == pytest.approx(
            [searched[1].value_at(t, total) for t in steps]
        )
    assert row["model"]["free_bits"] == recipe.fb and row["model"].get("bn_gamma", 0.0) == recipe.bn_gamma
    if recipe.fb:
        assert row["model"]["free_bits_mode"] == recipe.fb_mode


def test_recipe_defaults_are_the_chosen_recipe_and_bn_gamma_reaches_every_row() -> None:
    # the defaults are the configuration the rule chose in search round 4 (figures/recipe_round2/choice.json)
    row = recipe_row()
    assert row == {"anneal": {"n_cycle": 4, "ratio": 0.5, "start": 0.1},
                   "model": {"free_bits": 6.0, "free_bits_mode": "example"},
                   "free_bits": {"n_cycle": 1, "ratio": 1.0, "ratio_zero": 0.75, "start": 6.0, "stop": 0.0}}  # fmt: skip
    choice = json.loads((Path(__file__).parents[1] / "examples/text_vae/figures/recipe_round2/choice.json").read_text())
    chosen = recipe_search.search_configs()[choice["name"]]
    assert choice["name"] == "cyc+fbex6decay.75-1" and choice["chosen"]["recipe"] == asdict(chosen)
    flags = recipe_search.compare_flags(chosen)
    from_flags = schedules(parse_args(flags))["recipe"]  # the chosen knobs written out: the same row as the defaults
    assert flags[0] == "--recipe" and from_flags["anneal"].pop("stop") == 1.0 and from_flags == recipe_row()
    cfg = parse_args(["--bn-gamma", "0.3", "--recipe", "--recipe-bn-gamma", "0.6"])
    assert cfg.bn_gamma == 0.3 and schedules(cfg)["recipe"]["model"]["bn_gamma"] == 0.6
    assert Config().bn_gamma is None and parse_args([]).bn_gamma is None


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"recipe_bn_gamma": -0.1}, "`recipe_bn_gamma` must be a finite number >= 0"),
        ({"recipe_delay": 1.0}, r"`recipe_delay` must be in \[0, 1\)"),
        ({"recipe_free_bits": 0.0, "recipe_bn_gamma": 0.0}, "`recipe_free_bits` must be > 0"),
        ({"bn_gamma": -1.0}, "`bn_gamma` must be None or a finite number >= 0"),
        ({"recipe_hold": 1.0, "recipe_end": 0.5}, "`recipe_hold` and `recipe_end`"),
    ],
)
def test_new_recipe_knobs_refuse_bad_values_before_any_run(tmp_path: Path, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compare(Config(out=str(tmp_path), recipe=True, seeds=[0], max_steps=2, corpus_size=60, emb_dim=4, hidden_dim=4,
                       latent_dim=2, probe_size=10, rows=["recipe"], **overrides))  # fmt: skip
    assert not (tmp_path / "logs").exists()


def test_recipe_without_free_bits_or_with_a_constant_threshold() -> None:
    bn_only = schedules(Config(recipe=True, recipe_free_bits=0.0, recipe_bn_gamma=0.5))["recipe"]
    check_recipe(Config(recipe=True, recipe_free_bits=0.0, recipe_bn_gamma=0.5))
    assert bn_only["model"] == {"free_bits": 0.0, "free_bits_mode": "example", "bn_gamma": 0.5}
    assert free_bits_callbacks(bn_only) == []
    constant = Config(recipe=True, recipe_free_bits=2.0, recipe_hold=1.0, recipe_end=1.0)
    check_recipe(constant)  # both 1: lambda held for the whole run
    assert free_bits_callbacks(schedules(constant)["recipe"]) == []
    delayed = schedules(Config(recipe=True, recipe_delay=0.25))["recipe"]
    assert schedule_callback(delayed, None, 1000).value_at(249, 1000) == pytest.approx(0.1)  # held at the start
    assert schedule_callback(delayed, None, 1000).value_at(250 + 62, 1000) > 0.5


def _record(name: str, elbo: float, mi: float, au: float, seed: int = 0) -> dict[str, Any]:
    metrics = {"elbo": elbo, "kl": mi + 0.1, "mi": mi, "au": au, "dim90": 2, "ppl": 80.0}
    return {"name": name, "seed": seed, "recipe": asdict(recipe_search.parse_config(name)[1]), "best": metrics}


PLAIN_LOG = [
    _record("constant", -48.0, 0.0, 0),
    _record("monotonic", -47.5, 0.02, 0),
    _record("cyclical", -47.6, 0.05, 2),
]


def test_selection_rule_picks_the_highest_elbo_among_those_meeting_every_target() -> None:
    log = [*PLAIN_LOG, _record("cyc+bn0.5", -47.9, 1.5, 16), _record("cyc+bn0.3", -47.8, 1.2, 16),
           _record("cyc+bn0.9", -49.0, 3.0, 16), _record("cyc+fbex4decay.75-1", -47.6, 0.6, 6)]  # fmt: skip
    choice = recipe_search.select(log)
    assert (choice["name"], choice["met_all"], choice["fallback"]) == ("cyc+bn0.3", True, None)
    row = next(r for r in choice["table"] if r["name"] == "cyc+bn0.3")
    assert row["reference"] == "monotonic" and row["gap"] == pytest.approx(0.3 / 47.5)
    assert choice["compare_flags"] == recipe_search.compare_flags(recipe_search.search_configs()["cyc+bn0.3"])
    assert "Written before the search ran" in choice["rule"]


def test_selection_rule_fallbacks_and_refusals() -> None:
    # nothing meets all three: the highest MI within 1 % of the reference
    log = [*PLAIN_LOG, _record("cyc+fbex4decay.75-1", -47.7, 0.6, 3), _record("cyc+bn0.3", -47.75, 0.8, 16),
           _record("cyc+bn0.9", -49.0, 3.0, 16)]  # fmt: skip
    choice = recipe_search.select(log)
    assert choice["name"] == "cyc+bn0.3" and choice["fallback"] == "highest MI within 1 % of the reference ELBO"
    # nothing within 1 %: the smallest gap among MI >= 1
    log = [*PLAIN_LOG, _record("cyc+bn0.9", -49.0, 3.0, 16), _record("cyc+bn0.7", -48.5, 2.0, 16),
           _record("cyc+bn0.5", -48.2, 0.9, 16)]  # fmt: skip
    assert recipe_search.select(log)["name"] == "cyc+bn0.7"
    assert recipe_search.select([*PLAIN_LOG, _record("cyc+bn0.5", -48.2, 0.9, 16)])["fallback"] == "smallest ELBO gap"
    with pytest.raises(ValueError, match="missing \\['cyclical'\\]"):
        recipe_search.select(PLAIN_LOG[:2] + [_record("cyc+bn0.5", -48.2, 0.9, 16)])
    with pytest.raises(ValueError, match="no configuration other than the plain schedules"):
        recipe_search.select(PLAIN_LOG)


def test_selection_averages_over_the_seeds_the_plain_schedules_share() -> None:
    log = [
        *PLAIN_LOG,
        *(_record(r["name"], r["best"]["elbo"] - 1.0, 0.0, 0, seed=1) for r in PLAIN_LOG),
        _record("cyc+bn0.5", -47.8, 1.2, 16),
        _record("cyc+bn0.5", -48.9, 1.4, 16, seed=1),
        _record("cyc+bn0.3", -47.7, 1.1, 16),
        _record("cyc+bn0.3", -48.0, 1.1, 16, seed=7),
    ]  # seed 7: no plain run
    table = {r["name"]: r for r in recipe_search.select(log)["table"]}
    assert table["cyc+bn0.5"]["seeds"] == [0, 1] and table["cyc+bn0.5"]["elbo"] == pytest.approx(-48.35)
    assert table["cyc+bn0.5"]["reference_elbo"] == pytest.approx(-48.0)  # monotonic's mean over seeds 0 and 1
    assert table["cyc+bn0.3"]["seeds"] == [0] and table["cyc+bn0.3"]["reference_elbo"] == pytest.approx(-47.5)


def test_every_search_configuration_has_a_family_and_the_tradeoff_figure_is_drawn(tmp_path: Path) -> None:
    families = {name: recipe_search.family(name) for name in recipe_search.search_configs()}
    assert set(families.values()) == set(recipe_search.FAMILIES)  # every colour used, none unknown
    assert [families[n] for n in ("monotonic", "cyclog", "cyc+fbex6decay.75-1", "cyc+bn0.5", "cyc+bn0.3+fbex4decay.75-1")] == [
        "plain schedule", "schedule variant (log ramp, delay)", "free bits", "BN-VAE", "BN-VAE + free bits"
    ]  # fmt: skip
    assert set(recipe_search.TRADEOFF_LABELS) <= set(families)  # a renamed configuration would lose its label
    # the committed selection, drawn again (the file in figures/ was made this way)
    committed = Path(__file__).parents[1] / "examples/text_vae/figures/recipe_round2/choice.json"
    recipe_search.main(["--log", str(committed.with_name("search.json")), "--select", str(tmp_path / "choice.json"),
                        "--tradeoff", str(tmp_path / "tradeoff.png")])  # fmt: skip
    assert json.loads((tmp_path / "choice.json").read_text()) == json.loads(committed.read_text())
    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_records_each_run_as_it_ends_and_respects_its_deadline(tmp_path: Path) -> None:
    data = tmp_path / "ptb"
    data.mkdir()
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        (data / f"ptb.{split}.txt").write_text(
            "".join(f"the {w} sat on a mat\n" for w in ["cat", "dog", "bird", "fox"] * (n // 4))
        )
    args = argparse.Namespace(data_dir=str(data), max_epochs=1, batch_size=8, train_sentences=None, max_vocab=100,
                              emb_dim=4, hidden_dim=4, latent_dim=2, dropout=0.0, dec_init="h0", accelerator="cpu")  # fmt: skip
    log, errors = tmp_path / "search.json", []
    tasks = recipe_search.plan(["constant", "cyc+bn0.5", "bad=cyclical,fb=1.0,fb_mode=nope"], [0])
    assert [(n, s) for n, _, s in tasks] == [("constant", 0), ("cyc+bn0.5", 0), ("bad", 0)]
    threads = torch.get_num_threads()
    try:
        left = recipe_search.run_tasks(tasks, args, 1, partial(recipe_search.append_record, log),
                                       on_error=lambda name, seed, error: errors.append((name, str(error))))  # fmt: skip
        assert recipe_search.run_tasks(tasks, args, 1, errors.append, stop_at=lambda walls: 0.0) == [
            ("constant", 0), ("cyc+bn0.5", 0), ("bad", 0)]  # past its deadline: nothing starts  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert left == [] and [e[0] for e in errors] == ["bad"] and "free_bits_mode" in errors[0][1]
    records = json.loads(log.read_text())
    assert [r["name"] for r in records] == ["constant", "cyc+bn0.5"]
    for r in records:
        assert r["split"] == "valid" and r["round"] == recipe_search.ROUND and r["accelerator"] == "cpu"
        assert 0 <= r["best"]["dim90"] <= 2 and math.isfinite(r["best"]["elbo"])
    assert records[1]["recipe"]["bn_gamma"] == 0.5
    # the rule from the command line, on this round's records only
    choice_path = tmp_path / "choice.json"
    old = {**records[0], "round": 2, "name": "cyclical"}
    log.write_text(json.dumps([old, *records]))
    with pytest.raises(ValueError, match="missing"):  # cyclical's only record is of an earlier round
        recipe_search.main(["--log", str(log), "--select", str(choice_path)])
    log.write_text(json.dumps([*records, {**records[0], "name": "monotonic"}, {**records[0], "name": "cyclical"}]))
    recipe_search.main(["--log", str(log), "--select", str(choice_path)])
    assert json.loads(choice_path.read_text())["name"] == "cyc+bn0.5"


def test_device_driver_commands_and_test_summary() -> None:
    from examples.text_vae import recipe_device

    args = recipe_device.parse_args(["--data-dir", "d", "--out", "o"])
    assert (args.budget, args.test_seeds, args.search_seeds, args.configs) == (480.0, [0, 1, 2], [0, 1], ["search"])
    flags = recipe_search.compare_flags(recipe_search.search_configs()["cyc+bn0.5"])
    chosen = recipe_device.compare_command(args, "gpu", "recipe_chosen", 2, flags, Path("x"))
    cfg = parse_args(chosen[2:])  # what compare.py will run
    assert (cfg.rows, cfg.seeds, cfg.accelerator, cfg.recipe_bn_gamma, cfg.train_sentences) == (
        ["recipe"],
        [2],
        "gpu",
        0.5,
        4000,
    )
    assert parse_args(recipe_device.compare_command(args, "cpu", "monotonic", 0, flags, Path("x"))[2:]).rows == [
        "monotonic"
    ]

    def run(elbo: float, mi: float, au: float) -> dict[str, Any]:
        return {"metrics": {"elbo": elbo, "mi": mi, "au": au, "dim90": 3, "kl": mi}}

    results = {
        "constant": {0: run(-48.0, 0.0, 0), 1: run(-48.2, 0.0, 0)},
        "monotonic": {0: run(-47.0, 0.0, 0), 1: run(-47.4, 0.0, 0)},
        "cyclical": {0: run(-47.1, 0.0, 1), 1: run(-47.35, 0.0, 1)},
        "recipe_current": {0: run(-47.3, 0.6, 3), 1: run(-47.5, 0.7, 2)},
        "recipe_chosen": {0: run(-47.4, 1.2, 16), 1: run(-47.6, 1.4, 16)},
    }
    summary = recipe_device.summarize_test_runs(results)
    assert summary["reference"] == {"row": "monotonic", "elbo": -47.2, "seeds": [0, 1]}
    assert summary["recipe_chosen"]["gap"] == pytest.approx(0.3 / 47.2)
    assert summary["recipe_chosen"]["met"] == {"mi": True, "au": True, "elbo": True}
    assert summary["recipe_current"]["met"] == {"mi": False, "au": False, "elbo": True}
    # per seed against that seed's best plain row: seed 1's is cyclical (-47.35)
    assert summary["recipe_chosen"]["gap_per_seed_vs_best_plain_of_seed"]["1"] == pytest.approx(0.25 / 47.35)
    assert summary["rows"]["constant"]["mean"]["elbo"] == pytest.approx(-48.1)
