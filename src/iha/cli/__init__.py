"""The `iha` command line: one entry point, every subcommand a module of this package.

The library (``import iha``, ``iha.models``, ``iha.train``, ...) never imports this package.
Each subcommand is a module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported lazily so that ``iha --help`` stays fast and optional extras
(transformers, matplotlib) are only needed by the subcommands that use them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from iha.cli._common import HelpFormatter
from iha.cli._epilogs import EPILOGS

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("iha.cli.demo", "train MHA vs IHA on a small synthetic task and print a comparison"),
    "eval": ("iha.cli.eval", "evaluate: RULER, GSM8K, MATH-500, HumanEval, MBPP, paper tables"),
    "train": ("iha.cli.train", "train or resume a model from a TOML config"),
    "generate": ("iha.cli.generate", "sample text from a trained checkpoint"),
    "describe": ("iha.cli.describe", "parameters and FLOPs per token of model configs"),
    "plot": ("iha.cli.plot", "plot loss vs tokens and vs FLOPs for run directories"),
    "theory": ("iha.cli.theory", "check the paper's theory: constructions as real weights"),
    "reproduce": ("iha.cli.reproduce", "the synthetic (appendix D) and LM experiments"),
    "convert": ("iha.cli.convert", "convert a HF Llama/Qwen2/Mistral checkpoint to IHA"),
    "convert-report": ("iha.cli.convert_report", "logit drift and perplexity of both conversions"),
    "bench": ("iha.cli.bench", "attention benchmarks: ratios vs SDPA floor, MHA, naive; memory"),
    "export": ("iha.cli.export", "write an iha train checkpoint as a Hugging Face model directory"),
    "lm-eval": ("iha.cli.lm_eval", "lm-evaluation-harness on iha models (lm_eval's own options)"),
    "long-context": ("iha.cli.long_context", "CPU rehearsal: pretrain short, extend 4x, RULER"),
}
# Commands that hand their arguments, unparsed, to another tool's command line (``--help``
# included): their module's ``run`` gets ``args.passthrough``, the list after the command name.
PASSTHROUGH = ("lm-eval",)


def version() -> str:
    """The installed distribution's version (``iha.__version__`` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("iha")
    except PackageNotFoundError:
        from iha import __version__

        return __version__


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked for (``iha --help`` stays fast)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        print(f"iha {version()}")  # on stdout, as argparse's own version action does
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser. Only the module of subcommand ``only`` is imported (its options are
    added); the others are listed by name and help line, so ``iha --help`` stays fast."""
    parser = argparse.ArgumentParser(
        prog="iha",
        description="Interleaved Head Attention: train, evaluate, analyse.",
        epilog=EPILOGS["iha"],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOGS.get(name),
            formatter_class=HelpFormatter,
        )
        p.set_defaults(_module=module)
        if name != only:
            continue
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as e:  # an optional extra is missing: say so when it is run
            p.set_defaults(_import_error=e)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen in PASSTHROUGH:
        rest = argv[argv.index(chosen) + 1 :]
        args = argparse.Namespace(command=chosen, passthrough=rest)
        return int(importlib.import_module(SUBCOMMANDS[chosen][0]).run(args) or 0)
    parser = build_parser(only=chosen)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_import_error", None) is not None:
        print(f"iha {args.command}: missing dependency: {args._import_error}", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
