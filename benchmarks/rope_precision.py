"""Phase error of float32 RoPE tables at long (virtual) positions: angles taken in float32 (the
old tables) against ``iha.rope`` (angles and cos/sin in float64, cast at the end).

    python benchmarks/rope_precision.py [--head-dim 128] [--theta 500000]

Prints the largest |cos - cos_exact| over the 4096 positions ending at each checkpoint, the
exact value being numpy's float64 closed form. A 64k context at P = 20 has virtual positions up
to 1.3M.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from iha.rope import rope_cos_sin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--theta", type=float, default=500000.0)
    args = parser.parse_args()
    d = args.head_dim
    inv_freq = args.theta ** (-np.arange(0, d, 2) / d)  # (d/2,) float64
    print(f"head_dim={d} theta={args.theta:g}: max |cos error| over 4096 positions")
    print("| last position | float32 angles | iha.rope (float64 angles) |\n|---|---|---|")
    for last in (2047, 65535, 999_999, 1_310_719, 2**21):
        pos = torch.arange(max(0, last - 4095), last + 1)
        exact = np.cos(pos.numpy()[:, None].astype(np.float64) * inv_freq[None])  # (L, d/2)
        angles32 = (pos.double()[:, None] * torch.from_numpy(inv_freq)[None]).float()
        old = np.abs(angles32.cos().double().numpy() - exact).max()
        cos, _ = rope_cos_sin(pos, d, args.theta, torch.float32)
        new = np.abs(cos[:, : d // 2].double().numpy() - exact).max()
        print(f"| {last:,} | {old:.2e} | {new:.2e} |")


if __name__ == "__main__":
    main()
