"""Schedule-aware model selection: no patience spent and no checkpoint ranked while β rises."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from test_callback import TinyVAE, make_trainer

from lightning_kl_anneal import (
    CyclicalKLAnnealing,
    MisconfigurationException,
    PlateauEarlyStopping,
    PlateauModelCheckpoint,
    ScheduledAttribute,
)

# 2 batches an epoch; CyclicalKLAnnealing(n_cycle=2, total_steps=16): steps 0-3 ramp, 4-7 plateau,
# 8-11 ramp, 12-15 final. An epoch's validation measures the weights of its last step (2e + 1):
PHASE_OF_EPOCH = ["ramp", "ramp", "plateau", "plateau", "ramp", "ramp", "final", "final", "final", "final"]


class FlatValidation(TinyVAE):
    """val_loss never improves; remembers the epochs whose validation ran."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__(n_batches=2, crash_at=crash_at)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", 1.0)


class RampLooksBest(TinyVAE):
    """val_loss is lowest on ramps (as a β < 1 ELBO would be), and improves slowly on plateaus."""

    def __init__(self) -> None:
        super().__init__(n_batches=2)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        epoch = self.current_epoch
        self.log("val_loss", 0.0 if PHASE_OF_EPOCH[epoch] == "ramp" else 1.0 - 0.01 * epoch)
        self.log("epoch_seen", float(epoch))


def _annealing() -> CyclicalKLAnnealing:
    return CyclicalKLAnnealing(n_cycle=2, ratio=0.5, total_steps=16)


def test_phases_assumed_by_these_tests() -> None:
    cb = _annealing()
    assert [cb.phase_at(2 * e + 1) for e in range(10)] == PHASE_OF_EPOCH


@pytest.mark.parametrize(("when", "stopped_after_epoch"), [(None, 1), ("plateau", 3), ("final", 7)])
def test_early_stopping_spends_patience_only_on_plateaus(
    tmp_path: Path, when: str | None, stopped_after_epoch: int
) -> None:
    model = FlatValidation()
    stop = (
        EarlyStopping(monitor="val_loss", patience=1)
        if when is None
        else PlateauEarlyStopping(monitor="val_loss", patience=1, when=when)
    )
    make_trainer(tmp_path, [_annealing(), stop], max_epochs=10, limit_val_batches=1).fit(model)
    # patience 1: the first counted validation sets the best, the second stops the fit
    assert model.seen[-1][0] == 2 * stopped_after_epoch + 1


@pytest.mark.parametrize(("when", "best_epoch"), [(None, 0), ("plateau", 9), ("final", 9)])
def test_checkpoint_ranks_only_plateau_weights(tmp_path: Path, when: str | None, best_epoch: int) -> None:
    kwargs: dict[str, Any] = dict(monitor="val_loss", save_top_k=2, dirpath=tmp_path / "ckpt", filename="{epoch}")
    ckpt = ModelCheckpoint(**kwargs) if when is None else PlateauModelCheckpoint(when=when, save_last=True, **kwargs)
    make_trainer(tmp_path, [_annealing(), ckpt], max_epochs=10, limit_val_batches=1, enable_checkpointing=True).fit(
        RampLooksBest()
    )
    assert Path(ckpt.best_model_path).stem == f"epoch={best_epoch}"
    ranked = sorted(int(Path(p).stem.split("=")[1]) for p in ckpt.best_k_models)
    if when is not None:
        assert all(PHASE_OF_EPOCH[e] in ({"plateau", "final"} if when == "plateau" else {"final"}) for e in ranked)
        assert Path(ckpt.last_model_path).name == "last.ckpt"  # resumable whatever the phase


def test_plateau_checkpoint_ranks_every_plateau_epoch_it_sees(tmp_path: Path) -> None:
    ckpt = PlateauModelCheckpoint(monitor="val_loss", save_top_k=-1, dirpath=tmp_path / "ckpt", filename="{epoch}")
    make_trainer(tmp_path, [_annealing(), ckpt], max_epochs=10, limit_val_batches=1, enable_checkpointing=True).fit(
        RampLooksBest()
    )
    saved = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "ckpt").glob("epoch=*.ckpt"))
    assert saved == [e for e, phase in enumerate(PHASE_OF_EPOCH) if phase != "ramp"]


def test_early_stopping_resumes_its_patience(tmp_path: Path) -> None:
    reference = FlatValidation()
    make_trainer(
        tmp_path / "ref",
        [_annealing(), PlateauEarlyStopping(monitor="val_loss", patience=2)],
        max_epochs=10,
        limit_val_batches=1,
    ).fit(reference)

    crashing = FlatValidation(crash_at=9)  # after the first counted validation (epoch 2 ends at step 5) ...
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer = make_trainer(tmp_path, [_annealing(), PlateauEarlyStopping(monitor="val_loss", patience=2), ckpt],
                           max_epochs=10, limit_val_batches=1, enable_checkpointing=True)  # fmt: skip
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.fit(crashing)
    last = max((tmp_path / "ckpt").glob("step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    stop = PlateauEarlyStopping(monitor="val_loss", patience=2)
    resumed = FlatValidation()
    make_trainer(tmp_path, [_annealing(), stop], max_epochs=10, limit_val_batches=1).fit(resumed, ckpt_path=str(last))
    assert resumed.seen[-1][0] == reference.seen[-1][0]  # ... stops where the uninterrupted run stopped
    assert stop.wait_count == 2


def test_a_missing_or_phaseless_schedule_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(
        MisconfigurationException, match=r"follows the schedule of `beta_bow`, but no annealing callback.*\['beta'\]"
    ):
        make_trainer(
            tmp_path, [_annealing(), PlateauEarlyStopping(monitor="val_loss", schedule_attribute="beta_bow")]
        ).fit(TinyVAE())
    with pytest.raises(
        MisconfigurationException,
        match=r"ScheduledAttribute has no ramps and plateaus to wait for: give its schedule a `phase\(step, "
        r"total_steps\)` method.*ModelCheckpoint",
    ):
        make_trainer(
            tmp_path,
            [ScheduledAttribute(lambda s, t: 1.0), PlateauModelCheckpoint(monitor="val_loss")],
            enable_checkpointing=True,
        ).fit(TinyVAE())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"when": "ramp"}, r"`when` must be one of \('plateau', 'final'\), got 'ramp'"),
        ({"schedule_attribute": ""}, r"`schedule_attribute` must name"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    for cls in (PlateauEarlyStopping, PlateauModelCheckpoint):
        with pytest.raises(ValueError, match=match):
            cls(monitor="val_loss", **kwargs)


def test_parent_arguments_still_work() -> None:
    stop = PlateauEarlyStopping("val/elbo", min_delta=0.1, patience=7, mode="max", when="final")
    assert (stop.monitor, stop.patience, stop.mode, stop.when) == ("val/elbo", 7, "max", "final")
    ckpt = PlateauModelCheckpoint(monitor="val/elbo", mode="max", save_top_k=3, save_last=True)
    assert (ckpt.monitor, ckpt.save_top_k, ckpt.save_last, ckpt.schedule_attribute) == ("val/elbo", 3, True, "beta")
    assert torch.isfinite(torch.tensor(stop.min_delta))


@pytest.mark.parametrize(
    ("kwargs", "when", "advice"),
    [
        (
            dict(n_cycle=None, period=4),
            "final",
            r"An endless schedule \(`n_cycle=None`\) has no final plateau: use `when='plateau'`",
        ),
        (dict(n_cycle=None, period=20), "plateau", r"Use a shorter `period`"),
        (dict(n_cycle=None, period=20), "final", r"endless"),
    ],
)
def test_a_phase_the_run_never_reaches_is_a_warning(tmp_path: Path, kwargs: dict, when: str, advice: str) -> None:
    ckpt = PlateauModelCheckpoint(monitor="val_loss", when=when, dirpath=tmp_path / "ckpt")
    with pytest.warns(UserWarning) as record:
        make_trainer(
            tmp_path,
            [CyclicalKLAnnealing(**kwargs), ckpt],
            max_epochs=3,
            limit_val_batches=1,
            enable_checkpointing=True,
        ).fit(FlatValidation())
    messages = [str(w.message) for w in record if "will never act" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in record]
    assert re.search(rf"PlateauModelCheckpoint\(when='{when}'\) follows `beta`, whose schedule has no ", messages[0])
    assert re.search(advice, messages[0]), messages[0]
    if when == "plateau":
        assert "when='plateau'" not in messages[0].split("will never act")[1]  # never advise what it already has


def test_reachability_is_decided_once_the_run_length_is_known(tmp_path: Path) -> None:
    # An explicit total_steps and a sanity check (the README's warm-up example takes this path): no false
    # "will never act" during the sanity check, and the callback acts on the final plateau later.
    stop = PlateauEarlyStopping(monitor="val_loss", patience=1, when="final")
    model = FlatValidation()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [_annealing(), stop], max_epochs=10, limit_val_batches=1, num_sanity_val_steps=1).fit(
            model
        )
    assert not [w for w in record if "will never act" in str(w.message)]
    assert model.seen[-1][0] == 2 * 7 + 1  # stopped by the final plateau's second validation


def test_warm_up_to_the_end_of_the_run_saves_at_its_end(tmp_path: Path) -> None:
    # ratio=1.0 (the README's warm-up idiom, run to the end): the last step closes the ramp and is "final".
    ckpt = PlateauModelCheckpoint(monitor="val_loss", when="final", dirpath=tmp_path / "ckpt", filename="{epoch}")
    warmup = CyclicalKLAnnealing(n_cycle=1, ratio=1.0, total_steps=4, unit="epoch")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make_trainer(tmp_path, [warmup, ckpt], max_epochs=4, limit_val_batches=1, enable_checkpointing=True).fit(
            FlatValidation()
        )
    assert not [w for w in record if "will never act" in str(w.message) or "ramp phase" in str(w.message)]
    assert Path(ckpt.best_model_path).name == "epoch=3.ckpt"


def test_check_finite_stops_a_diverged_run_outside_the_counted_phase(tmp_path: Path) -> None:
    class Diverged(FlatValidation):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", float("nan"))

    for stop, stopped_after_epoch in [
        (EarlyStopping(monitor="val_loss"), 0),
        (PlateauEarlyStopping(monitor="val_loss", when="final"), 0),
        (PlateauEarlyStopping(monitor="val_loss", when="final", check_finite=False), 8),  # patience 3 on "final"
    ]:
        model = Diverged()
        make_trainer(tmp_path, [_annealing(), stop], max_epochs=10, limit_val_batches=1).fit(model)
        assert model.seen[-1][0] == 2 * stopped_after_epoch + 1, stop


def _step_of(path: str | Path) -> int:
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


@pytest.mark.parametrize("save_last", [True, "link"])
def test_last_checkpoint_holds_the_latest_weights_whatever_the_phase(tmp_path: Path, save_last: Any) -> None:
    # 6 epochs of the 16-step schedule: the run ends on the second ramp (steps 8-11), after a plateau.
    ckpt = PlateauModelCheckpoint(
        monitor="val_loss", save_last=save_last, dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=1
    )
    model = RampLooksBest()
    make_trainer(tmp_path, [_annealing(), ckpt], max_epochs=6, limit_val_batches=1, enable_checkpointing=True).fit(
        model
    )
    last = tmp_path / "ckpt" / "last.ckpt"
    assert _step_of(last) == 12 == model.global_step  # not the plateau's step 8
    assert Path(ckpt.best_model_path).name == "epoch=3.ckpt" and _step_of(ckpt.best_model_path) == 8
    # resuming from last.ckpt continues from the latest weights
    resumed = RampLooksBest()
    make_trainer(tmp_path, [_annealing()], max_epochs=7, limit_val_batches=1).fit(resumed, ckpt_path=str(last))
    assert [t for t, _, _ in resumed.seen] == [12, 13]


def test_a_user_schedule_with_phases_is_followed(tmp_path: Path) -> None:
    class Steps:
        """Ramps on steps 0-3 and 8-11 as in the tests above; a user's own object, not CyclicalKLAnnealing."""

        def __call__(self, step: int, total: int | None) -> float:
            return 0.5 if self.phase(step, total) == "ramp" else 1.0

        def phase(self, step: int, total: int | None) -> str:
            return PHASE_OF_EPOCH[step // 2]

    ckpt = PlateauModelCheckpoint(monitor="val_loss", save_top_k=-1, dirpath=tmp_path / "ckpt", filename="{epoch}")
    make_trainer(
        tmp_path, [ScheduledAttribute(Steps()), ckpt], max_epochs=10, limit_val_batches=1, enable_checkpointing=True
    ).fit(RampLooksBest())
    saved = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "ckpt").glob("epoch=*.ckpt"))
    assert saved == [e for e, phase in enumerate(PHASE_OF_EPOCH) if phase != "ramp"]
