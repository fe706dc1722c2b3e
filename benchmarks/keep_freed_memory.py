"""What ``keep_freed_memory`` changes for sliding-window IHA: processes with and without it.

The setting is process-wide and cannot be undone, so one process cannot time both. This script
starts ``--rounds`` pairs of child processes (default allocator, then kept memory); each child
times global causal MHA, the sliding-window IHA core (flat mask, W = N/(2P^2)) and the band
attention step alone round-robin (forward + backward, float32, ``iha.cli.bench.build``), and
reports medians, ratios to MHA and minor page faults per step. Usage::

    python benchmarks/keep_freed_memory.py --threads 1 2 --rounds 3 [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def child(threads: int, keep: bool, repeats: int) -> dict:
    import resource
    import time

    import torch

    from iha.backends import keep_freed_memory
    from iha.cli.bench import Case, build

    kept = keep_freed_memory() if keep else False
    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    N, P = 2048, 4
    W = N // (2 * P * P)
    steps = {
        "mha": build(Case("mha", 1, 8, N, 64, P, "flat", None), cpu),
        "iha_window": build(Case("iha", 1, 8, N, 64, P, "flat", W), cpu),
        "band_attention": build(Case("attn", 1, 8, N, 64, P, "flat", W), cpu),
    }
    for step in steps.values():  # warm-up (builds the kernel, grows the heap)
        step()
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    faults = dict.fromkeys(steps, 0)
    for _ in range(repeats):
        for name, step in steps.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    return {
        "threads": threads, "keep_freed_memory": kept,
        "median_ms": {k: round(v, 1) for k, v in med.items()},
        "ratio_to_mha": {k: round(v / med["mha"], 3) for k, v in med.items()},
        "page_faults_per_step": {k: v // repeats for k, v in faults.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], bool(args.child[1]), args.child[2])))
        return 0
    rows = []
    for threads in args.threads:
        for _ in range(args.rounds):
            for keep in (0, 1):
                cmd = [sys.executable, __file__, "--child", str(threads), str(keep),
                       str(args.repeats)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| threads | allocator | iha window / MHA | band attention / MHA | page faults per "
          "IHA step |\n|---|---|---|---|---|")
    for r in rows:
        alloc = "kept (keep_freed_memory)" if r["keep_freed_memory"] else "glibc default"
        print(f"| {r['threads']} | {alloc} | {r['ratio_to_mha']['iha_window']:.3f} | "
              f"{r['ratio_to_mha']['band_attention']:.3f} | "
              f"{r['page_faults_per_step']['iha_window']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
