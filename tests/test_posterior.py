"""Tests for lightning_kl_anneal.posterior: BatchNormPosterior (BN-VAE) and the KL floor it guarantees."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import _csv_rows, make_trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_kl_anneal import BatchNormPosterior, gaussian_kl


def _batch_kl(mu_hat: torch.Tensor, logvar: torch.Tensor) -> float:
    return gaussian_kl(mu_hat, logvar).sum(1).mean().item()


def _exact_floor(bn: BatchNormPosterior, mu: torch.Tensor) -> float:
    """½ Σ_d (γ² v_d / (v_d + eps) + s_d²), with v_d the biased batch variance of the raw means."""
    var = mu.double().var(0, unbiased=False)
    shift = bn.shift.detach().double()
    return (0.5 * (bn.gamma**2 * var / (var + bn.eps) + shift**2).sum()).item()


def test_hand_computed_batch() -> None:
    # One dimension, raw means 1 and 3: batch mean 2, biased variance 1. With γ = 0.5 the output is ∓0.5/√(1 + eps),
    # and with σ² = 1 the KL of each row is ½ · 0.25 / (1 + eps): the floor n γ² / 2 = 0.125, times 1 / (1 + eps).
    bn = BatchNormPosterior(1, gamma=0.5, eps=1e-5)
    out = bn(torch.tensor([[1.0], [3.0]]))
    assert out.squeeze(1).tolist() == pytest.approx([-0.5 / math.sqrt(1.00001), 0.5 / math.sqrt(1.00001)], rel=1e-6)
    assert bn.kl_floor == 0.125
    assert _batch_kl(out, torch.zeros(2, 1)) == pytest.approx(0.125 / 1.00001, rel=1e-6)
    # The running statistics moved by momentum 0.1 towards the batch's (mean 2, unbiased variance 2).
    assert bn.running_mean.tolist() == pytest.approx([0.2])
    assert bn.running_var.tolist() == pytest.approx([0.9 + 0.1 * 2.0])


@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("spread", [1e-2, 1.0, 100.0])
def test_the_floor_holds_on_a_batch_whatever_the_encoder(gamma: float, spread: float) -> None:
    torch.manual_seed(0)
    n = 16
    bn = BatchNormPosterior(n, gamma=gamma)
    with torch.no_grad():
        bn.shift.copy_(torch.randn(n))  # a learned shift only raises the floor
    mu = spread * torch.randn(32, n) + 5.0  # off-centre means: BN removes the offset
    logvar = torch.randn(32, n)  # any posterior variance: σ² - log σ² - 1 >= 0
    kl = _batch_kl(bn(mu), logvar)
    exact = _exact_floor(bn, mu)
    assert kl >= exact - 1e-5
    assert exact >= bn.kl_floor * spread**2 / (spread**2 + 2 * bn.eps)  # the eps factor, with room for sampling
    assert bn.kl_floor == pytest.approx(n * gamma**2 / 2)


def test_eps_lowers_the_floor_for_means_that_do_not_vary() -> None:
    # v = eps gives half the floor; constant means give none: the honest limit of the guarantee.
    bn = BatchNormPosterior(1, gamma=1.0, eps=0.25, learn_shift=False)
    mu = torch.tensor([[0.0], [1.0]])  # biased variance 0.25 = eps
    assert _batch_kl(bn(mu), torch.zeros(2, 1)) == pytest.approx(bn.kl_floor / 2)
    assert _batch_kl(bn(torch.ones(4, 1)), torch.zeros(4, 1)) == 0.0


def test_gamma_is_fixed_and_the_shift_learns() -> None:
    bn = BatchNormPosterior(3, gamma=0.7)
    assert [name for name, _ in bn.named_parameters()] == ["shift"]
    mu = torch.randn(8, 3, requires_grad=True)
    out = bn(mu)
    ((out.sum(1) - 1.0) ** 2).mean().backward()  # d/d shift_d = 2 mean_b(sum_d out - 1) = -2: not zero
    assert mu.grad is not None and mu.grad.abs().sum() > 0  # the gradient flows back into the encoder
    assert bn.shift.grad is not None and bn.shift.grad.tolist() == pytest.approx([-2.0] * 3, abs=1e-5)
    assert bn.scale.tolist() == pytest.approx([0.7] * 3) and not bn.scale.requires_grad
    fixed = BatchNormPosterior(3, learn_shift=False)
    assert list(fixed.parameters()) == [] and "shift" not in fixed.state_dict()  # held at 0: not a state
    learned = BatchNormPosterior(3)
    with torch.no_grad():
        learned.shift.fill_(0.3)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: \"shift\""):
        fixed.load_state_dict(learned.state_dict())  # a learned shift never loads silently into a fixed one
    assert fixed.shift.tolist() == [0.0] * 3


def test_eval_mode_uses_the_running_statistics() -> None:
    torch.manual_seed(0)
    bn = BatchNormPosterior(2, gamma=0.5, momentum=1.0)  # momentum 1: the running statistics are the last batch's
    mu = torch.randn(10, 2) * 3.0 + 1.0
    train_out = bn(mu)
    bn.eval()
    one = bn(mu[:1])  # a single example works in eval mode
    expected = 0.5 * (mu[:1] - mu.mean(0)) / torch.sqrt(mu.var(0, unbiased=True) + bn.eps)
    assert torch.allclose(one, expected, atol=1e-6)
    # The running variance is unbiased, the batch variance biased: eval output is train output * sqrt((B-1)/B).
    assert torch.allclose(bn(mu), train_out * math.sqrt(9 / 10), atol=1e-6)
    before = bn.running_mean.clone()
    bn(torch.randn(10, 2))
    assert torch.equal(bn.running_mean, before)  # eval mode leaves the statistics alone


def test_state_dict_round_trip_keeps_gamma_from_the_constructor() -> None:
    torch.manual_seed(0)
    bn = BatchNormPosterior(4, gamma=0.5)
    with torch.no_grad():
        bn.shift.add_(0.3)
    bn(torch.randn(16, 4))
    state = bn.state_dict()
    assert sorted(state) == ["running_mean", "running_var", "shift"]
    other = BatchNormPosterior(4, gamma=0.5)
    other.load_state_dict(state)
    x = torch.randn(5, 4)
    assert torch.equal(bn.eval()(x), other.eval()(x))
    wider = BatchNormPosterior(4, gamma=0.9)
    wider.load_state_dict(state)
    assert wider.gamma == 0.9 and wider.scale.tolist() == pytest.approx([0.9] * 4)


def test_dtype_and_device_follow_the_module() -> None:
    bn = BatchNormPosterior(2).double()
    assert bn(torch.randn(4, 2, dtype=torch.float64)).dtype == torch.float64
    assert bn.scale.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(latent_dim=0), ValueError, r"^`latent_dim` must be an int >= 1, got 0$"),
        (dict(latent_dim=2.5), TypeError, r"^`latent_dim` must be an int >= 1, got 2.5 of type float$"),
        (dict(latent_dim=2, gamma=0.0), ValueError, r"^`gamma` must be a finite real number > 0, got 0.0$"),
        (dict(latent_dim=2, gamma=-0.5), ValueError, r"^`gamma` must be a finite real number > 0, got -0.5$"),
        (dict(latent_dim=2, gamma=math.inf), ValueError, r"^`gamma` must be a finite real number > 0, got inf$"),
        (dict(latent_dim=2, gamma=math.nan), ValueError, r"^`gamma` must be a finite real number > 0, got nan$"),
        (dict(latent_dim=2, gamma="0.5"), TypeError, r"^`gamma` must be a finite real number > 0, got '0.5'"),
        (dict(latent_dim=2, learn_shift=1), TypeError, r"^`learn_shift` must be True or False, got 1 of type int$"),
        (dict(latent_dim=2, eps=0.0), ValueError, r"^`eps` must be a finite real number > 0, got 0.0$"),
        (dict(latent_dim=2, momentum=0.0), ValueError, r"^`momentum` must be a finite real number in \(0, 1\]"),
        (dict(latent_dim=2, momentum=1.5), ValueError, r"^`momentum` must be a finite real number in \(0, 1\]"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        BatchNormPosterior(**kwargs)


def test_bad_inputs() -> None:
    bn = BatchNormPosterior(3)
    with pytest.raises(ValueError, match=r"^`mu` must have latent_dim=3 columns, got shape \(4, 2\)$"):
        bn(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"^`mu` must be a \(batch, d\) tensor, got shape \(3,\)$"):
        bn(torch.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"at least 2 rows, got shape \(1, 3\): batch statistics need two rows; a last training batch of one row: `DataLoader\(..., drop_last=True\)`$",
    ):
        bn(torch.zeros(1, 3))
    assert bn.eval()(torch.zeros(1, 3)).shape == (1, 3)


def test_means_of_another_precision() -> None:
    # half-precision means with float32 statistics work, as under AMP; float64 ones get the fix, not torch's words
    bn = BatchNormPosterior(3)
    assert bn(torch.randn(4, 3).bfloat16()).dtype == torch.bfloat16 and bn(torch.randn(4, 3).half()).dtype == torch.half
    with pytest.raises(
        TypeError, match=r"^`mu` is torch.float64 but BatchNormPosterior's statistics are torch.float32"
    ):
        bn(torch.randn(4, 3, dtype=torch.float64))
    assert bn.to(torch.float64)(torch.randn(4, 3, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------- a real fit: the logged KL never drops below the floor


class BNVAE(L.LightningModule):
    """A Gaussian VAE on data the decoder can fit without the latent: plain training drives the KL to 0."""

    def __init__(self, bn: bool, gamma: float = 0.5) -> None:
        super().__init__()
        self.encoder = nn.Linear(6, 2 * 4)
        self.decoder = nn.Linear(4, 6)
        self.posterior = BatchNormPosterior(4, gamma=gamma) if bn else None
        self.seen: list[tuple[float, float]] = []  # (batch-mean KL, its exact floor)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        raw = mu
        if self.posterior is not None:
            mu = self.posterior(mu)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = gaussian_kl(mu, logvar).sum(1).mean()
        loss = (self.decoder(z) - x).pow(2).sum(1).mean() + 5.0 * kl  # a heavy KL weight: collapse is cheap
        if self.posterior is not None:
            self.seen.append((kl.item(), _exact_floor(self.posterior, raw.detach())))
        self.log("kl", kl, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(0.1 * torch.randn(256, 6, generator=g)), batch_size=32)


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn"])
def test_a_fit_keeps_the_logged_kl_above_the_floor(tmp_path: Path, bn: bool) -> None:
    torch.manual_seed(0)
    model = BNVAE(bn)
    logger = CSVLogger(tmp_path)
    make_trainer(tmp_path, [], max_epochs=5, logger=logger, log_every_n_steps=1).fit(model)
    logged = [float(row["kl"]) for row in _csv_rows(logger) if row.get("kl")]
    assert len(logged) == 40  # 8 batches x 5 epochs, every step logged
    if not bn:
        assert logged[-1] < 0.05  # without it the posterior collapses: the test's setting is one that needs the floor
        return
    floor = model.posterior.kl_floor
    assert floor == 0.5
    assert min(logged) >= 0.99 * floor
    for kl, exact in model.seen:  # the exact bound on every batch, and the raw means never shrank near eps
        assert kl >= exact - 1e-5
        assert exact >= 0.99 * floor
