"""Attention benchmark of the core, window and memory suites: ratios measured side by side.

Forward + backward, float32, on this machine's CPU (1 torch thread by default):
the IHA core (mix, interleave, RoPE, attention, collapse) and the IHA module against the floor
(SDPA ``is_causal`` on already-interleaved (B, H, N*P, d) tensors), token vs flat mask, IHA vs
MHA at the same N, a naive dense-mask implementation, the paper's sliding window vs global MHA,
and peak memory (each case in its own process). A thin wrapper over ``iha bench``:

    python benchmarks/attention.py                        # core + window + memory (~5 min)
    python benchmarks/attention.py --repeats 9 --json results.json --markdown results.md
    python benchmarks/attention.py --suite all --full     # + N and P sweeps, decode (long)

Every option of ``iha bench`` applies (``iha bench --help``).
"""

from __future__ import annotations

import sys

from iha.cli.bench import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--suite" not in argv:
        argv = ["--suite", "core", "window", "memory", *argv]
    sys.exit(main(argv))
