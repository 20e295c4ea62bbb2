"""Tests for LatentMonitor, driven by a real Trainer on tiny modules with real loggers."""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

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
    LatentCollapseError,
    LatentMonitor,
    active_units,
    gaussian_kl,
    mutual_information,
)
from lightning_kl_anneal.metrics import _canonical_order

D = 4

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
    defaults: dict[str, Any] = dict(
        default_root_dir=tmp_path,
        max_epochs=6,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(callbacks=callbacks, **defaults)


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
    assert monitor.alert_step == 12  # validations at steps 4, 8, 12
    assert model.train_steps == 24  # "warn" does not stop the fit
    msg = messages[0]
    for part in ("For 3 consecutive validations", "KL 0.0000 nats", "0/4 active units", "MI 0.0000",
                 "CyclicalKLAnnealing(n_cycle=4", "start=0.1", "free_bits_kl", "delay=", "ratio_zero"):  # fmt: skip
        assert part in msg, part


def test_collapsed_model_raises(tmp_path: Path) -> None:
    model = Latent("prior")
    with pytest.raises(LatentCollapseError, match=r"the posterior has collapsed .* 0/4 active units"):
        make_trainer(tmp_path, [LatentMonitor(patience=2, on_collapse="raise")]).fit(model)
    assert model.train_steps == 8  # raised at the second validation


def test_collapsed_model_stops_the_fit_cleanly(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=2, on_collapse="stop")
    model = Latent("prior")
    trainer = make_trainer(tmp_path, [monitor], max_epochs=20)
    assert len(fit_quietly(trainer, model)) == 1
    assert monitor.alert_step == 8 and model.train_steps == 8
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
    }  # mu varies, but as the prior does
    assert len(messages) == 1 and "MI" not in messages[0]
    # without the prior keys the same model looks informative: the prior matters
    plain = LatentMonitor(patience=1)
    make_trainer(tmp_path, [plain], max_epochs=1).fit(Latent("cvae"))
    assert plain.last["active_units"] == D and plain.alert_step is None


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


# ---------------------------------------------------------------- only validations at β's plateau count


@pytest.mark.parametrize(
    ("phase", "alert_step"),
    [
        (lambda s: "ramp" if s < 8 else "plateau", 20),  # validations at 4 and 8 (steps 3, 7) don't count
        (lambda s: "delay" if s < 8 else "final", 20),
        (lambda s: None, 12),  # the schedule cannot say: every validation counts
        (lambda s: "ramp" if 8 <= s < 12 else "plateau", 24),  # a ramp in between restarts the count
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
    assert monitor.alert_step == 20


def test_with_the_real_cyclical_callback(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=2, ratio=0.5, total_steps=24)  # cycles of 12 steps, ramps 0-5, 12-17
    phases = [schedule.phase_at(s) for s in (3, 7, 11, 15, 19, 23)]  # last steps before the 6 validations
    assert phases == ["ramp", "plateau", "plateau", "ramp", "final", "final"]
    monitor = LatentMonitor(patience=3)
    fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    assert monitor.alert_step is None  # counted at 8, 12; the ramp at 16 restarts; 20, 24: only 2 in a row
    monitor = LatentMonitor(patience=2)
    fit_quietly(
        make_trainer(tmp_path, [CyclicalKLAnnealing(n_cycle=2, ratio=0.5, total_steps=24), monitor]), Latent("prior")
    )
    assert monitor.alert_step == 12


def test_with_the_real_cyclical_callback_counting_epochs(tmp_path: Path) -> None:
    schedule = CyclicalKLAnnealing(n_cycle=1, ratio=0.5, unit="epoch")  # T = 6 epochs: ramp 0-2, then final
    monitor = LatentMonitor(patience=3)
    fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    assert monitor.alert_step == 24  # validations of epochs 3, 4, 5 (asking phase_at(global_step - 1) would say 12)


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
    assert set(monitor.last) == {"kl", "active_units"}


def test_sanity_check_is_not_counted_nor_logged(tmp_path: Path) -> None:
    monitor = LatentMonitor(patience=1, on_collapse="raise")
    model = Latent("prior")
    logger = CSVLogger(tmp_path)
    with pytest.raises(LatentCollapseError):
        make_trainer(tmp_path, [monitor], num_sanity_val_steps=2, logger=logger).fit(model)
    assert model.train_steps == 4  # the sanity check did not raise; the first real validation did


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
    fit_quietly(make_trainer(tmp_path, [schedule, monitor]), Latent("prior"))
    assert monitor.alert_step == 12  # every validation counts


def test_missing_prior_key_names_it(tmp_path: Path) -> None:
    model = Latent("informative")
    with pytest.raises(MisconfigurationException, match=r"reads \['prior_mu'\].*'prior_mu': prior_mu"):
        make_trainer(tmp_path, [LatentMonitor(prior_mu_key="prior_mu")], num_sanity_val_steps=1).fit(model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mu_key=""), r"`mu_key` must be a non-empty string, got ''"),
        (dict(logvar_key=3), r"`logvar_key` must be a non-empty string, got 3"),
        (dict(prior_mu_key=""), r"`prior_mu_key` must be a non-empty string or None, got ''"),
        (dict(kl_threshold=-0.1), r"`kl_threshold` must be a finite real number >= 0 or None, got -0.1"),
        (dict(min_active_units=0.5), r"`min_active_units` must be an int >= 0 or None, got 0.5"),
        (dict(patience=0), r"`patience` must be an int >= 1, got 0"),
        (dict(on_collapse="error"), r"`on_collapse` must be one of \('warn', 'raise', 'stop'\), got 'error'"),
        (dict(au_threshold=math.nan), r"`au_threshold` must be a finite real number >= 0, got nan"),
        (dict(mi_samples=0), r"`mi_samples` must be an int >= 1, got 0"),
        (dict(mi_outer_rows=0), r"`mi_outer_rows` must be an int >= 1 or None, got 0"),
        (dict(mi_max_samples=-1), r"`mi_max_samples` must be an int >= 0, got -1"),
        (dict(log_prefix=None), r"`log_prefix` must be a non-empty string, got None"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LatentMonitor(**kwargs)


def test_keyword_only_after_the_keys() -> None:
    with pytest.raises(TypeError):
        LatentMonitor("mu", "logvar", "prior_mu")  # type: ignore[misc]


# ---------------------------------------------------------------- resume


def test_alert_state_resumes_from_a_checkpoint(tmp_path: Path) -> None:
    reference = LatentMonitor(patience=3)
    fit_quietly(make_trainer(tmp_path / "ref", [reference]), Latent("prior"))
    assert reference.alert_step == 12

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_trainer(tmp_path, [LatentMonitor(patience=3), ckpt], enable_checkpointing=True).fit(
            Latent("prior", crash_at_epoch=2)
        )
    last = str(tmp_path / "ckpt" / "epoch=1-step=8.ckpt")
    state = torch.load(last, weights_only=True)["callbacks"]
    assert state["LatentMonitor{'mu_key': 'mu', 'log_prefix': 'latent'}"] == {"collapsed_count": 2, "alert_step": None}

    resumed = LatentMonitor(patience=3)
    messages = fit_quietly(make_trainer(tmp_path, [resumed]), Latent("prior"), ckpt_path=last)
    assert resumed.alert_step == 12 and len(messages) == 1  # the first validation after resuming

    # an alert that already fired is not repeated after resuming, and a fresh fit starts clean
    make_trainer(tmp_path, [resumed], max_epochs=1).fit(Latent("informative"))
    assert resumed.alert_step is None and resumed.collapsed_count == 0


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
    assert ranks[0].keys() == one.keys() == {"kl", "active_units", "mi"}
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
