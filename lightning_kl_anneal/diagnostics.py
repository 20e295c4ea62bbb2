"""Latent diagnostics of a Gaussian VAE over a data set: active units, dimensionality, mutual information.

Pure torch, no Lightning (like ``torchmetrics.functional``). The streaming, DDP-aware versions are
the metric classes in :mod:`lightning_kl_anneal.metrics`, which delegate here.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from lightning_kl_anneal._checks import check_fraction, check_int, check_real, check_rows

__all__ = ["active_units", "latent_dimensionality", "mutual_information"]


def _check_threshold(threshold: object) -> float:
    return check_real("threshold", threshold, 0.0, finite=False)  # inf is allowed: no dimension is active


def _warn_not_finite(what: str, names: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{what}: the posterior is not finite (NaN or inf in {names}): a diverged model, not a collapsed one. "
        "Returning NaN.",
        stacklevel=stacklevel,
    )


def _count_active(variance: Tensor, threshold: float, what: str) -> float:
    """Dimensions with variance > threshold; NaN (with a warning) when a variance is not finite.

    A NaN variance fails ``> threshold`` and would read as an inactive dimension, i.e. as collapse.
    """
    if not bool(torch.isfinite(variance).all()):
        _warn_not_finite(what, "the posterior means", stacklevel=4)
        return math.nan
    return int((variance > threshold).sum())


def _variance_from_moments(n: Tensor, total: Tensor, total_sq: Tensor) -> Tensor:
    """Sample variance (n − 1 in the denominator) per dimension from float64 running sums."""
    mean = total / n
    return ((total_sq - n * mean * mean) / (n - 1)).clamp(min=0.0)


def active_units(mu: Tensor, threshold: float = 0.01) -> float:
    r"""Number of latent dimensions the encoder uses: ``Var_x(E_q[z_d | x]) > threshold`` (Burda et al., 2016).

    A dimension is *active* when its posterior mean moves with the input; a collapsed dimension
    maps every x to the same mean (that of the prior). The variance is the sample variance over the
    N rows (denominator N − 1, as He et al. 2019's ``calc_au``), computed in float64. Burda et al.'s
    threshold, 0.01, is the default. With a conditional prior (CVAE) pass ``mu - prior_mu``: what
    counts there is how far the posterior moves away from the prior.

    Args:
        mu: (N, d) posterior means over a data set, N >= 2.
        threshold: variance above which a dimension counts as active, >= 0.

    Returns:
        The number of active dimensions, an int in [0, d]; ``math.nan`` (with a warning) when ``mu`` holds
        NaN or inf: a diverged model is not reported as a collapsed one.

    Raises:
        ValueError: if ``mu`` is not (N >= 2, d), or ``threshold`` is negative.

    Example:
        >>> import torch
        >>> active_units(torch.tensor([[0.0, 1.0, 5.0], [0.0, -1.0, 5.01]]))
        1
    """
    threshold = _check_threshold(threshold)
    check_rows("mu", mu, min_rows=2, what="a variance needs two")
    return _count_active(mu.double().var(0, correction=1), threshold, "active_units")


def _covariance_from_moments(n: Tensor, total: Tensor, outer: Tensor) -> Tensor:
    """Sample covariance (n − 1 in the denominator) from float64 running sums of x and of x xᵀ."""
    mean = total / n
    return (outer - n * torch.outer(mean, mean)) / (n - 1)


def _rounding(mu: Tensor) -> float:
    """The machine epsilon of the means' own dtype: what rounding in them looks like (float64's for integers)."""
    return torch.finfo(mu.dtype if mu.is_floating_point() else torch.float64).eps


_EPS64 = torch.finfo(torch.float64).eps


def _count_components(
    covariance: Tensor, shares: tuple[float, ...], what: str, rounding: float, second_moment: float
) -> list[float]:
    """For each share, the fewest principal components holding it; NaN (with a warning) for a non-finite input.

    Eigenvalues at or below ``d · (ε₆₄ · max(λ_1, m) + ε² · m)`` count as 0: rounding, not directions. ``m`` is
    the largest raw second moment of a coordinate, ``max_j mean_i x_ij²`` (offset included), and ``ε`` the epsilon
    of the means' own dtype (``rounding``). The first term is the float64 arithmetic's (eigvalsh's backward error,
    ``torch.linalg.matrix_rank``'s tolerance, and the cancellation in ``Σxxᵀ − n·x̄x̄ᵀ``); the second bounds the
    variance that storing the means in their dtype adds to a coordinate (an error of at most ``ε|x|`` per entry),
    which is a square: comparing eigenvalues with ``ε · λ_1``, as ``matrix_rank`` does singular values, would cut
    real directions of float16 or bfloat16 means. ``share=1`` gives the numerical rank; no variance gives 0.
    """
    if not bool(torch.isfinite(covariance).all()):
        _warn_not_finite(what, "the posterior means", stacklevel=4)
        return [math.nan] * len(shares)
    eig = torch.linalg.eigvalsh(covariance.double()).flip(0).clamp(min=0.0)  # descending, rounding below 0 cut
    if not len(eig) or float(eig[0]) == 0.0:
        return [0] * len(shares)
    floor = len(eig) * (_EPS64 * max(float(eig[0]), second_moment) + rounding**2 * second_moment)
    eig = torch.where(eig > floor, eig, torch.zeros_like(eig))
    cumulative = eig.cumsum(0)
    held = cumulative / cumulative[-1]  # the last is exactly 1
    return [int((held < share).sum()) + 1 for share in shares]


def latent_dimensionality(mu: Tensor, share: float = 0.9) -> float:
    r"""How many directions the posterior means use: the principal components holding ``share`` of their variance.

    With ``C`` the sample covariance of the N posterior means (d x d, denominator N − 1, float64) and
    ``λ_1 >= ... >= λ_d`` its eigenvalues, the dimensionality is the smallest k with
    ``(λ_1 + ... + λ_k) / (λ_1 + ... + λ_d) >= share``. Eigenvalues no larger than the variance that
    rounding can make count as 0: ``d · (ε₆₄ · max(λ_1, m) + ε² · m)``, with ``m = max_j mean_i mu_ij²`` and ``ε``
    the machine epsilon of ``mu``'s dtype (1.2e-7 for float32, 9.8e-4 for float16, 7.8e-3 for bfloat16). So
    ``share=1`` gives the rank of the means as they are stored: float32 means on a 3-dimensional subspace give
    3, not the 16 that their rounding would add; float16 and bfloat16 means keep their small real directions; a
    set with no variance at all (every mean equal, a collapsed encoder) gives 0.

    Where :func:`active_units` counts coordinates that move, this counts independent directions: two
    active units that always move together are one dimension, and a dimension whose variance is tiny
    next to the others counts for little. The variance scale does not matter, only its shares. With a
    conditional prior (CVAE) pass ``mu - prior_mu``, as for active units.

    Args:
        mu: (N, d) posterior means over a data set, N >= 2.
        share: the share of the variance to hold, in (0, 1]; 0.9, 0.95 and 0.99 are usual.

    Returns:
        The number of components, an int in [0, d]; ``math.nan`` (with a warning) when ``mu`` holds NaN or inf.

    Raises:
        ValueError: if ``mu`` is not (N >= 2, d) (one row has no covariance), or ``share`` is not in (0, 1].
        TypeError: if ``mu`` is not a tensor or ``share`` not a real number.

    Example:
        >>> import torch
        >>> mu = torch.tensor([[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0], [0.0, 0.0, 0.1], [0.0, 0.0, -0.1]])
        >>> latent_dimensionality(mu, 0.9)  # the first two coordinates move together: one direction, 99.5 %
        1
        >>> latent_dimensionality(mu, 0.999), active_units(mu)
        (2, 2)
    """
    shares = (check_fraction("share", share),)
    check_rows("mu", mu, min_rows=2, what="a covariance needs two")
    x = mu.detach().double()
    second_moment = float((x * x).mean(0).max())
    x = x - x.mean(0)
    (count,) = _count_components(x.T @ x / (len(x) - 1), shares, "latent_dimensionality", _rounding(mu), second_moment)
    return count


def _check_posterior(mu: Tensor, logvar: Tensor) -> None:
    check_rows("mu", mu, min_rows=1)
    check_rows("logvar", logvar)
    if mu.shape != logvar.shape:
        raise ValueError(f"`logvar` must have the shape of `mu` {tuple(mu.shape)}, got {tuple(logvar.shape)}")


def _mi_sum(mu: Tensor, logvar: Tensor, z: Tensor, own: Tensor, chunk: int) -> float:
    """Σ_i [log q(z_i|x_own_i) − log((1/N) Σ_j q(z_i|x_j))] over the rows of z (z_i drawn from row own_i)."""
    n, d = mu.shape
    inv_var = (-logvar).exp()
    # log q(z_i | x_j) = [z_i², z_i, 1] · [−½/var_j, mu_j/var_j, c_j]: all pairs in one matrix product
    const = -0.5 * (logvar.sum(1) + d * math.log(2 * math.pi) + (mu * mu * inv_var).sum(1))  # (N,)
    weights = torch.cat([-0.5 * inv_var, mu * inv_var, const[:, None]], dim=1)  # (N, 2d + 1)
    total = 0.0
    for start in range(0, len(z), chunk):
        zc, oc = z[start : start + chunk], own[start : start + chunk]
        log_dens = torch.cat([zc * zc, zc, torch.ones_like(zc[:, :1])], dim=1) @ weights.T  # (c, N)
        own_dens = log_dens[torch.arange(len(zc), device=mu.device), oc]
        total += float((own_dens - (torch.logsumexp(log_dens, dim=1) - math.log(n))).sum())
    return total


def mutual_information(
    mu: Tensor,
    logvar: Tensor,
    n_samples: int = 4,
    *,
    batch_size: int | None = None,
    outer_rows: int | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 256,
) -> float:
    r"""I(x; z) under q(z|x) p_data(x), in nats: the estimator of He et al. (2019), with less variance.

    ``I = E_x E_q(z|x)[log q(z|x)] − E_x E_q(z|x)[log q(z)]``, where the aggregate posterior
    ``q(z) ≈ (1/N) Σ_j q(z|x_j)`` runs over the N rows passed in. Averaged over ``n_samples`` draws
    ``z_i ~ q(z|x_i)`` per row. Computed in float64 (a logsumexp over N nearly equal terms).

    **How this relates to He et al.'s numbers.** Their ``calc_mi`` (also in Li et al. 2019 and
    Optimus) differs in two ways, both of which change the variance, not what is estimated:

    1. It uses the closed-form negative entropy for the first term and one sampled ``log q(z)`` for
       the second. Here both terms use the same z (a control variate): the noise of about
       ``sqrt(d / 2N)`` nats that the mismatch leaves, as large as the MI of a collapsed model
       (hence the *negative* MI values users report), cancels. Identical posteriors give 0 to rounding (about 1e-17).
    2. It builds the aggregate posterior from each mini-batch and averages the per-batch values
       (weighted by batch size). Here it is built from the whole set, so the value no longer
       depends on batch size or on how batches were formed. Pass ``batch_size=`` for the per-batch
       variant: consecutive rows in groups of ``batch_size``, weighted like He et al.'s.

    **Upper bound.** Every term is at most ``log N`` (the own density is one of the N terms of the
    mixture), so the estimate is at most ``log N``, and at most ``log batch_size`` per batch: a
    model whose N posteriors do not overlap reads ``log N``, however much information the code
    carries. He et al.'s per-batch numbers are therefore capped at ``log B`` (3.47 for B = 32): a
    code informative enough to approach that cap reads lower per batch than over the whole set
    (64 separated posteriors read log 64 over the set, log 8 in batches of 8). Compare MI only at equal N
    (or equal batch size). The estimate can be slightly negative for a collapsed code.

    It is I(x; z) under an unconditional prior; for a CVAE it is not I(x; z | c).

    Args:
        mu: (N, d) posterior means over an evaluation set.
        logvar: (N, d) posterior log-variances of the same rows.
        n_samples: z draws per row, >= 1.
        batch_size: ``None`` for the whole-set aggregate posterior, or an int >= 1 for He et al.'s
            per-batch variant.
        outer_rows: average the outer expectation over at most this many rows, evenly spaced in the
            order given (each still scored against the aggregate posterior of all N rows): the cost
            drops from O(N² d) to O(outer_rows N d), the estimand is unchanged, the variance grows
            about as N / outer_rows. ``None``: all rows.
        generator: for the z draws (on ``mu``'s device); pass one for reproducible numbers.
        chunk: rows of z scored at a time; bounds memory at ``chunk x N`` float64 values (256: the
            block stays in cache; 1024 measured 2-3 times slower at N = 1000 on one CPU thread).

    Returns:
        The estimate in nats, a float <= log N; ``math.nan`` (with a warning) when ``mu`` or ``logvar``
        holds NaN or inf.

    Raises:
        ValueError: for shapes other than two equal (N, d), or a bad ``n_samples``, ``batch_size``,
            ``outer_rows`` or ``chunk``.

    Example:
        >>> import torch
        >>> mu, lv = torch.tensor([[-50.0], [50.0]]), torch.zeros(2, 1)
        >>> round(mutual_information(mu, lv), 4)  # two far-apart posteriors: log 2
        0.6931
        >>> abs(mutual_information(torch.zeros(100, 8), torch.zeros(100, 8))) < 1e-12  # collapsed: 0
        True
    """
    _check_posterior(mu, logvar)
    for name, value, allow_none in (
        ("n_samples", n_samples, False), ("batch_size", batch_size, True), ("outer_rows", outer_rows, True),
        ("chunk", chunk, False),
    ):  # fmt: skip
        check_int(name, value, 1, optional=allow_none)
    n = mu.shape[0]
    mu, logvar = mu.detach().double(), logvar.detach().double()
    if not bool(torch.isfinite(mu).all() and torch.isfinite(logvar).all()):
        _warn_not_finite("mutual_information", "`mu` or `logvar`")
        return math.nan
    std = (0.5 * logvar).exp()
    outer = torch.arange(n, device=mu.device)
    if outer_rows is not None and outer_rows < n:
        outer = torch.linspace(0, n - 1, int(outer_rows), device=mu.device).round().long()
    step = n if batch_size is None else int(batch_size)
    total = 0.0
    for _ in range(n_samples):
        z = mu + std * torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        for start in range(0, n, step):
            rows = outer[(outer >= start) & (outer < start + step)]
            if len(rows):
                sl = slice(start, start + step)
                total += _mi_sum(mu[sl], logvar[sl], z[rows], rows - start, chunk)
    return total / (len(outer) * n_samples)
