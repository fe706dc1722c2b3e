"""``iha convert-report``: how far a conversion moves a model's predictions, both modes.

Converts copies of a model in modes "exact" and "paper" and prints the logit drift and the
held-out perplexity of each (``iha.hf.convert_report.measure_drift``). The model is a small
byte-level Llama trained here on the project's built-in essay text (no download, ~1 min CPU), or
a checkpoint and text file of yours::

    iha convert-report
    iha convert-report --model DIR --text sample.txt --num-pseudo-heads 2
"""

from __future__ import annotations

import argparse
import copy
import json

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="HF checkpoint directory (default: train a tiny Llama)")
    parser.add_argument("--text", help="sample text file (default: the built-in essay)")
    parser.add_argument(
        "--num-pseudo-heads", type=int, default=2, help="P of both conversions"
    )
    parser.add_argument(
        "--seq-len", type=int, default=64, help="tokens per scored (and trained) sequence"
    )
    parser.add_argument("--rows", type=int, default=8, help="sequences of the sample scored")
    parser.add_argument(
        "--train-steps", type=int, default=300, help="training steps of the built-in tiny Llama"
    )
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=0,
        help="then fine-tune each converted model this many steps, mixing and norms only, "
        "and the original's norms as a control (built-in model only); report them again",
    )


def _sample_ids(text_ids: list[int], seq_len: int, n_rows: int) -> torch.Tensor:
    rows = [text_ids[i * seq_len : (i + 1) * seq_len] for i in range(n_rows)]
    rows = [r for r in rows if len(r) == seq_len]
    if not rows:
        raise ValueError(f"the sample text holds fewer than seq_len={seq_len} tokens")
    return torch.tensor(rows, dtype=torch.long)  # (rows, seq_len)


def run(args: argparse.Namespace) -> int:
    from iha.hf.convert import convert, freeze_except_mixing
    from iha.hf.convert_report import measure_drift, train_on_tokens, train_tiny_llama

    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    else:
        from iha.eval.ruler import ESSAY

        text = ESSAY
    train_ids = None
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        ids = AutoTokenizer.from_pretrained(args.model)(text)["input_ids"]
        sample = _sample_ids(ids, args.seq_len, args.rows)
        source = args.model
    else:
        split = int(len(text) * 0.8)  # train on the first 80 %, score the rest
        model = train_tiny_llama(text[:split], steps=args.train_steps, seq_len=args.seq_len)
        train_ids = torch.tensor(list(text[:split].encode("utf-8")), dtype=torch.long)
        sample = _sample_ids(list(text[split:].encode("utf-8")), args.seq_len, args.rows)
        source = f"tiny byte-level Llama trained {args.train_steps} steps on the built-in essay"
    print(f"model: {source}; held-out sample: {tuple(sample.shape)} tokens")
    results = []
    for mode in ("exact", "paper"):
        settings = {"num_pseudo_heads": args.num_pseudo_heads, "mode": mode}
        converted = convert(copy.deepcopy(model), **settings)
        row = measure_drift(model, sample, converted=converted)
        results.append({**settings, "stage": "converted", **row})
        if args.finetune_steps > 0 and train_ids is not None:
            freeze_except_mixing(converted)
            train_on_tokens(converted, train_ids, args.finetune_steps, args.seq_len, 16, lr=1e-2)
            row = measure_drift(model, sample, converted=converted)
            results.append({**settings, "stage": f"+{args.finetune_steps} IHA-only steps", **row})
    if args.finetune_steps > 0 and train_ids is not None:
        # Control: the same steps on the original model's norms, the only non-mixing
        # parameters the IHA-only runs train.
        control = copy.deepcopy(model)
        for name, p in control.named_parameters():
            p.requires_grad_("norm" in name)
        train_on_tokens(control, train_ids, args.finetune_steps, args.seq_len, 16, lr=1e-2)
        row = measure_drift(model, sample, converted=control)
        stage = f"+{args.finetune_steps} norm-only steps"
        results.append({"num_pseudo_heads": "-", "mode": "original", "stage": stage, **row})
    header = ("mode", "P", "stage", "max abs dlogit", "mean abs dlogit", "top-1 agree")
    print("| " + " | ".join(header + ("ppl orig", "ppl conv")) + " |")
    print("|---" * (len(header) + 2) + "|")
    for r in results:
        print(
            f"| {r['mode']} | {r['num_pseudo_heads']} | {r['stage']} | "
            f"{r['max_abs_logit_diff']:.3g} | {r['mean_abs_logit_diff']:.3g} | "
            f"{r['top1_agreement']:.3f} | {r['ppl_original']:.3f} | {r['ppl_converted']:.3f} |"
        )
    print(json.dumps(results))
    return 0
