"""Tests for the objective's KL term: gaussian_kl against torch.distributions, free bits, capacity."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from lightning_kl_anneal import FREE_BITS_MODES, capacity_kl, free_bits_kl, gaussian_kl


def _posterior(seed: int, shape: tuple[int, ...] = (6, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * 2, torch.randn(
        shape, generator=g, dtype=torch.float64
    )


# ---------------------------------------------------------------- gaussian_kl


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_kl_equals_torch_distributions(seed: int) -> None:
    mu, logvar = _posterior(seed)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


@pytest.mark.parametrize("seed", range(5))
def test_gaussian_kl_with_a_conditional_prior(seed: int) -> None:
    mu, logvar = _posterior(seed)
    pmu, plv = _posterior(seed + 100)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(pmu, (0.5 * plv).exp()))
    torch.testing.assert_close(gaussian_kl(mu, logvar, pmu, plv), expected)
    # only one of the two given: the other is the standard normal's
    torch.testing.assert_close(
        gaussian_kl(mu, logvar, prior_mu=pmu),
        kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(pmu, torch.ones_like(mu))),
    )
    torch.testing.assert_close(
        gaussian_kl(mu, logvar, prior_logvar=plv),
        kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), (0.5 * plv).exp())),
    )


def test_gaussian_kl_prior_broadcasts_and_posterior_equal_to_prior_is_zero() -> None:
    mu, logvar = _posterior(0, (4, 3))
    assert gaussian_kl(mu, logvar, mu, logvar).abs().max() < 1e-12
    out = gaussian_kl(mu, logvar, torch.zeros(3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    torch.testing.assert_close(out, gaussian_kl(mu, logvar))
    assert out.shape == mu.shape


def test_gaussian_kl_gradients_flow() -> None:
    mu, logvar = (t.clone().requires_grad_() for t in _posterior(1))
    gaussian_kl(mu, logvar).sum().backward()
    torch.testing.assert_close(mu.grad, mu.detach())  # d/dmu ½ mu² = mu
    torch.testing.assert_close(logvar.grad, 0.5 * (logvar.detach().exp() - 1))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(2, 3), torch.zeros(2, 4)), r"`logvar` must have the shape of `mu` \(2, 3\), got \(2, 4\)"),
        (
            (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(5, 3)),
            r"`prior_mu` must broadcast to the shape of `mu` \(2, 3\), got \(5, 3\)",
        ),
        ((torch.zeros(2, 3), torch.zeros(2, 3), None, torch.zeros(2, 3, 1)), r"`prior_logvar` must broadcast"),
    ],
)
def test_gaussian_kl_bad_shapes(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gaussian_kl(*args)


# ---------------------------------------------------------------- free_bits_kl


def _brute_force(kl: torch.Tensor, lam: float, mode: str) -> float:
    """Independent loops over the definitions in the docstring table."""
    rows = kl.tolist()
    b, d = len(rows), len(rows[0])
    if mode == "dim":
        return sum(max(lam, sum(rows[x][j] for x in range(b)) / b) for j in range(d))
    if mode == "example_dim":
        return sum(sum(max(lam, v) for v in row) for row in rows) / b
    if mode == "example":
        return sum(max(lam, sum(row)) for row in rows) / b
    return max(lam, sum(sum(row) for row in rows) / b)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    lam=st.floats(0.0, 3.0),
    mode=st.sampled_from(FREE_BITS_MODES),
    b=st.integers(1, 5),
    d=st.integers(1, 4),
)
def test_free_bits_matches_brute_force(seed: int, lam: float, mode: str, b: int, d: int) -> None:
    kl = torch.rand(b, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    assert float(free_bits_kl(kl, lam, mode)) == pytest.approx(_brute_force(kl, lam, mode), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("mode", FREE_BITS_MODES)
def test_zero_threshold_is_the_plain_batch_mean_kl(mode: str) -> None:
    kl = gaussian_kl(*_posterior(3))
    torch.testing.assert_close(free_bits_kl(kl, 0.0, mode), kl.sum(1).mean())


def test_default_mode_is_kingma_per_dimension_on_the_batch_mean() -> None:
    kl = torch.tensor([[0.1, 2.0], [0.3, 2.0]])
    assert free_bits_kl(kl, 0.5) == free_bits_kl(kl, 0.5, mode="dim") == pytest.approx(2.5)


def _grad(kl: torch.Tensor, lam: float, mode: str) -> torch.Tensor:
    kl = kl.clone().requires_grad_()
    free_bits_kl(kl, lam, mode).backward()
    return kl.grad


def test_where_the_gradient_is_zero() -> None:
    kl = torch.tensor([[0.1, 2.0, 0.9], [0.3, 2.0, 0.0]])
    # "dim": dimension 0 (batch mean .2) below .5 gets nothing; dimension 2 (mean .45) too; dimension 1 gets 1/b
    assert _grad(kl, 0.5, "dim").tolist() == [[0.0, 0.5, 0.0], [0.0, 0.5, 0.0]]
    # "example_dim": each entry below .5 gets nothing, .9 and 2.0 get 1/b
    assert _grad(kl, 0.5, "example_dim").tolist() == [[0.0, 0.5, 0.5], [0.0, 0.5, 0.0]]
    # "example": totals 3.0 and 2.3, floor 2.5: only the first example has a gradient
    assert _grad(kl, 2.5, "example").tolist() == [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]
    # "batch": mean total 2.65 above 2.5 -> everything 1/b; above 2.7 -> nothing
    assert _grad(kl, 2.5, "batch").tolist() == [[0.5] * 3, [0.5] * 3]
    assert _grad(kl, 2.7, "batch").tolist() == [[0.0] * 3, [0.0] * 3]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(threshold=-0.1), ValueError, r"`threshold` must be a finite real number >= 0, got -0.1"),
        (dict(threshold=math.nan), ValueError, r"`threshold` must be a finite real number >= 0, got nan"),
        (dict(threshold=True), TypeError, r"`threshold` must be a finite real number >= 0, got True of type bool"),
        (
            dict(threshold=0.5, mode="per_dim"),
            ValueError,
            r"`mode` must be one of \('dim', 'example_dim', 'example', 'batch'\), got 'per_dim'",
        ),
    ],
)
def test_free_bits_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        free_bits_kl(torch.zeros(2, 3), **kwargs)


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (torch.zeros(3), ValueError, r"got shape \(3,\)"),
        (torch.zeros(2, 3, 4), ValueError, r"got shape \(2, 3, 4\)"),
        ([[0.0]], TypeError, r"got \[\[0.0\]\] of type list"),
    ],
)
def test_free_bits_needs_a_2d_tensor(value: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=r"`kl_per_dim` must be a \(batch, d\) tensor, " + match):
        free_bits_kl(value, 0.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- capacity_kl


def test_capacity_kl_value_and_gradient() -> None:
    kl = torch.tensor([3.0, 7.0], requires_grad=True)
    out = capacity_kl(kl, capacity=5.0, gamma=10.0)
    assert out.tolist() == [20.0, 20.0]
    out.sum().backward()
    assert kl.grad.tolist() == [-10.0, 10.0]  # pulls the KL towards C from both sides


def test_capacity_kl_accepts_a_tensor_capacity() -> None:
    buffer = torch.tensor(2.0)  # what CyclicalKLAnnealing fills in place
    assert float(capacity_kl(torch.tensor(5.0), buffer, gamma=1.0)) == 3.0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(capacity=-1.0, gamma=1.0), ValueError, r"`capacity` must be a finite real number >= 0, got -1.0"),
        (dict(capacity=1.0, gamma=-2), ValueError, r"`gamma` must be a finite real number >= 0, got -2"),
        (dict(capacity=math.inf, gamma=1.0), ValueError, r"`capacity` must be .* got inf"),
        (dict(capacity=1.0, gamma="10"), TypeError, r"`gamma` must be .* got '10' of type str"),
    ],
)
def test_capacity_kl_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        capacity_kl(torch.tensor(1.0), **kwargs)


@pytest.mark.parametrize("mode", FREE_BITS_MODES)
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 2.2])
@pytest.mark.parametrize("buffer_dtype", [torch.float32, torch.float64])
def test_free_bits_takes_a_0d_tensor_threshold_like_the_number(
    mode: str, lam: float, buffer_dtype: torch.dtype
) -> None:
    # a buffer that ScheduledAttribute fills in place (what a compiled loss reads): same value, same gradient
    kl = torch.tensor([[0.1, 2.0, 0.9], [0.3, 2.0, 0.0]], dtype=torch.float64)
    buffer = torch.tensor(lam, dtype=buffer_dtype)
    expected = free_bits_kl(kl, float(buffer), mode)
    got = free_bits_kl(kl, buffer, mode)
    assert got.dtype == kl.dtype
    assert torch.equal(got, expected)
    assert torch.equal(_grad(kl, buffer, mode), _grad(kl, float(buffer), mode))


@pytest.mark.parametrize("threshold", [torch.zeros(1), torch.zeros(3), torch.zeros(2, 3)])
def test_free_bits_refuses_a_tensor_threshold_that_is_not_0d(threshold: torch.Tensor) -> None:
    shape = re.escape(str(tuple(threshold.shape)))
    with pytest.raises(
        ValueError, match=rf"`threshold` must be a number or a 0-d tensor, got a tensor of shape {shape}"
    ):
        free_bits_kl(torch.zeros(2, 3), threshold)


def test_free_bits_with_a_buffer_threshold_compiles_to_one_graph_that_follows_the_buffer() -> None:
    # what the README recommends for a compiled loss: the callback fills the buffer in place, no recompile
    buffer, graphs = torch.tensor(0.5), []

    def count_graphs(gm: torch.fx.GraphModule, example_inputs: list) -> torch.fx.GraphModule:
        graphs.append(gm)
        return gm

    loss = torch.compile(lambda k: free_bits_kl(k, buffer, "example_dim"), fullgraph=True, backend=count_graphs)
    kl = torch.rand(4, 3, generator=torch.Generator().manual_seed(0))
    for value in (0.5, 0.1, 0.9):
        buffer.fill_(value)
        assert torch.equal(loss(kl), free_bits_kl(kl, value, "example_dim"))
    assert len(graphs) == 1


@pytest.mark.parametrize("threshold", [0.3, torch.tensor(0.3, dtype=torch.float64)])
def test_free_bits_tie_gets_no_gradient_on_every_torch_version(threshold: float | torch.Tensor) -> None:
    # clamp(min=number) gave a tie the gradient in torch 2.2 (the oldest supported) and none later
    kl = torch.tensor([[0.3, 0.5]], dtype=torch.float64, requires_grad=True)
    free_bits_kl(kl, threshold, "example_dim").backward()
    assert kl.grad is not None and kl.grad.tolist() == [[0.0, 1.0]]
