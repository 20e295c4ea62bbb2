"""Tests for the torchmetrics classes: streaming equals the functional result on the concatenated rows."""

from __future__ import annotations

import pytest
import torch

from lightning_kl_anneal import (
    ActiveUnits,
    KLPerDimension,
    LatentDimensionality,
    MutualInformation,
    active_units,
    gaussian_kl,
    latent_dimensionality,
    mutual_information,
)
from lightning_kl_anneal.metrics import _canonical_order


def _rows(n: int = 30, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.0, 0.05, 0.3, 1.0, 3.0])[:d]  # from collapsed to very active dimensions
    return torch.randn(n, d, generator=g) * scale, torch.randn(n, d, generator=g) * 0.5


def _batches(*tensors: torch.Tensor, sizes: tuple[int, ...] = (7, 1, 12, 10)) -> list[tuple[torch.Tensor, ...]]:
    out, start = [], 0
    for s in sizes:
        out.append(tuple(t[start : start + s] for t in tensors))
        start += s
    assert start == len(tensors[0])
    return out


def test_kl_per_dimension_streams_the_mean() -> None:
    mu, logvar = _rows()
    m = KLPerDimension()
    for b_mu, b_lv in _batches(mu, logvar):
        m.update(b_mu, b_lv)
    torch.testing.assert_close(m.compute(), gaussian_kl(mu.double(), logvar.double()).mean(0))
    assert m.kl_sum.shape == (5,)  # O(d) state


def test_kl_per_dimension_with_a_conditional_prior() -> None:
    mu, logvar = _rows(seed=1)
    pmu, plv = _rows(seed=2)
    m = KLPerDimension()
    for batch in _batches(mu, logvar, pmu, plv):
        m.update(*batch)
    torch.testing.assert_close(
        m.compute(), gaussian_kl(mu.double(), logvar.double(), pmu.double(), plv.double()).mean(0)
    )


def test_active_units_streams_and_equals_the_functional() -> None:
    mu, _ = _rows(n=200)
    m = ActiveUnits()
    for (b_mu,) in _batches(mu, sizes=(50, 50, 99, 1)):
        m.update(b_mu)
    assert int(m.compute()) == active_units(mu) == 3  # variances ~0, .0025, .09, 1, 9 against 0.01
    torch.testing.assert_close(m.variance(), mu.double().var(0))
    assert m.total.shape == m.total_sq.shape == (5,)


def test_active_units_sums_are_stable_far_from_zero() -> None:
    mu, _ = _rows(n=200)
    m = ActiveUnits()
    m.update(mu.double() + 1e4)  # float64 running sums: a large common offset costs no precision that matters
    torch.testing.assert_close(m.variance(), mu.double().var(0), atol=1e-7, rtol=1e-7)
    assert int(m.compute()) == 3


def test_active_units_with_a_conditional_prior_counts_departure_from_the_prior() -> None:
    prior_mu, _ = _rows(n=40, seed=3)
    m = ActiveUnits()
    m.update(prior_mu, prior_mu=prior_mu)  # the posterior is the (varying) prior: collapsed
    assert int(m.compute()) == 0
    m.reset()
    m.update(prior_mu + torch.randn(40, 5, generator=torch.Generator().manual_seed(0)), prior_mu=prior_mu)
    assert int(m.compute()) == 5


def test_active_units_needs_two_rows_and_a_good_threshold() -> None:
    m = ActiveUnits()
    m.update(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="ActiveUnits needs at least 2 rows to compute a variance, got 1"):
        m.compute()
    with pytest.raises(ValueError, match=r"`threshold` must be a real number >= 0, got -1"):
        ActiveUnits(threshold=-1)


def test_mutual_information_equals_the_functional_in_canonical_order() -> None:
    mu, logvar = _rows(n=25)
    m = MutualInformation(n_samples=3, seed=4)
    for b_mu, b_lv in _batches(mu, logvar, sizes=(10, 15)):
        m.update(b_mu, b_lv)
    order = _canonical_order(torch.cat([mu, logvar], 1).double())
    expected = mutual_information(mu[order], logvar[order], 3, generator=torch.Generator().manual_seed(4))
    assert float(m.compute()) == pytest.approx(expected, abs=1e-12)


def test_mutual_information_does_not_depend_on_row_order_or_split() -> None:
    mu, logvar = _rows(n=25)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    a, b = MutualInformation(), MutualInformation()
    a.update(mu, logvar)
    for b_mu, b_lv in _batches(mu[perm], logvar[perm], sizes=(3, 22)):
        b.update(b_mu, b_lv)
    assert float(a.compute()) == float(b.compute())
    assert float(a.compute()) == float(a.compute())  # seeded draws: the same value every time


def test_mutual_information_outer_rows() -> None:
    mu, logvar = _rows(n=25)
    m = MutualInformation(n_samples=2, outer_rows=5, seed=3)
    m.update(mu, logvar)
    order = _canonical_order(torch.cat([mu, logvar], 1))
    expected = mutual_information(mu[order], logvar[order], 2, outer_rows=5, generator=torch.Generator().manual_seed(3))
    assert float(m.compute()) == pytest.approx(expected, abs=1e-12)


def test_canonical_order_depends_on_values_only() -> None:
    rows = torch.cat([torch.randn(20, 6, generator=torch.Generator().manual_seed(1)), torch.zeros(3, 6)])
    perm = torch.randperm(23, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(rows[_canonical_order(rows)], rows[perm][_canonical_order(rows[perm])], rtol=0, atol=0)


def test_mutual_information_keeps_at_most_max_samples() -> None:
    mu, logvar = _rows(n=30)
    m = MutualInformation(max_samples=12)
    for b_mu, b_lv in _batches(mu, logvar):
        m.update(b_mu, b_lv)
    assert sum(len(t) for t in m.mu) == 12  # the first 12 rows: 7, 1 and 4 of the third batch
    torch.testing.assert_close(torch.cat(m.mu), mu[:12])
    m.reset()
    assert m.mu == []
    m.update(mu, logvar)
    assert sum(len(t) for t in m.mu) == 12  # room again after a reset


@pytest.mark.filterwarnings("ignore:.*was called before the ``update``")
@pytest.mark.parametrize("gathered", [30, 11])  # 11: a single row too many is subsampled too
def test_mutual_information_subsamples_evenly_when_more_rows_were_gathered(gathered: int) -> None:
    mu, logvar = _rows(n=gathered)
    m = MutualInformation(max_samples=10, seed=1)
    m.mu, m.logvar = [mu.double()], [logvar.double()]  # as after gathering the rows of several processes
    order = _canonical_order(torch.cat([mu, logvar], 1).double())
    keep = order[torch.linspace(0, gathered - 1, 10).round().long()]
    expected = mutual_information(mu[keep], logvar[keep], 4, generator=torch.Generator().manual_seed(1))
    assert float(m.compute()) == pytest.approx(expected, abs=1e-12)
    every_row = mutual_information(mu[order], logvar[order], 4, generator=torch.Generator().manual_seed(1))
    assert float(m.compute()) != pytest.approx(every_row, abs=1e-6)  # the subsample is not all the rows


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(n_samples=0), ValueError, r"`n_samples` must be an int >= 1, got 0"),
        (dict(max_samples=1.5), TypeError, r"`max_samples` must be an int >= 1, got 1.5 of type float"),
        (dict(seed="0"), TypeError, r"`seed` must be an int or None, got '0' of type str"),
        (dict(outer_rows=0), ValueError, r"`outer_rows` must be an int >= 1 or None, got 0"),
    ],
)
def test_mutual_information_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        MutualInformation(**kwargs)


@pytest.mark.parametrize("metric", [KLPerDimension(), ActiveUnits(), LatentDimensionality(), MutualInformation()])
def test_update_needs_batch_by_d(metric: object) -> None:
    with pytest.raises(ValueError, match=r"must be|must both be"):
        metric.update(torch.zeros(4), torch.zeros(4))  # type: ignore[attr-defined]


# ---------------------------------------------------------------- forward(): any batch size, same value as update()


@pytest.mark.parametrize("sizes", [(7, 1, 12, 10), (1, 29), (29, 1), (2, 1, 1, 26)])
def test_active_units_forward_takes_one_row_batches_and_keeps_every_row(sizes: tuple[int, ...]) -> None:
    mu, _ = _rows()
    m = ActiveUnits()
    batch_values = [m(b_mu) for (b_mu,) in _batches(mu, sizes=sizes)]
    assert m.compute() == active_units(mu) == 3  # every row accumulated, the one-row batches too
    for (b_mu,), value in zip(_batches(mu, sizes=sizes), batch_values):
        if len(b_mu) == 1:  # one row has no variance: no count, not 0 (which would read as collapse)
            assert value.isnan()
        else:
            assert value == active_units(b_mu)
    with pytest.raises(ValueError, match="at least 2 rows"):  # compute() itself still refuses one row
        one = ActiveUnits()
        one(mu[:1])
        one.compute()


@pytest.mark.parametrize("max_samples", [1, 10, 25, 100])
def test_mutual_information_forward_keeps_at_most_max_samples_and_agrees_with_update(max_samples: int) -> None:
    mu, logvar = _rows()
    forward, update = MutualInformation(max_samples=max_samples), MutualInformation(max_samples=max_samples)
    for b_mu, b_lv in _batches(mu, logvar):
        value = forward(b_mu, b_lv)
        assert float(value) == _batch_mi(b_mu, b_lv, max_samples)  # the batch alone, as before
        update.update(b_mu, b_lv)
    kept = min(max_samples, len(mu))
    assert forward._kept() == update._kept() == kept
    torch.testing.assert_close(torch.cat(forward.mu), mu[:kept])
    assert forward.compute() == update.compute()


def _batch_mi(mu: torch.Tensor, logvar: torch.Tensor, max_samples: int) -> float:
    m = MutualInformation(max_samples=max_samples)
    m.update(mu, logvar)
    return float(m.compute())


# ---------------------------------------------------------------- a diverged posterior is not a collapsed one


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_active_units_metric_reports_a_non_finite_posterior_as_nan(bad: float) -> None:
    mu, _ = _rows()
    mu[3, 2] = bad
    m = ActiveUnits()
    m.update(mu)
    with pytest.warns(UserWarning, match=r"ActiveUnits: the posterior is not finite .*not a collapsed one"):
        value = m.compute()
    assert value.isnan()


# ---------------------------------------------------------------- LatentDimensionality: sums, so DDP-exact


def _spread_rows(n: int = 60, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(5, 5, generator=g) * torch.tensor([[4.0], [2.0], [1.0], [0.3], [0.0]])  # rank 4
    return torch.randn(n, 5, generator=g) @ mixing + 3.0


SHARES = [0.5, 0.8, 0.9, 0.95, 0.99, 0.999]


def test_dimensionality_streams_and_equals_the_functional() -> None:
    mu = _spread_rows()
    m = LatentDimensionality(share=SHARES)
    for (b_mu,) in _batches(mu, sizes=(20, 1, 9, 30)):
        m.update(b_mu)
    expected = [latent_dimensionality(mu, s) for s in SHARES]
    assert m.compute().tolist() == expected
    assert len(set(expected)) >= 3  # the shares reach different counts: the test tells them apart
    torch.testing.assert_close(m.covariance(), torch.cov(mu.double().T))
    assert m.outer.shape == (5, 5) and m.total.shape == (5,)  # O(d²) state, not the rows
    one = LatentDimensionality(share=0.9)
    one.update(mu)
    assert one.compute().dim() == 0 and int(one.compute()) == latent_dimensionality(mu, 0.9)


def test_dimensionality_hand_computed() -> None:
    m = LatentDimensionality(share=[0.5, 0.9])  # ±2 e1 and ±(e2 + e3): eigenvalues 8/3, 4/3, 0, 0
    m.update(torch.tensor([[2.0, 0, 0, 0], [-2.0, 0, 0, 0]]))
    m.update(torch.tensor([[0, 1.0, 1.0, 0], [0, -1.0, -1.0, 0]]))
    assert m.compute().tolist() == [1, 2]


def _sync_as_ddp_would(metric: LatentDimensionality, other: LatentDimensionality) -> None:
    # torchmetrics' sync: each state gathered from every rank, stacked, and reduced by its dist_reduce_fx
    # (written out because `Metric.merge_state` is newer than the oldest torchmetrics supported, 1.0.3)
    for name, reduce in metric._reductions.items():
        setattr(metric, name, reduce(torch.stack([getattr(metric, name), getattr(other, name)])))


def test_dimensionality_merged_states_equal_one_metric_on_all_rows() -> None:
    # what DDP does: each rank's sums added together; the value equals one process's over every row
    mu = _spread_rows(n=80, seed=5)
    ranks = [LatentDimensionality(share=SHARES) for _ in range(2)]
    ranks[0].update(mu[:33])
    ranks[1].update(mu[33:])
    whole = LatentDimensionality(share=SHARES)
    whole.update(mu)
    _sync_as_ddp_would(ranks[0], ranks[1])
    assert ranks[0].compute().tolist() == whole.compute().tolist() == [latent_dimensionality(mu, s) for s in SHARES]
    torch.testing.assert_close(ranks[0].covariance(), whole.covariance())


@pytest.mark.parametrize("sizes", [(20, 1, 9, 30), (1, 59), (59, 1)])
def test_dimensionality_forward_gives_each_batch_its_value_and_keeps_every_row(sizes: tuple[int, ...]) -> None:
    mu = _spread_rows()
    m = LatentDimensionality(share=[0.5, 0.9])
    for (b_mu,) in _batches(mu, sizes=sizes):
        value = m(b_mu)
        if len(b_mu) == 1:  # one row has no covariance: no count, not 0 (which would read as collapse)
            assert value.isnan().all()
        else:
            assert value.tolist() == [latent_dimensionality(b_mu, 0.5), latent_dimensionality(b_mu, 0.9)]
    assert m.compute().tolist() == [latent_dimensionality(mu, 0.5), latent_dimensionality(mu, 0.9)]


def test_dimensionality_with_a_conditional_prior_measures_departure_from_the_prior() -> None:
    prior_mu = _spread_rows(n=40, seed=6)
    m = LatentDimensionality(share=0.99)
    m.update(prior_mu, prior_mu=prior_mu)  # the posterior is the (varying) prior: collapsed
    assert int(m.compute()) == 0
    m.reset()
    m.update(prior_mu + torch.randn(40, 5, generator=torch.Generator().manual_seed(0)), prior_mu=prior_mu)
    assert int(m.compute()) == latent_dimensionality(
        torch.randn(40, 5, generator=torch.Generator().manual_seed(0)), 0.99
    )


def test_dimensionality_needs_two_rows_and_a_finite_posterior() -> None:
    m = LatentDimensionality()
    m.update(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="LatentDimensionality needs at least 2 rows to compute a covariance, got 1"):
        m.compute()
    mu = _spread_rows()
    mu[3, 2] = float("nan")
    m = LatentDimensionality(share=[0.5, 0.9])
    m.update(mu)
    with pytest.warns(UserWarning, match=r"LatentDimensionality: the posterior is not finite"):
        assert m.compute().isnan().all()


@pytest.mark.parametrize(
    ("share", "exc", "match"),
    [
        (0.0, ValueError, r"^`share` must be a real number in \(0, 1\], got 0.0$"),
        (1.01, ValueError, r"^`share` must be a real number in \(0, 1\], got 1.01$"),
        ([0.9, -0.1], ValueError, r"^`share\[1\]` must be a real number in \(0, 1\], got -0.1$"),
        ([], ValueError, r"^`share` must be a non-empty list or tuple of real numbers in \(0, 1\], got \[\]$"),
        ("0.9", TypeError, r"`share` must be a list or tuple of real numbers in \(0, 1\], got '0.9' of type str"),
        (True, TypeError, r"`share` must be a list or tuple"),
    ],
)
def test_dimensionality_bad_arguments(share: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        LatentDimensionality(share=share)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", [ActiveUnits, LatentDimensionality])
def test_rows_of_another_width_or_a_mismatched_prior_are_refused_by_name(metric: type) -> None:
    m = metric()
    m.update(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"^`mu` must have the 4 columns of the rows seen so far, got shape \(5, 3\)"):
        m.update(torch.randn(5, 3))
    with pytest.raises(
        ValueError,
        match=r"^`prior_mu` must have the shape of `mu` \(5, 4\) \(or one that broadcasts to it\), got \(5, 3\)$",
    ):
        m.update(torch.randn(5, 4), torch.randn(5, 3))
    assert int(m.n) == 5  # nothing of the refused batches was counted
    m.update(torch.randn(5, 4), torch.zeros(4))  # one prior mean for every row: broadcast, as before
    assert int(m.n) == 10
