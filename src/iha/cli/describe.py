"""``iha describe [CONFIG ...]``: parameters and FLOPs per token of a model config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from iha.cli._common import add_set_option, read_raw_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="CONFIG",
        help="model preset (iha describe --list), config file or preset of configs/, or run "
        "directory; several are described in turn (default: tiny)",
    )
    add_set_option(parser, "override a model key, e.g. --set model.num_pseudo_heads=2 (repeatable)")
    parser.add_argument(
        "--seq-len", type=int, help="sequence length of the FLOP count (default: the context)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--list", action="store_true", help="list the model presets and exit")


def _model_table(source: str, overrides: list[str]) -> tuple[dict[str, Any], str | None]:
    """The model table of ``source`` with ``overrides`` applied, and the model preset it names.

    A current model preset comes first, then a config (file, preset of configs/ or run
    directory); a deprecated preset alias is read only when no config has its name.
    """
    from iha.models import list_presets
    from iha.models.presets import PRESET_ALIASES
    from iha.train.config import ConfigError, apply_overrides

    for item in overrides:
        if not item.startswith("model."):
            raise ValueError(f"--set {item!r}: describe only takes model.* keys")
    if source in list_presets() and source not in PRESET_ALIASES:
        raw: dict[str, Any] = {"model": {"preset": source}}
    else:
        try:
            raw, _ = read_raw_config(source)
        except ConfigError:
            if source not in PRESET_ALIASES:
                current = [n for n in list_presets() if n not in PRESET_ALIASES]
                raise ValueError(
                    f"CONFIG {source!r} is neither a model preset ({', '.join(current)}) nor a "
                    "config file, preset of configs/ or run directory"
                ) from None
            raw = {"model": {"preset": source}}
    model = apply_overrides({"model": raw.get("model", {})}, overrides)["model"]
    return model, model.get("preset")


def run(args: argparse.Namespace) -> int:
    from iha.models import ModelConfig, describe, list_presets, markdown_table
    from iha.models.presets import PRESET_ALIASES
    from iha.train.config import resolve_model_dict

    if args.list:
        print("\n".join(n for n in list_presets() if n not in PRESET_ALIASES))
        return 0
    sources = args.sources or ["tiny"]
    if args.seq_len is not None and args.seq_len < 1:
        print(f"iha describe: error: --seq-len={args.seq_len} must be >= 1", file=sys.stderr)
        return 2
    tables: dict[str, tuple[list[dict[str, Any]], str | None]] = {}
    try:
        for source in sources:
            for name in _readings(source, args.overrides):
                model, preset = _model_table(name, args.overrides)
                cfg = ModelConfig.from_dict(resolve_model_dict(model))
                tables[name] = describe(cfg, seq_len=args.seq_len), preset
    except (ValueError, FileNotFoundError) as e:
        print(f"iha describe: error: {e}", file=sys.stderr)
        return 2
    alias = [s for s in sources if len(_readings(s, args.overrides)) > 1]
    for name in alias:
        print(f"iha describe: {name} is a deprecated name of {PRESET_ALIASES[name]}; both "
              "readings of the paper's 2.4B model follow", file=sys.stderr)  # fmt: skip
    if len(tables) == 1 and not alias:
        ((rows, preset),) = tables.values()
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        print(_assumption_lines(preset) + markdown_table(rows))
        return 0
    if args.json:
        print(json.dumps({name: {"assumptions": list(_assumptions(preset)), "rows": rows}
                          for name, (rows, preset) in tables.items()}, indent=1))  # fmt: skip
        return 0
    for name, (rows, preset) in tables.items():
        print(f"## {name}\n\n" + _assumption_lines(preset) + markdown_table(rows) + "\n")
    return 0


def _readings(source: str, overrides: list[str]) -> list[str]:
    """The names to describe for ``source``: both 2.4B readings for the deprecated
    ``paper-2.4b`` when no config has that name and no --set changes it."""
    from iha.models.presets import PRESET_ALIASES
    from iha.train.config import ConfigError, find_config

    if source not in PRESET_ALIASES or overrides:
        return [source]
    try:
        find_config(source)
        return [source]
    except ConfigError:
        return ["paper-2.4b-swiglu", "paper-2.4b-mlp"]


def _assumptions(preset: str | None) -> tuple[str, ...]:
    from iha.models import preset_assumptions

    return preset_assumptions(preset) if preset else ()


def _assumption_lines(preset: str | None) -> str:
    notes = _assumptions(preset)
    return "".join(f"- {n}\n" for n in notes) + ("\n" if notes else "")
