"""The KL term of a Gaussian VAE's objective: the divergence itself, free bits, and a capacity target.

Pure torch, no Lightning. Every function takes tensors and returns tensors that keep the graph,
so they go straight into ``training_step``::

    kl_dim = gaussian_kl(mu, logvar)                       # (batch, d)
    loss = rec + self.beta * free_bits_kl(kl_dim, 0.5)     # or capacity_kl(kl_dim.sum(1).mean(), ...)
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_kl_anneal._checks import check_choice, check_real, check_rows

__all__ = ["FREE_BITS_MODES", "FreeBitsMode", "capacity_kl", "free_bits_kl", "gaussian_kl"]

FreeBitsMode = Literal["dim", "example_dim", "example", "batch"]
FREE_BITS_MODES: tuple[str, ...] = get_args(FreeBitsMode)


def _check_nonnegative(name: str, value: object) -> float:
    return check_real(name, value, 0.0)


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def gaussian_kl(
    mu: Tensor, logvar: Tensor, prior_mu: Tensor | None = None, prior_logvar: Tensor | None = None
) -> Tensor:
    r"""KL(N(mu, e^logvar) ‖ p) per latent dimension, in nats, same shape as ``mu``.

    With the default prior p = N(0, I)::

        KL_d = ½ (mu_d² + e^{logvar_d} − 1 − logvar_d)

    With a (conditional) Gaussian prior N(prior_mu, e^prior_logvar), as in a CVAE (Zhao et al., 2017)::

        KL_d = ½ (prior_logvar_d − logvar_d + (e^{logvar_d} + (mu_d − prior_mu_d)²) e^{−prior_logvar_d} − 1)

    Sum over the last dimension for the KL of the whole latent vector.

    Args:
        mu: posterior means, any shape, typically (batch, d).
        logvar: posterior log-variances, the shape of ``mu``.
        prior_mu: prior means, broadcastable to ``mu``; ``None`` means 0.
        prior_logvar: prior log-variances, broadcastable to ``mu``; ``None`` means 0 (unit variance).

    Returns:
        A tensor shaped like ``mu``, differentiable in every argument.

    Raises:
        ValueError: if ``logvar`` does not have the shape of ``mu``, or a prior does not broadcast to it.

    Example:
        >>> import torch
        >>> gaussian_kl(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2))
        tensor([[0.5000, 0.0000]])
        >>> gaussian_kl(torch.tensor([[1.0]]), torch.zeros(1, 1), prior_mu=torch.tensor([[1.0]]))
        tensor([[0.]])
    """
    if logvar.shape != mu.shape:
        raise ValueError(f"`logvar` must have the shape of `mu` {tuple(mu.shape)}, got {tuple(logvar.shape)}")
    for name, prior in (("prior_mu", prior_mu), ("prior_logvar", prior_logvar)):
        if prior is not None and not _broadcasts_to(prior.shape, mu.shape):
            raise ValueError(
                f"`{name}` must broadcast to the shape of `mu` {tuple(mu.shape)}, got {tuple(prior.shape)}"
            )
    if prior_mu is None and prior_logvar is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    diff2 = mu.pow(2) if prior_mu is None else (mu - prior_mu).pow(2)
    if prior_logvar is None:
        return 0.5 * (diff2 + logvar.exp() - 1.0 - logvar)
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + diff2) * torch.exp(-prior_logvar) - 1.0)


def free_bits_kl(kl_per_dim: Tensor, threshold: float | Tensor, mode: FreeBitsMode = "dim") -> Tensor:
    r"""The training objective's KL term with a floor (free bits), as a scalar to add to the loss.

    KL below the floor costs a constant and gets no gradient, so the encoder may put that much
    information into the code for free; β and the reconstruction decide the rest. Use it for the
    *training* loss only and report the raw KL. ``threshold=0`` gives the plain batch-mean KL,
    ``kl_per_dim.sum(1).mean()``, in every mode.

    With ``K[x, d]`` = ``kl_per_dim`` (batch x d), ``λ`` = ``threshold`` and ``mean_x`` the mean over the batch:

    | ``mode``          | value                           | used by                                   | zero gradient                     |
    |-------------------|---------------------------------|-------------------------------------------|-----------------------------------|
    | ``"dim"``         | ``Σ_d max(λ, mean_x K[x, d])``  | Kingma et al. 2016 (IAF, "free bits",     | for dimension d, for the whole    |
    |                   |                                 | groups of one dimension)                  | batch, while mean_x K[x, d] < λ   |
    | ``"example_dim"`` | ``mean_x Σ_d max(λ, K[x, d])``  | Li et al. 2019 code (``--fb 2``); Optimus | for each entry K[x, d] < λ        |
    |                   |                                 | (Li et al. 2020, ``fb_mode=1``)           |                                   |
    | ``"example"``     | ``mean_x max(λ, Σ_d K[x, d])``  | World Models (Ha & Schmidhuber 2018,      | for each example whose total KL   |
    |                   |                                 | ``kl_tolerance * z_size``)                | is below λ                        |
    | ``"batch"``       | ``max(λ, mean_x Σ_d K[x, d])``  | Kingma et al. 2016 with one group;        | for the whole batch while its     |
    |                   |                                 | sketch-rnn (Ha & Eck 2018; KL averaged    | mean total KL is below λ          |
    |                   |                                 | over dimensions: their λ is ours / d)     |                                   |

    λ is per dimension in ``"dim"`` and ``"example_dim"``, per example (whole latent vector) in
    ``"example"`` and ``"batch"``. The mask form of Li et al. and Optimus, ``K · [K > λ]``, has the
    same gradient as ``max(λ, K)``; only the reported value differs (0 instead of λ below the floor).
    The floors on the batch mean still push an example's KL down while the batch mean is above λ;
    the per-example floors leave every example (or entry) below λ alone. Razavi et al.'s δ-VAE
    (2019) is a different remedy (it constrains the posterior family) and is not a mode here.

    Args:
        kl_per_dim: (batch, d) KL per example and dimension, e.g. from :func:`gaussian_kl`.
        threshold: the floor λ in nats, >= 0: a number, or a 0-d tensor such as a buffer that
            :class:`~lightning_kl_anneal.ScheduledAttribute` fills in place (what a compiled loss needs;
            same value as the number). A tensor's value is not checked: reading it would wait for the device.
        mode: one of the rows above; default ``"dim"`` (Kingma et al. 2016).

    Returns:
        A scalar tensor, differentiable in ``kl_per_dim``.

    Raises:
        ValueError: for a ``kl_per_dim`` that is not 2-D, a negative or non-finite ``threshold`` (a number),
            a tensor ``threshold`` that is not 0-d, or an unknown ``mode``.

    Example:
        >>> import torch
        >>> kl = torch.tensor([[0.1, 2.0], [0.3, 2.0]])
        >>> free_bits_kl(kl, 0.5)  # max(.5, .2) + max(.5, 2)
        tensor(2.5000)
        >>> free_bits_kl(kl, 0.5, mode="example_dim")  # mean of (.5 + 2) and (.5 + 2)
        tensor(2.5000)
        >>> # totals 2.1 and 2.3: the per-example floor lifts the first, the batch mean 2.2 is not below 2.2
        >>> free_bits_kl(kl, 2.2, mode="example"), free_bits_kl(kl, 2.2, mode="batch")
        (tensor(2.2500), tensor(2.2000))
    """
    check_rows("kl_per_dim", kl_per_dim)
    lam: float | Tensor
    if isinstance(threshold, Tensor):
        if threshold.dim() != 0:
            raise ValueError(
                f"`threshold` must be a number or a 0-d tensor, got a tensor of shape {tuple(threshold.shape)}"
            )
        lam = threshold
    else:
        lam = _check_nonnegative("threshold", threshold)
    check_choice("mode", mode, FREE_BITS_MODES)
    if mode == "dim":
        return _floor(kl_per_dim.mean(0), lam).sum()
    if mode == "example_dim":
        return _floor(kl_per_dim, lam).sum(1).mean()
    if mode == "example":
        return _floor(kl_per_dim.sum(1), lam).mean()
    return _floor(kl_per_dim.sum(1).mean(), lam)


def _floor(x: Tensor, lam: float | Tensor) -> Tensor:
    """``max(lam, x)`` for a number or a 0-d tensor alike, its gradient all to x where x > lam and none at a tie.

    ``torch.where`` rather than ``clamp``: ``clamp(min=number)`` gives a tie (x == lam) the gradient in torch 2.2
    and none in later releases, so the same loss would train differently by version.
    """
    floor = lam.to(x.dtype) if isinstance(lam, Tensor) else torch.tensor(lam, dtype=x.dtype, device=x.device)
    return torch.where(x > floor, x, floor)


def capacity_kl(kl: Tensor, capacity: float | Tensor, gamma: float) -> Tensor:
    r"""γ·|KL − C|: the KL term of Burgess et al. (2018, "Understanding disentangling in β-VAE").

    Instead of pushing the KL down, the objective pulls it towards a target capacity ``C`` nats,
    which is raised during training from 0 to its final value so the code gains information
    gradually. Drive ``C`` with the annealing callback and read it in ``training_step``::

        self.capacity = 0.0   # in __init__
        loss = rec + capacity_kl(kl_dim.sum(1).mean(), self.capacity, gamma=1000.0)
        CyclicalKLAnnealing(attribute="capacity", start=0, stop=25, n_cycle=1, ratio=1.0, log_name="capacity")

    (Burgess et al. raise C linearly to 25 nats with γ = 1000 on dSprites.)

    Args:
        kl: the KL, typically the batch mean of the per-example total (a scalar); any shape works
            elementwise.
        capacity: target ``C`` in nats, >= 0 (a float, or a tensor such as a buffer the callback fills).
        gamma: weight ``γ``, >= 0.

    Returns:
        ``gamma * |kl - capacity|``, shaped like ``kl``; its gradient is ``±γ`` (sign of KL − C).

    Raises:
        ValueError: for a negative or non-finite ``capacity`` (if a number) or ``gamma``.

    Example:
        >>> import torch
        >>> capacity_kl(torch.tensor(3.0), capacity=5.0, gamma=2.0)
        tensor(4.)
    """
    g = _check_nonnegative("gamma", gamma)
    if not isinstance(capacity, Tensor):
        capacity = _check_nonnegative("capacity", capacity)
    return g * (kl - capacity).abs()
