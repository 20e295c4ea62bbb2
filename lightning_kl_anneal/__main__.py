"""Command line: ``python -m lightning_kl_anneal plot --total-steps 10000 --n-cycle 1 4 -o beta.png``.

``plot`` draws the schedule(s) to a PNG (needs matplotlib: ``pip install lightning-kl-anneal[plot]``);
``print`` writes ``step,beta`` rows to stdout, for a quick look without matplotlib. Every
configuration of the callback can be drawn: ``--delay``, ``--period`` (with ``--n-cycle none`` for
endless cycles) and ``--unit epoch`` for the axis label.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_kl_anneal.schedules import _PARAMETERS, SHAPES, CyclicalSchedule


def _cycles(text: str) -> int | None:
    if text.lower() == "none":
        return None  # endless, with --period
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 or 'none', got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--total-steps", type=int, required=True, help="T: the steps (or epochs) to draw")
    common.add_argument("--ratio", type=float, default=0.5, help="fraction R of each cycle spent rising (default 0.5)")
    common.add_argument("--start", type=float, default=0.0, help="β at the start of each cycle (default 0)")
    common.add_argument("--stop", type=float, default=1.0, help="β on the plateau (default 1)")
    common.add_argument("--shape", choices=SHAPES, default="linear", help="ramp shape (default linear)")
    common.add_argument("--ratio-zero", type=float, default=0.0, help="leading fraction held at start (default 0)")
    common.add_argument("--delay", type=int, default=0, help="steps held at start before the first cycle (default 0)")
    common.add_argument("--period", type=int, default=None, help="steps per cycle, instead of T / n-cycle")
    common.add_argument("--unit", choices=("step", "epoch"), default="step", help="what a step counts (axis label)")

    parser = argparse.ArgumentParser(
        prog="python -m lightning_kl_anneal", description="Look at a KL annealing schedule."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    plot = sub.add_parser("plot", parents=[common], help="draw β against the step to a PNG")
    plot.add_argument(
        "--n-cycle", type=_cycles, nargs="+", default=[1, 4], help="cycle counts, one panel each (default 1 4)"
    )
    plot.add_argument("-o", "--output", default="beta.png", help="output file (default beta.png)")
    show = sub.add_parser("print", parents=[common], help="write step,beta rows to stdout")
    show.add_argument("--n-cycle", type=_cycles, default=4, help="number of cycles M (default 4)")
    show.add_argument("--every", type=int, default=1, help="print every k-th step (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code.

    Example:
        >>> main(["print", "--total-steps", "8", "--n-cycle", "2", "--every", "2"])
        step,beta
        0,0
        2,1
        4,0
        6,1
        0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    cycles = args.n_cycle if args.command == "plot" else [args.n_cycle]
    # The flags' destinations are the schedule's parameter names (--ratio-zero -> ratio_zero).
    options = {name: value for name, value in vars(args).items() if name in _PARAMETERS and name != "n_cycle"}
    try:
        schedules = [CyclicalSchedule(m, **options) for m in cycles]
        curves = [schedule.values(args.total_steps) for schedule in schedules]
    except (TypeError, ValueError) as err:
        # Name the flag the user typed, not the Python argument.
        flag = lambda m: "--" + m.group(1).replace("_", "-") + (" " + m.group(2).lower() if m.group(2) else "")
        parser.error(re.sub(r"`(\w+)=?(\w*)`", flag, str(err)))
    if args.command == "print":
        if args.every < 1:
            parser.error(f"--every must be >= 1, got {args.every}")
        beta = curves[0]
        print(f"{args.unit},beta")
        for step in range(0, args.total_steps, args.every):
            print(f"{step},{beta[step]:.6g}")
        return 0

    from lightning_kl_anneal.plot import plot_schedules

    output = Path(args.output)
    if not output.suffix:
        output = output.with_suffix(".png")  # matplotlib would add it anyway: name the file really written
    fig = plot_schedules(args.total_steps, args.n_cycle, unit=args.unit, **options)
    try:
        fig.savefig(output, dpi=120)
    except (OSError, ValueError) as err:
        parser.exit(1, f"{parser.prog}: error: cannot write {str(output)!r}: {getattr(err, 'strerror', None) or err}\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
