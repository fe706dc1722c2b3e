"""`iha demo` / `make demo`: 1-layer MHA vs IHA on relation composition, side by side.

Trains 1-layer MHA and IHA (H = 8, P = 8) on binary and ternary relation composition (paper
appendix D) at the quick sizes of ``iha reproduce synthetic`` with 5 seeds: 2 tasks x 2 models
x 5 seeds = 20 small runs, a few minutes on 2 CPU cores. Prints one table: test accuracy per
model (mean ± 95% t-interval over seeds), the paired difference IHA - MHA with its paired
t-test p-value, and whether it is significant. The full-size results live in
docs/results/synthetic/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iha.cli.reproduce import reproduce

DEMO_SEEDS = 5  # a t-interval over 2 seeds is 12.7 standard errors wide; 5 give 2.8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=2, help="jobs run in parallel processes")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default results/demo)")  # fmt: skip
    p.add_argument("--tiny", action="store_true",
                   help="test sizes, the tiny mode's 2 seeds: seconds, learns nothing")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="reuse finished runs in --out")


def side_by_side(summary: dict) -> list[str]:
    """One markdown table: MHA and IHA in adjacent columns, the paired difference and its test."""
    lines = [
        "Relation composition, test per-position accuracy % (mean ± 95% t-interval over seeds; "
        "no interval with one seed), learning rate chosen on validation:",
        "",
        "| task | seeds | MHA | IHA | IHA - MHA (paired by seed) | paired t | majority class |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary["relations"]:
        exp, best = s["experiment"], s["best"]
        if "mha" not in best or "iha" not in best:
            continue
        m, i, diff = best["mha"], best["iha"], s["diff"]
        if diff is None or diff.n < 2:
            d, test = "-", "fewer than 2 paired seeds: no test"
        else:
            d = diff.format(2, 100.0)
            verdict = "significant" if diff.p < 0.05 else "not significant"
            test = f"{diff.format_p()}, {verdict}"
        base = "-" if s["baseline"] is None else s["baseline"].format(2, 100.0)
        lines.append(
            f"| {exp.name} (H={exp.n_heads}, P={exp.n_pseudo}) | {diff.n if diff else 0} | "
            f"{m['test_pos_acc'].format(2, 100.0)} | {i['test_pos_acc'].format(2, 100.0)} | "
            f"{d} | {test} | {base} |"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    ns = argparse.Namespace(
        suite="synthetic",
        quick=not args.tiny,
        tiny=args.tiny,
        full=False,
        demo=True,
        seeds=None if args.tiny else DEMO_SEEDS,
        workers=args.workers,
        threads=1,
        out=args.out or Path("results") / "demo",
        resume=args.resume,
        verbose=False,
    )
    try:
        summary, path = reproduce(ns)
    except ValueError as e:
        print(f"iha demo: {e}")
        return 2
    print()
    print("\n".join(side_by_side(summary)))
    print(f"\nReport with plots: {path} (full-size results: docs/results/synthetic/)")
    return 0
