"""Statistics that decide between two schedules run from the same seeds: paired differences, a sign test, a
bootstrap interval, and Wilson intervals for yes/no outcomes. Pure Python, deterministic.

    >>> d = paired_differences({"0": 1.0, "1": 2.0, "2": 0.5}, {"0": 0.5, "1": 1.0, "2": 1.0})
    >>> d
    {'0': 0.5, '1': 1.0, '2': -0.5}
    >>> sign_test(d.values())
    {'wins': 2, 'losses': 1, 'ties': 0, 'p_two_sided': 1.0}
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Mapping


def paired_differences(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """``a[seed] - b[seed]`` for every seed both have, in ``a``'s order.

    Raises:
        ValueError: if the two share no seed.
    """
    seeds = [s for s in a if s in b]
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
    return {s: a[s] - b[s] for s in seeds}


def sign_test(differences: Iterable[float]) -> dict[str, float | int]:
    """Exact two-sided sign test of "the median difference is 0"; ties (exactly 0) are dropped.

    p = min(1, 2 * P(X <= min(wins, losses))) for X ~ Binomial(wins + losses, 1/2).

    >>> sign_test([1.0] * 10)["p_two_sided"]  # 10 of 10: 2 / 2**10
    0.001953125
    >>> sign_test([])["p_two_sided"]
    1.0
    """
    values = list(differences)
    wins, losses = sum(v > 0 for v in values), sum(v < 0 for v in values)
    n, k = wins + losses, min(wins, losses)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return {"wins": wins, "losses": losses, "ties": len(values) - n, "p_two_sided": p}


def bootstrap_ci(
    values: Iterable[float], level: float = 0.95, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the values with replacement; fixed seed).

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    data = list(values)
    if not data:
        raise ValueError("`values` must not be empty")
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level}")
    rng = random.Random(seed)
    n = len(data)
    means = sorted(math.fsum(data[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[math.floor((1 - level) / 2 * (resamples - 1))]
    hi = means[math.ceil((1 + level) / 2 * (resamples - 1))]
    return lo, hi


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default).

    >>> [round(x, 3) for x in wilson_interval(0, 10)]
    [0.0, 0.278]
    >>> [round(x, 3) for x in wilson_interval(5, 10)]
    [0.237, 0.763]
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_summary(a: Mapping[str, float], b: Mapping[str, float]) -> dict:
    """Everything the README states about ``a - b``: per-seed differences, mean, sample std, bootstrap
    95 % interval of the mean, and the sign test."""
    d = paired_differences(a, b)
    values = list(d.values())
    return {
        "per_seed": d,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "bootstrap95": list(bootstrap_ci(values)),
        **sign_test(values),
    }


def proportion(flags: Mapping[str, bool]) -> dict:
    """A yes/no outcome over seeds: which seeds said yes, the fraction and its Wilson 95 % interval."""
    n, k = len(flags), sum(bool(v) for v in flags.values())
    return {"yes": k, "n": n, "fraction": k / n, "wilson95": list(wilson_interval(k, n)), "per_seed": dict(flags)}
