"""``iha generate MODEL --prompt TEXT``: sample continuations from a trained checkpoint."""

from __future__ import annotations

import argparse
import math
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help="iha train run directory, its checkpoints directory or one checkpoint",
    )
    parser.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens sampled per prompt")
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="0 for greedy decoding (default 0.8)"
    )
    parser.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling: keep the tokens of this mass"
    )
    parser.add_argument(
        "--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="sampling seed; the i-th prompt (from 0) uses SEED + i"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--tokenizer", help="tokenizer name or directory (default: the run's data.tokenizer)"
    )


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the sampling arguments (checked before the model loads), or None."""
    for prompt in args.prompt:
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as e:  # bytes that are not UTF-8 arrive as lone surrogates
            raw = prompt.encode("utf-8", errors="surrogateescape")
            return f"--prompt {raw!r} is not UTF-8 text (byte {e.start}); pass UTF-8 text"
    if args.max_new_tokens < 0:
        return f"--max-new-tokens={args.max_new_tokens} must be >= 0"
    if not args.temperature >= 0 or math.isinf(args.temperature):
        return f"--temperature={args.temperature} must be a finite number >= 0 (0 = greedy)"
    if not 0 < args.top_p <= 1:
        return f"--top-p={args.top_p} must be in (0, 1]"
    if args.top_k < 0:
        return f"--top-k={args.top_k} must be >= 0 (0 = off)"
    return None


def run(args: argparse.Namespace) -> int:
    import torch

    from iha.models import generate
    from iha.tokenizers import load_tokenizer
    from iha.train.distributed import pick_device
    from iha.train.trainer import load_trained_model

    problem = _argument_problem(args)
    if problem:
        print(f"iha generate: error: {problem}", file=sys.stderr)
        return 2
    try:
        device = pick_device(args.device)
        model, config, found = load_trained_model(args.checkpoint, device)
        tokenizer = load_tokenizer(args.tokenizer or config["data"]["tokenizer"])
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"iha generate: error: {e}", file=sys.stderr)
        return 2
    print(f"# {found}", file=sys.stderr)
    vocab = model.config.vocab_size
    for index, prompt in enumerate(args.prompt):
        seed = args.seed + index  # each prompt its own draw, the same alone as among others
        if len(args.prompt) > 1:  # a blank line and a header between the outputs
            header = f"### prompt {index + 1}/{len(args.prompt)} (seed {seed})"
            print(f"\n{header}" if index else header)
        ids = tokenizer.encode(prompt)
        if not ids:
            ids = [tokenizer.bos_token_id]
        if max(ids) >= vocab:
            print(
                f"iha generate: error: --prompt {prompt!r} encodes to token id {max(ids)}, "
                f"outside the model's vocabulary of {vocab} (is --tokenizer the run's?)",
                file=sys.stderr,
            )
            return 2
        input_ids = torch.tensor([ids], device=device)  # (1, n)
        new = generate(
            model,
            input_ids,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            stop_token_ids=[tokenizer.eos_token_id],
            seed=seed,
        )  # (1, new)
        print(prompt + tokenizer.decode(new[0].tolist()))
    return 0
