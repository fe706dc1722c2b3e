"""Sliding-window IHA with the key and value mixing fused in, against spreading them first.

Each round starts one child process per thread count; the child times, round-robin, global
causal MHA, the sliding-window IHA core as ``iha.functional`` runs it (keys and values mixed
into per-thread rings inside the band kernel's tasks, ``iha.backends.fused.fused_window_iha``),
the same core with keys and values spread in passes of their own
(``iha.backends.fused.window_disabled``) and the band attention step alone, forward + backward,
float32, N = 2048, P = 4, W = N/(2P^2) = 64, B = 1, H = 8, d = 64 (``iha.cli.bench.build``). It
prints medians and ratios to MHA; fewer cases than ``iha bench --suite window``, so the caches
hold less of the other cases between steps. Usage::

    python benchmarks/window_kv.py --threads 1 2 --rounds 3 [--repeats 11]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def child(threads: int, repeats: int) -> dict:
    import time

    import torch

    from iha.cli.bench import Case, build

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    N, P = 2048, 4
    W = N // (2 * P * P)
    steps = {
        "mha": build(Case("mha", 1, 8, N, 64, P, "flat", None), cpu),
        "iha_window": build(Case("iha", 1, 8, N, 64, P, "flat", W), cpu),
        "iha_window_spread_kv": build(Case("iha", 1, 8, N, 64, P, "flat", W, fuse_kv=False), cpu),
        "band_attention": build(Case("attn", 1, 8, N, 64, P, "flat", W), cpu),
    }
    for step in steps.values():  # warm-up (builds the kernel, fills the pool)
        step()
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    return {
        "threads": threads,
        "median_ms": {k: round(v, 1) for k, v in med.items()},
        "ratio_to_mha": {k: round(v / med["mha"], 3) for k, v in med.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), int(args.child[1]))))
        return 0
    rows = []
    for _ in range(args.rounds):
        for threads in args.threads:
            cmd = [sys.executable, __file__, "--child", str(threads), str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| threads | IHA window / MHA | keys and values spread / MHA | band attention / MHA "
          "| MHA ms |\n|---|---|---|---|---|")
    for r in rows:
        q = r["ratio_to_mha"]
        print(f"| {r['threads']} | {q['iha_window']:.3f} | {q['iha_window_spread_kv']:.3f} | "
              f"{q['band_attention']:.3f} | {r['median_ms']['mha']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
