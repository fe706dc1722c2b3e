"""`iha demo` / `make demo`: the quick synthetic reproduction, MHA and IHA side by side.

Runs ``iha reproduce synthetic --quick`` (a few minutes on 2 CPU cores): 1-layer MHA vs IHA
(H = 8, P = 8) on binary and ternary relation composition (paper appendix D) at tiny sizes, plus
head-count sweeps on CPM-3 and the polynomial filter; then prints one side-by-side table per
experiment and the plain outcome. The full-size results live in docs/results/synthetic/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iha.cli._common import print_outcome
from iha.cli.reproduce import reproduce
from iha.reproduce.report import verdicts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=2, help="jobs run in parallel processes")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default results/synthetic/quick)")  # fmt: skip
    p.add_argument("--tiny", action="store_true", help="test sizes: seconds, learns nothing")
    p.add_argument("--resume", action="store_true", help="reuse finished runs in --out")


def side_by_side(summary: dict) -> list[str]:
    """Markdown tables with MHA and IHA in adjacent columns."""
    lines = [
        "Relation composition, test per-position accuracy % (mean ± 95% CI over seeds, "
        "learning rate chosen on validation):",
        "",
        "| task | MHA | IHA | IHA - MHA (paired) | majority class | params MHA / IHA | "
        "train s/run MHA / IHA |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary["relations"]:
        exp, best = s["experiment"], s["best"]
        if "mha" not in best or "iha" not in best:
            continue
        m, i = best["mha"], best["iha"]
        diff = "-" if s["diff"] is None else s["diff"].format(2, 100.0)
        base = "-" if s["baseline"] is None else f"{s['baseline'].mean * 100:.2f}"
        lines.append(
            f"| {exp.name} (H={exp.n_heads}, P={exp.n_pseudo}) | "
            f"{m['test_pos_acc'].format(2, 100.0)} | {i['test_pos_acc'].format(2, 100.0)} | "
            f"{diff} | {base} | {m['params']:,} / {i['params']:,} | "
            f"{m['seconds']:.0f} / {i['seconds']:.0f} |"
        )
    for s in summary["sweeps"]:
        exp = s["experiment"]
        pct = exp.metric == "pos_acc"
        label = "test per-position accuracy %" if pct else "worst-channel test nMSE"
        paper_mha, paper_iha = s["paper"]
        lines += [
            "",
            f"Head sweep, {exp.name}: {label} (paper's constructions need {paper_mha} MHA heads, "
            f"{paper_iha} IHA heads):",
            "",
            "| heads H | MHA | IHA (P = H) |",
            "|---|---|---|",
        ]
        points = {k: {p["n_heads"]: p for p in v} for k, v in s["curves"].items()}
        for h in sorted(set(points["mha"]) | set(points["iha"])):
            cells = [
                points[k][h]["test"].format(2 if pct else 4, 100.0 if pct else 1.0)
                if h in points[k]
                else "-"
                for k in ("mha", "iha")
            ]
            lines.append(f"| {h} | {cells[0]} | {cells[1]} |")
    return lines


def run(args: argparse.Namespace) -> int:
    ns = argparse.Namespace(
        suite="synthetic",
        quick=not args.tiny,
        tiny=args.tiny,
        seeds=None,
        workers=args.workers,
        threads=1,
        out=args.out,
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
    print_outcome(verdicts(summary))
    print(f"\nFull report with plots: {path} (full-size results: docs/results/synthetic/)")
    return 0
