"""Deprecated: `python -m iha.long_context` is now `iha long-context` (iha.cli.long_context).

The module form still works: it prints a deprecation note to stderr and runs the subcommand with
the same arguments. The names it held (``rehearse``, ``write_documents``, ...) are read from
:mod:`iha.cli.long_context` with a ``DeprecationWarning``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

NOTE = (
    "python -m iha.long_context is deprecated and will be removed; use `iha long-context` "
    "(same arguments)"
)


def main(argv: list[str] | None = None) -> int:
    """Print the deprecation note to stderr, then run ``iha long-context`` with ``argv``."""
    from iha.cli import main as iha_main

    print(f"DeprecationWarning: {NOTE}", file=sys.stderr)
    return iha_main(["long-context", *(sys.argv[1:] if argv is None else argv)])


def __getattr__(name: str) -> Any:
    from iha.cli import long_context

    if name.startswith("__") or not hasattr(long_context, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"iha.long_context.{name} is deprecated; use iha.cli.long_context.{name}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(long_context, name)


if __name__ == "__main__":
    sys.exit(main())
