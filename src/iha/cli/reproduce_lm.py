"""`iha reproduce lm [--quick | --full | --tiny]`: the six attention variants as decoder LMs at
equal training FLOPs on MQAR, multi-key NIAH and byte-level text (see :mod:`iha.reproduce.lm`).

Writes ``results/lm/<mode>/``: ``runs/<experiment>/<variant>/lr<lr>/s<seed>/`` (one ``iha
train`` run each, readable by ``iha plot``), ``report.md``, ``summary.json`` and ``plots/``.
``--resume`` reuses finished runs and continues interrupted ones from their last checkpoint;
``--report-only`` writes the report from the finished runs without training.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from iha.cli._common import check_process_counts, print_outcome
from iha.reproduce.lm import (
    finished_lm_records,
    run_lm_plan,
    summarise_lm,
    verdicts,
    write_lm_report,
)
from iha.reproduce.lm_plans import LM_MODES, get_lm_plan


def lm_mode(args: argparse.Namespace) -> str:
    """The plan's mode from ``--mode`` / ``--full`` / ``--tiny`` / ``--quick`` (default quick)."""
    if getattr(args, "mode", None) is not None:
        return args.mode
    return "full" if getattr(args, "full", False) else "tiny" if args.tiny else "quick"


def lm_command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    parts = ["iha", "reproduce", "lm", f"--{lm_mode(args)}"]
    for name in ("seeds", "workers", "threads", "out"):
        value = getattr(args, name, None)
        if value is not None and not (name in ("workers", "threads") and value == 1):
            parts += [f"--{name}", str(value)]
    return " ".join(parts)


def run_lm(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """Run the plan, write the report, print the outcome; returns the exit code."""
    try:
        check_process_counts(args)
    except ValueError as e:
        print(f"iha reproduce: {e}")
        return 2
    mode = lm_mode(args)
    if mode not in LM_MODES:
        print(f"iha reproduce: --mode {mode} is not a mode of lm; accepted: {LM_MODES}")
        return 2
    try:
        plan = get_lm_plan(mode, args.seeds)
    except ValueError as e:
        print(f"iha reproduce: {e}")
        return 2
    out = args.out or Path("results") / "lm" / plan.mode
    report_only = getattr(args, "report_only", False)
    if (out / "runs").exists() and not (args.resume or report_only):
        print(
            f"iha reproduce: --out {out} already holds runs; pass --resume to reuse them "
            "(or --report-only) or choose another --out"
        )
        return 2
    start = time.time()
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        if report_only:
            records = finished_lm_records(plan, out)
        else:
            records = run_lm_plan(plan, out, workers=args.workers, threads=args.threads, log=log)
    finally:
        torch.set_num_threads(previous)
    summaries = summarise_lm(plan, records)
    wall = sum(r["seconds"] for r in records) / args.workers or time.time() - start
    path = write_lm_report(plan, summaries, out, command=lm_command_line(args), wall=wall)
    print_outcome(verdicts(summaries))
    print(f"\nreport: {path}")
    return 0
