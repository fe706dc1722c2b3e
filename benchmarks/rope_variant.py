"""A/B of the RoPE change proposed in /work/notes/REQUESTS.md (issue 8), measured side by side.

``iha.rope.apply_rope`` computes ``x * cos + rotate_half(x) * sin``; ``rotate_half`` slices and
concatenates, and its backward zero-fills full-size tensors. The proposed form flips the two
halves and folds the sign into the sin table. This script checks both agree in float64 and times
the IHA core (flat mask, N=512, P=4, B=2, H=8, d=64, fwd+bwd, float32) with each, against the SDPA
floor, round-robin in one process:

    python benchmarks/rope_variant.py --repeats 9
"""

from __future__ import annotations

import argparse
import sys

import torch

import iha.functional
from iha.bench import Case, build, time_round_robin
from iha.rope import apply_rope, rope_cos_sin


def apply_rope_flip(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The proposed ``apply_rope``: same rotation, no slices of x."""
    half = x.shape[-1] // 2
    sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return torch.addcmul(x * cos, x.unflatten(-1, (2, half)).flip(-2).flatten(-2), sin_signed)


def with_rope(step, rope):
    def run():
        iha.functional.apply_rope = rope
        try:
            step()
        finally:
            iha.functional.apply_rope = apply_rope

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.arange(10), 8, 100.0, torch.float64)
    diff = (apply_rope(x, cos, sin) - apply_rope_flip(x, cos, sin)).abs().max().item()
    print(f"max |current - proposed| in float64: {diff:.1e}")
    cpu = torch.device("cpu")
    B, H, N, d, P = 2, 8, 512, 64, 4
    steps = {"floor": build(Case("floor", B, H, N, d, P), cpu)}
    for mask in ("flat", "token"):
        step = build(Case("iha", B, H, N, d, P, mask), cpu)
        steps[f"{mask} current"] = with_rope(step, apply_rope)
        steps[f"{mask} proposed"] = with_rope(step, apply_rope_flip)
    times = time_round_robin(steps, args.repeats, cpu)
    floor = times["floor"]["median"]
    print("| variant | median ms | / floor |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {t['median']:.1f} | {t['median'] / floor:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
