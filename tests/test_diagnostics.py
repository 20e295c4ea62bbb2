"""Tests for active_units and mutual_information against brute-force computations on small sets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal

from lightning_kl_anneal import active_units, mutual_information

# ---------------------------------------------------------------- active_units


def _brute_force_au(mu: torch.Tensor, threshold: float) -> int:
    rows = mu.tolist()
    n, count = len(rows), 0
    for j in range(len(rows[0])):
        col = [r[j] for r in rows]
        mean = sum(col) / n
        count += sum((v - mean) ** 2 for v in col) / (n - 1) > threshold
    return count


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12), d=st.integers(1, 6), threshold=st.floats(0.0, 0.5))
def test_active_units_matches_brute_force(seed: int, n: int, d: int, threshold: float) -> None:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.rand(d, generator=g, dtype=torch.float64)
    assert active_units(mu, threshold) == _brute_force_au(mu, threshold)


def test_active_units_threshold_is_strict_and_uses_the_sample_variance() -> None:
    mu = torch.tensor([[0.0], [0.25]], dtype=torch.float64)  # sample variance exactly 1/32, population 1/64
    assert active_units(mu, threshold=0.031) == 1
    assert active_units(mu, threshold=1 / 32) == 0
    assert active_units(mu, threshold=0.02) == 1  # with the population variance this would be 0


def test_active_units_ignores_a_constant_offset() -> None:
    g = torch.Generator().manual_seed(0)
    varying = torch.randn(200, 1, generator=g)
    mu = torch.cat([varying, torch.full((200, 1), 7.0), 1000.0 + 0.01 * varying], dim=1)  # var 1, 0, 1e-4
    assert active_units(mu) == 1


@pytest.mark.parametrize(
    ("mu", "threshold", "match"),
    [
        (torch.zeros(1, 3), 0.01, r"`mu` must be an \(N >= 2, d\) tensor of posterior means, got \(1, 3\)"),
        (torch.zeros(5), 0.01, r"got \(5,\)"),
        ([[0.0], [1.0]], 0.01, r"got list"),
        (torch.zeros(4, 2), -0.5, r"`threshold` must be a real number >= 0, got -0.5"),
    ],
)
def test_active_units_bad_arguments(mu: object, threshold: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        active_units(mu, threshold)  # type: ignore[arg-type]


# ---------------------------------------------------------------- mutual_information


def _draws(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int, seed: int) -> list[torch.Tensor]:
    """The z draws mutual_information makes with a generator seeded `seed` (same order of calls)."""
    g = torch.Generator().manual_seed(seed)
    mu, logvar = mu.double(), logvar.double()
    return [
        mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g, dtype=torch.float64) for _ in range(n_samples)
    ]


def _brute_force_mi(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    zs: list[torch.Tensor],
    batch: int | None = None,
    outer: list[int] | None = None,
) -> float:
    """Loops over rows and torch.distributions log-densities: mean of log q(z_i|x_i) - log (1/B) Σ_j q(z_i|x_j)."""
    mu, logvar = mu.double(), logvar.double()
    n = len(mu)
    batch = batch or n
    outer = list(range(n)) if outer is None else outer
    total = 0.0
    for z in zs:
        for i in outer:
            lo = (i // batch) * batch
            members = range(lo, min(lo + batch, n))
            logs = torch.stack([Normal(mu[j], (0.5 * logvar[j]).exp()).log_prob(z[i]).sum() for j in members])
            own = Normal(mu[i], (0.5 * logvar[i]).exp()).log_prob(z[i]).sum()
            total += float(own - (torch.logsumexp(logs, 0) - math.log(len(members))))
    return total / (len(outer) * len(zs))


@pytest.mark.parametrize(("n", "d", "n_samples", "seed"), [(7, 3, 2, 0), (12, 2, 1, 1), (5, 6, 3, 2)])
def test_mi_matches_brute_force(n: int, d: int, n_samples: int, seed: int) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    mu, logvar = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * 0.5
    got = mutual_information(mu, logvar, n_samples, generator=torch.Generator().manual_seed(seed))
    assert got == pytest.approx(_brute_force_mi(mu, logvar, _draws(mu, logvar, n_samples, seed)), abs=1e-10)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10])
def test_mi_per_batch_variant_matches_brute_force(batch_size: int) -> None:
    g = torch.Generator().manual_seed(5)
    mu, logvar = torch.randn(10, 3, generator=g) * 2, torch.randn(10, 3, generator=g) * 0.3
    got = mutual_information(mu, logvar, 2, batch_size=batch_size, generator=torch.Generator().manual_seed(9))
    assert got == pytest.approx(_brute_force_mi(mu, logvar, _draws(mu, logvar, 2, 9), batch=batch_size), abs=1e-10)


@pytest.mark.parametrize(("outer_rows", "batch_size"), [(4, None), (10, None), (50, None), (4, 3)])
def test_mi_outer_rows_average_over_evenly_spaced_rows(outer_rows: int, batch_size: int | None) -> None:
    g = torch.Generator().manual_seed(6)
    mu, logvar = torch.randn(10, 3, generator=g) * 2, torch.randn(10, 3, generator=g) * 0.3
    got = mutual_information(
        mu, logvar, 2, outer_rows=outer_rows, batch_size=batch_size, generator=torch.Generator().manual_seed(9)
    )
    rows = sorted({round(i * 9 / (outer_rows - 1)) for i in range(outer_rows)}) if outer_rows < 10 else None
    expected = _brute_force_mi(mu, logvar, _draws(mu, logvar, 2, 9), batch=batch_size, outer=rows)
    assert got == pytest.approx(expected, abs=1e-10)


def test_mi_per_batch_is_bounded_by_log_batch_size() -> None:
    mu, logvar = torch.arange(64.0)[:, None] * 100, torch.zeros(64, 1)  # 64 far-apart posteriors
    assert mutual_information(mu, logvar) == pytest.approx(math.log(64), abs=1e-9)
    assert mutual_information(mu, logvar, batch_size=8) == pytest.approx(math.log(8), abs=1e-9)
    same = [
        mutual_information(mu, logvar, batch_size=b, generator=torch.Generator().manual_seed(0)) for b in (64, None)
    ]
    assert same[0] == same[1]


def test_mi_of_identical_posteriors_is_zero() -> None:
    g = torch.Generator().manual_seed(0)
    row_mu, row_lv = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    mi = mutual_information(row_mu.expand(300, 8), row_lv.expand(300, 8), generator=g)
    assert abs(mi) < 1e-12


@pytest.mark.parametrize("n", [2, 5, 50])
def test_mi_of_well_separated_posteriors_is_log_n(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    mu = torch.randn(n, 4, generator=g) * 1000  # pairwise distances of hundreds of standard deviations
    assert mutual_information(mu, torch.zeros(n, 4), generator=g) == pytest.approx(math.log(n), abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 20), d=st.integers(1, 4), scale=st.floats(0.0, 10.0))
def test_mi_never_exceeds_log_n(seed: int, n: int, d: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    mu, logvar = torch.randn(n, d, generator=g) * scale, torch.randn(n, d, generator=g)
    assert mutual_information(mu, logvar, 2, generator=g) <= math.log(n) + 1e-12


def test_mi_does_not_depend_on_chunk_and_agrees_with_he_et_al_in_expectation() -> None:
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g) * 0.2 - 1.0
    a = mutual_information(mu, logvar, 3, generator=torch.Generator().manual_seed(1), chunk=7)
    b = mutual_information(mu, logvar, 3, generator=torch.Generator().manual_seed(1))
    assert a == pytest.approx(b, abs=1e-12)
    # He et al.'s estimator: closed-form negative entropy minus a sampled log q(z); same target, more noise
    mu64, lv64 = mu.double(), logvar.double()
    neg_entropy = float((-0.5 * 2 * math.log(2 * math.pi) - 0.5 * (1 + lv64).sum(1)).mean())
    zs = _draws(mu, logvar, 400, 7)
    log_qz = []
    for z in zs:
        logs = Normal(mu64[None], (0.5 * lv64).exp()[None]).log_prob(z[:, None]).sum(-1)  # (i, j)
        log_qz.append(float((torch.logsumexp(logs, 1) - math.log(40)).mean()))
    he = neg_entropy - sum(log_qz) / len(log_qz)
    ours = mutual_information(mu, logvar, 400, generator=torch.Generator().manual_seed(8))
    assert ours == pytest.approx(he, abs=0.02)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (
            (torch.zeros(3, 2), torch.zeros(3, 3)),
            {},
            r"`mu` and `logvar` must both be \(N >= 1, d\) tensors .* got \(3, 2\) and \(3, 3\)",
        ),
        ((torch.zeros(3), torch.zeros(3)), {}, r"got \(3,\) and \(3,\)"),
        ((torch.zeros(0, 2), torch.zeros(0, 2)), {}, r"got \(0, 2\) and \(0, 2\)"),
        ((torch.zeros(3, 2), torch.zeros(3, 2), 0), {}, r"`n_samples` must be an int >= 1, got 0"),
        (
            (torch.zeros(3, 2), torch.zeros(3, 2)),
            dict(batch_size=0),
            r"`batch_size` must be an int >= 1 or None, got 0",
        ),
        ((torch.zeros(3, 2), torch.zeros(3, 2)), dict(chunk=2.5), r"`chunk` must be an int >= 1, got 2.5"),
        (
            (torch.zeros(3, 2), torch.zeros(3, 2)),
            dict(outer_rows=0),
            r"`outer_rows` must be an int >= 1 or None, got 0",
        ),
    ],
)
def test_mi_bad_arguments(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mutual_information(*args, **kwargs)


# ---------------------------------------------------------------- a diverged posterior is not a collapsed one


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_active_units_of_a_non_finite_posterior_is_nan_with_a_warning(bad: float) -> None:
    mu = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    mu[:, 1] = bad  # a whole NaN column: its variance is NaN, which `> threshold` would count as inactive
    with pytest.warns(
        UserWarning, match=r"active_units: the posterior is not finite \(NaN or inf in the posterior means\)"
    ):
        assert math.isnan(active_units(mu))


@pytest.mark.parametrize("which", ["mu", "logvar"])
def test_mutual_information_of_a_non_finite_posterior_is_nan_with_a_warning(which: str) -> None:
    g = torch.Generator().manual_seed(0)
    post = {"mu": torch.randn(20, 4, generator=g), "logvar": torch.randn(20, 4, generator=g)}
    post[which][5, 0] = float("nan")
    with pytest.warns(UserWarning, match=r"mutual_information: the posterior is not finite"):
        assert math.isnan(mutual_information(post["mu"], post["logvar"]))
