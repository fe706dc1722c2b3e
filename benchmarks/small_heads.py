"""The synthetic experiments' small-head global case: wall-time ratios vs FLOP ratios.

1-layer taggers of `iha reproduce synthetic` (mask "none", no RoPE, H = 8, head_dim 8, P = 8,
batch 32), one training step (forward, backward, AdamW) each, timed interleaved in one process
(A, B, C, A, B, C, ...) so that load on a shared machine hits every model alike; medians.
Printed per (threads, N): the wall ratio of each model over MHA next to its FLOP ratio (forward
FLOPs of the attention layer alone, and of the whole model: attention layer, MLP and head).
"IHA" is the library layer ``iha.InterleavedHeadAttention`` (mix, interleave, attend, collapse).

    python benchmarks/small_heads.py [--reps 15] [--seq-lens 25 36] [--threads 1 2]
"""

from __future__ import annotations

import argparse

import torch

from iha import flops
from iha.cli.bench import time_round_robin
from iha.reproduce.models import OneLayerTagger, make_attention

D_MODEL, HEADS, PSEUDO, BATCH = 64, 8, 8, 32


def _step_fn(model: torch.nn.Module, tokens: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = model(tokens).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _models(seq_len: int) -> dict[str, tuple[torch.nn.Module, int]]:
    """name -> (tagger, attention-layer forward FLOPs per example)."""
    d = D_MODEL // HEADS
    mha_flops = flops.layer_flops(D_MODEL, HEADS, seq_len, collapse=None, mask="none").total
    iha_flops = flops.layer_flops(D_MODEL, HEADS, seq_len, n_pseudo=PSEUDO, mask="none").total
    simplicial_flops = 2 * seq_len * D_MODEL * D_MODEL * 6 + flops.simplicial_attention_flops(
        seq_len, HEADS, d
    )
    layers = {
        "MHA": (make_attention("mha", D_MODEL, HEADS), mha_flops),
        "IHA": (make_attention("iha", D_MODEL, HEADS, PSEUDO), iha_flops),
        "2-simplicial": (make_attention("simplicial", D_MODEL, HEADS), simplicial_flops),
    }
    return {
        name: (OneLayerTagger(layer, seq_len, 1, vocab_size=3), f)
        for name, (layer, f) in layers.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[25, 36])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    mlp_and_head = 2 * D_MODEL * 4 * D_MODEL * 2 + 2 * D_MODEL  # forward FLOPs per token
    print("| threads | N | model | step ms | wall / MHA | attention-layer FLOPs / MHA | "
          "model FLOPs / MHA |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for n in args.seq_lens:
            torch.manual_seed(0)
            tokens = torch.randint(0, 3, (BATCH, n))
            models = _models(n)
            steps = {name: _step_fn(m, tokens) for name, (m, _) in models.items()}
            times = time_round_robin(steps, args.reps, torch.device("cpu"))  # milliseconds
            med = {name: t["median"] / 1e3 for name, t in times.items()}
            base_attn = models["MHA"][1]
            base_model = base_attn + n * mlp_and_head
            for name, (_, attn) in models.items():
                print(
                    f"| {threads} | {n} | {name} | {med[name] * 1e3:.1f} | "
                    f"{med[name] / med['MHA']:.2f} | {attn / base_attn:.2f} | "
                    f"{(attn + n * mlp_and_head) / base_model:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
