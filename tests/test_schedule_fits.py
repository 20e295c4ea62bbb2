"""The schedules of lightning_kl_anneal.schedules driven by a real Trainer: the log-space ramp and joined schedules.

Kept apart from tests/test_schedules.py, whose tests are pure (no Lightning), and from the callback's own tests:
these check that a schedule reaches ``training_step`` and the logger through the public callbacks unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from helpers import StopAt, TinyVAE, _csv_rows, make_trainer
from lightning.pytorch.loggers import CSVLogger

from lightning_kl_anneal import (
    ConstantSchedule,
    CyclicalKLAnnealing,
    CyclicalSchedule,
    PlateauEarlyStopping,
    PlateauModelCheckpoint,
    ScheduledAttribute,
    cyclical_beta,
    join_schedules,
)
from lightning_kl_anneal.exceptions import MisconfigurationException


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


def test_a_joined_schedule_through_scheduled_attribute_with_its_phases(tmp_path: Path) -> None:
    # 4 epochs x 5 batches = 20 steps: a warm-up over steps 0-9 (ramp 0-4, then at 1), then a ramp over all of
    # steps 10-19 (ratio 1) from 0.2 to 1. Epoch ends are steps 4, 9, 14, 19: ramp, plateau (the warm-up's
    # "final", with a part to come), ramp, final. PlateauModelCheckpoint ranks the weights of epochs 1 and 3 only (3 with when="final").
    joined = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=1, ratio=1.0, start=0.2)], [0.5])
    model = TinyVAE(n_batches=5)
    logger = CSVLogger(tmp_path, name="csv")
    ckpt = PlateauModelCheckpoint(monitor="val_loss", save_top_k=-1, dirpath=tmp_path / "ckpt", filename="{epoch}")
    final = PlateauModelCheckpoint(  # mode="max": a second checkpoint callback needs a state key of its own
        monitor="val_loss", mode="max", save_top_k=-1, dirpath=tmp_path / "final", filename="{epoch}", when="final"
    )
    callback = ScheduledAttribute(joined, "beta", eval_value=1.0)
    make_trainer(
        tmp_path, [callback, ckpt, final], max_epochs=4, limit_val_batches=1, enable_checkpointing=True,
        logger=logger, log_every_n_steps=1,
    ).fit(model)  # fmt: skip
    seen = [beta for _, _, beta in model.seen]
    assert seen == [joined(t, 20) for t in range(20)]
    assert seen[:10] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8] + [1.0] * 5)  # by hand
    assert seen[10:] == pytest.approx([0.2 + 0.8 * k / 10 for k in range(10)])
    assert [callback.phase_at(s) for s in (4, 9, 14, 19)] == ["ramp", "plateau", "ramp", "final"]
    saved = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "ckpt").glob("epoch=*.ckpt"))
    assert saved == [1, 3]
    # the warm-up's own "final" is not the joined schedule's: only the last epoch is past every ramp
    assert sorted(p.stem for p in (tmp_path / "final").glob("epoch=*.ckpt")) == ["epoch=3"]
    logged = {int(r["step"]): float(r["beta"]) for r in _csv_rows(logger) if r.get("beta")}
    assert logged[12] == pytest.approx(0.36, rel=1e-6)
    assert model.eval_seen and set(model.eval_seen) == {1.0}


def test_a_joined_schedule_with_a_constant_tail_in_a_cyclical_run(tmp_path: Path) -> None:
    # Cycles over the first 3/4 of the run, then β = 1 to the end: the tail is "final" for the callbacks that follow it.
    joined = join_schedules([CyclicalSchedule(n_cycle=2), ConstantSchedule(1.0)], [0.75])
    model = TinyVAE(n_batches=4)
    callback = ScheduledAttribute(joined, "beta", eval_value=1.0)
    make_trainer(tmp_path, [callback], max_epochs=4).fit(model)
    assert [beta for _, _, beta in model.seen] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0] * 2 + [1.0] * 4)
    assert callback.phase_at(12) == "final" and callback.phase_at(5) == "plateau"


def _warmup(step: int, total: int | None) -> float:
    return min(1.0, step / max(1, (total or 1) - 1))


def _one(step: int, total: int | None) -> float:
    return 1.0


@pytest.mark.parametrize("selector", [PlateauModelCheckpoint, PlateauEarlyStopping])
def test_a_joined_schedule_of_plain_functions_is_refused_by_the_plateau_callbacks(
    tmp_path: Path, selector: type
) -> None:
    # No part declares phases, so no step has one: refused as the bare function is (it selected nothing, silently)
    joined = join_schedules([_warmup, _one], [0.5])
    assert joined.has_phases is False and join_schedules([_warmup, ConstantSchedule(1.0)], [0.5]).has_phases
    callback = ScheduledAttribute(joined, "beta", eval_value=1.0)
    assert callback.has_phases is False
    with pytest.raises(MisconfigurationException, match=r"follows `beta`, whose ScheduledAttribute has no ramps"):
        make_trainer(
            tmp_path, [callback, selector(monitor="val_loss")], limit_val_batches=1, enable_checkpointing=True
        ).fit(TinyVAE())


def test_a_joined_schedule_in_fast_dev_run_trains_with_warnings(tmp_path: Path) -> None:
    # T = 1: the warm-up's stretch is empty, the cycles' part has 1 step for 4 cycles; alone the latter is refused
    joined = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=4, start=0.1)], [0.2])
    model = TinyVAE()
    with pytest.warns(UserWarning) as record:
        make_trainer(tmp_path, [ScheduledAttribute(joined, "beta", eval_value=1.0)], fast_dev_run=True).fit(model)
    messages = [str(w.message) for w in record]
    assert any("`schedules[0]` gets no step and never runs" in m for m in messages)
    assert any("`schedules[1]` of the joined schedule runs 1 step, but its `n_cycle`=4" in m for m in messages)
    assert [beta for _, _, beta in model.seen] == [0.1]


def _joined_at(boundary: float) -> ScheduledAttribute:
    joined = join_schedules([CyclicalSchedule(n_cycle=1), ConstantSchedule(1.0)], [boundary])
    return ScheduledAttribute(joined, "beta", eval_value=1.0, total_steps=20)


def test_resuming_with_a_changed_joined_schedule_names_it(tmp_path: Path) -> None:
    # the joined schedule is saved in words (it was saved as {"unit": "step"} only: a change went unnoticed)
    trainer = make_trainer(tmp_path, [_joined_at(0.5)], max_epochs=1)
    trainer.fit(TinyVAE(n_batches=10))
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    saved = torch.load(tmp_path / "half.ckpt", weights_only=True)["callbacks"]
    assert [state["config"]["schedule"] for state in saved.values()] == [
        (
            "JoinedSchedule(schedules=(CyclicalSchedule(n_cycle=1, ratio=0.5, start=0.0, stop=1.0, shape='linear', "
            "ratio_zero=0.0, period=None, delay=0), ConstantSchedule(value=1.0, phase_name='final')), boundaries=(0.5,))"
        )
    ]
    with pytest.warns(
        UserWarning, match=r'another schedule \(schedule: ".*boundaries=\(0\.5,\)\)" -> ".*boundaries=\(0\.25,\)\)"\)'
    ):
        make_trainer(tmp_path, [_joined_at(0.25)], max_epochs=2).fit(
            TinyVAE(n_batches=10), ckpt_path=tmp_path / "half.ckpt"
        )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = TinyVAE(n_batches=10)
        make_trainer(tmp_path, [_joined_at(0.5)], max_epochs=2).fit(model, ckpt_path=tmp_path / "half.ckpt")
    assert not [w for w in record if "another schedule" in str(w.message)]
    assert [beta for _, _, beta in model.seen] == [1.0] * 10  # steps 10-19: the constant tail, as saved


def test_a_joined_schedule_that_needs_the_run_length_is_refused_before_training(tmp_path: Path) -> None:
    # the second part fits its cycles into the rest of the run: with only max_time, that is unknown. It crashed
    # at the boundary (step 15) with a bare "`total_steps` is needed"; now refused as a CyclicalSchedule is
    joined = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=2)], [15])
    model = TinyVAE()
    with pytest.raises(MisconfigurationException, match=r"ScheduledAttribute\(`beta`\).*bounded only by `max_time`"):
        make_trainer(
            tmp_path, [ScheduledAttribute(joined, "beta", eval_value=1.0)], max_epochs=-1, max_time={"minutes": 1}
        ).fit(model)
    assert model.seen == []


def test_a_run_that_stops_inside_the_last_parts_cycles_warns(tmp_path: Path) -> None:
    # a run of unknown length (EarlyStopping, here a callback) stopped at step 60 of a schedule 10 + 2 x 40 = 90 long
    joined = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=2, period=40)], [10])
    assert joined.length() == 90
    model = TinyVAE(n_batches=10)
    callback = ScheduledAttribute(joined, "beta", eval_value=1.0)
    with pytest.warns(UserWarning, match=r"the fit ended after 60 of the schedule's 90 steps"):
        make_trainer(tmp_path, [callback, StopAt(60)], max_epochs=-1).fit(model)
    assert len(model.seen) == 60


def test_a_joined_schedule_ending_on_a_ramp_gets_advice_about_its_parts(tmp_path: Path) -> None:
    # max_steps=35: the endless second part (period 8, from step 10) is in a ramp at step 34; `total_steps=` would not help
    joined = join_schedules([CyclicalSchedule(n_cycle=1), CyclicalSchedule(n_cycle=None, period=8)], [10])
    with pytest.warns(
        UserWarning, match=r"last step \(34, of 35\) is in the schedule's ramp phase.*Move the `boundaries`"
    ):
        make_trainer(tmp_path, [ScheduledAttribute(joined, "beta", eval_value=1.0)], max_epochs=-1, max_steps=35).fit(
            TinyVAE(n_batches=10)
        )


def test_phase_before_a_fit_with_fraction_boundaries_is_unknown() -> None:
    # as a CyclicalSchedule's without T: None, not the "fractions need total_steps" error
    callback = ScheduledAttribute(join_schedules([CyclicalSchedule(n_cycle=1), ConstantSchedule(1.0)], [0.3]), "beta")
    assert callback.phase_at(3) is None and callback.phase_at(3) == callback.schedule.phase(3)
