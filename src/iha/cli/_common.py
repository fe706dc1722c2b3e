"""What several subcommands share, written once: the help layout (defaults shown, examples kept as
written), the ``--set KEY=VALUE`` option, reading a config (file, preset or run directory), the
process counts and the outcome block of the reproductions."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The help layout of ``iha`` and every subcommand.

    Descriptions and epilogs keep their line breaks (the examples stay one command a line); an
    option's help ends with ``(default: VALUE)`` unless its text already says what the default is,
    or there is nothing to show (no default, a flag that is off, an empty list).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == [] or default == ()
        positional = not action.option_strings and action.nargs not in ("?", "*")
        if "default" in text.lower() or nothing or default == argparse.SUPPRESS or positional:
            return action.help
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def override(text: str) -> str:
    """argparse type of ``--set``: ``text`` must look like ``key.sub=value``.

    The rule is the library's (:func:`iha.train.config.parse_override`); a malformed override is
    an argparse error (exit code 2, naming ``--set``) before anything runs.
    """
    from iha.train.config import ConfigError, parse_override

    try:
        parse_override(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add the repeatable ``--set KEY=VALUE`` option, collected in ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=override,
        metavar="KEY=VALUE",
        help=help_text,
    )


def read_raw_config(name: str) -> tuple[dict[str, Any], str | None]:
    """The raw config dict of ``name`` (a config file, a preset of configs/, or a run directory
    with its saved ``config.json``) and, for a run directory, that directory."""
    from iha.train.config import find_config, read_config_file

    path = Path(name)
    if path.is_dir() and (path / "config.json").is_file():
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            raw.pop("model_type", None)  # the Hugging Face view of the run (iha.hf.loading)
        return raw, str(path)
    return read_config_file(find_config(name)), None


def check_process_counts(args: argparse.Namespace) -> None:
    """``--workers`` and ``--threads`` must be ints >= 1 (ValueError naming the option)."""
    from iha.validate import check_int

    for name in ("workers", "threads"):
        check_int(f"--{name}", getattr(args, name), 1)


def print_outcome(verdicts: Iterable[str]) -> None:
    """The plain-language outcome of a reproduction, one bullet per experiment."""
    print("\nOutcome:")
    for verdict in verdicts:
        print(f"- {verdict}")
