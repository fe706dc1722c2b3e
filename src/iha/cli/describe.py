"""``iha describe [PRESET_OR_CONFIG]``: parameters and FLOPs per token of a model config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from iha.cli._common import add_set_option, read_raw_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="?",
        default="tiny",
        help="model preset name (iha.models.list_presets()), config file or run dir "
        "(default: tiny)",
    )
    add_set_option(
        parser, "override a model key, e.g. --set model.num_pseudo_heads=2 (repeatable)"
    )
    parser.add_argument(
        "--seq-len", type=int, help="sequence length of the FLOP count (default: the context)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--list", action="store_true", help="list the model presets and exit")


def _model_table(source: str, overrides: list[str]) -> dict[str, Any]:
    from iha.models import list_presets
    from iha.train.config import apply_overrides

    if source in list_presets():
        raw: dict[str, Any] = {"model": {"preset": source}}
    else:
        raw, _ = read_raw_config(source)
    for item in overrides:
        if not item.startswith("model."):
            raise ValueError(f"--set {item!r}: describe only takes model.* keys")
    return apply_overrides({"model": raw.get("model", {})}, overrides)["model"]


def run(args: argparse.Namespace) -> int:
    from iha.models import (
        ModelConfig,
        describe,
        get_preset,
        list_presets,
        markdown_table,
        preset_assumptions,
    )
    from iha.train.config import resolve_model_dict

    if args.list:
        print("\n".join(list_presets()))
        return 0
    try:
        cfg = ModelConfig.from_dict(resolve_model_dict(_model_table(args.source, args.overrides)))
        if args.seq_len is not None and args.seq_len < 1:
            raise ValueError(f"--seq-len={args.seq_len} must be >= 1")
    except (ValueError, FileNotFoundError) as e:
        print(f"iha describe: error: {e}", file=sys.stderr)
        return 2
    readings = _readings(args.source)
    if len(readings) > 1 and not args.overrides:
        # an alias of several readings (paper-2.4b): every reading, each with its assumptions
        tables = {name: describe(get_preset(name), seq_len=args.seq_len) for name in readings}
        if args.json:
            print(json.dumps({name: {"assumptions": list(preset_assumptions(name)), "rows": rows}
                              for name, rows in tables.items()}, indent=1))  # fmt: skip
            return 0
        print(f"{args.source} is a deprecated alias of {readings[0]}; both readings of the "
              "paper's 2.4B model follow.\n")  # fmt: skip
        for name, rows in tables.items():
            print(_assumption_lines(name) + markdown_table(rows) + "\n")
        return 0
    rows = describe(cfg, seq_len=args.seq_len)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if args.source in list_presets():
        print(_assumption_lines(args.source), end="")
    print(markdown_table(rows))
    return 0


def _readings(source: str) -> list[str]:
    """The presets to describe for ``source``: both 2.4B readings for the old ``paper-2.4b``."""
    if source == "paper-2.4b":
        return ["paper-2.4b-swiglu", "paper-2.4b-mlp"]
    return [source]


def _assumption_lines(name: str) -> str:
    from iha.models import preset_assumptions

    notes = preset_assumptions(name)
    return "".join(f"- {n}\n" for n in notes) + ("\n" if notes else "")
