"""`iha reproduce synthetic [--quick]`: train, evaluate and report the synthetic experiments.

Writes ``results/synthetic/<mode>/`` (``runs.jsonl``, ``summary.json``, ``report.md``, PNG
plots) and prints the result tables. Modes: full (default, ~40 min on 2 CPU cores), ``--quick``
(a few minutes; what ``iha demo`` runs), ``--tiny`` (seconds; the test suite).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from iha.reproduce.plans import get_plan
from iha.reproduce.report import markdown_tables, verdicts, write_report
from iha.reproduce.synthetic import machine_description, run_plan, summarise

SUITES = ("synthetic",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", choices=SUITES, help="which reproduction to run")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny sizes: a few minutes")
    size.add_argument("--tiny", action="store_true", help="test sizes: seconds, learns nothing")
    p.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 (default: the mode's)")
    p.add_argument("--workers", type=int, default=1, help="jobs run in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default results/synthetic/<mode>)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="skip jobs already in runs.jsonl")
    p.add_argument("--verbose", action="store_true", help="one line per epoch of every job")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    parts = ["iha", "reproduce", args.suite]
    if args.quick:
        parts.append("--quick")
    if args.tiny:
        parts.append("--tiny")
    if args.seeds is not None:
        parts += ["--seeds", str(args.seeds)]
    if args.workers != 1:
        parts += ["--workers", str(args.workers)]
    if args.threads != 1:
        parts += ["--threads", str(args.threads)]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    return " ".join(parts)


def mode_of(args: argparse.Namespace) -> str:
    return "quick" if args.quick else "tiny" if args.tiny else "full"


def reproduce(args: argparse.Namespace, log=print) -> tuple[dict, Path]:
    """Run the plan chosen by ``args``, write the report; returns (summary, report path)."""
    for name in ("workers", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}={getattr(args, name)} must be >= 1")
    plan = get_plan(mode_of(args), args.seeds)
    out = args.out or Path("results") / "synthetic" / plan.mode
    start = time.perf_counter()
    records = run_plan(plan, out, workers=args.workers, threads=args.threads,
                       resume=args.resume, verbose=args.verbose, log=log)  # fmt: skip
    summary = summarise(plan, records)
    # wall time of the runs themselves (also right after a --resume that only re-reports)
    stamps = [(r["started_at"], r["finished_at"]) for r in records if "started_at" in r]
    wall = max(f for _, f in stamps) - min(s for s, _ in stamps) if stamps else 0.0
    path = write_report(
        plan,
        summary,
        out,
        command=command_line(args),
        wall_seconds=max(wall, 0.0) or time.perf_counter() - start,
        run_seconds=sum(r["seconds"] for r in records),
        machine=machine_description(),
        workers=args.workers,
        threads=args.threads,
    )
    return summary, path


def run(args: argparse.Namespace) -> int:
    try:
        summary, path = reproduce(args)
    except ValueError as e:
        print(f"iha reproduce: {e}")
        return 2
    print()
    print("\n".join(markdown_tables(summary)))
    print("Outcome:")
    for v in verdicts(summary):
        print(f"- {v}")
    print(f"\nreport: {path}")
    return 0
