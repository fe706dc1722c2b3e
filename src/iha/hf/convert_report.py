"""How far a conversion moves a model's predictions: logit drift and perplexity.

``measure_drift(model, input_ids, ...)`` converts a copy of ``model`` and compares it with the
original on ``input_ids``. ``iha convert-report`` reports both modes on a small byte-level Llama
that it first trains with ``train_tiny_llama`` on the project's built-in essay text (no
download), or on a checkpoint and text file of yours.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iha.hf.convert import convert


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


def train_on_tokens(
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
    train_on_tokens(model, data, steps, seq_len, batch_size, lr=3e-3)
    return model
