"""``iha theory``: run every check of the paper's theory and print the table.

Exit status 1 when any check fails (a "DIFFERS" row, where the paper's printed statement does
not hold and our correction does, is not a failure; nor is a parameter formula that DIFFERS
from a construction's count, which the table shows with its numbers).
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--polynomial-k",
        type=int,
        nargs="+",
        default=[4, 9],
        metavar="K",
        help="numbers of powers k for the Polynomial-filter checks (default: 4 9)",
    )
    parser.add_argument(
        "--cpm3-n-max",
        type=int,
        nargs="+",
        default=[4, 7, 9, 16],
        metavar="N",
        help="N_max values for the CPM-3 constructions (default: 4 7 9 16)",
    )
    parser.add_argument(
        "--sequences",
        type=int,
        default=128,
        help="random CPM-3 sequences per N_max (default: 128)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")


def run(args: argparse.Namespace) -> int:
    from iha.theory.checks import format_table, run_all_checks

    for name, values in (("--polynomial-k", args.polynomial_k), ("--cpm3-n-max", args.cpm3_n_max)):
        if any(v < 1 for v in values):
            raise SystemExit(f"iha theory: {name} values must be >= 1, got {values}")
    if args.sequences < 1:
        raise SystemExit(f"iha theory: --sequences must be >= 1, got {args.sequences}")
    start = time.perf_counter()
    rows = run_all_checks(
        polynomial_k=args.polynomial_k,
        cpm3_n_max=args.cpm3_n_max,
        n_sequences=args.sequences,
        seed=args.seed,
    )
    print(format_table(rows))
    failed = [r for r in rows if r.failed]
    differs = sum(r.status == "DIFFERS" for r in rows)
    matches = sum(r.status == "MATCHES" for r in rows)
    print(
        f"\n{len(rows) - len(failed) - differs - matches} passed, {matches} formulas match the "
        f"constructions, {differs} differ from the paper as printed, {len(failed)} failed "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 1 if failed else 0
