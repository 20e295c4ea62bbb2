"""Cyclical KL annealing (Fu et al., NAACL 2019) for PyTorch Lightning.

Pure schedule functions in :mod:`lightning_kl_anneal.schedules` and a thin Lightning
callback, :class:`CyclicalKLAnnealing`, that writes β into your LightningModule
before every training step.

Example:
    >>> from lightning_kl_anneal import cyclical_beta
    >>> cyclical_beta(step=1, total_steps=20, n_cycle=4, ratio=0.5)
    0.4
"""

from lightning_kl_anneal.callback import CyclicalKLAnnealing
from lightning_kl_anneal.schedules import (
    SHAPES,
    Shape,
    cycle_length,
    cycle_position,
    cyclical_beta,
    cyclical_schedule,
    frange_cycle_cosine,
    frange_cycle_linear,
    frange_cycle_sigmoid,
)

__version__ = "0.1.0"

__all__ = [
    "SHAPES",
    "CyclicalKLAnnealing",
    "Shape",
    "__version__",
    "cycle_length",
    "cycle_position",
    "cyclical_beta",
    "cyclical_schedule",
    "frange_cycle_cosine",
    "frange_cycle_linear",
    "frange_cycle_sigmoid",
]
