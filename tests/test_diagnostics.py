"""Tests for active_units and mutual_information against brute-force computations on small sets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal

from lightning_kl_anneal import LatentDimensionality, active_units, latent_dimensionality, mutual_information

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
    ("mu", "threshold", "exc", "match"),
    [
        (
            torch.zeros(1, 3),
            0.01,
            ValueError,
            r"`mu` must be a \(batch, d\) tensor with at least 2 rows, got shape \(1, 3\): a variance needs two",
        ),
        (torch.zeros(5), 0.01, ValueError, r"`mu` must be a \(batch, d\) tensor, got shape \(5,\)"),
        ([[0.0], [1.0]], 0.01, TypeError, r"got \[\[0.0\], \[1.0\]\] of type list"),
        (torch.zeros(4, 2), -0.5, ValueError, r"`threshold` must be a real number >= 0, got -0.5"),
    ],
)
def test_active_units_bad_arguments(mu: object, threshold: float, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
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
    # an uneven split (six batches of 10, one of 4) weights each batch by its rows, as He et al.'s calc_mi
    by_hand = (60 * math.log(10) + 4 * math.log(4)) / 64
    assert mutual_information(mu, logvar, batch_size=10) == pytest.approx(by_hand, abs=1e-9)


def test_mi_batch_size_of_at_least_n_is_the_whole_set() -> None:
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(12, 2, generator=g), torch.randn(12, 2, generator=g) * 0.3  # overlapping posteriors
    values = [
        mutual_information(mu, logvar, 2, batch_size=b, generator=torch.Generator().manual_seed(0)) for b in (12, 100)
    ]
    assert values == [mutual_information(mu, logvar, 2, generator=torch.Generator().manual_seed(0))] * 2
    split = mutual_information(mu, logvar, 2, batch_size=6, generator=torch.Generator().manual_seed(0))
    assert split != pytest.approx(values[0], abs=1e-6)  # while a split into two batches changes the value


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
    ("args", "kwargs", "exc", "match"),
    [
        (
            (torch.zeros(3, 2), torch.zeros(3, 3)),
            {},
            ValueError,
            r"`logvar` must have the shape of `mu` \(3, 2\), got \(3, 3\)",
        ),
        ((torch.zeros(3), torch.zeros(3)), {}, ValueError, r"`mu` must be a \(batch, d\) tensor, got shape \(3,\)"),
        ((torch.zeros(0, 2), torch.zeros(0, 2)), {}, ValueError, r"with at least 1 row, got shape \(0, 2\)"),
        ((torch.zeros(3, 2), torch.zeros(3, 2), 0), {}, ValueError, r"`n_samples` must be an int >= 1, got 0"),
        (
            (torch.zeros(3, 2), torch.zeros(3, 2)),
            dict(batch_size=0),
            ValueError,
            r"`batch_size` must be an int >= 1 or None, got 0",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3, 2)),
            dict(chunk=2.5),
            TypeError,
            r"`chunk` must be an int >= 1, got 2.5 of type float",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3, 2)),
            dict(outer_rows=0),
            ValueError,
            r"`outer_rows` must be an int >= 1 or None, got 0",
        ),
    ],
)
def test_mi_bad_arguments(args: tuple, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
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


# ---------------------------------------------------------------- latent_dimensionality


def _rows_along(*directions: tuple[list[float], int]) -> torch.Tensor:
    """Rows ±v, each sign ``times`` times per direction v, plus one zero row: mean 0, covariance Σ 2·times·v vᵀ / (N-1)."""
    rows = [sign * torch.tensor(v) for v, times in directions for _ in range(times) for sign in (1.0, -1.0)]
    return torch.stack([*rows, torch.zeros(len(directions[0][0]))])


def test_dimensionality_hand_computed_two_directions_in_four_axes() -> None:
    # ±2 e1 and ±(e2 + e3): covariance eigenvalues 8/3 and 4/3 (shares 2/3 and 1/3), then 0, 0
    mu = torch.tensor([[2.0, 0, 0, 0], [-2.0, 0, 0, 0], [0, 1.0, 1.0, 0], [0, -1.0, -1.0, 0]])
    assert latent_dimensionality(mu, 0.9) == 2
    assert latent_dimensionality(mu, 0.5) == 1  # the first direction alone holds 2/3
    assert latent_dimensionality(mu, 1.0) == 2  # the rank: the two zero eigenvalues never count
    assert active_units(mu) == 3  # e2 and e3 move together: three active units, two directions


def test_dimensionality_share_is_inclusive_at_the_boundary() -> None:
    mu = _rows_along(([1.0, 0.0], 3), ([0.0, 1.0], 1))  # N = 9: covariance exactly diag(0.75, 0.25)
    assert latent_dimensionality(mu, 0.75) == 1  # exactly 75 % held by one component: enough
    assert latent_dimensionality(mu, 0.7500001) == 2
    assert latent_dimensionality(mu, 0.25) == 1


@pytest.mark.parametrize("direction", [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0), (3.0, 2.0, 1.0), (4.0, 4.0, 1.0)])
def test_dimensionality_of_points_on_a_line_is_one_whatever_the_rounding(direction: tuple[float, ...]) -> None:
    # Rows t · v for t = 1, -2, 3, -4: rank one. The covariance's other two eigenvalues come out of eigvalsh as
    # rounding, up to ~1e-14 next to the first's 29-319 and not always 0 or negative; below d · ε · λ_1 they
    # are no direction, so even share=1 (the numerical rank) counts one.
    mu = torch.tensor([[1.0], [-2.0], [3.0], [-4.0]]) * torch.tensor([direction])
    assert latent_dimensionality(mu, 1.0) == 1 and latent_dimensionality(mu, 0.9) == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dimensionality_of_half_precision_means_keeps_their_small_real_directions(dtype: torch.dtype) -> None:
    # one strong direction (variance 1) and 20 weaker ones (0.048) in 64: the floor for rounding is a variance
    # (d · ε² · m, here 64 · 6.1e-5 · ~1 = 0.004 for bfloat16), not d · ε · λ_1 (0.5 for bfloat16), which cut all
    # 20 weak directions and gave 1 (the old tolerance, applied to eigenvalues as matrix_rank does to singular values)
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4000, 64, generator=g) * torch.tensor([1.0] + [0.22] * 20 + [0.0] * 43)
    expected = [latent_dimensionality(mu, share) for share in (0.9, 0.99, 1.0)]
    assert expected == [17, 21, 21]
    assert [latent_dimensionality(mu.to(dtype), share) for share in (0.9, 0.99, 1.0)] == expected
    metric = LatentDimensionality(share=[0.9, 0.99, 1.0])
    metric.update(mu[:1500].to(dtype))
    metric.update(mu[1500:].to(dtype))
    assert metric.compute().tolist() == expected


def test_dimensionality_of_equal_rows_is_zero_and_one_row_is_refused() -> None:
    assert latent_dimensionality(torch.full((5, 3), 7.0), 0.9) == 0  # a collapsed encoder: no direction at all
    assert latent_dimensionality(torch.full((5, 3), 7.0), 1.0) == 0
    with pytest.raises(ValueError, match=r"at least 2 rows, got shape \(1, 3\): a covariance needs two"):
        latent_dimensionality(torch.zeros(1, 3))


def _brute_force_dimensionality(mu: torch.Tensor, share: float) -> int:
    """numpy's covariance and eigenvalues, then a loop adding components until ``share`` is held."""
    import numpy as np

    x = mu.double().numpy()
    eig = sorted(np.linalg.eigvalsh(np.cov(x, rowvar=False).reshape(mu.shape[1], -1)), reverse=True)
    m, eps = max((x**2).mean(0)), np.finfo(float).eps  # float64 means: the storage term is eps² m, negligible
    eig = [e if e > len(eig) * (eps * max(eig[0], m) + eps**2 * m) else 0.0 for e in eig]
    total, held = sum(eig), 0.0
    if total == 0:
        return 0
    for k, e in enumerate(eig, start=1):
        held += e
        if held / total >= share - 1e-12:
            return k
    return len(eig)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 30), d=st.integers(1, 6), share=st.floats(0.05, 0.95))
def test_dimensionality_matches_brute_force(seed: int, n: int, d: int, share: float) -> None:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.rand(d, generator=g, dtype=torch.float64) * 3
    got, expected = latent_dimensionality(mu, share), _brute_force_dimensionality(mu, share)
    assert abs(got - expected) <= 1 and (got == expected or _near_a_boundary(mu, share))


def _near_a_boundary(mu: torch.Tensor, share: float) -> bool:
    eig = torch.linalg.eigvalsh(torch.cov(mu.T).reshape(mu.shape[1], -1)).flip(0).clamp(min=0)
    return bool(((eig.cumsum(0) / eig.sum() - share).abs() < 1e-9).any())


def test_dimensionality_ignores_rotation_shift_and_scale_unlike_active_units() -> None:
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(200, 4, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0, 0.05, 0.0], dtype=torch.float64
    )
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    moved = 100.0 + 0.01 * mu @ rotation  # shifted, shrunk below the active-unit threshold, rotated
    for share in (0.5, 0.9, 0.99, 0.9999):
        assert latent_dimensionality(moved, share) == latent_dimensionality(mu, share)
    assert [latent_dimensionality(mu, s) for s in (0.5, 0.9, 0.99, 0.9999)] == [1, 1, 2, 3]
    assert active_units(moved) == 0 and active_units(mu) == 2


@pytest.mark.parametrize(
    ("mu", "share", "exc", "match"),
    [
        (torch.zeros(4, 2), 0.0, ValueError, r"^`share` must be a real number in \(0, 1\], got 0.0$"),
        (torch.zeros(4, 2), 1.5, ValueError, r"^`share` must be a real number in \(0, 1\], got 1.5$"),
        (torch.zeros(4, 2), math.nan, ValueError, r"^`share` must be a real number in \(0, 1\], got nan$"),
        (torch.zeros(4, 2), "0.9", TypeError, r"^`share` must be a real number in \(0, 1\], got '0.9' of type str$"),
        (torch.zeros(4), 0.9, ValueError, r"`mu` must be a \(batch, d\) tensor, got shape \(4,\)"),
        ([[0.0], [1.0]], 0.9, TypeError, r"`mu` must be a \(batch, d\) tensor, got \[\[0.0\], \[1.0\]\] of type list"),
    ],
)
def test_dimensionality_bad_arguments(mu: object, share: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        latent_dimensionality(mu, share)  # type: ignore[arg-type]


def test_dimensionality_of_a_non_finite_posterior_is_nan_with_a_warning() -> None:
    mu = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    mu[3, 2] = math.inf
    with pytest.warns(UserWarning, match=r"latent_dimensionality: the posterior is not finite"):
        assert math.isnan(latent_dimensionality(mu))


# ---------------------------------------------------------------- the running-sum helpers the metrics delegate to


def test_variance_and_covariance_from_running_sums_hand_computed() -> None:
    from lightning_kl_anneal.diagnostics import _covariance_from_moments, _variance_from_moments

    x = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 8.0]], dtype=torch.float64)  # column means 3 and 4
    n, total, outer = torch.tensor(3.0, dtype=torch.float64), x.sum(0), x.T @ x
    # sample (n - 1) variances: (4 + 0 + 4) / 2 = 4 and (4 + 4 + 16) / 2 = 12; covariance (4 + 0 + 8) / 2 = 6
    assert _variance_from_moments(n, total, (x * x).sum(0)).tolist() == [4.0, 12.0]
    assert _covariance_from_moments(n, total, outer).tolist() == [[4.0, 6.0], [6.0, 12.0]]


def test_latent_dimensionality_at_share_1_is_the_rank_of_float32_means() -> None:
    # 200 means on a 3-dimensional subspace of 16, offset and small as an encoder's often are: stored in float32,
    # their rounding spreads tiny variance over all 16 directions, which share=1 must not count (it did: 16)
    g = torch.Generator().manual_seed(0)
    mu64 = 5.0 + 0.01 * (
        torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 16, generator=g, dtype=torch.float64)
    )
    mu32 = mu64.float()
    assert latent_dimensionality(mu32, 1.0) == 3 and latent_dimensionality(mu64, 1.0) == 3
    assert latent_dimensionality(mu32, 0.9) == latent_dimensionality(mu64, 0.9)
    metric = LatentDimensionality(share=1.0)
    metric.update(mu32[:120])
    metric.update(mu32[120:])
    assert int(metric.compute()) == 3 and metric.rounding == torch.finfo(torch.float32).eps
