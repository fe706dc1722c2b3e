"""What the allocator settings change for sliding-window IHA: one process per setting.

Settings (``--settings``, default all three, in this order in every round):

- ``no-pool``: the band kernel's pool of freed outputs off (``band_pool_limit(0)``), glibc's
  defaults: every large interleaved tensor is page-faulted in afresh each step;
- ``pool``: the library's defaults (the kernel reuses its freed outputs, up to 1 GiB);
- ``kept``: the pool and ``keep_freed_memory`` (glibc keeps every freed block for reuse).

``keep_freed_memory`` is process-wide and cannot be undone, so one process cannot time them
all. This script starts ``--rounds`` rounds of one child process per setting; each child times
global causal MHA, the sliding-window IHA core (flat mask, W = N/(2P^2)) and the band attention
step alone round-robin (forward + backward, float32, ``iha.cli.bench.build``), and reports
medians, ratios to MHA and minor page faults per step. Usage::

    python benchmarks/keep_freed_memory.py --threads 1 2 --rounds 3 [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SETTINGS = ("no-pool", "pool", "kept")


def child(threads: int, setting: str, repeats: int) -> dict:
    import resource
    import time

    import torch

    from iha.backends import band_kernel_available, band_pool_limit, keep_freed_memory
    from iha.cli.bench import Case, build

    kept = keep_freed_memory() if setting == "kept" else False
    if setting == "no-pool" and band_kernel_available():
        band_pool_limit(0)
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
        "threads": threads, "setting": setting, "keep_freed_memory": kept,
        "median_ms": {k: round(v, 1) for k, v in med.items()},
        "ratio_to_mha": {k: round(v / med["mha"], 3) for k, v in med.items()},
        "page_faults_per_step": {k: v // repeats for k, v in faults.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], int(args.child[2]))))
        return 0
    rows = []
    for threads in args.threads:
        for _ in range(args.rounds):
            for setting in args.settings:
                cmd = [sys.executable, __file__, "--child", str(threads), setting,
                       str(args.repeats)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| threads | setting | iha window / MHA | band attention / MHA | page faults per "
          "IHA step |\n|---|---|---|---|---|")
    for r in rows:
        kept = " (keep_freed_memory applied)" if r["keep_freed_memory"] else ""
        print(f"| {r['threads']} | {r['setting']}{kept} | {r['ratio_to_mha']['iha_window']:.3f} | "
              f"{r['ratio_to_mha']['band_attention']:.3f} | "
              f"{r['page_faults_per_step']['iha_window']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
