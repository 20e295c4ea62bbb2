"""β is right in every run Lightning can make, or the user is told.

Each test drives a real Trainer through one kind of run: manual optimization, restored and
continued fits, runs that end before the schedule, several instances, unusual attributes.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import StopAt, TinyVAE, WithLossFn, _csv_rows, _fit_with_crash, expected, make_trainer
from lightning.pytorch.callbacks import EarlyStopping, GradientAccumulationScheduler, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_kl_anneal import CyclicalKLAnnealing, MisconfigurationException, ScheduledAttribute, cyclical_beta

# ---------------------------------------------------------------- manual optimization


class ManualVAE(TinyVAE):
    """A VAE-GAN-like module: `n_opt` optimizers, each stepped once every `every` batches."""

    def __init__(self, n_opt: int = 1, every: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.n_opt, self.every = n_opt, every
        self.other = nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self.crash_at is not None and len(self.seen) == self.crash_at:
            raise RuntimeError("simulated crash")
        self.seen.append((self.global_step, batch_idx, float(self.beta)))
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        loss = (self.layer(batch[0]).pow(2).mean() + self.other(batch[0]).pow(2).mean()) * (1.0 + self.beta)
        self.manual_backward(loss)
        if (batch_idx + 1) % self.every == 0:
            for opt in optimizers:
                opt.step()
                opt.zero_grad()

    def configure_optimizers(self) -> Any:
        opts = [torch.optim.SGD(self.layer.parameters(), lr=0.01), torch.optim.SGD(self.other.parameters(), lr=0.01)]
        return opts[: self.n_opt]


@pytest.mark.parametrize(
    ("n_opt", "every"), [(1, 1), (2, 1), (1, 3)], ids=["one-optimizer", "two-optimizers", "manual-accumulation"]
)
def test_manual_optimization_traces_the_whole_schedule(tmp_path: Path, n_opt: int, every: int) -> None:
    model = ManualVAE(n_opt=n_opt, every=every, n_batches=12)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, ratio=0.5)], max_epochs=2).fit(model)
    # The step counts training batches, and so does T (24), whatever the optimizers do.
    assert [b for _, _, b in model.seen] == [expected(t, 24, n_cycle=2) for t in range(24)]
    assert model.seen[-1][2] == 1.0 and [b for _, _, b in model.seen].count(0.0) == 2  # both cycles, whole run
    assert model.seen[1][2] == pytest.approx(1 / 6)  # by hand: cycles of 12 batches rising over 6


def test_manual_optimization_resumes_exactly(tmp_path: Path) -> None:
    reference = ManualVAE(n_opt=2, n_batches=10)
    make_trainer(tmp_path / "ref", [CyclicalKLAnnealing(n_cycle=3, start=0.1)], max_epochs=3).fit(reference)

    crashing = ManualVAE(n_opt=2, n_batches=10, crash_at=13)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trainer = make_trainer(
        tmp_path, [CyclicalKLAnnealing(n_cycle=3, start=0.1), ckpt], enable_checkpointing=True, max_epochs=3
    )
    with pytest.raises(RuntimeError, match="simulated crash"), pytest.warns(UserWarning, match="the fit ended after"):
        trainer.fit(crashing)
    last = max((tmp_path / "ckpt").glob("step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    resumed = ManualVAE(n_opt=2, n_batches=10)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=3, start=0.1)], max_epochs=3).fit(resumed, ckpt_path=str(last))
    truth = [b for _, _, b in reference.seen]
    assert [b for _, _, b in resumed.seen] == truth[len(truth) - len(resumed.seen) :]


# ---------------------------------------------------------------- a checkpoint's T stays with its fit


def _no_warning_fit(trainer: L.Trainer, model: L.LightningModule, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="CyclicalKLAnnealing")
        trainer.fit(model, **kwargs)


@pytest.mark.parametrize("how", ["test", "validate", "predict", "fit-finished", "fit-failing-sanity-check"])
def test_checkpoint_state_does_not_leak_into_a_fresh_fit(tmp_path: Path, how: str) -> None:
    cb = CyclicalKLAnnealing(n_cycle=3, ratio=0.5, start=0.1)
    finished = make_trainer(tmp_path / "short", [cb], max_epochs=1)
    finished.fit(TinyVAE(n_batches=10))  # T = 10
    path = tmp_path / "short.ckpt"
    finished.save_checkpoint(path)

    other = make_trainer(tmp_path, [cb], max_epochs=1, limit_val_batches=1)
    if how == "fit-finished":
        other.fit(TinyVAE(n_batches=10), ckpt_path=path)  # nothing left to train
    elif how == "fit-failing-sanity-check":

        class Broken(TinyVAE):
            def validation_step(self, batch: Any, batch_idx: int) -> None:
                raise ValueError("broken validation")

        failing = make_trainer(tmp_path, [cb], max_epochs=3, limit_val_batches=1, num_sanity_val_steps=1)
        with pytest.raises(ValueError, match="broken validation"):
            failing.fit(Broken(n_batches=10), ckpt_path=path)
    else:
        getattr(other, how)(TinyVAE(n_batches=10), ckpt_path=path, **({} if how == "predict" else {"verbose": False}))

    fresh = TinyVAE(n_batches=10)
    _no_warning_fit(make_trainer(tmp_path, [cb], max_epochs=4), fresh)  # a fresh fit: T = 40, no word of a checkpoint
    assert [b for _, _, b in fresh.seen] == [expected(t, 40, n_cycle=3, start=0.1) for t in range(40)]


# ---------------------------------------------------------------- continuing a fit


def test_continuing_a_fit_on_the_same_trainer_keeps_its_schedule(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=10)
    trainer = make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, ratio=0.5)], max_epochs=2)
    trainer.fit(model)  # T = 20
    trainer.fit_loop.max_epochs = 4
    with pytest.warns(
        UserWarning, match=r"continued fit's schedule spans 20 steps but this Trainer would run 40.*`total_steps=40`"
    ):
        trainer.fit(model)
    assert [s for s, _, _ in model.seen] == list(range(40))
    assert [b for _, _, b in model.seen] == [expected(t, 20, n_cycle=2) for t in range(40)]

    # The same as resuming the first run from its checkpoint with the longer Trainer.
    first = make_trainer(tmp_path / "a", [CyclicalKLAnnealing(n_cycle=2, ratio=0.5)], max_epochs=2)
    first.fit(TinyVAE(n_batches=10))
    first.save_checkpoint(tmp_path / "a.ckpt")
    resumed = TinyVAE(n_batches=10)
    with pytest.warns(
        UserWarning, match=r"checkpoint's schedule spans 20 steps but this Trainer would run 40.*`total_steps=40`"
    ):
        make_trainer(tmp_path / "b", [CyclicalKLAnnealing(n_cycle=2, ratio=0.5)], max_epochs=4).fit(
            resumed, ckpt_path=tmp_path / "a.ckpt"
        )
    assert resumed.seen == model.seen[20:]


def test_a_fit_on_another_trainer_does_not_continue_the_last_fits_schedule(tmp_path: Path) -> None:
    # The callback's last fit (T = 6) ran on another Trainer. Resuming here, at step 4, a checkpoint that holds no
    # state of the callback (written without it) is no continuation of that fit: T is this Trainer's 10 steps.
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5)
    make_trainer(tmp_path / "a", [cb], max_steps=6).fit(TinyVAE(n_batches=10))
    plain = make_trainer(tmp_path / "plain", [], max_steps=4)
    plain.fit(TinyVAE(n_batches=10))
    plain.save_checkpoint(tmp_path / "plain.ckpt")
    resumed = TinyVAE(n_batches=10)
    _no_warning_fit(make_trainer(tmp_path / "b", [cb], max_steps=10), resumed, ckpt_path=tmp_path / "plain.ckpt")
    assert cb.total == 10
    # T = 10, M = 2: cycles of 5 steps, β = 0, 0.4, 0.8, 1, 1 in each; steps 4..9 (by hand; with T = 6 they differ)
    assert [b for _, _, b in resumed.seen] == [1.0, 0.0, 0.4, 0.8, 1.0, 1.0]


def test_a_fit_that_took_no_step_is_not_continued_by_the_next_on_the_same_trainer(tmp_path: Path) -> None:
    # The first fit crashed in its first step (T = 2 epochs x 4 batches = 8). The next fit on the same Trainer, of
    # a model with 6 batches an epoch, starts at step 0 too: a fresh schedule over its own 12 steps, not 8.
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5)
    trainer = make_trainer(tmp_path, [cb], max_epochs=2)
    with (
        pytest.warns(UserWarning, match="ended after 0 of the schedule's 8 steps"),
        pytest.raises(RuntimeError, match="simulated crash"),
    ):
        trainer.fit(TinyVAE(n_batches=4, crash_at=0))
    assert cb.total == 8
    model = TinyVAE(n_batches=6)
    _no_warning_fit(trainer, model)
    assert cb.total == 12
    assert [b for _, _, b in model.seen] == [expected(t, 12, n_cycle=2) for t in range(12)]
    assert [b for _, _, b in model.seen][:6] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0])  # by hand


def test_continuing_with_explicit_total_steps_reschedules(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=10)
    trainer = make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, total_steps=40)], max_epochs=2)
    trainer.fit(model)
    trainer.fit_loop.max_epochs = 4
    trainer.fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 40, n_cycle=2) for t in range(40)]


# ---------------------------------------------------------------- runs that end before the schedule


@pytest.mark.parametrize(
    ("n_cycle", "message"),
    [
        (
            2,
            r"ended after 10 of the schedule's 50 steps.*`beta` last held 0.72, not its final value 1\. .*not trained on the ELBO",
        ),
        (
            4,
            r"ended after 10 of the schedule's 50 steps.*`beta` last held 1, its final value, but the rest of the schedule did not run",
        ),
    ],
    ids=["on-a-ramp", "on-a-plateau"],
)
def test_early_stopping_before_the_end_warns_with_the_numbers(tmp_path: Path, n_cycle: int, message: str) -> None:
    class Worsening(TinyVAE):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", float(self.current_epoch))  # never improves

    stop = EarlyStopping(monitor="val_loss", patience=1)
    cb = CyclicalKLAnnealing(n_cycle=n_cycle, ratio=0.5)
    with pytest.warns(UserWarning) as record:
        make_trainer(tmp_path, [cb, stop], max_epochs=10, limit_val_batches=1).fit(Worsening(n_batches=5))
    messages = [str(w.message) for w in record if "fit ended" in str(w.message)]
    assert len(messages) == 1
    assert re.search(message, messages[0]), messages[0]


def test_crash_warns_that_the_schedule_did_not_finish(tmp_path: Path) -> None:
    last_beta = expected(12, 30, n_cycle=3, start=0.1)  # written for the step that crashed
    with pytest.warns(UserWarning, match=rf"fit ended after 12 of the schedule's 30 steps.*last held {last_beta:.6g}"):
        _fit_with_crash(tmp_path, crash_at=12, accumulate=1)


def test_finished_run_does_not_warn(tmp_path: Path) -> None:
    _no_warning_fit(make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2)], max_epochs=2), TinyVAE(n_batches=5))


def test_gradient_accumulation_scheduler_gives_the_exact_length(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=12)
    scheduler = GradientAccumulationScheduler({0: 1, 1: 3})
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5)
    _no_warning_fit(make_trainer(tmp_path, [cb, scheduler], max_epochs=3), model)
    total = 12 + 4 + 4  # Lightning's estimate would be 36
    assert cb.total == total
    steps = sorted({s for s, _, _ in model.seen})
    assert steps == list(range(total))
    assert all(b == expected(s, total, n_cycle=2) for s, _, b in model.seen)


def test_gradient_accumulation_scheduler_counts_a_partial_last_step(tmp_path: Path) -> None:
    # 10 batches per epoch accumulated by 3: 3 full steps and one of the last batch, ceil(10 / 3) = 4 per epoch
    # (floor would give 3); epoch 0 takes 10 steps of one batch: T = 10 + 4 + 4 = 18, counted by hand.
    model = TinyVAE(n_batches=10)
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.5)
    _no_warning_fit(make_trainer(tmp_path, [cb, GradientAccumulationScheduler({0: 1, 1: 3})], max_epochs=3), model)
    assert cb.total == 18
    assert sorted({s for s, _, _ in model.seen}) == list(range(18))
    assert all(b == expected(s, 18, n_cycle=2) for s, _, b in model.seen)
    beta = {s: b for s, _, b in model.seen}  # by hand: cycles of 9 steps (of 8 with floor's T = 16)
    assert beta[2] == pytest.approx(4 / 9) and beta[9] == 0.0


# ---------------------------------------------------------------- a changed schedule on resume


def test_resuming_with_a_changed_schedule_names_what_changed(tmp_path: Path) -> None:
    _, last = _fit_with_crash(tmp_path, crash_at=12, accumulate=1)
    cb = CyclicalKLAnnealing(n_cycle=4, ratio=0.25, start=0.1, shape="cosine")
    with pytest.warns(
        UserWarning, match=r"another schedule \(n_cycle: 3 -> 4; ratio: 0.5 -> 0.25; shape: 'linear' -> 'cosine'\)"
    ):
        make_trainer(tmp_path, [cb], max_epochs=3).fit(TinyVAE(n_batches=10), ckpt_path=last)


def test_resuming_with_the_same_schedule_is_silent(tmp_path: Path) -> None:
    _, last = _fit_with_crash(tmp_path, crash_at=12, accumulate=1)
    _no_warning_fit(
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=3, start=0.1)], max_epochs=3),
        TinyVAE(n_batches=10),
        ckpt_path=last,
    )


# ---------------------------------------------------------------- several instances


def test_default_log_name_follows_the_attribute(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="two")
    cbs = [
        CyclicalKLAnnealing(n_cycle=2, attribute="loss_fn.beta"),
        CyclicalKLAnnealing(n_cycle=1, attribute="loss_fn.beta_bow"),
    ]
    make_trainer(tmp_path, cbs, logger=logger, log_every_n_steps=1, max_epochs=1).fit(WithLossFn(n_batches=4))
    rows = _csv_rows(logger)
    beta = [float(r["loss_fn.beta"]) for r in rows if r.get("loss_fn.beta")]
    bow = [float(r["loss_fn.beta_bow"]) for r in rows if r.get("loss_fn.beta_bow")]
    assert beta == [expected(t, 4, n_cycle=2) for t in range(4)]
    assert bow == [expected(t, 4, n_cycle=1) for t in range(4)]


def test_log_name_clash_is_refused_before_training(tmp_path: Path) -> None:
    model = WithLossFn(n_batches=4)
    cbs = [
        CyclicalKLAnnealing(attribute="loss_fn.beta", log_name="beta"),
        CyclicalKLAnnealing(attribute="loss_fn.beta_bow", log_name="beta"),
    ]
    with pytest.raises(MisconfigurationException, match=r"both log as `log_name='beta'`; give each its own `log_name`"):
        make_trainer(tmp_path, cbs).fit(model)
    assert model.seen == []


def test_two_callbacks_that_do_not_log_do_not_clash(tmp_path: Path) -> None:
    model = WithLossFn(n_batches=4)
    bow = CyclicalKLAnnealing(n_cycle=1, attribute="loss_fn.beta_bow", log_name=None)
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=1, attribute="loss_fn.beta", log_name=None), bow]).fit(model)
    assert [b for _, _, b in model.seen] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]  # T = 8, ramp over 4
    assert float(model.loss_fn.beta_bow) == 1.0  # its eval value, stop, after the fit


def test_two_callbacks_writing_one_attribute_are_refused(tmp_path: Path) -> None:
    cbs = [CyclicalKLAnnealing(), ScheduledAttribute(lambda s, t: 0.5, "beta")]
    with pytest.raises(
        MisconfigurationException, match=r"CyclicalKLAnnealing and ScheduledAttribute both write `beta`"
    ):
        make_trainer(tmp_path, cbs).fit(TinyVAE())


# ---------------------------------------------------------------- beta_at, too many cycles


def test_beta_at_uses_the_constructors_total_steps() -> None:
    cb = CyclicalKLAnnealing(n_cycle=2, total_steps=100)
    assert cb.beta_at(10) == cyclical_beta(10, 100, n_cycle=2)
    assert cb.beta_at(10, total_steps=40) == cyclical_beta(10, 40, n_cycle=2)
    with pytest.raises(ValueError, match=r"`total_steps` is not known before the fit starts"):
        CyclicalKLAnnealing().beta_at(10)


def test_more_cycles_than_steps_warns_once_and_runs(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=3)
    with pytest.warns(
        UserWarning, match=r"`n_cycle`=4 cycles need more than 4 steps, but the schedule has 1"
    ) as record:
        L.Trainer(fast_dev_run=True, callbacks=[CyclicalKLAnnealing(n_cycle=4)], enable_progress_bar=False,
                  enable_model_summary=False).fit(model)  # fmt: skip
    assert len([w for w in record if "n_cycle" in str(w.message)]) == 1
    assert [b for _, _, b in model.seen] == [0.0]


def test_more_cycles_than_steps_with_a_delay_names_the_delay(tmp_path: Path) -> None:
    # 6 steps minus a delay of 3 leave 3 for 3 cycles: one step each, β never leaves `start` after the delay.
    model = TinyVAE(n_batches=6)
    with pytest.warns(
        UserWarning,
        match=r"`n_cycle`=3 cycles need more than 3 steps, but the schedule has 3 \(the run's 6 steps minus `delay`=3\)",
    ):
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=3, delay=3, start=0.2)], max_epochs=1).fit(model)
    assert [b for _, _, b in model.seen] == [0.2] * 6


def test_fewer_cycles_than_steps_after_a_delay_does_not_warn(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=8)
    _no_warning_fit(make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, delay=4)], max_epochs=1), model)
    assert [b for _, _, b in model.seen] == [0.0] * 4 + [0.0, 1.0, 0.0, 1.0]  # by hand: cycles of 2 after 4


def test_more_cycles_than_epochs_says_epochs_and_names_no_argument_the_user_did_not_pass(tmp_path: Path) -> None:
    with pytest.warns(UserWarning) as record:
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=4, unit="epoch")], max_epochs=3).fit(TinyVAE(n_batches=2))
    messages = [str(w.message) for w in record if "CyclicalKLAnnealing" in str(w.message)]
    assert len(messages) == 1, messages
    assert re.search(
        r"`n_cycle`=4 cycles need more than 4 epochs, but the schedule has 3 \(the run's 3 epochs\)", messages[0]
    )
    assert "total_steps" not in messages[0] and " steps" not in messages[0]


@pytest.mark.parametrize(("max_epochs", "beta"), [(10, 0.0), (25, 0.96)], ids=["last-epoch-at-start", "ends-mid-ramp"])
def test_epochs_not_a_multiple_of_n_cycle_warn_at_the_start(tmp_path: Path, max_epochs: int, beta: float) -> None:
    # The last cycle is cut short and ends on its ramp: said before the first step, not after the run.
    model = TinyVAE(n_batches=1, crash_at=0)
    cb = CyclicalKLAnnealing(n_cycle=4, unit="epoch")
    with pytest.raises(RuntimeError, match="simulated crash"), pytest.warns(UserWarning) as record:
        make_trainer(tmp_path, [cb], max_epochs=max_epochs).fit(model)
    messages = [str(w.message) for w in record if "CyclicalKLAnnealing" in str(w.message)]
    last = max_epochs - 1
    assert re.search(
        rf"last epoch \({last}, of {max_epochs}\) is in the schedule's ramp phase, at β = {beta:g} ", messages[0]
    )
    assert re.search(rf"use an `n_cycle` that divides {max_epochs} \(e\.g\. 5 or ", messages[0]), messages[0]
    assert " steps" not in messages[0]


@pytest.mark.parametrize("n_cycle", [None, 2], ids=["endless", "200-steps"])
def test_a_run_ending_on_a_ramp_warns_once_at_the_start_and_not_again_at_the_end(
    tmp_path: Path, n_cycle: int | None
) -> None:
    # period=100 in a 30-step run never reaches the plateau: β ends at 0.58. With n_cycle=2 the schedule is 200
    # steps long, so the run also ends before it: the warning at the start said so, the end does not repeat it.
    cb = CyclicalKLAnnealing(period=100, n_cycle=n_cycle)
    with pytest.warns(UserWarning) as record:
        make_trainer(tmp_path, [cb], max_epochs=3).fit(TinyVAE(n_batches=10))
    messages = [str(w.message) for w in record if "CyclicalKLAnnealing" in str(w.message)]
    assert len(messages) == 1, messages
    assert re.search(
        r"last step \(29, of 30\) is in the schedule's ramp phase, at β = 0\.58 instead of `stop`=1", messages[0]
    )
    assert "the first plateau starts at step 50: use a shorter `period`" in messages[0]
    _no_warning_fit(make_trainer(tmp_path, [CyclicalKLAnnealing(period=5, n_cycle=None)], max_epochs=3), TinyVAE())


def test_a_run_ending_in_the_delay_warns_once_at_the_start(tmp_path: Path) -> None:
    # T = 20 given, delay 8, in a 5-step run: every step is in the delay, β = start = 0 throughout.
    cb = CyclicalKLAnnealing(n_cycle=1, delay=8, total_steps=20)
    model = TinyVAE(n_batches=10)
    with pytest.warns(UserWarning) as record:
        make_trainer(tmp_path, [cb], max_steps=5).fit(model)
    messages = [str(w.message) for w in record if "CyclicalKLAnnealing" in str(w.message)]
    assert len(messages) == 1, messages
    assert re.search(
        r"last step \(4, of 5\) is in the schedule's delay phase, at β = 0 instead of `stop`=1, so training ends off "
        r"the plateau\. `total_steps`=20 is longer than the run: pass `total_steps=5`",
        messages[0],
    )
    assert [b for _, _, b in model.seen] == [0.0] * 5


def test_stopping_early_with_period_names_the_arguments_that_set_the_length(tmp_path: Path) -> None:
    cb = CyclicalKLAnnealing(period=6)  # n_cycle=4 (the default): 24 steps, in a run stopped at 9
    with pytest.warns(UserWarning) as record:
        make_trainer(tmp_path, [cb, StopAt(9)], max_epochs=3).fit(TinyVAE(n_batches=10))
    messages = [str(w.message) for w in record if "fit ended" in str(w.message)]
    assert len(messages) == 1, messages
    assert "after 9 of the schedule's 24 steps (`n_cycle`=4 × `period`=6)" in messages[0]
    assert "pass a smaller `n_cycle`, or `n_cycle=None`" in messages[0]
    assert "`period=`" not in messages[0] and "`total_steps" not in messages[0]


def test_delay_not_shorter_than_the_run_is_refused_before_training(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=5)
    with pytest.raises(MisconfigurationException, match=r"`delay`=10 must be smaller than the run's 10 steps"):
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=1, delay=10)]).fit(model)
    assert model.seen == []


# ---------------------------------------------------------------- errors that blame the right thing


def test_no_training_batches_is_not_unbounded(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=5)
    model.temperature = 1.0
    calls: list[tuple[int, Any]] = []

    def schedule(step: int, total: Any) -> float:
        calls.append((step, total))
        return 1.0 / total  # fails on T = 0 or None

    cb = CyclicalKLAnnealing(eval_beta=0.7)
    given = ScheduledAttribute(schedule, "temperature", total_steps=10, eval_value=0.5)
    make_trainer(tmp_path, [cb, given], max_epochs=1).fit(model)  # a first fit, with T to carry over
    assert cb.total == 5 and given.total == 10 and calls == [(t, 10) for t in range(5)]
    calls.clear()
    # Lightning's estimate reads -1 here: read as "unbounded", this fit would be refused before the sanity check;
    # read as a length of 0, `delay`=0 would be "not smaller than the run" and the function probed at step 0.
    trainer = make_trainer(tmp_path, [cb, given], limit_train_batches=0, limit_val_batches=2, num_sanity_val_steps=2)
    _no_warning_fit(trainer, model)
    assert calls == [] and len(model.seen) == 5  # no step taken, none asked about
    assert cb.total is None and given.total is None  # this fit resolved no T; the last fit's is not carried over
    assert model.eval_seen == [0.7, 0.7] and model.beta == 0.7 and model.temperature == 0.5  # the sanity check ran


def test_max_time_without_max_epochs_names_max_time(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=5)
    with pytest.raises(
        MisconfigurationException, match=r"bounded only by `max_time`.*pass `total_steps=`.*or `period=`"
    ):
        make_trainer(tmp_path, [CyclicalKLAnnealing()], max_epochs=None, max_time={"minutes": 1}).fit(model)
    assert model.seen == []


class ReadOnlyBeta(TinyVAE):
    def beta_value(self) -> float:
        return self.beta

    @property
    def beta(self) -> float:  # type: ignore[override]
        return 0.3


def test_read_only_property_is_refused_before_the_sanity_check(tmp_path: Path) -> None:
    model = ReadOnlyBeta()
    with pytest.raises(
        MisconfigurationException, match=r"`beta` is a read-only property of ReadOnlyBeta.*give it a setter"
    ):
        make_trainer(tmp_path, [CyclicalKLAnnealing()], limit_val_batches=1, num_sanity_val_steps=1).fit(model)
    assert model.seen == [] and model.eval_seen == []


@pytest.mark.parametrize("run", ["validate", "test"])
def test_read_only_property_is_refused_by_an_evaluation_without_fit(tmp_path: Path, run: str) -> None:
    # validate()/test() on a fresh callback writes eval_beta only: the same message as fit, not a bare AttributeError
    model = ReadOnlyBeta()
    trainer = make_trainer(tmp_path, [CyclicalKLAnnealing(eval_beta=1.0)], limit_val_batches=1, limit_test_batches=1)
    with pytest.raises(
        MisconfigurationException, match=r"`beta` is a read-only property of ReadOnlyBeta.*give it a setter"
    ):
        getattr(trainer, run)(model, verbose=False)
    assert model.eval_seen == []


class SetterBeta(TinyVAE):
    def __init__(self) -> None:
        self._b = 0.0
        super().__init__()

    def beta_value(self) -> float:
        return self.beta

    @property
    def beta(self) -> float:  # type: ignore[override]
        return self._b

    @beta.setter
    def beta(self, value: float) -> None:
        self._b = value


def test_property_with_setter_is_written_through_it(tmp_path: Path) -> None:
    model = SetterBeta()
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2)], max_epochs=1).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 10, n_cycle=2) for t in range(10)]


# ---------------------------------------------------------------- attributes, repr, other packages


class ListOfLosses(TinyVAE):
    def __init__(self) -> None:
        super().__init__(n_batches=4)
        self.losses = nn.ModuleList([nn.Module()])
        self.losses[0].register_buffer("beta", torch.tensor(0.0))
        self.heads = nn.ModuleDict({"bow": nn.Module()})
        self.heads["bow"].beta = 0.0

    def beta_value(self) -> float:
        return float(self.losses[0].beta)


def test_dotted_paths_through_module_list_and_dict(tmp_path: Path) -> None:
    model = ListOfLosses()
    bow = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: ListOfLosses, *args: Any) -> None:
            bow.append(pl_module.heads["bow"].beta)

    cbs = [
        CyclicalKLAnnealing(n_cycle=2, attribute="losses.0.beta"),
        CyclicalKLAnnealing(n_cycle=1, attribute="heads.bow.beta"),
        Spy(),
    ]
    make_trainer(tmp_path, cbs, max_epochs=1).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 4, n_cycle=2) for t in range(4)]
    assert bow == [expected(t, 4, n_cycle=1) for t in range(4)]


def test_submodule_replaced_between_fits_is_written(tmp_path: Path) -> None:
    model = WithLossFn(n_batches=4)
    cb = CyclicalKLAnnealing(n_cycle=2, attribute="loss_fn.beta")
    make_trainer(tmp_path, [cb], max_epochs=1).fit(model)
    model.loss_fn = nn.Module()
    model.loss_fn.beta = 0.0
    model.seen.clear()
    make_trainer(tmp_path, [cb], max_epochs=1).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 4, n_cycle=2) for t in range(4)]


def test_repr_shows_the_configuration() -> None:
    cb = CyclicalKLAnnealing(n_cycle=2, ratio=0.25, start=0.1, attribute="loss_fn.beta")
    assert repr(cb).startswith(
        "CyclicalKLAnnealing(n_cycle=2, ratio=0.25, start=0.1, stop=1.0, total_steps=None, shape='linear'"
    )
    assert "attribute='loss_fn.beta'" in repr(cb) and "log_name='loss_fn.beta'" in repr(cb)


@pytest.mark.parametrize(
    "name",
    [
        "n_cycle",
        "ratio",
        "start",
        "stop",
        "total_steps",
        "shape",
        "attribute",
        "eval_beta",
        "log_name",
        "period",
        "unit",
        "delay",
    ],
)
def test_configuration_is_read_only(name: str) -> None:
    cb = CyclicalKLAnnealing()
    with pytest.raises(AttributeError):
        setattr(cb, name, getattr(cb, name))


def test_works_with_the_standalone_pytorch_lightning_package(tmp_path: Path) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import MisconfigurationException as PLMisconfiguration

    class PLVAE(pl.LightningModule):
        def __init__(self, with_beta: bool = True) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)
            if with_beta:
                self.beta = 0.0
            self.seen: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.seen.append(self.beta)
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=2)
    kwargs: dict[str, Any] = dict(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                  enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    model = PLVAE()
    pl.Trainer(callbacks=[CyclicalKLAnnealing(n_cycle=2)], **kwargs).fit(model, loader)
    assert model.seen == [expected(t, 8, n_cycle=2) for t in range(8)]
    with pytest.raises(PLMisconfiguration, match="has no attribute `beta`"):
        pl.Trainer(callbacks=[CyclicalKLAnnealing()], **kwargs).fit(PLVAE(with_beta=False), loader)


def test_pickles_after_a_fit(tmp_path: Path) -> None:
    # ddp_spawn pickles the callbacks at every fit; the second fit must work like the first.
    import pickle

    cb = CyclicalKLAnnealing(n_cycle=2)
    trainer = make_trainer(tmp_path, [cb], max_epochs=1)
    trainer.fit(TinyVAE(n_batches=4))
    copy = pickle.loads(pickle.dumps(cb))
    assert repr(copy) == repr(cb) and copy.total == 4


# ---------------------------------------------------------------- found by trying the API as a new user


class TensorProperty(TinyVAE):
    """A property whose getter builds a new tensor: only the setter reaches the stored value."""

    def __init__(self) -> None:
        self._b = 0.0
        super().__init__(n_batches=4)

    def beta_value(self) -> float:
        return float(self.beta)

    @property
    def beta(self) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor(self._b)

    @beta.setter
    def beta(self, value: float) -> None:
        self._b = float(value)


def test_property_returning_a_new_tensor_is_written_through_its_setter(tmp_path: Path) -> None:
    model = TensorProperty()
    make_trainer(
        tmp_path, [CyclicalKLAnnealing(n_cycle=2, start=0.1, eval_beta=0.9)], max_epochs=1, limit_val_batches=1
    ).fit(model)
    assert [b for _, _, b in model.seen] == pytest.approx([expected(t, 4, n_cycle=2, start=0.1) for t in range(4)])
    assert model.eval_seen == pytest.approx([0.9] * len(model.eval_seen)) and model.eval_seen


class SlotsOwner(TinyVAE):
    def __init__(self) -> None:
        super().__init__(n_batches=4)

        class Cfg:
            __slots__ = ("beta",)

        self.cfg = Cfg()
        self.cfg.beta = 0.0

    def beta_value(self) -> float:
        return self.cfg.beta


def test_dotted_path_through_an_object_with_slots(tmp_path: Path) -> None:
    model = SlotsOwner()
    make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, attribute="cfg.beta")], max_epochs=1).fit(model)
    assert [b for _, _, b in model.seen] == [expected(t, 4, n_cycle=2) for t in range(4)]


def test_manual_optimization_bounded_by_max_steps_warns(tmp_path: Path) -> None:
    model = ManualVAE(n_opt=2, n_batches=20)
    with pytest.warns(
        UserWarning,
        match=r"bounded by `max_steps=16`, which counts every optimizer's steps.*pass `total_steps=` in batches",
    ):
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, total_steps=None)], max_steps=16).fit(model)
    model = ManualVAE(n_opt=2, n_batches=20)
    _no_warning_fit(make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, total_steps=8)], max_steps=16), model)
    assert [b for _, _, b in model.seen] == [expected(t, 8, n_cycle=2) for t in range(8)]


def test_epoch_unit_is_logged_at_every_logging_step(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="epochs")
    cb = CyclicalKLAnnealing(n_cycle=2, unit="epoch")
    make_trainer(tmp_path, [cb], logger=logger, log_every_n_steps=5, max_epochs=4).fit(TinyVAE(n_batches=10))
    logged = {int(r["step"]): float(r["beta"]) for r in _csv_rows(logger) if r.get("beta")}
    assert sorted(logged) == [s for s in range(40) if (s + 1) % 5 == 0]
    assert all(logged[s] == cyclical_beta(s // 10, 4, n_cycle=2) for s in logged)


def test_schedule_that_cannot_run_is_refused_before_training(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=4)
    threshold = ScheduledAttribute(lambda step, total: 0.5 * (1 - step / total), "beta")
    with pytest.raises(
        MisconfigurationException,
        match=r"`schedule\(0, None\)` raised TypeError.*length is not known.*pass `total_steps=`",
    ):
        make_trainer(tmp_path, [threshold], max_epochs=None, max_time={"minutes": 1}).fit(model)
    with pytest.raises(
        MisconfigurationException, match=r"`schedule\(0, 4\)` must return a finite real number, got nan"
    ):
        make_trainer(tmp_path, [ScheduledAttribute(lambda step, total: float("nan"))], max_epochs=1).fit(model)
    assert model.seen == []


def test_unpicklable_schedule_gets_a_clear_message() -> None:
    import pickle

    with pytest.raises(
        pickle.PicklingError, match=r"schedule <function .*<lambda>.* cannot be pickled.*`ddp_spawn`.*at module level"
    ):
        pickle.dumps(ScheduledAttribute(lambda step, total: 0.0))
    pickle.dumps(ScheduledAttribute(min, "beta"))  # a module-level function pickles


def test_fast_dev_run_with_a_long_delay_warns_and_runs(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=3)
    with pytest.warns(UserWarning, match=r"`delay`=5000 must be smaller than the run's 1 steps"):
        L.Trainer(fast_dev_run=True, callbacks=[CyclicalKLAnnealing(n_cycle=4, delay=5000)], enable_progress_bar=False,
                  enable_model_summary=False).fit(model)  # fmt: skip
    assert [b for _, _, b in model.seen] == [0.0]


def test_after_fit_the_attribute_holds_the_evaluation_value(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=5)
    cb = CyclicalKLAnnealing(n_cycle=1, ratio=1.0, eval_beta=1.0)
    make_trainer(tmp_path, [cb], max_epochs=1).fit(model)
    assert model.seen[-1][2] == 0.8 and model.beta == 1.0
    trainer = make_trainer(tmp_path, [cb], max_epochs=1, limit_val_batches=3)
    trainer.fit(model)  # with validation at the end of the epoch, which writes back the training value
    assert model.seen[-1][2] == 0.8 and model.beta == 1.0
    model.eval_seen.clear()
    trainer.validate(model, verbose=False)  # the same Trainer, after fit: still the evaluation value
    assert model.eval_seen == [1.0] * 3 and model.beta == 1.0


def test_after_fit_then_validate_on_another_trainer_holds_the_evaluation_value(tmp_path: Path) -> None:
    model = TinyVAE(n_batches=4)
    cb = CyclicalKLAnnealing(n_cycle=2, eval_beta=0.6)
    make_trainer(tmp_path, [cb], max_epochs=1).fit(model)
    model.beta = 0.123  # whatever the user left there
    make_trainer(tmp_path, [cb], limit_val_batches=2).validate(model, verbose=False)
    assert model.eval_seen == [0.6, 0.6]


def test_epoch_unit_without_max_epochs_names_max_steps(tmp_path: Path) -> None:
    with pytest.raises(
        MisconfigurationException, match=r"`max_steps=10` counts steps, not epochs.*pass `total_steps=` \(in epochs\)"
    ):
        make_trainer(tmp_path, [CyclicalKLAnnealing(unit="epoch")], max_epochs=-1, max_steps=10).fit(TinyVAE())


def test_importing_the_library_does_not_import_pytorch_lightning() -> None:
    # Importing `pytorch_lightning` moves Lightning's log messages to its own logger names.
    import subprocess
    import sys

    code = "import lightning_kl_anneal, sys; print('pytorch_lightning' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
