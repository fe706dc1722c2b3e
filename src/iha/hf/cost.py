"""FLOPs of a Llama / Qwen2 / Mistral causal LM before and after :func:`iha.hf.convert`.

Counted with :mod:`iha.flops` (a multiply-add is 2 FLOPs; attention counts exactly the
(query, key) pairs the causal mask and window allow): per decoder layer the attention layer
(:func:`iha.flops.layer_flops`: projections, mixing, attention core, collapse) and the gated MLP
(three D x I matrices), plus the output head (D x V). Norms, RoPE and the softmax are left out,
as in :mod:`iha.flops`. A converted layer in mode "exact" uses the token mask (P^2 pairs per
(query, key) token pair); in mode "paper" the flat mask.

``forward_flops(config, n)`` is one forward over ``n`` tokens; the cost of decoding one token
after a context of ``n`` is ``forward_flops(config, n + 1) - forward_flops(config, n)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from iha.flops import layer_flops


def _layer_settings(
    config: Any,
    num_pseudo_heads: int | None,
    layers: Iterable[int] | None,
    mode: str,
    collapse: str,
) -> dict[int, tuple[int, str, str]]:
    """Layer index -> (P, mode, collapse) of the converted layers; the config's own record when
    ``num_pseudo_heads`` is None and the config holds one."""
    if num_pseudo_heads is None:
        record = getattr(config, "iha_conversion", None) or {}
        return {
            int(e["layer"]): (int(e["num_pseudo_heads"]), e["mode"], e["collapse"])
            for e in record.get("layers", [])
        }
    chosen = range(config.num_hidden_layers) if layers is None else layers
    return {int(i): (num_pseudo_heads, mode, collapse) for i in chosen}


def forward_flops(
    config: Any,
    seq_len: int,
    num_pseudo_heads: int | None = None,
    layers: Iterable[int] | None = None,
    mode: str = "exact",
    collapse: str = "global",
) -> int:
    """Forward FLOPs over ``seq_len`` tokens of the model ``config`` describes.

    Args:
        config: a ``transformers`` Llama / Qwen2 / Mistral config (or a converted one).
        seq_len: tokens of the sequence (causal attention over all of them).
        num_pseudo_heads: P of the converted layers; None reads ``config.iha_conversion`` (no
            record: the original model).
        layers: the converted layers (None: all), with ``num_pseudo_heads``.
        mode: "exact" (token mask) or "paper" (flat mask), with ``num_pseudo_heads``.
        collapse: "global" or "per_head", with ``num_pseudo_heads``.
    """
    D, H = config.hidden_size, config.num_attention_heads
    G = getattr(config, "num_key_value_heads", None) or H
    d = getattr(config, "head_dim", None) or D // H
    window = getattr(config, "sliding_window", None)
    if not getattr(config, "use_sliding_window", True):  # Qwen2 stores a window it does not use
        window = None
    converted = _layer_settings(config, num_pseudo_heads, layers, mode, collapse)
    total = 0
    for i in range(config.num_hidden_layers):
        P, layer_mode, layer_collapse = converted.get(i, (1, "exact", None))
        attention = layer_flops(
            D,
            H,
            seq_len,
            n_pseudo=P,
            n_kv_heads=G,
            head_dim=d,
            collapse=layer_collapse,
            mask="token" if layer_mode == "exact" else "flat",
            window=window,
        )
        total += attention.total + 3 * 2 * seq_len * D * config.intermediate_size
    return total + 2 * seq_len * D * config.vocab_size


def conversion_cost(
    config: Any,
    num_pseudo_heads: int,
    context: int,
    layers: Iterable[int] | None = None,
    mode: str = "exact",
    collapse: str = "global",
) -> dict[str, float]:
    """FLOP ratios converted / original at ``context`` tokens.

    Returns ``{"context", "forward", "decode"}``: ``forward`` for one forward over ``context``
    tokens (a prefill), ``decode`` for one token decoded after ``context`` tokens.
    """
    layers = None if layers is None else list(layers)
    kw = dict(num_pseudo_heads=num_pseudo_heads, layers=layers, mode=mode, collapse=collapse)
    base = dict(num_pseudo_heads=1, layers=[], mode="exact", collapse=None)

    def flops(n: int, settings: dict[str, Any]) -> int:
        return forward_flops(config, n, **settings)

    forward = flops(context, kw) / flops(context, base)
    decode = (flops(context + 1, kw) - flops(context, kw)) / (
        flops(context + 1, base) - flops(context, base)
    )
    return {"context": context, "forward": forward, "decode": decode}
