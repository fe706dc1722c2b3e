"""Query rows per block of the band kernel: the sliding-window IHA core against global causal MHA.

The window suite's case (N = 2048, P = 4, W = N / (2 P^2) = 64, B = 1, H = 8, d = 64, forward +
backward, the fused core on the compiled ``band`` kernel) at each block length, each against
the MHA core timed alternately with it (medians of ``--reps``). A block of R rows computes
R x (W*P + R) scores of which R x W*P are used: longer blocks give larger products and a larger
masked edge.

    python benchmarks/band_block_rows.py [--rows 32 64 96 128 192] [--threads 1] [--reps 7]
"""

from __future__ import annotations

import argparse
import time

import torch

from iha.backends import band
from iha.cli.bench import Case, build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[32, 64, 96, 128, 192])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    mha = build(Case("mha", 1, 8, 2048, 64), dev)
    default = band.BLOCK_ROWS
    print(f"threads {args.threads}, medians of {args.reps}; default block {default} rows")
    warm = build(Case("iha", 1, 8, 2048, 64, 4, "flat", 64), dev)
    for _ in range(3):  # the allocator's and the kernel's first-call costs out of the first row
        warm(), mha()
    try:
        for rows in args.rows:
            band.BLOCK_ROWS = rows  # read at call time by the fused core
            iha = build(Case("iha", 1, 8, 2048, 64, 4, "flat", 64), dev)
            for _ in range(2):
                iha(), mha()
            t_iha, t_mha = [], []
            for _ in range(args.reps):
                began = time.perf_counter()
                iha()
                t_iha.append(time.perf_counter() - began)
                began = time.perf_counter()
                mha()
                t_mha.append(time.perf_counter() - began)
            a, b = sorted(t_iha)[args.reps // 2], sorted(t_mha)[args.reps // 2]
            print(f"block {rows:4d} rows: IHA window core {a * 1e3:6.1f} ms, "
                  f"MHA {b * 1e3:6.1f} ms, ratio {a / b:.3f}", flush=True)  # fmt: skip
    finally:
        band.BLOCK_ROWS = default


if __name__ == "__main__":
    main()
