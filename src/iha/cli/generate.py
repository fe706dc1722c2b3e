"""``iha generate MODEL --prompt TEXT``: sample continuations from any model path.

MODEL is an ``iha train`` run directory / checkpoint (also a run fine-tuned from a converted
Hugging Face model), or a Hugging Face model directory or hub id; it is loaded by
:func:`iha.hf.loading.load_any` (the same loader as ``iha eval`` and ``iha export``). ``--chat``
wraps each prompt as a user message in the tokenizer's chat template (instruct models)::

    iha generate out/smollm2-iha --chat --prompt "Write a Python function that reverses a list."
"""

from __future__ import annotations

import argparse
import math
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help="iha run directory / checkpoint, or a Hugging Face model directory or hub id",
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
        "--tokenizer",
        help="tokenizer name or directory (default: the run's data.tokenizer or the model's own)",
    )
    parser.add_argument(
        "--chat",
        action="store_true",
        help="send each prompt as a user message through the tokenizer's chat template and "
        "print only the reply",
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


def _hf_generate(model, input_ids, args, stop_ids, seed):
    """New token ids (1, new) from a ``transformers`` model's own ``generate``."""
    import torch

    kwargs = dict(max_new_tokens=args.max_new_tokens, eos_token_id=stop_ids or None)
    kwargs["pad_token_id"] = stop_ids[0] if stop_ids else None
    if args.temperature > 0:
        kwargs.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
        kwargs["top_k"] = args.top_k or None
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    torch.manual_seed(seed)
    mask = torch.ones_like(input_ids)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
    return out[:, input_ids.shape[1] :]


def run(args: argparse.Namespace) -> int:
    import torch

    from iha.models import generate
    from iha.train.distributed import pick_device

    problem = _argument_problem(args)
    if problem:
        print(f"iha generate: error: {problem}", file=sys.stderr)
        return 2
    try:
        from iha.hf.loading import load_any
    except ImportError as e:
        print(f"iha generate: error: loading models needs transformers ({e})", file=sys.stderr)
        return 2
    try:
        device = pick_device(args.device)
        loaded = load_any(args.checkpoint, device, args.tokenizer)
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        print(f"iha generate: error: {e}", file=sys.stderr)
        return 2
    model, tokenizer = loaded.model, loaded.tokenizer
    print(f"# {loaded.description}", file=sys.stderr)
    vocab = model.config.vocab_size
    stop_ids = [t for t in (tokenizer.eos_token_id,) if t is not None]
    for index, prompt in enumerate(args.prompt):
        seed = args.seed + index  # each prompt its own draw, the same alone as among others
        if len(args.prompt) > 1:  # a blank line and a header between the outputs
            header = f"### prompt {index + 1}/{len(args.prompt)} (seed {seed})"
            print(f"\n{header}" if index else header)
        text = prompt
        if args.chat:
            messages = [{"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = tokenizer.encode(text)
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
        if loaded.kind == "hf":
            new = _hf_generate(model, input_ids, args, stop_ids, seed)  # (1, new)
        else:
            new = generate(
                model,
                input_ids,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                stop_token_ids=stop_ids,
                seed=seed,
            )  # (1, new)
        reply = tokenizer.decode(new[0].tolist())
        print(reply if args.chat else prompt + reply)
    return 0
