"""An oracle for the reference code's ``frange_cycle_*`` behaviour (haofuml/cyclical_annealing, 2019).

Written from a description of its algorithm (an array of ``n_iter`` values filled per cycle
by accumulating ``v += step`` and indexing with ``int(i + c * period)``), to check the
drop-ins' compatibility and to benchmark against it. Not part of the package.
"""

from __future__ import annotations

import math

import numpy as np

SHAPE_CURVES = {
    "linear": lambda u: u,
    "sigmoid": lambda u: 1.0 / (1.0 + math.exp(-(12.0 * u - 6.0))),
    "cosine": lambda u: 0.5 - 0.5 * math.cos(math.pi * u),
}


def reference_frange(n_iter: int, start: float, stop: float, n_cycle: int, ratio: float, shape: str) -> np.ndarray:
    """The reference's output; the sigmoid and cosine variants plateau at 1.0 whatever ``stop`` is."""
    out = np.full(n_iter, stop if shape == "linear" else 1.0)
    period = n_iter / n_cycle
    inc = (stop - start) / (period * ratio)
    curve = SHAPE_CURVES[shape]
    for c in range(n_cycle):
        v, i = start, 0
        while v <= stop and int(i + c * period) < n_iter:
            out[int(i + c * period)] = curve(v)
            v += inc
            i += 1
    return out
