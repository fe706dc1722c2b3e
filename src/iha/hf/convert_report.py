"""How far a conversion moves a model's predictions: logit drift and perplexity.

``measure_drift(model, input_ids, ...)`` converts a copy of ``model`` and compares it with the
original on ``input_ids``. Run as a module it reports both modes on a small byte-level Llama that
it first trains on the project's built-in essay text (no download), or on a checkpoint and text
file of yours::

    python -m iha.hf.convert_report                        # tiny model trained here, ~1 min CPU
    python -m iha.hf.convert_report --model DIR --text sample.txt --num-pseudo-heads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iha.hf.convert import convert, freeze_except_mixing


@torch.no_grad()
def _logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, use_cache=False).logits.double()  # (B, N, V)


def _perplexity(logits: torch.Tensor, input_ids: torch.Tensor) -> float:
    nll = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1)
    )
    return math.exp(nll.item())


def measure_drift(
    model: nn.Module, input_ids: torch.Tensor, *, converted: nn.Module | None = None, **convert_kw
) -> dict[str, Any]:
    """Compare ``model`` with a converted copy of it (or with ``converted``) on ``input_ids``.

    Args:
        model: the original HF causal LM (not modified).
        input_ids: (B, N) token ids.
        converted: an already converted model; else ``convert(deepcopy(model), **convert_kw)``.

    Returns:
        dict with ``max_abs_logit_diff``, ``mean_abs_logit_diff``, ``top1_agreement`` (fraction
        of positions whose argmax is unchanged), ``ppl_original`` and ``ppl_converted``
        (next-token perplexity on ``input_ids``), and the conversion settings.
    """
    if converted is None:
        converted = convert(copy.deepcopy(model), **convert_kw)
    model.eval()
    converted.eval()
    ref, out = _logits(model, input_ids), _logits(converted, input_ids)
    diff = (out - ref).abs()
    return {
        **{k: v for k, v in convert_kw.items() if k != "generator"},
        "max_abs_logit_diff": diff.max().item(),
        "mean_abs_logit_diff": diff.mean().item(),
        "top1_agreement": (out.argmax(-1) == ref.argmax(-1)).double().mean().item(),
        "ppl_original": _perplexity(ref, input_ids),
        "ppl_converted": _perplexity(out, input_ids),
    }


def _train(
    model: nn.Module, data: torch.Tensor, steps: int, seq_len: int, batch_size: int, lr: float
) -> None:
    """AdamW on random windows of ``data`` (1-D token ids), parameters with requires_grad."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,))
        batch = torch.stack([data[s : s + seq_len] for s in starts])  # (b, seq_len)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def train_tiny_llama(
    text: str, steps: int = 300, seq_len: int = 64, seed: int = 0, batch_size: int = 16
) -> nn.Module:
    """A byte-level ``LlamaForCausalLM`` (hidden 64, 2 layers, 4 heads, 2 KV heads) trained on
    ``text`` with AdamW, so that the drift is measured on a model with real structure."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4 * seq_len,
    )
    model = LlamaForCausalLM(config)
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    _train(model, data, steps, seq_len, batch_size, lr=3e-3)
    return model


def _sample_ids(text_ids: list[int], seq_len: int, n_rows: int) -> torch.Tensor:
    rows = [text_ids[i * seq_len : (i + 1) * seq_len] for i in range(n_rows)]
    rows = [r for r in rows if len(r) == seq_len]
    if not rows:
        raise ValueError(f"the sample text holds fewer than seq_len={seq_len} tokens")
    return torch.tensor(rows, dtype=torch.long)  # (rows, seq_len)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iha.hf.convert_report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", help="HF checkpoint directory (default: train a tiny Llama)")
    parser.add_argument("--text", help="sample text file (default: the built-in essay)")
    parser.add_argument("--num-pseudo-heads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rows", type=int, default=8, help="sequences of the sample scored")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=0,
        help="then fine-tune each converted model this many steps, mixing and norms only, "
        "and the original's norms as a control (built-in model only); report them again",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            text = f.read()
    else:
        from iha.eval._ruler_text import ESSAY

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
            _train(converted, train_ids, args.finetune_steps, args.seq_len, 16, lr=1e-2)
            row = measure_drift(model, sample, converted=converted)
            results.append({**settings, "stage": f"+{args.finetune_steps} IHA-only steps", **row})
    if args.finetune_steps > 0 and train_ids is not None:
        # Control: the same steps on the original model's norms, the only non-mixing
        # parameters the IHA-only runs train.
        control = copy.deepcopy(model)
        for name, p in control.named_parameters():
            p.requires_grad_("norm" in name)
        _train(control, train_ids, args.finetune_steps, args.seq_len, 16, lr=1e-2)
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


if __name__ == "__main__":
    sys.exit(main())
