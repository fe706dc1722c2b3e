"""Decode-step time of a Hugging Face causal LM against the number of rows in the batch.

    python docs/results/real-model/decode_batch.py out/smollm2 1 8 16 32 > decode-batch.txt

Random 300-token prompts, greedy, 1 thread, no stopping: the prefill time (one new token) and
the time per further decode step (33 new tokens minus the prefill, over 32), medians of 3
timings after a warm-up call of the same batch.
"""

from __future__ import annotations

import sys
import time

import torch


def main(argv: list[str]) -> None:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(argv[0], dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    print(f"model {argv[0]}, torch {torch.__version__}, 1 thread, 300-token prompts, greedy")
    for rows in (int(x) for x in argv[1:]):
        ids = torch.randint(100, 40000, (rows, 300), generator=gen)

        def run(new: int, ids: torch.Tensor = ids) -> float:
            began = time.perf_counter()
            with torch.no_grad():
                model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               pad_token_id=0)  # fmt: skip
            return time.perf_counter() - began

        run(2)  # warm-up
        prefill = sorted(run(1) for _ in range(3))[1]
        step = (sorted(run(33) for _ in range(3))[1] - prefill) / 32
        print(f"batch {rows}: prefill {prefill:.2f} s, decode {step * 1e3:.0f} ms/step, "
              f"{step / rows * 1e3:.1f} ms/token", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
