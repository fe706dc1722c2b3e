"""`iha reproduce synthetic [--mode MODE]`: train, evaluate and report the synthetic experiments.

Writes ``results/synthetic/<mode>/`` (``runs.jsonl``, ``summary.json``, ``report.md``, PNG
plots, one ``jobs/<key>/`` folder per run) and prints the result tables. Modes: quick (default:
a few minutes; what ``iha demo`` runs), ``--full`` (roughly 1-2 h on 2 quiet CPU cores; the
committed results), paper (the paper's appendix-D sizes; for a GPU), ``--tiny`` (seconds; the
test suite). Both suites (synthetic, lm) default to quick.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from iha.cli._common import check_process_counts, print_outcome
from iha.reproduce.plans import MODES, demo_plan, get_plan
from iha.reproduce.report import busy_time, markdown_tables, verdicts, write_report
from iha.reproduce.synthetic import finished_records, machine_description, run_plan, summarise

SUITES = ("synthetic", "lm")
MODE_HELP = (
    "quick (default): a few minutes, tiny sizes, learns little. "
    "full (--full): relation composition at reduced sizes (m <= 5, 800 training examples) "
    "trained until early stopping, MHA vs 2-simplicial vs IHA (P=8), the IHA ablations and the "
    "head-count sweeps; roughly 1-2 h on 2 quiet CPU cores (estimated from the CPU time of "
    "the first runs; much longer on a shared machine). "
    "paper: the paper's appendix-D settings for both relation tasks: m 6..10 (binary) and 5..8 "
    "(ternary), 40,000 / 5,000 / 5,000 examples, 1 layer, H=8, P=8, lr 1e-3 and 1e-4, early "
    "stopping with patience 10 (epoch cap 200), MHA, 2-simplicial and IHA, 3 seeds; runs on a GPU "
    "when one is present (see --device), prints a measured ETA before starting and one progress "
    "line per epoch; weeks on a CPU. "
    "tiny: seconds, learns nothing."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE", choices=SUITES, help="synthetic or lm")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--mode", choices=MODES, default=None, help=MODE_HELP)
    size.add_argument("--quick", action="store_true", help="same as --mode quick (the default)")
    size.add_argument("--tiny", action="store_true", help="same as --mode tiny")
    size.add_argument("--full", action="store_true",
                      help="same as --mode full (1-2 h; the committed results)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 (default: the mode's)")
    p.add_argument("--workers", type=int, default=1, help="jobs run in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default results/synthetic/<mode>)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="skip finished jobs and continue interrupted ones from their last epoch "
                   "(each job checkpoints in <out>/jobs/<key>/); without it, start afresh")
    p.add_argument("--verbose", action="store_true",
                   help="one line per epoch of every job (always on in paper mode)")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from the finished jobs in --out, train nothing "
                   "(lists the jobs that have not run)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when available, else CPU")  # fmt: skip


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    if getattr(args, "demo", False):
        parts = ["iha", "demo"] + (["--tiny"] if args.tiny else [])
        if args.workers != 2:
            parts += ["--workers", str(args.workers)]
        return " ".join(parts + ["--out", str(args.out)] + (["--resume"] if args.resume else []))
    parts = ["iha", "reproduce", args.suite]
    if getattr(args, "mode", None) is not None:
        parts += ["--mode", args.mode]
    if args.quick:
        parts.append("--quick")
    if args.tiny:
        parts.append("--tiny")
    if getattr(args, "full", False):
        parts.append("--full")
    if args.seeds is not None:
        parts += ["--seeds", str(args.seeds)]
    if args.workers != 1:
        parts += ["--workers", str(args.workers)]
    if args.threads != 1:
        parts += ["--threads", str(args.threads)]
    if args.out is not None:
        parts += ["--out", str(args.out)]
    if getattr(args, "resume", False):
        parts.append("--resume")
    if getattr(args, "device", "auto") != "auto":
        parts += ["--device", args.device]
    return " ".join(parts)


def mode_of(args: argparse.Namespace) -> str:
    """The mode from ``--mode`` / ``--full`` / ``--tiny`` / ``--quick``; quick by default."""
    if getattr(args, "mode", None) is not None:
        return args.mode
    return "full" if getattr(args, "full", False) else "tiny" if args.tiny else "quick"


def reproduce(args: argparse.Namespace, log=print) -> tuple[dict, Path]:
    """Run the plan chosen by ``args``, write the report; returns (summary, report path)."""
    check_process_counts(args)
    plan = get_plan(mode_of(args), args.seeds)
    if getattr(args, "demo", False):
        plan = demo_plan(plan)
    out = args.out or Path("results") / "synthetic" / plan.mode
    start = time.perf_counter()
    if getattr(args, "report_only", False):
        records = finished_records(plan, out)
    else:
        records = run_plan(plan, out, workers=args.workers, threads=args.threads,
                           resume=args.resume, verbose=args.verbose or plan.mode == "paper",
                           device=getattr(args, "device", "auto"),
                           eta=plan.mode in ("full", "paper"), log=log)  # fmt: skip
    keys = {j.key for j in plan.jobs()}
    records = [r for r in records if r["key"] in keys]
    summary = summarise(plan, records)
    # wall time of the runs themselves (also right after a --resume that only re-reports)
    stamps = [(r["started_at"], r["finished_at"]) for r in records if "started_at" in r]
    wall, at_once = busy_time(stamps)
    path = write_report(
        plan,
        summary,
        out,
        command=command_line(args),
        wall_seconds=max(wall, 0.0) or time.perf_counter() - start,
        run_seconds=sum(r["seconds"] for r in records),
        machine=machine_description(),
        workers=at_once or args.workers,
        threads=args.threads,
        missing=[j.key for j in plan.jobs() if j.key not in {r["key"] for r in records}],
    )
    return summary, path


def run(args: argparse.Namespace) -> int:
    if args.suite == "lm":
        from iha.cli.reproduce_lm import run_lm

        return run_lm(args)
    try:
        summary, path = reproduce(args)
    except ValueError as e:
        print(f"iha reproduce: {e}")
        return 2
    print()
    print("\n".join(markdown_tables(summary)))
    print_outcome(verdicts(summary))
    print(f"\nreport: {path}")
    return 0
