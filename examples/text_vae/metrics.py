"""Metrics specific to the text VAE: the paper's perplexity and a linear probe on sampled z.

KL, free bits, active units and mutual information come from the library
(``lightning_kl_anneal.gaussian_kl``, ``free_bits_kl``, ``ActiveUnits``, ``MutualInformation``).

    python -m pytest --doctest-modules examples/text_vae/metrics.py

Conventions (Fu et al., NAACL 2019, section 4.1): per-sentence quantities are summed over the
sentence's tokens, ``<eos>`` included; evaluation is always at beta = 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def perplexity(nll_sum: float, kl_sum: float, n_tokens: int) -> float:
    """The paper's PPL: ``exp((sum NLL + sum KL) / tokens)``, tokens counting ``<eos>``.

    Example:
        >>> round(perplexity(10.0, 2.0, 6), 4)  # exp(2)
        7.3891
    """
    if n_tokens <= 0:
        raise ValueError(f"`n_tokens` must be positive, got {n_tokens}")
    return math.exp((nll_sum + kl_sum) / n_tokens)


def linear_probe_accuracy(
    z_train: Tensor, y_train: Tensor, z_test: Tensor, y_test: Tensor, steps: int = 200, weight_decay: float = 1e-3
) -> float:
    """Test accuracy of a multinomial logistic regression fitted on ``(z_train, y_train)``.

    Fed *sampled* z, not posterior means: a collapsed posterior can keep a readable but tiny mean
    signal (probe accuracy on mu stays high) while the decoder gets pure noise; sampling drowns
    exactly that signal, so the probe measures information the decoder can actually use.
    """
    mean, std = z_train.mean(0), z_train.std(0).clamp(min=1e-6)
    xtr, xte = (z_train - mean) / std, (z_test - mean) / std
    n_class = int(max(y_train.max(), y_test.max())) + 1
    linear = torch.nn.Linear(xtr.shape[1], n_class)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xtr), y_train) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((linear(xte).argmax(1) == y_test).float().mean())
