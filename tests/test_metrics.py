"""Tests for the torchmetrics classes: streaming equals the functional result on the concatenated rows."""

from __future__ import annotations

import pytest
import torch

from lightning_kl_anneal import (
    ActiveUnits,
    KLPerDimension,
    MutualInformation,
    active_units,
    gaussian_kl,
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
def test_mutual_information_subsamples_evenly_when_more_rows_were_gathered() -> None:
    mu, logvar = _rows(n=30)
    m = MutualInformation(max_samples=10, seed=1)
    m.mu, m.logvar = [mu.double()], [logvar.double()]  # as after gathering 30 rows from 3 processes
    order = _canonical_order(torch.cat([mu, logvar], 1).double())
    keep = order[torch.linspace(0, 29, 10).round().long()]
    expected = mutual_information(mu[keep], logvar[keep], 4, generator=torch.Generator().manual_seed(1))
    assert float(m.compute()) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_samples=0), r"`n_samples` must be an int >= 1, got 0"),
        (dict(max_samples=1.5), r"`max_samples` must be an int >= 1, got 1.5"),
        (dict(seed="0"), r"`seed` must be an int or None, got '0'"),
        (dict(outer_rows=0), r"`outer_rows` must be an int >= 1 or None, got 0"),
    ],
)
def test_mutual_information_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MutualInformation(**kwargs)


@pytest.mark.parametrize("metric", [KLPerDimension(), ActiveUnits(), MutualInformation()])
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
