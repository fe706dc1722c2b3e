"""Build the compiled ``band`` kernel now: ``python -m iha.backends.build``.

``make test`` / ``make demo`` run this once after installing the package, so that no later call
pays the compile (about a minute). It builds into the cache the library uses at run time
(``$IHA_EXTENSIONS_DIR``, default ``~/.cache/iha/extensions``), under the same lock, and prints
where the library is. Exit status 0 when the kernel is ready, 1 when it cannot be built (no
compiler, no ninja, ...; backend ``"band"`` then runs ``"blocked"``), with the reason.
"""

from __future__ import annotations

import argparse
import sys

from iha.backends import band


def main(argv: list[str] | None = None) -> int:
    """Build (when needed) and load the band kernel; 0 when it is ready, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m iha.backends.build",
        description="Compile the band attention kernel into the cache it is loaded from.",
    )
    parser.parse_args(argv)
    if band.kernel_available():
        print(f"iha: band attention kernel ready: {band.library_path()}")
        return 0
    print(f"iha: band attention kernel not built: {band.unavailable_reason()} (backend 'band' "
          f"runs 'blocked' instead)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
