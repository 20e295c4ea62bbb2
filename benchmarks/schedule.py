"""Time and memory of the closed-form schedule vs the reference code's precomputed array.

    python benchmarks/schedule.py [--max-exp 7]

For T = 10^4 .. 10^max_exp: building ``cyclical_schedule(T)`` (vectorised numpy) and the
reference's ``frange_cycle_linear`` (a Python loop accumulating ``v += step`` into an array of
T floats), their peak memory (tracemalloc), and the cost of one ``cyclical_beta`` call, which
is all the callback needs per step: O(1) time and memory whatever T.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_frange import reference_frange

from lightning_kl_anneal import cyclical_beta, cyclical_schedule


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    """Seconds for one call, and peak MiB allocated during a second call."""
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-exp", type=int, default=7)
    args = parser.parse_args()
    print(
        f"{'T':>10}{'reference s':>13}{'ref MiB':>9}{'schedule s':>12}{'sched MiB':>11}{'speed-up':>10}{'beta() us':>11}"
    )
    for exp in range(4, args.max_exp + 1):
        total = 10**exp
        ref_s, ref_mib = measure(partial(reference_frange, total, 0.0, 1.0, 4, 0.5, "linear"))
        sch_s, sch_mib = measure(partial(cyclical_schedule, total, 4, 0.5))
        n = 20_000
        one_us = 1e6 * timeit.timeit(partial(cyclical_beta, total // 3, total, 4, 0.5), number=n) / n
        print(
            f"{total:>10}{ref_s:>13.4f}{ref_mib:>9.1f}{sch_s:>12.4f}{sch_mib:>11.1f}{ref_s / sch_s:>10.0f}{one_us:>11.2f}"
        )


if __name__ == "__main__":
    main()
