"""Schedules for real runs, through a real Trainer: `period`, `unit="epoch"`, `delay`, `ScheduledAttribute`."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import CLIModel, StopAt, TinyVAE, Unbounded, Warmup, WithLossFn, _csv_rows, expected, make_trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_kl_anneal import (
    CyclicalKLAnnealing,
    CyclicalSchedule,
    MisconfigurationException,
    ScheduledAttribute,
    cyclical_beta,
)

# ---------------------------------------------------------------- period: runs of unknown length


def test_period_runs_without_a_length_and_stops_anywhere(tmp_path: Path) -> None:
    model = Unbounded()
    cb = CyclicalKLAnnealing(n_cycle=2, period=6, start=0.1)
    make_trainer(tmp_path, [cb, StopAt(17)], max_epochs=-1, limit_train_batches=5).fit(model)
    betas = [b for _, _, b in model.seen]
    assert len(betas) == 17
    assert betas == [cyclical_beta(t, n_cycle=2, period=6, start=0.1) for t in range(17)]
    assert betas[:6] == pytest.approx([0.1, 0.4, 0.7, 1.0, 1.0, 1.0]) and betas[12:] == [1.0] * 5  # 2 cycles, then stop


def test_period_with_early_stopping_and_endless_cycles(tmp_path: Path) -> None:
    class Plateaued(TinyVAE):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", 1.0)  # never improves

    model = Plateaued(n_batches=4)
    cb = CyclicalKLAnnealing(n_cycle=None, period=3, ratio=2 / 3)
    stop = EarlyStopping(monitor="val_loss", patience=4)
    make_trainer(tmp_path, [cb, stop], max_epochs=-1, limit_val_batches=1).fit(model)
    betas = [b for _, _, b in model.seen]
    assert len(betas) == 20  # stopped after 5 epochs of 4 steps: more than 3 cycles of 3 steps
    assert betas == [cyclical_beta(t, n_cycle=None, period=3, ratio=2 / 3) for t in range(20)]
    assert betas[:6] == [0.0, 0.5, 1.0, 0.0, 0.5, 1.0] and betas[18:] == [0.0, 0.5]


def test_period_and_total_steps_together_are_refused() -> None:
    with pytest.raises(ValueError, match=r"`total_steps`=100 and `period`=10 both set the cycle length"):
        CyclicalKLAnnealing(total_steps=100, period=10)
    with pytest.raises(ValueError, match=r"`n_cycle=None` \(cycles forever\) needs `period=`"):
        CyclicalKLAnnealing(n_cycle=None)
    with pytest.raises(ValueError, match=r"`period` must be an int >= 2, got 1"):
        CyclicalKLAnnealing(period=1)


# ---------------------------------------------------------------- epochs as the unit


@pytest.mark.parametrize("period", [None, 2])
def test_epoch_unit_changes_beta_only_at_epoch_boundaries(tmp_path: Path, period: int | None) -> None:
    model = TinyVAE(n_batches=3)
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5, period=period, unit="epoch", start=0.2)
    make_trainer(tmp_path, [cb], max_epochs=6).fit(model)
    for step, _, beta in model.seen:
        epoch = step // 3
        total = None if period else 6
        assert beta == cyclical_beta(epoch, total, n_cycle=2, ratio=0.5, start=0.2, period=period), step
    per_epoch = [model.seen[3 * e][2] for e in range(6)]
    if period is None:  # T = 6 epochs, cycles of 3: rising over 1.5 epochs, twice
        assert per_epoch == pytest.approx([0.2, 0.2 + 0.8 * 2 / 3, 1.0] * 2)
    else:  # cycles of 2 epochs, 2 of them, then stop
        assert per_epoch == [0.2, 1.0, 0.2, 1.0, 1.0, 1.0]


def test_epoch_unit_reads_total_steps_as_epochs_and_needs_max_epochs(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=2)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=1, unit="epoch", total_steps=4)], max_epochs=2).fit(model)
    assert [b for _, _, b in model.seen] == [0.0, 0.0, 0.5, 0.5]
    with pytest.raises(MisconfigurationException, match=r"`max_epochs=-1` sets no number of epochs.*`period=`"):
        make_trainer(tmp_path, [CyclicalKLAnnealing(unit="epoch")], max_epochs=-1).fit(TinyVAE())


def test_unit_must_be_step_or_epoch() -> None:
    with pytest.raises(ValueError, match=r"`unit` must be one of \('step', 'epoch'\), got 'batch'"):
        CyclicalKLAnnealing(unit="batch")  # type: ignore[arg-type]


# ---------------------------------------------------------------- delay


def test_delay_then_cycles_fill_the_rest(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=10)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, delay=8)], max_epochs=2).fit(model)
    betas = [b for _, _, b in model.seen]
    assert betas[:8] == [0.0] * 8
    assert betas == [expected(t, 20, n_cycle=2, delay=8) for t in range(20)]
    assert betas[8:14] == [expected(t, 12, n_cycle=2) for t in range(6)]  # cycles of (20 - 8) / 2 steps


def test_delay_with_period(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=10)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=None, period=4, delay=5, start=0.0)], max_epochs=2).fit(model)
    betas = [b for _, _, b in model.seen]
    assert betas[:5] == [0.0] * 5 and betas[5:9] == [0.0, 0.5, 1.0, 1.0]
    assert betas == [cyclical_beta(t, n_cycle=None, period=4, delay=5) for t in range(20)]


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`delay` must be an int >= 0, got -1"):
        CyclicalKLAnnealing(delay=-1)


# ---------------------------------------------------------------- the general callback


def test_scheduled_attribute_drives_floats_and_buffers_beside_cyclical(tmp_path: Path) -> None:
    model = WithLossFn(n_batches=5)
    model.temperature = 1.0
    seen: list[tuple[float, float]] = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: WithLossFn, *args: Any) -> None:
            seen.append((pl_module.temperature, pl_module.loss_fn.beta_bow.item()))

    cbs = [
        CyclicalKLAnnealing(n_cycle=2, attribute="loss_fn.beta"),
        ScheduledAttribute(lambda step, total: 1.0 - 0.9 * step / total, "temperature", log_name=True),
        ScheduledAttribute(lambda step, total: min(1.0, step / 4), "loss_fn.beta_bow", eval_value=1.0),
        Spy(),
    ]
    buffer = model.loss_fn.beta_bow
    make_trainer(tmp_path, cbs, max_epochs=2).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 10, n_cycle=2) for t in range(10)]
    assert [t for t, _ in seen] == [1.0 - 0.9 * t / 10 for t in range(10)]
    assert [b for _, b in seen] == [min(1.0, t / 4) for t in range(10)]
    assert model.loss_fn.beta_bow is buffer and buffer.dtype == torch.float64


def test_scheduled_attribute_eval_value_and_unknown_length(tmp_path: Path) -> None:
    model = Unbounded(n_batches=4)
    totals: list[Any] = []

    def schedule(step: int, total: int | None) -> float:
        totals.append(total)
        return 0.1 * step

    cb = ScheduledAttribute(schedule, eval_value=0.5)
    make_trainer(tmp_path, [cb], max_epochs=-1, max_steps=3, limit_val_batches=1, val_check_interval=2).fit(model)
    assert totals == [3, 3, 3]  # the Trainer's length where it has one; step 0 evaluated before training, once
    assert [b for _, _, b in model.seen] == pytest.approx([0.0, 0.1, 0.2])
    assert set(model.eval_seen) == {0.5}

    model = Unbounded(n_batches=4)
    totals.clear()
    make_trainer(tmp_path, [ScheduledAttribute(schedule), StopAt(2)], max_epochs=-1, limit_train_batches=4).fit(model)
    assert totals == [None, None]  # and None where it has none: the schedule decides


def test_an_eval_value_of_zero_is_written(tmp_path: Path) -> None:
    # A word-dropout rate of 0.5 in training and 0.0 (off) in evaluation: 0.0 is a value, not "leave it alone".
    model = TinyVAE(n_batches=4)
    cb = ScheduledAttribute(lambda step, total: 0.5, eval_value=0.0)
    make_trainer(tmp_path, [cb], max_steps=4, limit_val_batches=1, val_check_interval=2).fit(model)
    assert [b for _, _, b in model.seen] == [0.5] * 4
    assert model.eval_seen == [0.0, 0.0] and model.beta == 0.0  # both validations, and after the fit


def test_scheduled_attribute_calls_a_user_schedule_on_its_own_step_only(tmp_path: Path) -> None:
    # A user's function may keep state (an adaptive controller): it is never called ahead of its step.
    calls: list[int] = []

    def schedule(step: int, total: int | None) -> float:
        calls.append(step)
        return 0.01 * step

    make_trainer(tmp_path, [ScheduledAttribute(schedule)], max_epochs=3, accumulate_grad_batches=2).fit(
        TinyVAE(n_batches=6)
    )
    assert calls == list(range(9))  # each optimizer step once, in order (step 0 before the sanity check)


class Table:
    """A table-lookup schedule, valid on the run's steps 0..T-1 only, that records the steps it is asked."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = values, []

    def __call__(self, step: int, total: int | None) -> float:
        self.calls.append(step)
        return self.values[step]


def test_a_user_schedule_is_never_called_on_a_step_the_run_did_not_take(tmp_path: Path) -> None:
    table = Table([0.1 * t for t in range(20)])
    model = TinyVAE(n_batches=10)
    with pytest.warns(UserWarning, match=r"ended after 7 of the schedule's 20 steps.*last held 0\.6;"):
        make_trainer(tmp_path, [ScheduledAttribute(table), StopAt(7)]).fit(model)  # stopped early: no IndexError
    assert table.calls == list(range(7)) == [t for t, _, _ in model.seen]
    assert [b for _, _, b in model.seen] == pytest.approx([0.1 * t for t in range(7)])


def test_a_user_exception_in_training_step_reaches_the_user_unmasked(tmp_path: Path) -> None:
    table = Table([0.1 * t for t in range(20)])
    with pytest.raises(RuntimeError, match="simulated crash"), pytest.warns(UserWarning, match="ended after 3 of"):
        make_trainer(tmp_path, [ScheduledAttribute(table)]).fit(TinyVAE(n_batches=10, crash_at=3))
    assert table.calls == [0, 1, 2, 3]  # the crashed step was written, nothing past it


def test_a_resumed_fit_calls_the_user_schedule_from_its_first_step_on(tmp_path: Path) -> None:
    tables: list[Table] = []

    def make() -> ScheduledAttribute:
        tables.append(Table([0.01 * t for t in range(30)]))
        return ScheduledAttribute(tables[-1])

    reference, stitched = _crash_then_resume(tmp_path, make, 13, max_epochs=3)
    assert stitched == reference
    assert tables[0].calls == list(range(30)) and tables[1].calls == list(range(14))
    assert tables[2].calls == list(range(13, 30))  # resumed at step 13 (the last checkpoint): never step 0


def test_a_non_finite_value_after_step_0_is_an_error_at_its_step(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=10)
    cb = ScheduledAttribute(lambda step, total: math.inf if step == 3 else 0.1, "beta")
    with pytest.raises(ValueError, match=r"ScheduledAttribute\(`beta`\): `schedule\(3, 20\)` returned inf; .*finite"):
        make_trainer(tmp_path, [cb]).fit(model)
    assert [t for t, _, _ in model.seen] == [0, 1, 2]  # the NaN/inf never reached training_step


def test_scheduled_attribute_logs_under_its_attribute_by_default(tmp_path: Path) -> None:
    model = WithLossFn(n_batches=5)
    model.temperature = 1.0
    logger = CSVLogger(tmp_path, name="csv")
    cbs = [
        ScheduledAttribute(lambda step, total: 1.0 - 0.1 * step, "temperature"),
        ScheduledAttribute(lambda step, total: 0.5, "loss_fn.beta", log_name=None),
    ]
    assert cbs[0].log_name == "temperature" and cbs[0].eval_value is None
    make_trainer(tmp_path, cbs, logger=logger, log_every_n_steps=1).fit(model)
    rows = _csv_rows(logger)
    logged = [(int(r["step"]), float(r["temperature"])) for r in rows if r.get("temperature")]
    assert logged == [(t, pytest.approx(1.0 - 0.1 * t)) for t in range(10)]
    assert "loss_fn.beta" not in rows[0]


class SelfScheduled(ScheduledAttribute):
    """A subclass whose schedule is one of its own methods (its repr would print itself)."""

    def __init__(self) -> None:
        super().__init__(self.schedule_fn, "beta")

    def schedule_fn(self, step: int, total: int | None) -> float:
        return 0.5


def test_repr_never_recurses_and_lightning_can_format_the_callback(tmp_path: Path) -> None:
    cb = SelfScheduled()
    text = repr(cb)
    assert text.startswith("SelfScheduled(schedule=<bound method SelfScheduled.schedule_fn of ...>") and len(text) < 300
    model = TinyVAE(n_batches=2)
    make_trainer(tmp_path, [cb], max_epochs=1).fit(model)
    assert [b for _, _, b in model.seen] == [0.5, 0.5]


def test_a_schedule_object_declares_its_phases_and_the_fit_exposes_its_total(tmp_path: Path) -> None:
    cb = ScheduledAttribute(Warmup(5))
    assert cb.has_phases and cb.total is None and cb.phase_at(4) == "ramp" and cb.phase_at(5) == "final"
    phases: list[Any] = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            phases.append((cb.total, cb.current_phase(trainer)))

    make_trainer(tmp_path, [cb, Spy()]).fit(TinyVAE(n_batches=4))
    assert phases == [(8, "ramp")] * 5 + [(8, "final")] * 3  # the phase of the step just taken
    assert cb.total == 8 and not ScheduledAttribute(lambda s, t: 1.0).has_phases
    with pytest.raises(AttributeError):
        cb.total = 3  # type: ignore[misc]


def test_a_phase_outside_the_four_is_refused() -> None:
    class Bad(Warmup):
        def phase(self, step: int, total: int | None) -> str:
            return "warmup"

    with pytest.raises(ValueError, match=r"`schedule.phase\(0, None\)` must return one of \('delay', .*got 'warmup'"):
        ScheduledAttribute(Bad(3)).phase_at(0)


def test_a_phase_of_none_is_accepted_as_no_phase() -> None:
    # A schedule may know no phase for some steps: CyclicalSchedule before T is known, a joined part without phases.
    class Partly(Warmup):
        def phase(self, step: int, total: int | None) -> str | None:
            return None if step >= self.steps else "ramp"

    cb = ScheduledAttribute(Partly(3))
    assert cb.has_phases and [cb.phase_at(s) for s in (2, 3)] == ["ramp", None]
    assert ScheduledAttribute(CyclicalSchedule(n_cycle=2)).phase_at(3) is None  # no T before a fit


def test_scheduled_attribute_bad_arguments() -> None:
    with pytest.raises(
        TypeError, match=r"`schedule` must be a callable `schedule\(step, total_steps\) -> float`, got 0.5"
    ):
        ScheduledAttribute(0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`eval_value` must be a finite real number or None, got inf"):
        ScheduledAttribute(lambda s, t: 0.0, eval_value=float("inf"))
    with pytest.raises(ValueError, match=r"`unit` must be one of"):
        ScheduledAttribute(lambda s, t: 0.0, unit="epochs")  # type: ignore[arg-type]


# ---------------------------------------------------------------- crash and resume, for each new mode


def _crash_then_resume(tmp_path: Path, make_cb: Any, crash_at: int, **trainer_kwargs: Any) -> tuple[list, list]:
    reference = TinyVAE(n_batches=10)
    make_trainer(tmp_path / "ref", [make_cb()], **trainer_kwargs).fit(reference)
    crashing = TinyVAE(n_batches=10, crash_at=crash_at)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(tmp_path, [make_cb(), ckpt], enable_checkpointing=True, **trainer_kwargs).fit(crashing)
    last = max((tmp_path / "ckpt").glob("step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    resumed = TinyVAE(n_batches=10)
    make_trainer(tmp_path, [make_cb()], **trainer_kwargs).fit(resumed, ckpt_path=str(last))
    return reference.seen, crashing.seen[: int(last.stem.split("=")[1])] + resumed.seen


@pytest.mark.parametrize(
    ("kwargs", "trainer_kwargs"),
    [
        (dict(n_cycle=None, period=7), dict(max_epochs=-1, max_steps=30)),
        (dict(n_cycle=2, period=4, delay=3), dict(max_epochs=3)),
        (dict(n_cycle=2, unit="epoch"), dict(max_epochs=4)),
        (dict(n_cycle=None, period=2, unit="epoch", delay=1), dict(max_epochs=5)),
        (dict(n_cycle=3, delay=5), dict(max_epochs=3)),
    ],
    ids=["period-endless", "period-delay", "epoch", "epoch-period-delay", "delay"],
)
def test_crash_and_resume_for_each_mode(tmp_path: Path, kwargs: dict, trainer_kwargs: dict) -> None:
    reference, stitched = _crash_then_resume(
        tmp_path, lambda: CyclicalKLAnnealing(start=0.1, **kwargs), 17, **trainer_kwargs
    )
    assert stitched == reference


def test_crash_and_resume_scheduled_attribute(tmp_path: Path) -> None:
    reference, stitched = _crash_then_resume(
        tmp_path, lambda: ScheduledAttribute(lambda s, t: (s % 7) / t), 13, max_epochs=3
    )  # fmt: skip
    assert stitched == reference


# ---------------------------------------------------------------- configuration files


def test_every_new_argument_from_lightning_cli_yaml(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
trainer:
  max_epochs: 4
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {tmp_path}
  callbacks:
    - class_path: lightning_kl_anneal.CyclicalKLAnnealing
      init_args: {{n_cycle: null, period: 2, unit: epoch, delay: 1, log_name: kl_weight}}
    - class_path: lightning_kl_anneal.PlateauModelCheckpoint
      init_args: {{monitor: val_loss, schedule_attribute: beta, when: final, dirpath: {tmp_path / "ckpt"}}}
    - class_path: lightning_kl_anneal.PlateauEarlyStopping
      init_args: {{monitor: val_loss, patience: 3, when: plateau}}
"""
    )
    cli = LightningCLI(CLIModel, args=["fit", "--config", str(config)], save_config_callback=None)
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, CyclicalKLAnnealing))
    assert (cb.n_cycle, cb.period, cb.unit, cb.delay, cb.log_name) == (None, 2, "epoch", 1, "kl_weight")
    per_epoch = [cli.model.seen[4 * e][2] for e in range(4)]
    assert per_epoch == [cyclical_beta(e, n_cycle=None, period=2, delay=1) for e in range(4)] == [0.0, 0.0, 1.0, 0.0]


def test_hydra_target_yaml(tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        """
callbacks:
  kl:
    _target_: lightning_kl_anneal.CyclicalKLAnnealing
    n_cycle: 4
    ratio: 0.5
    start: 0.1
    delay: 2
  free_bits:  # any importable function of (step, total_steps)
    _target_: lightning_kl_anneal.ScheduledAttribute
    attribute: free_bits
    schedule: {_target_: hydra.utils.get_method, path: operator.mul}
"""
    )
    callbacks = instantiate(config.callbacks)
    kl = callbacks["kl"]
    assert isinstance(kl, CyclicalKLAnnealing) and (kl.n_cycle, kl.start, kl.delay) == (4, 0.1, 2)
    model = TinyVAE(n_batches=5)
    make_trainer(tmp_path, [kl], max_epochs=2).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 10, n_cycle=4, start=0.1, delay=2) for t in range(10)]
    assert isinstance(callbacks["free_bits"], ScheduledAttribute) and callbacks["free_bits"].value_at(3, 4) == 12


def test_scheduled_attribute_with_a_cyclical_schedule_is_cyclical_kl_annealing(tmp_path: Path) -> None:
    # Same values (with phases, T from the Trainer), same log, same checkpoint config; only the defaults of
    # `eval_value` differ (CyclicalKLAnnealing's `eval_beta` defaults to `stop`), so both are given here.
    schedule = CyclicalSchedule(n_cycle=3, ratio=0.5, start=0.1, shape="cosine", delay=2)
    runs = {}
    for name, callback in {
        "general": ScheduledAttribute(schedule, "beta", eval_value=1.0),
        "cyclical": CyclicalKLAnnealing(n_cycle=3, ratio=0.5, start=0.1, shape="cosine", delay=2, eval_beta=1.0),
    }.items():
        model = TinyVAE(n_batches=7)
        logger = CSVLogger(tmp_path / name, name="")
        make_trainer(tmp_path / name, [callback], logger=logger, log_every_n_steps=1, limit_val_batches=1).fit(model)
        logged = {int(r["step"]): float(r["beta"]) for r in _csv_rows(logger) if r.get("beta")}
        runs[name] = (model.seen, model.eval_seen, logged, callback.state_dict(), callback.phase_at(5), callback.total)
    assert runs["general"] == runs["cyclical"]
    seen, eval_seen, logged, state, phase, total = runs["general"]
    assert [b for _, _, b in seen] == [schedule(t, 14) for t in range(14)] and total == 14
    assert seen[1][2] == 0.1 and seen[2][2] == 0.1  # the delay, by hand
    assert eval_seen == [1.0, 1.0] and logged == {t: schedule(t, 14) for t in range(14)}
    assert state == {"total_steps": 14, "config": {**dataclasses.asdict(schedule), "unit": "step"}}
    assert phase == schedule.phase(5, 14)


def test_scheduled_attribute_with_a_cyclical_schedule_refuses_an_unbounded_run(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match=r"or `period=` \(units per cycle\)"):
        make_trainer(tmp_path, [ScheduledAttribute(CyclicalSchedule(), "beta")], max_epochs=-1).fit(Unbounded())
