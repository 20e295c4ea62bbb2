"""Tests for CyclicalKLAnnealing, driven by a real Trainer on a tiny module with real loggers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import (
    CLIModel,
    NoBeta,
    StopAt,
    TinyVAE,
    Unbounded,
    Warmup,
    WithLossFn,
    _csv_rows,
    _fit_with_crash,
    expected,
    make_trainer,
)
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lightning_kl_anneal import CyclicalKLAnnealing, CyclicalSchedule, ScheduledAttribute

# ---------------------------------------------------------------- the β that training_step sees


@pytest.mark.parametrize("shape", ["linear", "sigmoid", "cosine"])
def test_beta_seen_in_training_step(tmp_path: Path, shape: str) -> None:
    model = TinyVAE(n_batches=10)
    cb = CyclicalKLAnnealing(n_cycle=4, ratio=0.5, start=0.1, shape=shape)
    make_trainer(tmp_path, [cb]).fit(model)
    assert [s for s, _, _ in model.seen] == list(range(20))
    assert [b for _, _, b in model.seen] == [expected(t, 20, start=0.1, shape=shape) for t in range(20)]
    assert model.seen[0][2] == model.seen[10][2] < 0.11  # cycle restarts at 0, 5, 10, 15
    assert model.seen[4][2] == 1.0  # plateau is exactly stop


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=12)
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5)
    make_trainer(tmp_path, [cb], accumulate_grad_batches=3).fit(model)
    total = 8  # 2 epochs x 12 batches / 3
    assert len(model.seen) == 24
    for i, (step, _, beta) in enumerate(model.seen):
        assert step == i // 3  # every micro-batch of one optimizer step ...
        assert beta == expected(step, total, n_cycle=2)  # ... sees that step's β
    assert [b for _, _, b in model.seen[::3]] == [0.0, 0.5, 1.0, 1.0] * 2  # by hand: cycles of 4 steps rising over 2


def test_explicit_total_steps_then_plateau(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=15)
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5, stop=0.8, total_steps=10)
    make_trainer(tmp_path, [cb], max_epochs=1).fit(model)
    betas = [b for _, _, b in model.seen]
    assert betas[:10] == [expected(t, 10, n_cycle=2, stop=0.8) for t in range(10)]
    assert betas[10:] == [0.8] * 5
    assert betas[:5] == pytest.approx([0.0, 0.32, 0.64, 0.8, 0.8])  # by hand: cycles of 5 rising over 2.5 steps


def test_buffer_is_updated_in_place(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=8, buffer=True)
    ids, dtypes = set(), set()

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: TinyVAE, *args: Any) -> None:
            ids.add(id(pl_module.beta))
            dtypes.add(pl_module.beta.dtype)

    before = model.beta
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2), Spy()], max_epochs=1).fit(model)
    assert ids == {id(before)} and model.beta is before
    assert dtypes == {torch.float32}
    assert [b for _, _, b in model.seen] == pytest.approx([expected(t, 8, n_cycle=2) for t in range(8)])
    assert "beta" in model.state_dict()


def test_dotted_attribute_and_two_instances(tmp_path: Path) -> None:
    model = WithLossFn(n_batches=8)
    bow = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: WithLossFn, *args: Any) -> None:
            bow.append(pl_module.loss_fn.beta_bow.item())

    cbs = [
        CyclicalKLAnnealing(n_cycle=2, attribute="loss_fn.beta"),
        CyclicalKLAnnealing(n_cycle=1, attribute="loss_fn.beta_bow", log_name="beta_bow"),
        Spy(),
    ]
    make_trainer(tmp_path, cbs, max_epochs=1).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 8, n_cycle=2) for t in range(8)]
    assert bow == [expected(t, 8, n_cycle=1) for t in range(8)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert model.loss_fn.beta_bow.dtype == torch.float64


def test_values_evaluated_ahead_equal_the_schedule_across_batches_and_fits(tmp_path: Path) -> None:
    # The hook reads values evaluated 256 steps at a time: across those batches, and in a second fit of
    # another length with the same callback, every step must see exactly cyclical_beta's value.
    callback = CyclicalKLAnnealing(n_cycle=3, ratio=0.6, shape="cosine")
    for n_batches in (300, 130):
        model = TinyVAE(n_batches=n_batches, batch_size=1)
        make_trainer(tmp_path, [callback], max_epochs=2, limit_val_batches=0).fit(model)
        total = 2 * n_batches
        assert [b for _, _, b in model.seen] == [
            expected(t, total, n_cycle=3, ratio=0.6, shape="cosine") for t in range(total)
        ]
        # by hand, for T = 600: cycles of 200 rising over 120; step 10, (1 - cos(pi * (10 * 3 / 600) / 0.6)) / 2
        assert n_batches != 300 or model.seen[10][2] == pytest.approx(0.017037, abs=1e-6)


# ---------------------------------------------------------------- errors before any training step


def test_missing_attribute_raises_before_training(tmp_path: Path) -> None:
    model = NoBeta()
    with pytest.raises(
        MisconfigurationException, match=r"NoBeta has no attribute `beta`.*add `self.beta = 0.0` in __init__"
    ):
        make_trainer(tmp_path, [CyclicalKLAnnealing()]).fit(model)
    assert model.seen == []


def test_missing_intermediate_of_dotted_path(tmp_path: Path) -> None:
    model = TinyVAE()
    with pytest.raises(MisconfigurationException, match=r"no attribute `loss_fn` on the way to `loss_fn.beta`"):
        make_trainer(tmp_path, [CyclicalKLAnnealing(attribute="loss_fn.beta")]).fit(model)
    assert model.seen == []


def test_integer_buffer_rejected(tmp_path: Path) -> None:
    model = TinyVAE()
    del model.beta
    model.register_buffer("beta", torch.tensor(0))
    with pytest.raises(MisconfigurationException, match=r"`beta` is a torch.int64 tensor"):
        make_trainer(tmp_path, [CyclicalKLAnnealing()]).fit(model)


@pytest.mark.parametrize(
    "trainer_kwargs", [dict(max_epochs=-1), dict(max_epochs=None, max_steps=-1)], ids=["max_epochs=-1", "max_steps=-1"]
)
def test_unbounded_training_needs_total_steps(tmp_path: Path, trainer_kwargs: dict) -> None:
    model = Unbounded()
    with pytest.raises(
        MisconfigurationException, match=r"needs the run.s length.*pass `total_steps=` to the callback, or `period=`"
    ):
        make_trainer(tmp_path, [CyclicalKLAnnealing()], **trainer_kwargs).fit(model)
    assert model.seen == []


def test_unbounded_training_with_total_steps(tmp_path: Path) -> None:
    model = Unbounded()
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, total_steps=6)], max_epochs=-1, max_steps=9).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 6, n_cycle=2) for t in range(6)] + [1.0] * 3


def test_duplicate_attribute_rejected(tmp_path: Path) -> None:
    # Lightning itself refuses two stateful callbacks with one state key: ours is keyed by `attribute`.
    with pytest.raises(RuntimeError, match=r"`callback.state_key` must be unique"):
        make_trainer(tmp_path, [CyclicalKLAnnealing(), CyclicalKLAnnealing(n_cycle=1)])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_cycle": 0}, ValueError, r"`n_cycle` must be an int >= 1, got 0"),
        ({"n_cycle": 1.5}, TypeError, r"`n_cycle` must be an int >= 1, got 1.5"),
        ({"ratio": 0}, ValueError, r"`ratio` must be in \(0, 1\], got 0"),
        ({"ratio": float("nan")}, ValueError, r"`ratio` must be in \(0, 1\], got nan"),
        ({"ratio_zero": 0.6}, ValueError, r"`ratio_zero` must be in \[0, ratio\)"),
        ({"start": float("-inf")}, ValueError, r"`start` must be a finite real number, got -inf"),
        ({"stop": float("nan")}, ValueError, r"`stop` must be a finite real number, got nan"),
        ({"total_steps": 0}, ValueError, r"`total_steps` must be an int >= 1, got 0"),
        ({"total_steps": 1e4}, TypeError, r"`total_steps` must be an int >= 1, got 10000.0"),
        ({"shape": "exp"}, ValueError, r"`shape` must be one of .*got 'exp'"),
        ({"attribute": "loss fn"}, ValueError, r"`attribute` must be an attribute name or dotted path.*got 'loss fn'"),
        ({"attribute": ""}, ValueError, r"`attribute` must be"),
        ({"eval_beta": float("nan")}, ValueError, r"`eval_beta` must be a finite real number or None.*got nan"),
        ({"log_name": ""}, ValueError, r"`log_name` must be a non-empty string, True .* or None .*got ''"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        CyclicalKLAnnealing(**kwargs)


def test_keyword_only_after_stop_and_the_schedule_object_left_as_given(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"takes from 1 to 5 positional arguments but 6 were given"):
        CyclicalKLAnnealing(4, 0.5, 0.0, 1.0, 1000)  # type: ignore[misc]
    cb = CyclicalKLAnnealing(total_steps=1000, stop=0.8)
    assert cb.total_steps == 1000 and cb.eval_beta == cb.stop == 0.8
    # The schedule objects the user passed in are used as they are, and left as they were, by a whole fit.
    schedule, warmup = CyclicalSchedule(n_cycle=2, ratio=0.25), Warmup(3)
    given = (dataclasses.astuple(schedule), dict(vars(schedule)), dict(vars(warmup)))
    model = WithLossFn(n_batches=4)
    model.temperature = 0.0
    callbacks = [
        ScheduledAttribute(schedule, "loss_fn.beta", total_steps=10),
        ScheduledAttribute(warmup, "temperature"),
    ]
    make_trainer(tmp_path, callbacks, max_epochs=2).fit(model)
    assert callbacks[0].value_at(3) == schedule(3, 10) == 1.0 and callbacks[0].total == 10
    assert (
        [b for _, _, b in model.seen] == [schedule(t, 10) for t in range(8)] == [0.0, 0.8, 1.0, 1.0, 1.0, 0.0, 0.8, 1.0]
    )
    assert (dataclasses.astuple(schedule), dict(vars(schedule)), dict(vars(warmup))) == given
    assert (
        callbacks[0].schedule is schedule and callbacks[1].schedule is warmup and schedule == CyclicalSchedule(2, 0.25)
    )


# ---------------------------------------------------------------- evaluation β


@pytest.mark.parametrize("accumulate", [1, 2], ids=["no-accumulation", "validation-mid-accumulation"])
def test_eval_beta_during_validation_test_predict(tmp_path: Path, accumulate: int) -> None:
    model = TinyVAE(n_batches=6)
    cb = CyclicalKLAnnealing(n_cycle=2, start=0.0, stop=0.9, eval_beta=0.5)
    trainer = make_trainer(
        tmp_path,
        [cb],
        limit_val_batches=2,
        num_sanity_val_steps=2,
        val_check_interval=3,
        accumulate_grad_batches=accumulate,
    )
    trainer.fit(model)
    assert model.eval_seen and set(model.eval_seen) == {0.5}
    total = 12 // accumulate
    assert [(s, b) for s, _, b in model.seen] == [
        (i // accumulate, expected(i // accumulate, total, n_cycle=2, stop=0.9)) for i in range(12)
    ]
    model.eval_seen.clear()
    trainer.test(model, verbose=False)
    trainer.predict(model)
    assert model.eval_seen and set(model.eval_seen) == {0.5}


def test_default_eval_beta_is_stop_and_restored_after_validation(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=4)
    after_val = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: TinyVAE) -> None:
            after_val.append((trainer.global_step, pl_module.beta))

    cb = CyclicalKLAnnealing(n_cycle=1, ratio=1.0, stop=0.7)
    make_trainer(tmp_path, [cb, Spy()], limit_val_batches=1).fit(model)
    assert set(model.eval_seen) == {0.7}
    # validation runs before on_train_epoch_end; the hook still sees the last training β
    assert after_val == [
        (4, expected(3, 8, n_cycle=1, ratio=1.0, stop=0.7)),
        (8, expected(7, 8, n_cycle=1, ratio=1.0, stop=0.7)),
    ]


# ---------------------------------------------------------------- logging


class StopsAt(TinyVAE):
    """Sets ``trainer.should_stop`` in the training step of ``stop_at``, as a user's divergence check would."""

    def __init__(self, stop_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stop_at = stop_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.global_step == self.stop_at:
            self.trainer.should_stop = True
        return loss


def test_beta_logged_at_the_step_where_should_stop_is_set(tmp_path: Path) -> None:
    # Lightning logs the losses of the step that sets `should_stop` whatever `log_every_n_steps`; β goes with them.
    model = StopsAt(stop_at=6, n_batches=20)
    logger = CSVLogger(tmp_path, name="csv")
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2)], logger=logger, log_every_n_steps=5).fit(model)
    assert len(model.seen) == 7
    rows = _csv_rows(logger)
    losses = sorted(int(r["step"]) for r in rows if r.get("train_loss"))
    betas = {int(r["step"]): float(r["beta"]) for r in rows if r.get("beta")}
    assert losses == [4, 6]
    assert betas == {4: expected(4, 40, n_cycle=2), 6: expected(6, 40, n_cycle=2)} == {4: 0.4, 6: 0.6}


class StopsInItsHook(TinyVAE):
    """Sets ``trainer.should_stop`` in its own ``on_train_batch_end``, which runs after every callback's."""

    def on_train_batch_end(self, *args: Any) -> None:
        if self.global_step > 6:
            self.trainer.should_stop = True


@pytest.mark.parametrize("who", ["a-later-callback", "the-modules-hook"])
def test_beta_logged_where_should_stop_is_set_after_this_callbacks_hook(tmp_path: Path, who: str) -> None:
    # Set after this callback's on_train_batch_end, `should_stop` still makes the Trainer log the step's losses.
    model = StopsInItsHook(n_batches=20) if who == "the-modules-hook" else TinyVAE(n_batches=20)
    callbacks = [CyclicalKLAnnealing(n_cycle=2)] + ([StopAt(7)] if who == "a-later-callback" else [])
    logger = CSVLogger(tmp_path, name="csv")
    make_trainer(tmp_path, callbacks, logger=logger, log_every_n_steps=5).fit(model)
    rows = _csv_rows(logger)
    losses = sorted(int(r["step"]) for r in rows if r.get("train_loss"))
    betas = {int(r["step"]): float(r["beta"]) for r in rows if r.get("beta")}
    assert losses == [4, 6] and betas == {4: 0.4, 6: 0.6}  # by hand: T = 40, cycles of 20 rising over 10 steps


class NeverImproves(TinyVAE):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", float(self.current_epoch))


@pytest.mark.parametrize(
    ("kwargs", "losses"),
    [
        (dict(limit_val_batches=1), [3, 7]),
        # validation at the 3rd batch of each epoch; EarlyStopping stops there at step 7, after the Trainer has
        # logged (or not) that step's losses: no row of the value there either
        (dict(limit_val_batches=1, val_check_interval=3, log_every_n_steps=5), [4]),
        (dict(accumulate_grad_batches=3), [3, 6]),  # stopped after a step of accumulated batches
    ],
    ids=["early-stopping", "early-stopping-mid-epoch", "accumulation"],
)
def test_beta_and_losses_logged_at_the_same_steps_when_a_run_stops(tmp_path: Path, kwargs: dict, losses: list) -> None:
    stop = EarlyStopping(monitor="val_loss", patience=1) if "limit_val_batches" in kwargs else StopAt(7)
    logger = CSVLogger(tmp_path, name="csv")
    kwargs = {"log_every_n_steps": 4, **kwargs}
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2), stop], logger=logger, max_epochs=10, **kwargs).fit(
        NeverImproves(n_batches=5)
    )
    rows = _csv_rows(logger)
    assert sorted(int(r["step"]) for r in rows if r.get("train_loss")) == losses
    assert sorted(int(r["step"]) for r in rows if r.get("beta")) == losses


def test_no_value_logged_for_a_step_stopped_between_its_accumulated_batches(tmp_path: Path) -> None:
    # `should_stop` set in the first of two accumulated batches of step 6: the run stops there, and the Trainer
    # logs no losses for a step that never stepped.
    logger = CSVLogger(tmp_path, name="csv")
    model = StopsAt(stop_at=6, n_batches=20)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2)], logger=logger, log_every_n_steps=5,
                 accumulate_grad_batches=2).fit(model)  # fmt: skip
    rows = _csv_rows(logger)
    assert [s for s, _, _ in model.seen][-2:] == [5, 6]  # one batch of step 6
    assert sorted(int(r["step"]) for r in rows if r.get("train_loss")) == [4]
    assert {int(r["step"]): float(r["beta"]) for r in rows if r.get("beta")} == {4: 0.8}  # T = 20: cycles of 10


def test_beta_logged_at_every_step_the_trainer_logs_while_min_steps_holds_a_stopped_run(tmp_path: Path) -> None:
    # `should_stop` set at step 6 with `min_steps=9`: the Trainer runs on, logging the losses of every step after.
    logger = CSVLogger(tmp_path, name="csv")
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2)], logger=logger, log_every_n_steps=5, min_steps=9).fit(
        StopsAt(stop_at=6, n_batches=20)
    )
    rows = _csv_rows(logger)
    losses = sorted(int(r["step"]) for r in rows if r.get("train_loss"))
    betas = {int(r["step"]): float(r["beta"]) for r in rows if r.get("beta")}
    assert losses[:4] == [4, 6, 7, 8] and sorted(betas) == losses
    assert (betas[4], betas[6], betas[8]) == (0.4, 0.6, 0.8)  # by hand: T = 40, cycles of 20 rising over 10 steps


@pytest.mark.parametrize("accumulate", [1, 2])
def test_beta_logged_at_the_step_of_its_losses(tmp_path: Path, accumulate: int) -> None:
    model = TinyVAE(n_batches=20)
    csv_logger = CSVLogger(tmp_path, name="csv")
    tb_logger = TensorBoardLogger(tmp_path, name="tb")
    cb = CyclicalKLAnnealing(n_cycle=3, ratio=0.5)
    make_trainer(
        tmp_path, [cb], logger=[csv_logger, tb_logger], log_every_n_steps=3, accumulate_grad_batches=accumulate
    ).fit(model)

    rows = _csv_rows(csv_logger)
    beta_at = {int(r["step"]): float(r["beta"]) for r in rows if r.get("beta")}
    seen_at = {int(r["step"]): float(r["beta_seen"]) for r in rows if r.get("beta_seen")}
    n_steps = 40 // accumulate
    assert sorted(beta_at) == [s for s in range(n_steps) if (s + 1) % 3 == 0]
    # A plot of β and of the losses lines up: same steps, and β is the value that produced them
    # (`self.log` stored the seen value as float32).
    assert sorted(beta_at) == sorted(seen_at)
    assert all(math.isclose(beta_at[s], seen_at[s], rel_tol=1e-6) for s in beta_at)
    assert all(beta_at[s] == expected(s, n_steps, n_cycle=3) for s in beta_at)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tb_logger.log_dir)
    events.Reload()
    tb = {e.step: e.value for e in events.Scalars("beta")}
    assert sorted(tb) == sorted(beta_at)
    assert all(math.isclose(tb[s], beta_at[s], rel_tol=1e-6) for s in tb)


def test_custom_log_name_and_logging_off(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="named")
    make_trainer(tmp_path, [CyclicalKLAnnealing(log_name="kl_weight")], logger=logger, log_every_n_steps=1).fit(
        TinyVAE(n_batches=3)
    )
    rows = _csv_rows(logger)
    assert sum(1 for r in rows if r.get("kl_weight")) == 6 and "beta" not in rows[0]

    logger = CSVLogger(tmp_path, name="off")
    make_trainer(tmp_path, [CyclicalKLAnnealing(log_name=None)], logger=logger, log_every_n_steps=1).fit(
        TinyVAE(n_batches=3)
    )
    assert "beta" not in _csv_rows(logger)[0]


# ---------------------------------------------------------------- checkpoints and resume


@pytest.mark.parametrize(
    ("crash_at", "accumulate"), [(13, 1), (10, 1), (15, 2)], ids=["mid-epoch", "epoch-boundary", "mid-accumulation"]
)
def test_crash_and_resume_continues_exactly(tmp_path: Path, crash_at: int, accumulate: int) -> None:
    reference = TinyVAE(n_batches=10)
    make_trainer(
        tmp_path / "ref",
        [CyclicalKLAnnealing(n_cycle=3, ratio=0.5, start=0.1)],
        accumulate_grad_batches=accumulate,
        max_epochs=3,
    ).fit(reference)
    truth = {step: beta for step, _, beta in reference.seen}

    before, last = _fit_with_crash(tmp_path, crash_at, accumulate)
    resumed = TinyVAE(n_batches=10)
    cb = CyclicalKLAnnealing(n_cycle=3, ratio=0.5, start=0.1)
    make_trainer(tmp_path, [cb], accumulate_grad_batches=accumulate, max_epochs=3).fit(resumed, ckpt_path=last)

    ckpt_step = int(Path(last).stem.split("=")[1])
    assert resumed.seen[0][0] == ckpt_step  # picks up at the checkpoint's step
    assert resumed.seen[-1][0] == max(truth)  # and runs to the same end
    for step, _, beta in before + resumed.seen:
        assert beta == truth[step], step
    assert cb.total == 30 // accumulate


def test_checkpoint_loads_with_weights_only_and_keeps_total_steps(tmp_path: Path) -> None:
    _, last = _fit_with_crash(tmp_path, crash_at=12, accumulate=1)
    state = torch.load(last, weights_only=True)
    keys = [k for k in state["callbacks"] if k.startswith("CyclicalKLAnnealing")]
    assert keys == ["CyclicalKLAnnealing{'attribute': 'beta'}"]
    assert state["callbacks"][keys[0]]["total_steps"] == 30
    assert state["callbacks"][keys[0]]["config"] == {
        "n_cycle": 3, "ratio": 0.5, "start": 0.1, "stop": 1.0, "shape": "linear", "ratio_zero": 0.0,
        "period": None, "delay": 0, "unit": "step",
    }  # fmt: skip

    # Resuming with a longer Trainer keeps the checkpoint's schedule (and says so).
    resumed = TinyVAE(n_batches=10)
    with pytest.warns(UserWarning, match=r"checkpoint's schedule spans 30 steps but this Trainer would run 50"):
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=3, ratio=0.5, start=0.1)], max_epochs=5).fit(
            resumed, ckpt_path=last
        )
    assert all(beta == expected(step, 30, n_cycle=3, start=0.1) for step, _, beta in resumed.seen)


def test_checkpoint_schedule_not_carried_into_a_fresh_fit(tmp_path: Path) -> None:
    _, last = _fit_with_crash(tmp_path, crash_at=12, accumulate=1)
    cb = CyclicalKLAnnealing(n_cycle=3, ratio=0.5, start=0.1)
    with pytest.warns(UserWarning, match=r"checkpoint's schedule spans 30 steps"):
        make_trainer(tmp_path, [cb], max_epochs=5).fit(TinyVAE(n_batches=10), ckpt_path=last)
    fresh = TinyVAE(n_batches=10)
    make_trainer(tmp_path, [cb], max_epochs=5).fit(fresh)  # same callback object, no checkpoint
    assert [b for _, _, b in fresh.seen] == [expected(t, 50, n_cycle=3, start=0.1) for t in range(50)]


def test_two_instances_in_one_checkpoint(tmp_path: Path) -> None:
    model = WithLossFn(n_batches=4)
    cbs = [
        CyclicalKLAnnealing(n_cycle=2, attribute="loss_fn.beta"),
        CyclicalKLAnnealing(n_cycle=1, attribute="loss_fn.beta_bow", total_steps=5),
    ]
    trainer = make_trainer(tmp_path, cbs, max_epochs=1)
    trainer.fit(model)
    path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["callbacks"]
    assert state["CyclicalKLAnnealing{'attribute': 'loss_fn.beta'}"]["total_steps"] == 4
    assert state["CyclicalKLAnnealing{'attribute': 'loss_fn.beta_bow'}"]["total_steps"] == 5


# ---------------------------------------------------------------- DDP


class RecordingVAE(TinyVAE):
    """Writes what each rank saw to a file, since a spawned process's attributes don't come back."""

    def __init__(self, out_dir: str) -> None:
        super().__init__(n_batches=8)
        self.out_dir = out_dir

    def on_train_end(self) -> None:
        with open(os.path.join(self.out_dir, f"rank{self.global_rank}.json"), "w") as f:
            json.dump(self.seen, f)


def test_ddp_every_rank_sees_the_same_beta(tmp_path: Path) -> None:
    model = RecordingVAE(str(tmp_path))
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5)
    make_trainer(tmp_path, [cb], strategy="ddp_spawn", accelerator="cpu", devices=2, max_epochs=2).fit(model)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # 8 batches split over 2 ranks: 4 steps per epoch, T = 8
    assert [b for _, _, b in seen[0]] == [expected(t, 8, n_cycle=2) for t in range(8)]
    assert [(s, b) for s, _, b in seen[0]] == [(s, b) for s, _, b in seen[1]]


# ---------------------------------------------------------------- torch.compile


class CompiledVAE(TinyVAE):
    def __init__(self, backend: Any) -> None:
        super().__init__(n_batches=12, buffer=True)
        self.loss_fn = torch.compile(lambda x, w, beta: (x @ w).pow(2).mean() * (1.0 + beta), backend=backend)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.global_step, batch_idx, float(self.beta)))
        return self.loss_fn(batch[0], self.layer.weight.t(), self.beta)


def test_torch_compile_one_graph_for_a_cyclical_run(tmp_path: Path) -> None:
    torch._dynamo.reset()
    graphs = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
        graphs.append(gm)
        return gm.forward

    model = CompiledVAE(counting_backend)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=4, ratio=0.5, shape="cosine")], max_epochs=2).fit(model)
    betas = [b for _, _, b in model.seen]
    assert len(set(betas)) == 4  # β really changed: 0, 0.25, 0.75, 1 in each of 4 cycles ...
    assert betas == pytest.approx([expected(t, 24, shape="cosine") for t in range(24)])
    assert len(graphs) == 1  # ... and the compiled code never recompiled


# ---------------------------------------------------------------- LightningCLI


def test_configurable_from_lightning_cli_yaml(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
trainer:
  max_epochs: 2
  logger: false
  enable_progress_bar: false
  enable_checkpointing: false
  enable_model_summary: false
  default_root_dir: {tmp_path}
  callbacks:
    - class_path: lightning_kl_anneal.CyclicalKLAnnealing
      init_args:
        n_cycle: 2
        ratio: 0.5
        start: 0.1
        shape: cosine
"""
    )
    cli = LightningCLI(CLIModel, args=["fit", "--config", str(config)], save_config_callback=None)
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, CyclicalKLAnnealing))
    assert (cb.n_cycle, cb.start, cb.shape) == (2, 0.1, "cosine")
    assert [b for _, _, b in cli.model.seen] == [expected(t, 8, n_cycle=2, start=0.1, shape="cosine") for t in range(8)]
