"""``iha plot RUN [RUN ...]``: loss vs tokens and vs FLOPs, several runs overlaid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN", help="iha train run directories to compare"
    )
    parser.add_argument(
        "--out", help="output directory (default: RUN/plots for one run, ./plots for several)"
    )
    parser.add_argument("--labels", help="comma-separated legend labels (default: dir names)")
    parser.add_argument(
        "--smooth", type=float, default=0.0, help="EMA weight in [0, 1) for the train loss"
    )


def run(args: argparse.Namespace) -> int:
    from iha.train.plot import plot_runs

    out = args.out or (Path(args.run_dirs[0]) / "plots" if len(args.run_dirs) == 1 else "plots")
    labels = args.labels.split(",") if args.labels else None
    try:
        files = plot_runs(args.run_dirs, out, labels=labels, smooth=args.smooth)
    except (ValueError, FileNotFoundError) as e:
        print(f"iha plot: error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    return 0
