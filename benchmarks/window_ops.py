"""The fused sliding-window IHA ops called directly: forward and backward medians in ms.

``torch.ops.iha_band.fused_window_forward`` and ``fused_window_backward`` (what
``iha.backends.fused.fused_window_iha`` runs) at the window benchmark's size: float32, B = 1,
H = 8, N = 2048, d = 64, P = 4, flat mask, W = N/(2P^2) = 64, no Python or autograd around them.
To compare two versions of the kernel, run this script alternately from two source trees, each
with its own build directory, e.g.::

    for i in 1 2 3 4 5 6; do
      PYTHONPATH=old/src IHA_EXTENSIONS_DIR=/tmp/ext-old python benchmarks/window_ops.py
      PYTHONPATH=new/src IHA_EXTENSIONS_DIR=/tmp/ext-new python benchmarks/window_ops.py
    done

Separate processes matter: on this host the same build reads up to 10% apart from one process to
the next, more than most changes worth measuring, so compare the rounds pairwise.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    if args.threads < 1 or args.repeats < 1:
        p.error("--threads and --repeats must be >= 1")

    from iha.backends import band, fused

    if not band.kernel_available():
        raise SystemExit(f"window_ops: no band kernel: {band.unavailable_reason()}")
    torch.set_num_threads(args.threads)
    B, H, N, d, P = 1, 8, 2048, 64, 4
    W = N // (2 * P * P)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    xq, xk, xv = rand(B, H, N, d), rand(B, H, N, d), rand(B, H, N, d)
    aq, ak, av, R = (rand(H, H, P, scale=0.3) for _ in range(4))
    cos, sin = rand(N * P, d), rand(N * P, d)  # timing only: any tables
    mode, block, scale = band.MODES["flat"], fused.block_rows(P), d**-0.5
    ops = torch.ops.iha_band

    def forward():
        return ops.fused_window_forward(xq, aq, xk, ak, xv, av, cos, sin, None, R, mode, P, W,
                                        scale, block)

    _, o, lse = forward()
    grad = rand(B, H, N, d)

    def backward():
        return ops.fused_window_backward(grad, xq, aq, xk, ak, xv, av, cos, sin, o, lse, None, R,
                                         mode, P, W, scale, block)

    times: dict[str, list[float]] = {"forward": [], "backward": []}
    for step in (forward, backward):  # warm-up: the pool and the per-thread rings
        step()
        step()
    for _ in range(args.repeats):
        for name, step in (("forward", forward), ("backward", backward)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    print(f"threads={args.threads} forward_ms={med['forward']:.1f} "
          f"backward_ms={med['backward']:.1f} total_ms={med['forward'] + med['backward']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
