"""Greedy HumanEval decoding of a Hugging Face model: ``model.generate`` (every row kept to the
batch's end) against the compact decoder (finished rows leave the batch), side by side.

    python docs/results/real-model/compact_decode.py out/smollm2 --problems 64 --batch-size 32
    python docs/results/real-model/compact_decode.py out/smollm2 --problems 64 --batch-size 64 \
        --decoders compact

The first PROBLEMS HumanEval problems (the installed package's), chat prompts as ``iha eval
humaneval`` builds them, EOS and the benchmark's stop strings, 512 new tokens at most, 1 thread.
Each batch is decoded by the two decoders in turn (alternating which goes first); prints the
seconds of each, the decode steps each ran (the longest answer of a batch vs the answers'
total), and whether every row's tokens are identical.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from iha.cli.eval import load_generator
    from iha.eval import humaneval
    from iha.eval.runner import (
        SamplingParams,
        _code_prompt,
        _code_stop_strings,
        default_code_prompt_style,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--decoders", nargs="+", choices=("hf", "compact"), default=["hf", "compact"]
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator, tokenizer, described = load_generator(args.model, None, "cpu", "compact")
    problems = humaneval.load_humaneval(None)[: args.problems]
    style = default_code_prompt_style("humaneval", tokenizer)
    prompts = [_code_prompt(tokenizer, "humaneval", p, style, "tokenizer") for p in problems]
    params = SamplingParams(
        max_new_tokens=512,
        temperature=0.0,
        seed=None,
        stop_token_ids=(tokenizer.eos_token_id,),
        stop_strings=_code_stop_strings("humaneval", style),
    )
    generator.tokenizer = tokenizer
    print(f"{described}; {len(prompts)} problems, batches of {args.batch_size}, greedy, 1 thread")
    total = {"hf": 0.0, "compact": 0.0}
    same = rows = 0
    for b, start in enumerate(range(0, len(prompts), args.batch_size)):
        chunk = prompts[start : start + args.batch_size]
        got = {}
        for decoder in args.decoders if b % 2 == 0 else args.decoders[::-1]:
            generator.decoder = decoder
            began = time.perf_counter()
            got[decoder] = generator(chunk, params)
            total[decoder] += time.perf_counter() - began
        lengths = [len(r) for r in got[args.decoders[0]]]
        rows += len(chunk)
        line = f"batch {b}: longest answer {max(lengths)} tokens, answers' total {sum(lengths)}"
        if len(got) == 2:
            equal = sum(x == y for x, y in zip(got["hf"], got["compact"]))
            same += equal
            line += f"; identical rows {equal}/{len(chunk)}"
        print(line, flush=True)
    print(", ".join(f"{'model.generate' if d == 'hf' else d} {total[d]:.1f} s"
                    for d in args.decoders))  # fmt: skip
    if len(args.decoders) == 2:
        print(f"ratio {total['hf'] / total['compact']:.2f}; identical rows {same}/{rows}")


if __name__ == "__main__":
    main()
