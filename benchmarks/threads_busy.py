"""Decoding with 1 and 2 threads while another process keeps a core busy: OpenMP wait policies.

Each measurement is a fresh process (libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads):

- ``default``: torch imported before ``iha``, so libgomp keeps its own default (waiting threads
  spin for a while before they sleep);
- ``passive``: ``import iha`` first, which sets ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is
  set (waiting threads sleep at once).

A competing process (a Python busy loop, ``--busy`` of them) runs for the whole benchmark. Each
child decodes ``--tokens`` greedy tokens after a 64-token prompt with the small random Llama of
``iha bench --suite decode`` converted with P = 2 (``--model original`` for the unconverted one)
and prints milliseconds per token; the modes alternate over ``--rounds`` rounds.

    python benchmarks/threads_busy.py [--rounds 3] [--tokens 16] [--busy 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import sys, time
mode, threads, tokens, which = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "default":
    import torch  # libgomp initialises before iha could set OMP_WAIT_POLICY
import iha  # noqa: F401
import torch
from transformers import DynamicCache
from iha.cli.bench_decode import random_llama
torch.set_num_threads(threads)
original, converted = random_llama(False)
model = converted if which == "converted" else original
ids = torch.randint(0, 2048, (1, 64), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    cache = DynamicCache(config=model.config)
    nxt = model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(tokens):
        nxt = model(input_ids=nxt, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
print((time.perf_counter() - t0) / tokens * 1e3)
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--busy", type=int, default=1, help="competing busy-loop processes")
    p.add_argument("--model", choices=("converted", "original"), default="converted")
    args = p.parse_args(argv)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for mode in ("default", "passive"):
                for threads in (1, 2):
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, mode, str(threads), str(args.tokens),
                         args.model],
                        capture_output=True, text=True, check=True,
                    )
                    ms = float(out.stdout.strip().splitlines()[-1])
                    results.setdefault(f"{mode}, {threads} thread(s)", []).append(ms)
                    print(f"{mode:8s} {threads} thread(s): {ms:8.1f} ms/token", flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    summary = {k: {"median ms/token": statistics.median(v), "all": [round(x, 1) for x in v]}
               for k, v in results.items()}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
