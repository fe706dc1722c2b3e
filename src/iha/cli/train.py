"""``iha train CONFIG [--set key=value ...] [--resume]``: run or resume a training run."""

from __future__ import annotations

import argparse
import json
import sys

from iha.cli._common import add_set_option, read_raw_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", metavar="CONFIG", help="config file, preset name of configs/ or run directory"
    )
    add_set_option(parser, "override a config key, e.g. --set optim.lr=3e-4 (repeatable)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run dir's latest checkpoint"
    )
    parser.add_argument("--run-dir", help="where to write the run (default: the config's run_dir)")
    parser.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="save and exit after STEP steps (the schedule still targets train.max_steps; "
        "default: run to train.max_steps)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="CPU: keep freed memory in the process for reuse (glibc; no page faults on large "
        "tensors each step, resident memory stays at its peak)",
    )


def run(args: argparse.Namespace) -> int:
    from iha.train.config import ConfigError, apply_overrides, config_from_dict, dump_toml
    from iha.train.trainer import Trainer

    try:
        raw, run_dir = read_raw_config(args.config)
        overrides = list(args.overrides)
        if args.run_dir or run_dir:
            overrides.append(f"run_dir={json.dumps(args.run_dir or run_dir)}")
        cfg = config_from_dict(apply_overrides(raw, overrides))
        if args.print_config:
            print(dump_toml(cfg.to_dict()), end="")
            return 0
        if getattr(args, "keep_freed_memory", False):
            from iha.backends import keep_freed_memory

            keep_freed_memory()
        trainer = Trainer(cfg, resume=args.resume, stop_at=args.stop_at)
        trainer.prepare()
    except (ConfigError, ValueError, FileNotFoundError, ImportError) as e:
        print(f"iha train: error: {e}", file=sys.stderr)
        return 2
    try:
        return trainer.run().exit_code
    finally:
        trainer.close()
