"""Cyclical KL annealing (Fu et al., NAACL 2019) for PyTorch Lightning.

Pure schedule functions in :mod:`lightning_kl_anneal.schedules` and thin Lightning
callbacks that bind them to a run: :class:`CyclicalKLAnnealing` writes β into your
LightningModule before every training step; :class:`ScheduledAttribute` does the same
for any schedule function and any attribute.

Example:
    >>> from lightning_kl_anneal import cyclical_beta
    >>> cyclical_beta(step=1, total_steps=20, n_cycle=4, ratio=0.5)
    0.4
"""

from lightning_kl_anneal.callback import CyclicalKLAnnealing, ScheduledAttribute, Unit
from lightning_kl_anneal.diagnostics import active_units, latent_dimensionality, mutual_information
from lightning_kl_anneal.exceptions import MisconfigurationException
from lightning_kl_anneal.kl import FREE_BITS_MODES, FreeBitsMode, capacity_kl, free_bits_kl, gaussian_kl
from lightning_kl_anneal.metrics import ActiveUnits, KLPerDimension, LatentDimensionality, MutualInformation
from lightning_kl_anneal.monitor import LatentCollapseError, LatentMonitor
from lightning_kl_anneal.posterior import BatchNormPosterior
from lightning_kl_anneal.schedules import (
    PHASES,
    SHAPES,
    ConstantSchedule,
    CyclicalSchedule,
    JoinedSchedule,
    Phase,
    Shape,
    cycle_length,
    cycle_position,
    cyclical_beta,
    cyclical_phase,
    cyclical_schedule,
    frange_cycle_cosine,
    frange_cycle_linear,
    frange_cycle_sigmoid,
    join_schedules,
)
from lightning_kl_anneal.selection import PlateauEarlyStopping, PlateauModelCheckpoint

__version__ = "0.2.0"

__all__ = [
    "FREE_BITS_MODES",
    "PHASES",
    "SHAPES",
    "ActiveUnits",
    "BatchNormPosterior",
    "ConstantSchedule",
    "CyclicalKLAnnealing",
    "CyclicalSchedule",
    "FreeBitsMode",
    "JoinedSchedule",
    "KLPerDimension",
    "LatentCollapseError",
    "LatentDimensionality",
    "LatentMonitor",
    "MisconfigurationException",
    "MutualInformation",
    "Phase",
    "PlateauEarlyStopping",
    "PlateauModelCheckpoint",
    "ScheduledAttribute",
    "Shape",
    "Unit",
    "__version__",
    "active_units",
    "capacity_kl",
    "cycle_length",
    "cycle_position",
    "cyclical_beta",
    "cyclical_phase",
    "cyclical_schedule",
    "frange_cycle_cosine",
    "frange_cycle_linear",
    "frange_cycle_sigmoid",
    "free_bits_kl",
    "gaussian_kl",
    "join_schedules",
    "latent_dimensionality",
    "mutual_information",
]
