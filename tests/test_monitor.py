"""Tests for LatentMonitor, driven by a real Trainer on tiny modules with real loggers."""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import helpers
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_kl_anneal import (
    CyclicalKLAnnealing,
    CyclicalSchedule,
    LatentCollapseError,
    LatentMonitor,
    ScheduledAttribute,
    active_units,
    gaussian_kl,
    join_schedules,
    mutual_information,
)
from lightning_kl_anneal.metrics import _canonical_order

D = 4
DIMS = ("dim90", "dim95", "dim99")  # the dimensionality LatentMonitor logs by default

# ---------------------------------------------------------------- tiny models whose posterior we choose


class Latent(L.LightningModule):
    """32 fixed rows, batches of 8 (4 steps an epoch); ``validation_step`` returns a chosen posterior.

    kind "prior": q(z|x) = N(0, I), the prior itself (collapsed); "informative": mu = 2 x, logvar = -1;
    "cvae": the posterior equals a conditional prior that varies with x (collapsed, for a CVAE).
    """

    def __init__(self, kind: str = "prior", crash_at_epoch: int | None = None, out_dir: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.crash_at_epoch = crash_at_epoch
        self.out_dir = out_dir
        self.layer = nn.Linear(D, 1)
        self.beta = 0.0
        self.x = torch.randn(32, D, generator=torch.Generator().manual_seed(0))
        self.train_steps = 0

    def posterior(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.kind == "prior":
            return {"mu": torch.zeros_like(x), "logvar": torch.zeros_like(x)}
        if self.kind == "informative":
            return {"mu": 2 * x, "logvar": torch.full_like(x, -1.0)}
        return {"mu": x, "logvar": 0.5 * x, "prior_mu": x, "prior_logvar": 0.5 * x}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.current_epoch == self.crash_at_epoch:
            raise RuntimeError("simulated crash")
        self.train_steps += 1
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())
        return {**self.posterior(batch[0]), "other": torch.tensor(1.0)}

    def on_fit_end(self) -> None:
        if self.out_dir is not None:  # a spawned process's attributes don't come back
            monitor = next(c for c in self.trainer.callbacks if isinstance(c, LatentMonitor))
            with open(os.path.join(self.out_dir, f"rank{self.global_rank}.json"), "w") as f:
                json.dump(monitor.last, f)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x), batch_size=8)

    val_dataloader = train_dataloader


class ReturnsNothing(Latent):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        return None


class WrongKeys(Latent):
    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return {"mean": torch.zeros(8, D), "logvar": torch.zeros(8, D)}


class Phases(Callback):
    """Stands in for an annealing callback: ``phase_at(step)`` from a step -> phase function."""

    def __init__(self, phase: Any) -> None:
        self.phase = phase
        self.asked: list[int] = []

    def phase_at(self, step: int) -> str | None:
        self.asked.append(step)
        return self.phase(step)


def make_trainer(tmp_path: Path, callbacks: list, **kwargs: Any) -> L.Trainer:
    """The shared factory with validation on (every batch) and six epochs: the monitor needs validations."""
    return helpers.make_trainer(tmp_path, callbacks, **{"max_epochs": 6, "limit_val_batches": None, **kwargs})


def fit_quietly(trainer: L.Trainer, model: L.LightningModule, **kwargs: Any) -> list[str]:
    """Fit and return the LatentMonitor warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, **kwargs)
    return [str(w.message) for w in caught if "LatentMonitor" in str(w.message)]


# ---------------------------------------------------------------- the alert


def test_collapsed_model_warns_once_at_the_patience_th_validation(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=3)
    model = Latent("prior")
    messages = fit_quietly(make_trainer(tmp_path, [monitor]), model)
    assert len(messages) == 1  # once, although every later validation is collapsed too
    assert monitor.alert_step == 11  # validations logged at steps 3, 7, 11 (after 4, 8, 12 steps)
    assert model.train_steps == 24  # "warn" does not stop the fit
    msg = messages[0]
    for part in ("3 consecutive validations were collapsed, the last at step 11", "KL 0.0000 nats",
                 "0/4 active units", "MI 0.0000", "CyclicalKLAnnealing(n_cycle=4", "free_bits_kl", "delay="):  # fmt: skip
        assert part in msg, part
    assert "plateau" not in msg and "ramp" not in msg  # no schedule callback: no word about one


def test_collapsed_model_raises(tmp_path: Path) -> None:
    model = Latent("prior")
    with pytest.raises(LatentCollapseError, match=r"the posterior has collapsed .* 0/4 active units"):
        make_trainer(tmp_path, [LatentMonitor(patience=2, on_collapse="raise")]).fit(model)
    assert model.train_steps == 8  # raised at the second validation (no schedule: no ramp left)


def test_collapsed_model_stops_the_fit_cleanly(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=2, on_collapse="stop")
    model = Latent("prior")
    trainer = make_trainer(tmp_path, [monitor], max_epochs=20)
    assert len(fit_quietly(trainer, model)) == 1
    assert monitor.alert_step == 7 and model.train_steps == 8
    assert trainer.current_epoch == 2 and trainer.state.status == "finished"


def test_informative_model_never_alerts(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=1, on_collapse="raise")
    make_trainer(tmp_path, [monitor]).fit(Latent("informative"))
    assert monitor.alert_step is None and monitor.collapsed_count == 0
    assert monitor.last["active_units"] == D and monitor.last["kl"] > 1.0


def test_cvae_posterior_equal_to_its_conditional_prior_alerts_and_logs_no_mi(tmp_path: Path) -> None:
    monitor = LatentMonitor(prior_mu_key="prior_mu", prior_logvar_key="prior_logvar", patience=2)
    messages = fit_quietly(make_trainer(tmp_path, [monitor]), Latent("cvae"))
    assert monitor.last == {
        "kl": pytest.approx(0.0, abs=1e-12),
        "active_units": 0.0,
        **dict.fromkeys(DIMS, 0.0),  # mu - prior_mu never moves: no direction at all
    }  # mu varies, but as the prior does
    assert len(messages) == 1 and "MI" not in messages[0]
    # without the prior keys the same model looks informative: the prior matters
    plain = LatentMonitor(patience=1)
    make_trainer(tmp_path, [plain], max_epochs=1).fit(Latent("cvae"))
    assert plain.last["active_units"] == D and plain.alert_step is None and plain.last["dim99"] > 0


@pytest.mark.parametrize(
    ("kwargs", "collapsed"),
    [
        (dict(kl_threshold=None, min_active_units=1), True),  # AU alone sees the collapse
        (dict(kl_threshold=0.05, min_active_units=None), True),  # so does the KL alone
        (dict(kl_threshold=None, min_active_units=None), False),  # alert off, metrics still logged
    ],
)
def test_each_criterion_alone(tmp_path: Path, kwargs: dict, collapsed: bool) -> None:
    monitor = LatentMonitor(patience=1, **kwargs)
    fit_quietly(make_trainer(tmp_path, [monitor], max_epochs=2), Latent("prior"))
    assert (monitor.alert_step is not None) == collapsed
    assert monitor.last["kl"] == 0.0


# ---------------------------------------------------------------- only validations on a plateau count


@pytest.mark.parametrize(
    ("phase", "alert_step"),
    [
        (lambda s: "ramp" if s < 8 else "plateau", 19),  # validations after steps 3 and 7 don't count
        (lambda s: "delay" if s < 8 else "final", 19),
        (lambda s: None, 11),  # the schedule cannot say: every validation counts
        (lambda s: "ramp" if 8 <= s < 12 else "plateau", 15),  # a ramp in between neither counts nor resets
        (lambda s: "ramp", None),
    ],
    ids=["ramp-then-plateau", "delay-then-final", "unknown", "ramp-in-between", "always-ramping"],
)
def test_only_validations_at_the_plateau_count(tmp_path: Path, phase: Any, alert_step: int | None) -> None:
    monitor, schedule = LatentMonitor(patience=3), Phases(phase)
    fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    assert monitor.alert_step == alert_step
    assert schedule.asked[:3] == [3, 7, 11]  # the step of the last training step before each validation


def test_every_phase_callback_must_agree(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=3)
    cbs = [Phases(lambda s: "plateau"), Phases(lambda s: "ramp" if s < 8 else "plateau"), monitor]
    fit_quietly(make_trainer(tmp_path, cbs), Latent("prior"))
    assert monitor.alert_step == 19


def test_with_the_real_cyclical_callback(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=2, ratio=0.5, total_steps=24)  # cycles of 12 steps, ramps 0-5, 12-17
    phases = [schedule.phase_at(s) for s in (3, 7, 11, 15, 19, 23)]  # last steps before the 6 validations
    assert phases == ["ramp", "plateau", "plateau", "ramp", "final", "final"]
    monitor = LatentMonitor(patience=3)
    fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    assert monitor.alert_step == 19  # counted after steps 7, 11 and 19; the ramp's validation (15) is skipped
    monitor = LatentMonitor(patience=2)
    (message,) = fit_quietly(
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, ratio=0.5, total_steps=24), monitor]), Latent("prior")
    )
    assert monitor.alert_step == 11  # "warn" says so on the first plateau, and that a later cycle may help
    assert "taken on a plateau of `beta` or after its last ramp" in message
    assert "A later cycle may still re-open the latent" in message


def test_with_the_real_cyclical_callback_counting_epochs(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=1, ratio=0.5, unit="epoch")  # T = 6 epochs: ramp 0-2, then final
    monitor = LatentMonitor(patience=3)
    fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    assert monitor.alert_step == 23  # validations of epochs 3, 4, 5 (asking phase_at(global_step - 1) would say 11)


# ---------------------------------------------------------------- the rule: (a) alerted by the end, (b) rescues not stopped


class Scripted(Latent):
    """Collapsed or informative at each validation, by the last training step taken (``global_step - 1``)."""

    def __init__(self, collapsed: Any) -> None:
        super().__init__("prior")
        self.collapsed = collapsed

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.kind = "prior" if self.collapsed(self.global_step - 1) else "informative"
        return super().validation_step(batch, batch_idx)


def _logged_steps(trainer: L.Trainer) -> list[int]:
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv")) as f:  # type: ignore[union-attr]
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("latent/kl")]


@pytest.mark.parametrize("on_collapse", ["warn", "stop", "raise"])
def test_a_collapsed_at_every_plateau_with_one_validation_per_cycle(tmp_path: Path, on_collapse: str) -> None:
    # 3 cycles of 8 steps, validations after steps 3 (ramp), 7 (plateau), 11, 15, 19, 23 (final): one a plateau
    schedule = CyclicalKLAnnealing(n_cycle=3, ratio=0.5)
    monitor, model = LatentMonitor(patience=3, on_collapse=on_collapse), Latent("prior")  # type: ignore[arg-type]
    trainer = make_trainer(tmp_path, [schedule, monitor], logger=CSVLogger(tmp_path))
    if on_collapse == "raise":
        with pytest.raises(LatentCollapseError, match="3 consecutive validations taken on a plateau of `beta`"):
            trainer.fit(model)
    else:
        messages = fit_quietly(trainer, model)
        assert len(messages) == 1 and "the last at step 23" in messages[0]
    assert [schedule.phase_at(s) for s in (3, 7, 11, 15, 19, 23)] == ["ramp", "plateau"] * 2 + ["ramp", "final"]
    assert monitor.alert_step == 23 and model.train_steps == 24
    if on_collapse != "raise":  # (raised before the logger wrote that validation)
        assert _logged_steps(trainer)[-1] == 23
    assert monitor.counted_validations == 3  # 7, 15, 23: the ramps' validations neither counted nor reset


@pytest.mark.parametrize("on_collapse", ["warn", "stop", "raise"])
def test_a_fewer_counted_validations_than_patience_alert_at_the_end(tmp_path: Path, on_collapse: str) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=3, ratio=0.5)  # 3 plateau validations in all, patience 5
    monitor, model = LatentMonitor(patience=5, on_collapse=on_collapse), Latent("prior")  # type: ignore[arg-type]
    trainer = make_trainer(tmp_path, [schedule, monitor])
    if on_collapse == "raise":
        with pytest.raises(LatentCollapseError, match=r"Alerted at the end of the fit \(fewer than patience=5"):
            trainer.fit(model)
    else:
        (message,) = fit_quietly(trainer, model)
        assert "3 consecutive validations" in message and "Alerted at the end of the fit" in message
    assert monitor.alert_step == 23 and model.train_steps == 24


def test_a_fit_that_ends_before_the_last_ramp_is_alerted_at_its_end(tmp_path: Path) -> None:
    # T = 48 but the fit takes 24 steps (the schedule warns about that itself): plateau validations after 11, 15
    schedule = CyclicalKLAnnealing(n_cycle=3, ratio=0.5, total_steps=48)
    monitor = LatentMonitor(patience=3, on_collapse="stop")
    trainer = make_trainer(tmp_path, [schedule, monitor])
    messages = fit_quietly(trainer, Latent("prior"))
    assert len(messages) == 1 and "Alerted at the end of the fit" in messages[0]
    assert monitor.alert_step == 15 and monitor.collapsed_count == monitor.counted_validations == 2
    assert not trainer.should_stop  # "stop" at the end of the fit is the warning alone: the fit ran its course


def test_a_healthy_plateau_in_between_resets_so_no_end_of_fit_alert(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=3, ratio=0.5)  # plateau validations after 7, 15, 23
    monitor = LatentMonitor(patience=3, on_collapse="raise")
    trainer = make_trainer(tmp_path, [schedule, monitor])
    trainer.fit(Scripted(lambda step: step != 15))  # collapsed at 7 and 23 only: not every plateau
    assert monitor.alert_step is None and monitor.collapsed_count == 1 and monitor.counted_validations == 3


def _dense(tmp_path: Path, schedule: CyclicalKLAnnealing, monitor: LatentMonitor, **kwargs: Any) -> L.Trainer:
    return make_trainer(tmp_path, [schedule, monitor], val_check_interval=1, max_epochs=4, **kwargs)


@pytest.mark.parametrize("on_collapse", ["stop", "raise"])
def test_b_a_run_rescued_by_a_later_cycle_is_not_stopped(tmp_path: Path, on_collapse: str) -> None:
    # 2 cycles of 8 steps, ramps at steps 0-1 and 8-9: six collapsed plateau validations (2..7), then the
    # second cycle re-opens the latent: the old rule stopped this run at its third validation
    schedule = CyclicalKLAnnealing(n_cycle=2, ratio=0.25)
    monitor, model = LatentMonitor(patience=3, on_collapse=on_collapse), Scripted(lambda step: step < 10)  # type: ignore[arg-type]
    trainer = _dense(tmp_path, schedule, monitor)
    assert fit_quietly(trainer, model) == []
    assert model.train_steps == 16 and monitor.alert_step is None and monitor.collapsed_count == 0
    assert schedule.phase_at(7) == "plateau" and schedule.phase_at(9) == "ramp" and schedule.phase_at(10) == "final"


def test_b_dense_and_collapsed_for_good_acts_at_the_first_validation_with_no_ramp_left(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=2, ratio=0.25)
    monitor, model = LatentMonitor(patience=3, on_collapse="stop"), Latent("prior")
    trainer = _dense(tmp_path, schedule, monitor, logger=CSVLogger(tmp_path))
    (message,) = fit_quietly(trainer, model)
    assert monitor.alert_step == 10 and model.train_steps == 11  # validations 2..7 counted, 8-9 skipped, 10 final
    assert monitor.collapsed_count == 7 and "7 consecutive validations" in message
    assert _logged_steps(trainer)[-1] == 10


def test_b_warn_says_at_once_that_a_later_cycle_may_help(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=3, on_collapse="warn")
    (message,) = fit_quietly(_dense(tmp_path, CyclicalKLAnnealing(n_cycle=2, ratio=0.25), monitor), Latent("prior"))
    assert monitor.alert_step == 4 and "A later cycle may still re-open the latent" in message


def test_b_endless_schedule_acts_after_patience_plateau_validations(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=None, period=8, ratio=0.25)  # never "final"
    monitor, model = LatentMonitor(patience=3, on_collapse="stop"), Latent("prior")
    (message,) = fit_quietly(_dense(tmp_path, schedule, monitor), model)
    assert monitor.alert_step == 4 and model.train_steps == 5  # plateau validations after steps 2, 3, 4
    assert "A later cycle may still" not in message


def test_a_ramp_that_ends_before_the_run_leaves_a_plateau_whose_validations_count(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(start=0, stop=25, n_cycle=1, ratio=0.75)  # steps 12-15 of 16: "final"
    monitor, model = LatentMonitor(patience=3, on_collapse="stop"), Latent("prior")
    fit_quietly(_dense(tmp_path, schedule, monitor), model)
    assert monitor.alert_step == 14 and model.train_steps == 15 and monitor.counted_validations == 3


def test_capacity_recipe_never_stops_during_the_ramp(tmp_path: Path) -> None:
    # ratio=1.0: C (here β) rises until the last step; no validation during the ramp counts
    schedule = CyclicalKLAnnealing(start=0, stop=25, n_cycle=1, ratio=1.0)
    monitor, model = LatentMonitor(patience=3, on_collapse="stop"), Latent("prior")
    messages = fit_quietly(_dense(tmp_path, schedule, monitor), model)
    assert model.train_steps == 16  # never stopped early
    if schedule.phase_at(15) in ("final", "plateau"):  # the last step of a ramp-to-the-end schedule: its plateau
        assert monitor.alert_step == 15 and len(messages) == 1 and "Alerted at the end of the fit" in messages[0]
    else:
        assert monitor.alert_step is None and messages == [] and monitor.counted_validations == 0


# ---------------------------------------------------------------- a diverged posterior, two monitors, the wording


class Diverged(Latent):
    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        if self.current_epoch not in (1, 2):
            return super().validation_step(batch, batch_idx)  # collapsed ("prior") at epochs 0, 3, 4
        return {"mu": torch.full((len(batch[0]), D), math.nan), "logvar": torch.zeros(len(batch[0]), D)}


def test_a_nan_posterior_is_reported_as_not_finite_never_as_collapse(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=2)
    trainer = make_trainer(tmp_path, [monitor], logger=CSVLogger(tmp_path), max_epochs=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Diverged())  # collapsed, NaN, NaN, collapsed, collapsed
    messages = [str(w.message) for w in caught if "LatentMonitor" in str(w.message)]
    assert len(messages) == 2 and messages[0].startswith("LatentMonitor: the posterior is not finite at step 7")
    assert "ActiveUnits: the posterior" not in str([str(w.message) for w in caught])  # one warning, the monitor's
    # the NaN validations neither counted (alert at 7 before) nor reset (alert at 19): collapsed at 3 and 15
    assert "2 consecutive validations were collapsed, the last at step 15" in messages[1]
    assert monitor.alert_step == 15 and monitor.counted_validations == 2
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv")) as f:  # type: ignore[union-attr]
        rows = [r for r in csv.DictReader(f) if r.get("latent/kl")]
    assert [r["latent/active_units"] for r in rows] == ["0.0", "nan", "nan", "0.0", "0.0"]  # NaN is not 0


class TwoLatents(Latent):
    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return {**super().validation_step(batch, batch_idx), "mu2": 3 * batch[0]}


def test_two_monitors_with_one_log_prefix_are_refused_before_the_first_step(tmp_path: Path) -> None:
    model = TwoLatents("informative")
    monitors = [LatentMonitor(), LatentMonitor(mu_key="mu2")]  # were averaged: active_units logged as the mean
    with pytest.raises(MisconfigurationException, match=r"Two LatentMonitor callbacks log under `log_prefix`='latent'"):
        make_trainer(tmp_path, monitors, num_sanity_val_steps=2).fit(model)
    assert model.train_steps == 0
    with pytest.raises(MisconfigurationException, match="`log_prefix`"):
        make_trainer(tmp_path, monitors).validate(model, verbose=False)
    # two identical monitors share a checkpoint key too: Lightning refuses them when the Trainer is built
    with pytest.raises(RuntimeError, match="more than one stateful callback of type `LatentMonitor`"):
        make_trainer(tmp_path, [LatentMonitor(), LatentMonitor()])


def test_two_monitors_with_their_own_prefixes_log_each_its_own(tmp_path: Path) -> None:
    one, two = LatentMonitor(), LatentMonitor(log_prefix="latent2", patience=1)
    trainer = make_trainer(tmp_path, [one, two], max_epochs=1)
    trainer.fit(Latent("informative"))
    assert trainer.callback_metrics["latent/active_units"] == trainer.callback_metrics["latent2/active_units"] == D


def test_alert_step_is_the_step_the_validation_is_logged_under(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=2)
    trainer = make_trainer(tmp_path, [monitor], logger=CSVLogger(tmp_path), max_epochs=3)
    (message,) = fit_quietly(trainer, Latent("prior"))
    assert _logged_steps(trainer) == [3, 7, 11] and monitor.alert_step == 7
    assert "the last at step 7" in message


def test_with_a_cyclical_schedule_in_place_the_remedies_do_not_start_with_one(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=2)
    schedule = CyclicalKLAnnealing(n_cycle=3, ratio=0.5)
    (message,) = fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    remedies = message[message.index("Remedies") :]
    assert remedies.startswith("Remedies, with `beta` already scheduled: free bits")
    assert "cyclical" not in remedies and "n_cycle" not in remedies  # it already cycles
    # a monotonic schedule (one cycle) gets "more cycles" as its last remedy
    monitor = LatentMonitor(patience=2)
    (message,) = fit_quietly(make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=1), monitor]), Latent("prior"))
    assert message.endswith("a cyclical schedule, `CyclicalKLAnnealing(n_cycle=4)` (Fu et al. 2019).")


def test_validate_alone_logs_but_does_not_count(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=1)
    trainer = make_trainer(tmp_path, [monitor])
    trainer.validate(Latent("prior"), verbose=False)
    assert monitor.last["kl"] == 0.0 and monitor.collapsed_count == 0 and monitor.alert_step is None


# ---------------------------------------------------------------- what gets logged, and where


def _expected(model: Latent) -> dict[str, float]:
    post = {k: v.double() for k, v in model.posterior(model.x).items()}
    order = _canonical_order(torch.cat([post["mu"], post["logvar"]], 1))
    mi = mutual_information(
        post["mu"][order], post["logvar"][order], 1, outer_rows=512, generator=torch.Generator().manual_seed(0)
    )
    return {
        "kl": float(gaussian_kl(post["mu"], post["logvar"]).sum(1).mean()),
        "active_units": float(active_units(post["mu"])),
        "mi": mi,
    }


def test_metrics_land_in_csv_logger_at_the_validation_step(tmp_path: Path) -> None:
    model = Latent("informative")
    logger = CSVLogger(tmp_path)
    make_trainer(tmp_path, [LatentMonitor()], max_epochs=2, logger=logger).fit(model)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get("latent/kl")]
    assert len(logged) == 2
    expected = _expected(model)
    for row in logged:
        for key, value in expected.items():
            assert float(row[f"latent/{key}"]) == pytest.approx(value, rel=1e-5), key
        assert row["val_loss"]  # same row as the module's own validation metrics: same step
    assert [int(r["step"]) for r in logged] == [3, 7]
    assert expected["mi"] == pytest.approx(math.log(32), abs=0.3)  # nearly separated posteriors, bound log 32
    # pinned without the library: mu = 2x, logvar = -1, so KL per dimension 0.5 (4x² + e^-1 - 1 + 1); all 4 move
    by_hand = sum(0.5 * (4 * v * v + math.exp(-1.0)) for row in model.x.tolist() for v in row) / 32
    assert float(logged[-1]["latent/kl"]) == pytest.approx(by_hand, rel=1e-5)
    assert expected["active_units"] == D == float(logged[-1]["latent/active_units"])


def test_metrics_and_histogram_land_in_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = Latent("informative")
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = make_trainer(tmp_path, [LatentMonitor()], max_epochs=2, logger=[logger, CSVLogger(tmp_path)])
    trainer.fit(model)
    events = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    assert {"latent/kl", "latent/active_units", "latent/mi"} <= set(events.Tags()["scalars"])
    assert not [t for t in events.Tags()["scalars"] if "kl_per_dim" in t]  # never d scalars
    hist = events.Histograms("latent/kl_per_dim")
    assert [h.step for h in hist] == [3, 7] == [s.step for s in events.Scalars("latent/kl")]
    kl_dim = gaussian_kl(*(t.double() for t in model.posterior(model.x).values())).mean(0)
    assert hist[-1].histogram_value.num == D
    assert hist[-1].histogram_value.sum == pytest.approx(float(kl_dim.sum()), rel=1e-5)
    assert hist[-1].histogram_value.min == pytest.approx(float(kl_dim.min()), rel=1e-5)
    assert events.Scalars("latent/kl")[-1].value == pytest.approx(float(kl_dim.sum()), rel=1e-5)


def test_rows_handed_to_the_metrics_in_chunks_give_the_same_values(tmp_path: Path) -> None:
    whole, chunked = LatentMonitor(), LatentMonitor()
    chunked._FLUSH_ROWS = 10  # flushes after 16 and 32 of the 32 rows, instead of once at the end
    for monitor in (whole, chunked):
        make_trainer(tmp_path, [monitor], max_epochs=1).fit(Latent("informative"))
    assert chunked.last == pytest.approx(whole.last, rel=1e-12)
    assert chunked.mutual_information.update_count == 2 and whole.mutual_information.update_count == 1


def test_metrics_reach_callback_metrics_for_early_stopping(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, [LatentMonitor(log_prefix="z1")], max_epochs=1)
    trainer.fit(Latent("informative"))
    assert {"z1/kl", "z1/active_units", "z1/mi"} <= set(trainer.callback_metrics)


def test_mi_can_be_turned_off(tmp_path: Path) -> None:
    monitor = LatentMonitor(mi_max_samples=0)
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(Latent("informative"))
    assert set(monitor.last) == {"kl", "active_units", *DIMS}


def test_sanity_check_is_not_counted_nor_logged(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=1, on_collapse="raise")
    model = Latent("prior")
    logger = CSVLogger(tmp_path)
    with pytest.raises(LatentCollapseError):
        make_trainer(tmp_path, [monitor], num_sanity_val_steps=2, logger=logger).fit(model)
    assert model.train_steps == 4  # the sanity check did not raise; the first real validation did
    # Logged: a run of 2 epochs with a sanity check logs the diagnostics of its 2 real validations only.
    logger = CSVLogger(tmp_path / "warn")
    fit_quietly(make_trainer(tmp_path, [LatentMonitor()], num_sanity_val_steps=2, logger=logger, max_epochs=2), model)
    with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r.get("latent/kl")]
    assert [int(r["step"]) for r in rows] == [3, 7]


class Alternating(Latent):
    """Collapsed at even epochs, informative at odd ones."""

    def posterior(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.kind = "prior" if self.current_epoch % 2 == 0 else "informative"
        return super().posterior(x)


def test_the_count_needs_consecutive_collapsed_validations(tmp_path: Path) -> None:
    # Collapsed, healthy, collapsed, ...: with patience 2 no two collapsed validations are consecutive.
    monitor = LatentMonitor(patience=2, on_collapse="raise")
    counts = []

    class Spy(Callback):
        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            counts.append(monitor.collapsed_count)

    assert fit_quietly(make_trainer(tmp_path, [monitor, Spy()], max_epochs=5), Alternating()) == []
    assert counts == [1, 0, 1, 0, 1] and monitor.alert_step is None


class ActiveDims(Latent):
    """``n_active`` dimensions carry x (variance about 1), the others are the prior (variance 0)."""

    n_active = 2

    def posterior(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu = torch.zeros_like(x)
        mu[:, : self.n_active] = x[:, : self.n_active]
        return {"mu": mu, "logvar": torch.zeros_like(x)}


@pytest.mark.parametrize(("min_active_units", "collapsed"), [(2, False), (3, True)])
def test_exactly_min_active_units_is_not_collapsed(tmp_path: Path, min_active_units: int, collapsed: bool) -> None:
    monitor = LatentMonitor(kl_threshold=None, min_active_units=min_active_units, patience=1)
    messages = fit_quietly(make_trainer(tmp_path, [monitor], max_epochs=1), ActiveDims())
    assert monitor.last["active_units"] == 2
    assert len(messages) == int(collapsed) and monitor.collapsed_count == int(collapsed)


class TwoDirections(Latent):
    """Three coordinates move but two of them together (mu = [x0, x0, x1, 0]): 3 active units, 2 directions."""

    def posterior(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu = torch.stack([x[:, 0], x[:, 0], x[:, 1], torch.zeros_like(x[:, 0])], dim=1)
        return {"mu": mu, "logvar": torch.zeros_like(x)}


def test_dimensionality_is_logged_beside_active_units(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    monitor = LatentMonitor(dim_shares=(0.5, 0.9, 0.99))
    make_trainer(tmp_path, [monitor], max_epochs=2, logger=logger).fit(TwoDirections())
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("latent/kl")]
    assert [int(r["step"]) for r in rows] == [3, 7]
    for row in rows:  # x0 counted twice holds about 2/3 of the variance, x1 about 1/3: 1 direction for half, then 2
        values = {k: float(row[f"latent/{k}"]) for k in ("active_units", "dim50", "dim90", "dim99")}
        assert values == {"active_units": 3.0, "dim50": 1.0, "dim90": 2.0, "dim99": 2.0}
    assert list(monitor.last) == ["kl", "active_units", "dim50", "dim90", "dim99", "mi"]  # beside active units


def test_dimensionality_can_be_turned_off_and_named_by_share(tmp_path: Path) -> None:
    off, one = LatentMonitor(dim_shares=()), LatentMonitor(dim_shares=[0.999], log_prefix="z2")
    make_trainer(tmp_path, [off, one], max_epochs=1).fit(TwoDirections())
    assert set(off.last) == {"kl", "active_units", "mi"} and off.dimensionality is None
    assert one.last["dim99.9"] == 2.0
    assert LatentMonitor(dim_shares=None).dimensionality is None  # None turns it off, as for the other criteria


@pytest.mark.parametrize(
    ("kl", "active_units", "collapsed"),
    [(0.05, 1.0, False), (0.0499, 1.0, True), (0.05, 0.0, True), (math.nan, 1.0, False), (0.05, math.nan, False)],
)
def test_is_collapsed_at_the_thresholds(kl: float, active_units: float, collapsed: bool) -> None:
    # strictly below kl_threshold or below min_active_units; exactly at either is not collapsed; NaN is unknown
    assert LatentMonitor(kl_threshold=0.05, min_active_units=1).is_collapsed(kl, active_units) is collapsed


def test_no_work_on_training_steps() -> None:
    for hook in ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                 "on_before_optimizer_step", "on_before_zero_grad"):  # fmt: skip
        assert getattr(LatentMonitor, hook) is getattr(Callback, hook), hook


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (ReturnsNothing(), (r"LatentMonitor reads \['mu', 'logvar'\] from the dict that `validation_step` returns, "
                            r"but it returned None\. End `validation_step` with `return \{'mu': mu, 'logvar': logvar\}`")),
        (WrongKeys(), r"reads \['mu'\] .* returned a dict with keys \['logvar', 'mean'\].*or pass `mu_key=`"),
    ],
    ids=["none", "wrong-key"],
)  # fmt: skip
def test_missing_key_fails_in_the_sanity_check_before_training(tmp_path: Path, model: Latent, match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        make_trainer(tmp_path, [LatentMonitor()], num_sanity_val_steps=1).fit(model)
    assert model.train_steps == 0


class FlatMu(Latent):
    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return {"mu": torch.zeros(len(batch[0])), "logvar": torch.zeros(len(batch[0]))}


class ImageLatent(Latent):
    """A conv-VAE-like (batch, 2, 2) latent: flattened to (batch, 4)."""

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        post = self.posterior(batch[0])
        return {k: v.reshape(-1, 2, 2) for k, v in post.items()}


def test_latent_shapes(tmp_path: Path) -> None:
    with pytest.raises(
        MisconfigurationException, match=r"LatentMonitor needs `mu` of shape \(batch, d\) .* got \(8,\)"
    ):
        make_trainer(tmp_path, [LatentMonitor()], num_sanity_val_steps=1).fit(FlatMu())
    flat, image = LatentMonitor(), LatentMonitor()
    make_trainer(tmp_path, [flat], max_epochs=1).fit(Latent("informative"))
    make_trainer(tmp_path, [image], max_epochs=1).fit(ImageLatent("informative"))
    assert image.last == flat.last


def test_with_the_general_scheduled_attribute(tmp_path: Path) -> None:
    from lightning_kl_anneal import ScheduledAttribute

    schedule = ScheduledAttribute(lambda step, total: min(1.0, step / 8))  # a user's function: phase unknown
    assert schedule.phase_at(3) is None
    monitor = LatentMonitor(patience=3)
    (message,) = fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    assert monitor.alert_step == 11  # every validation counts
    assert "plateau" not in message and "3 consecutive validations were collapsed" in message  # it has none
    assert "Remedies, with `beta` already scheduled: free bits" in message


def test_missing_prior_key_names_it(tmp_path: Path) -> None:
    model = Latent("informative")
    with pytest.raises(MisconfigurationException, match=r"reads \['prior_mu'\].*'prior_mu': prior_mu"):
        make_trainer(tmp_path, [LatentMonitor(prior_mu_key="prior_mu")], num_sanity_val_steps=1).fit(model)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(mu_key=""), ValueError, r"`mu_key` must be a non-empty string, got ''"),
        (dict(logvar_key=3), TypeError, r"`logvar_key` must be a non-empty string, got 3 of type \w+"),
        (dict(prior_mu_key=""), ValueError, r"`prior_mu_key` must be a non-empty string or None, got ''"),
        (dict(kl_threshold=-0.1), ValueError, r"`kl_threshold` must be a finite real number >= 0 or None, got -0.1"),
        (dict(min_active_units=0.5), TypeError, r"`min_active_units` must be an int >= 0 or None, got 0.5 of type \w+"),
        (dict(patience=0), ValueError, r"`patience` must be an int >= 1, got 0"),
        (
            dict(on_collapse="error"),
            ValueError,
            r"`on_collapse` must be one of \('warn', 'raise', 'stop'\), got 'error'",
        ),
        (dict(au_threshold=math.nan), ValueError, r"`au_threshold` must be a finite real number >= 0, got nan"),
        (dict(mi_samples=0), ValueError, r"`mi_samples` must be an int >= 1, got 0"),
        (dict(dim_shares=(0.9, 1.5)), ValueError, r"`dim_shares\[1\]` must be a real number in \(0, 1\], got 1.5"),
        (dict(dim_shares=0.9), TypeError, r"`dim_shares` must be a list or tuple of real numbers in \(0, 1\], got 0.9"),
        (dict(dim_shares=(0.9, 0.9)), ValueError, r"`dim_shares` must name distinct percentages"),
        (dict(mi_outer_rows=0), ValueError, r"`mi_outer_rows` must be an int >= 1 or None, got 0"),
        (dict(mi_max_samples=-1), ValueError, r"`mi_max_samples` must be an int >= 0, got -1"),
        (dict(log_prefix=None), TypeError, r"`log_prefix` must be a non-empty string, got None of type \w+"),
    ],
)
def test_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        LatentMonitor(**kwargs)


def test_keyword_only_after_the_keys() -> None:
    with pytest.raises(TypeError):
        LatentMonitor("mu", "logvar", "prior_mu")  # type: ignore[misc]


# ---------------------------------------------------------------- resume


def test_alert_state_resumes_from_a_checkpoint(tmp_path: Path) -> None:
    reference = LatentMonitor(patience=3)
    fit_quietly(make_trainer(tmp_path / "ref", [reference]), Latent("prior"))
    assert reference.alert_step == 11

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(tmp_path, [LatentMonitor(patience=3), ckpt], enable_checkpointing=True).fit(
            Latent("prior", crash_at_epoch=2)
        )
    last = str(tmp_path / "ckpt" / "epoch=1-step=8.ckpt")
    state = torch.load(last, weights_only=True)["callbacks"]
    saved = state["LatentMonitor{'mu_key': 'mu', 'log_prefix': 'latent'}"]
    assert saved == {
        "collapsed_count": 2,
        "counted_validations": 2,
        "alert_step": None,
        "streak_end": {"step": 7.0, "kl": 0.0, "active_units": 0.0, "mi": saved["streak_end"]["mi"]},
        "seen_plateau": False,
        "d": D,
    }

    resumed = LatentMonitor(patience=3)
    messages = fit_quietly(make_trainer(tmp_path, [resumed]), Latent("prior"), ckpt_path=last)
    assert resumed.alert_step == 11 and len(messages) == 1  # the first validation after resuming

    # an alert that already fired is not repeated after resuming, and a fresh fit starts clean
    make_trainer(tmp_path, [resumed], max_epochs=1).fit(Latent("informative"))
    assert resumed.alert_step is None and resumed.collapsed_count == 0


@pytest.mark.parametrize("patience", [3, 5])  # 5: alerted at the end of the fit, from the state resumed
def test_a_resumed_cyclical_fit_alerts_where_an_uninterrupted_one_does(tmp_path: Path, patience: int) -> None:
    def run(root: Path, model: Latent, **fit_kwargs: Any) -> tuple[LatentMonitor, list[str]]:
        monitor = LatentMonitor(patience=patience)
        ckpt = ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, every_n_epochs=1)
        trainer = make_trainer(root, [CyclicalKLAnnealing(n_cycle=3), monitor, ckpt], enable_checkpointing=True)
        return monitor, fit_quietly(trainer, model, **fit_kwargs)

    reference, expected = run(tmp_path / "ref", Latent("prior"))
    assert reference.alert_step == 23 and len(expected) == 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, Latent("prior", crash_at_epoch=4))  # plateau validations after steps 7 and 15 so far
    resumed, messages = run(tmp_path, Latent("prior"), ckpt_path=str(tmp_path / "ckpt" / "epoch=3-step=16.ckpt"))
    assert resumed.alert_step == 23 and messages == expected


# ---------------------------------------------------------------- DDP


def test_ddp_two_ranks_equal_one(tmp_path: Path) -> None:
    single, double = tmp_path / "one", tmp_path / "two"
    single.mkdir(), double.mkdir()
    make_trainer(single, [LatentMonitor()], max_epochs=1).fit(Latent("informative", out_dir=str(single)))
    make_trainer(double, [LatentMonitor()], max_epochs=1, strategy="ddp_spawn", accelerator="cpu", devices=2).fit(
        Latent("informative", out_dir=str(double))
    )
    one = json.loads((single / "rank0.json").read_text())
    ranks = [json.loads((double / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # every rank holds the gathered values
    assert ranks[0].keys() == one.keys() == {"kl", "active_units", *DIMS, "mi"}
    for key in one:
        assert ranks[0][key] == pytest.approx(one[key], rel=1e-9, abs=1e-12), key


class OneRow(Latent):
    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x[:1]), batch_size=1)


def test_a_validation_of_one_row_skips_active_units_with_a_warning(tmp_path: Path) -> None:
    # fast_dev_run or a batch size of 1: no variance, so no active units; the rest is still logged
    monitor = LatentMonitor(patience=1)
    messages = fit_quietly(make_trainer(tmp_path, [monitor], max_epochs=2), OneRow(kind="prior"))
    assert sum("`latent/active_units` skipped" in m for m in messages) == 1
    assert set(monitor.last) == {"kl", "mi"} and monitor.last["kl"] == 0.0
    assert any("posterior has collapsed" in m and "active units unknown" in m for m in messages)  # the KL alone tells


def _warmup_fn(step: int, total: int | None) -> float:
    return step / max(1, total or 1)


def test_a_joined_schedule_with_a_plain_warm_up_waits_for_the_parts_to_come(tmp_path: Path) -> None:
    # 6 epochs x 4 steps: a plain function over steps 0-11 (no phases: read as a ramp while a part follows), then one
    # cycle over 12-23 (ramp 12-17, final 18-23; validations after steps 3, 7, ..., 23). Collapsed throughout: "raise" would end the run in the warm-up if
    # its validations counted (they did: a part without phases read as None, "no ramp left").
    joined = join_schedules([_warmup_fn, CyclicalSchedule(n_cycle=1)], [12])
    monitor = LatentMonitor(patience=1, on_collapse="raise")
    model = Latent("prior")
    trainer = make_trainer(tmp_path, [ScheduledAttribute(joined, "beta", eval_value=1.0), monitor])
    with pytest.raises(LatentCollapseError):
        trainer.fit(model)
    assert monitor.alert_step == 19 and model.train_steps == 20  # the first validation on the final plateau
