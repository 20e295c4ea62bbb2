"""Latent diagnostics as torchmetrics ``Metric`` classes: streaming, resettable, gathered under DDP.

Each class only accumulates state and delegates the math to :mod:`lightning_kl_anneal.kl` and
:mod:`lightning_kl_anneal.diagnostics`. Under DDP, ``compute()`` combines every process's state
(torchmetrics' job), so the value over 2 ranks equals the value over the same rows on 1 rank.

The latent size ``d`` is learnt from the first ``update``: the running sums start as a scalar 0
and become (d,) vectors, so no argument has to repeat the model's latent size.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat  # where torchmetrics 1.0 has it too

from lightning_kl_anneal._checks import check_fraction, check_fractions, check_int, check_rows
from lightning_kl_anneal.diagnostics import (
    _check_posterior,
    _check_threshold,
    _count_active,
    _count_components,
    _covariance_from_moments,
    _rounding,
    _variance_from_moments,
    mutual_information,
)
from lightning_kl_anneal.kl import gaussian_kl

__all__ = ["ActiveUnits", "KLPerDimension", "LatentDimensionality", "MutualInformation"]


def _check_2d(name: str, value: Any) -> None:
    check_rows(name, value)


class _BatchValue(Metric):
    """A sample statistic of the posterior means (a variance, a covariance) from float64 running sums.

    Holds the rows' count ``n`` and sum ``total`` (a scalar 0, then (d,)); :meth:`_add_rows` adds a batch
    to them and returns its rows, for the subclass's ``update`` to add its second moment. ``forward()``
    returns the value over its batch alone: a statistic of two or more rows has no value for one row, so
    ``compute()`` refuses fewer than 2 rows seen, but ``forward()``'s value of a one-row batch (often a
    validation set's last) is NaN, and the row still counts towards ``compute()``. Subclasses ask
    :meth:`_too_few_rows` first in ``compute()``.
    """

    n: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._one_batch = False  # True while forward() computes the value of one batch
        for name in ("n", "total"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _add_rows(self, mu: Tensor, prior_mu: Tensor | None) -> Tensor:
        """Count and sum a batch of posterior means (batch, d), minus ``prior_mu`` if given; its rows, in float64."""
        _check_2d("mu", mu)
        if self.total.dim() and mu.shape[1] != len(self.total):
            raise ValueError(
                f"`mu` must have the {len(self.total)} columns of the rows seen so far, got shape {tuple(mu.shape)}; "
                "use one metric per latent, or `reset()` it between latents of different sizes"
            )
        x = mu.detach().double()
        if prior_mu is not None:
            try:
                fits = torch.broadcast_shapes(prior_mu.shape, mu.shape) == mu.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"`prior_mu` must have the shape of `mu` {tuple(mu.shape)} (or one that broadcasts to it), "
                    f"got {tuple(prior_mu.shape)}"
                )
            x = x - prior_mu.detach().double()
        self.n = self.n + len(x)
        self.total = self.total + x.sum(0)
        return x

    def forward(self, mu: Tensor, prior_mu: Tensor | None = None) -> Tensor:
        """Add a batch, like ``update``, and return the statistic over this batch alone (NaN for one row)."""
        self._one_batch = True
        try:
            return super().forward(mu, prior_mu)
        finally:
            self._one_batch = False

    def _too_few_rows(self, needs: str) -> bool:
        """Whether fewer than 2 rows were seen, in ``forward()`` (its value is then NaN); outside it an error.

        Raises:
            ValueError: fewer than 2 rows seen, outside ``forward()``; the message says the statistic ``needs``.
        """
        if float(self.n) >= 2:
            return False
        if self._one_batch:  # forward()'s value of a one-row batch
            return True
        raise ValueError(f"{type(self).__name__} needs at least 2 rows to compute {needs}, got {int(self.n)}")


class KLPerDimension(Metric):
    """Mean KL(q(z|x) ‖ p) per latent dimension over all rows seen, in nats; O(d) memory.

    ``compute()`` returns a (d,) float64 tensor; its sum is the KL per example of the whole latent
    vector (the ``KL`` column of Fu et al.'s tables). Dimensions near 0 carry no information.

    Example:
        >>> import torch
        >>> m = KLPerDimension()
        >>> m.update(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2))
        >>> m.update(torch.tensor([[3.0, 0.0]]), torch.zeros(1, 2))
        >>> m.compute()  # (0.5 + 4.5) / 2 and 0
        tensor([2.5000, 0.0000], dtype=torch.float64)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    kl_sum: Tensor
    n: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("kl_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, mu: Tensor, logvar: Tensor, prior_mu: Tensor | None = None, prior_logvar: Tensor | None = None
    ) -> None:
        """Add a batch: ``mu``, ``logvar`` (and a conditional prior's) of shape (batch, d)."""
        _check_2d("mu", mu)
        mu, logvar = mu.detach().double(), logvar.detach().double()
        prior_mu = None if prior_mu is None else prior_mu.detach().double()
        prior_logvar = None if prior_logvar is None else prior_logvar.detach().double()
        self.kl_sum = self.kl_sum + gaussian_kl(mu, logvar, prior_mu, prior_logvar).sum(0)
        self.n = self.n + len(mu)

    def compute(self) -> Tensor:
        """(d,) mean KL per dimension."""
        return self.kl_sum / self.n


class ActiveUnits(_BatchValue):
    """Active units (Burda et al., 2016) over all rows seen, from float64 running sums: O(d) memory.

    Counts dimensions whose posterior mean has sample variance above ``threshold`` over the rows,
    like :func:`~lightning_kl_anneal.active_units`. For a conditional prior pass ``prior_mu`` to
    ``update``: the variance is then that of ``mu - prior_mu``, i.e. of how far the posterior moves
    away from its prior (0 when the posterior has collapsed onto it).

    ``forward(mu, prior_mu)`` adds a batch, like ``update``, and returns the count over that batch
    alone. Any batch size works: the value of a batch of one row (often a validation set's last) is NaN,
    since one row has no variance; the row still counts towards ``compute()``, which equals
    :func:`~lightning_kl_anneal.active_units` over all rows.

    Args:
        threshold: variance above which a dimension counts as active (Burda et al.: 0.01).

    Example:
        >>> import torch
        >>> m = ActiveUnits()
        >>> m.update(torch.tensor([[0.0, 1.0, 5.0]])); m.update(torch.tensor([[0.0, -1.0, 5.01]]))
        >>> m.compute()
        tensor(1)
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    total_sq: Tensor

    def __init__(self, threshold: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = _check_threshold(threshold)
        self.add_state("total_sq", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, mu: Tensor, prior_mu: Tensor | None = None) -> None:
        """Add a batch of posterior means (batch, d)."""
        x = self._add_rows(mu, prior_mu)
        self.total_sq = self.total_sq + (x * x).sum(0)

    def variance(self) -> Tensor:
        """(d,) sample variance of the posterior means seen so far (this process only, unsynced)."""
        return _variance_from_moments(self.n, self.total, self.total_sq)

    def compute(self) -> Tensor:
        """The number of active dimensions, a 0-d int64 tensor; NaN (float64, with a warning) if ``mu`` was not finite.

        Raises:
            ValueError: if fewer than 2 rows were seen (a variance needs two).
        """
        if self._too_few_rows("a variance"):
            return torch.tensor(math.nan, dtype=torch.float64)
        count = _count_active(self.variance(), self.threshold, "ActiveUnits")
        return torch.tensor(count, dtype=torch.float64) if math.isnan(count) else torch.tensor(count)


class LatentDimensionality(_BatchValue):
    """Principal components of the posterior means holding ``share`` of their variance, over all rows seen.

    Like :func:`~lightning_kl_anneal.latent_dimensionality` on the concatenated rows (equal up to float64
    rounding), from running sums of ``x`` and ``x xᵀ`` (O(d²) memory, O(batch x d²) per update): under DDP
    the sums are added across processes, so 2 ranks give the value of the same rows on 1. For a
    conditional prior pass ``prior_mu`` to ``update``: the covariance is then that of ``mu - prior_mu``.
    ``forward(mu, prior_mu)`` adds a batch and returns the value over that batch alone (NaN for one row).

    Args:
        share: a share of the variance in (0, 1], or a list or tuple of them: ``compute()`` then returns
            one count per share, from one covariance (torchmetrics returns a list of one as a 0-d tensor).

    Example:
        >>> import torch
        >>> m = LatentDimensionality(share=[0.9, 0.999])
        >>> m.update(torch.tensor([[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]]))
        >>> m.update(torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, -0.1]]))
        >>> m.compute()  # one direction holds 99.5 % of the variance
        tensor([1, 2])
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    outer: Tensor

    def __init__(self, share: float | Sequence[float] = 0.9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        one = isinstance(share, numbers.Real) and not isinstance(share, bool)
        self.shares = (check_fraction("share", share),) if one else check_fractions("share", share)
        self.share = self.shares[0] if one else self.shares
        # the running sum of x xᵀ: a scalar 0, then (d, d) from the first update
        self.add_state("outer", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.rounding = 0.0  # the coarsest machine epsilon of the means seen: what counts as rounding

    def update(self, mu: Tensor, prior_mu: Tensor | None = None) -> None:
        """Add a batch of posterior means (batch, d)."""
        x = self._add_rows(mu, prior_mu)
        self.outer = self.outer + x.T @ x
        self.rounding = max(self.rounding, _rounding(mu))

    def covariance(self) -> Tensor:
        """(d, d) sample covariance of the posterior means seen so far (this process only, unsynced)."""
        return _covariance_from_moments(self.n, self.total, self.outer)

    def compute(self) -> Tensor:
        """The count, int64: 0-d for one share, (k,) for k shares; NaN (float64, with a warning) if ``mu`` was not finite.

        Raises:
            ValueError: if fewer than 2 rows were seen (a covariance needs two).
        """
        if self._too_few_rows("a covariance"):
            counts = [math.nan] * len(self.shares)
        else:
            rounding = self.rounding or torch.finfo(torch.float64).eps
            second_moment = float(self.outer.diagonal().max() / self.n)  # max_j mean_i x_ij², as the function's
            counts = _count_components(self.covariance(), self.shares, "LatentDimensionality", rounding, second_moment)
        any_nan = any(math.isnan(c) for c in counts)
        value = torch.tensor(counts, dtype=torch.float64 if any_nan else torch.int64)
        return value[0] if isinstance(self.share, float) else value


def _canonical_order(rows: Tensor) -> Tensor:
    """An order of ``rows`` that depends on their values only, not on where they came from.

    Stable sort by a fixed random projection: equal rows get equal keys (and are interchangeable),
    distinct rows distinct keys unless they differ by less than float64 rounding of the projection.
    """
    direction = torch.randn(rows.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.sort(rows.double() @ direction.to(rows.device), stable=True).indices


class MutualInformation(Metric):
    """I(x; z) over the rows seen (He et al., 2019), keeping at most ``max_samples`` rows per process.

    Stores ``mu`` and ``logvar`` rows (up to ``max_samples`` per process, the first ones seen, through
    ``update`` or ``forward`` alike; ``forward`` returns the estimate over its batch alone) and,
    at ``compute()``, gathers them from every process and calls
    :func:`~lightning_kl_anneal.mutual_information` on the whole set (aggregate posterior over all
    rows; see that function for how the value relates to He et al.'s per-batch numbers and to its
    bound log N). The rows are first put in a canonical order (by a fixed projection), so the value does not
    depend on how the rows were split across processes or ordered; if more than ``max_samples`` rows
    were gathered, evenly spaced ones in that order are kept. The z draws come from a generator
    seeded with ``seed`` at every ``compute()``, so two evaluations of the same posteriors agree and
    differences between checkpoints are not sampling noise.

    For an unconditional prior only (for a CVAE the quantity of interest would be I(x; z | c)).

    Args:
        n_samples: z draws per row.
        max_samples: rows kept per process, and used at most in ``compute()``; the cost of
            ``compute()`` grows with its square.
        outer_rows: if set, the outer average runs over this many evenly spaced rows (in the
            canonical order), each scored against all rows: cost O(outer_rows N d) instead of O(N² d),
            same estimand, more variance (see :func:`~lightning_kl_anneal.mutual_information`).
        seed: seed of the z draws; ``None`` uses torch's global generator.

    Example:
        >>> import torch
        >>> m = MutualInformation()
        >>> m.update(torch.tensor([[-50.0]]), torch.zeros(1, 1)); m.update(torch.tensor([[50.0]]), torch.zeros(1, 1))
        >>> round(float(m.compute()), 4)  # log 2
        0.6931
    """

    # update() keeps rows only while there is room, so it needs the accumulated state: forward() must
    # update that state itself rather than merge a fresh batch state into it (which kept every row).
    full_state_update = True
    is_differentiable = False
    higher_is_better = True

    mu: list[Tensor] | Tensor
    logvar: list[Tensor] | Tensor

    def __init__(
        self, n_samples: int = 4, max_samples: int = 4096, *, outer_rows: int | None = None, seed: int | None = 0,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.n_samples, self.max_samples = (
            check_int("n_samples", n_samples, 1),
            check_int("max_samples", max_samples, 1),
        )
        self.outer_rows = check_int("outer_rows", outer_rows, 1, optional=True)
        self.seed = check_int("seed", seed, optional=True)
        self.add_state("mu", default=[], dist_reduce_fx="cat")
        self.add_state("logvar", default=[], dist_reduce_fx="cat")

    def _kept(self) -> int:
        # derived from the state itself, so it stays right through forward()'s state juggling and syncs
        return sum(len(t) for t in self.mu) if isinstance(self.mu, list) else len(self.mu)

    def update(self, mu: Tensor, logvar: Tensor) -> None:
        """Add a batch of posterior parameters, each (batch, d); rows past ``max_samples`` are ignored."""
        _check_posterior(mu, logvar)
        room = self.max_samples - self._kept()
        if room > 0:  # stored as given (float32 usually); compute() works in float64
            self.mu.append(mu[:room].detach())  # type: ignore[union-attr]
            self.logvar.append(logvar[:room].detach())  # type: ignore[union-attr]

    def compute(self) -> Tensor:
        """The estimate in nats, a 0-d float64 tensor."""
        mu, logvar = dim_zero_cat(self.mu).double(), dim_zero_cat(self.logvar).double()
        order = _canonical_order(torch.cat([mu, logvar], dim=1))
        if len(order) > self.max_samples:
            order = order[torch.linspace(0, len(order) - 1, self.max_samples, device=order.device).round().long()]
        mu, logvar = mu[order], logvar[order]
        gen = None if self.seed is None else torch.Generator(device=mu.device).manual_seed(self.seed)
        mi = mutual_information(mu, logvar, self.n_samples, outer_rows=self.outer_rows, generator=gen)
        return torch.tensor(mi, dtype=torch.float64)
