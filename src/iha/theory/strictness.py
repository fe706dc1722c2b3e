"""MHA is a strict subset of IHA for P >= 2 (paper section 4), checked on real modules.

Inclusion: IHA with identity mixing and a collapse that keeps one copy is MHA
(:func:`build_inclusion_pair`, checked against a plain float64 MHA reference).

Strictness: on an input of N identical tokens x every MHA head's scores are equal, so its
output is ``W_O W_V x``: linear in x. Take IHA with P = 2, ``alpha_Q = alpha_K = (+I, -I)``
(pseudo 0 is the head, pseudo 1 its negation) and no mask. Pseudo query 0 then scores
``S = q.k/sqrt(d)`` against pseudo key 0 of every token and ``-S`` against pseudo key 1: the
per-token score block is ``[[S, -S], [-S, S]]``, whose softmax is a non-linear function of x.

What reaches the output depends on alpha_V. With ``alpha_V = (I, I)``, the values named in the
paper, both pseudo values equal v and any convex combination of them is v again: the output
stays ``W_O W_V x``, linear, although the attention pattern is not. With ``alpha_V = (I, -I)``
pseudo query 0 outputs ``v (e^S - e^-S) / (e^S + e^-S) = tanh(S) v`` per head, which is
non-linear in x (S is quadratic in x). :func:`strictness_outputs` builds both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iha.attention import InterleavedHeadAttention
from iha.validate import check_choice

VALUE_SIGNS: tuple[str, ...] = ("paper", "signed")


def _random_layer(
    d_model: int, n_heads: int, n_pseudo: int, seed: int, **kwargs: object
) -> InterleavedHeadAttention:
    layer = InterleavedHeadAttention(
        d_model,
        n_heads,
        n_pseudo=n_pseudo,
        rope_theta=None,
        init="exact_mha",
        backend="reference",
        **kwargs,
    ).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in (layer.q_proj, layer.k_proj, layer.v_proj, layer.o_proj):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64))
            lin.weight.div_(math.sqrt(lin.weight.shape[1]))
    return layer


def build_mha(
    d_model: int, n_heads: int, *, mask: str = "none", seed: int = 0
) -> InterleavedHeadAttention:
    """Random-weight MHA: the module with P = 1 and identity mixing (float64)."""
    return _random_layer(d_model, n_heads, 1, seed, mask=mask)


@torch.no_grad()
def build_strict_iha(
    d_model: int, n_heads: int, *, values: str = "signed", mask: str = "none", seed: int = 0
) -> InterleavedHeadAttention:
    """IHA with P = 2, alpha_Q = alpha_K = (+I, -I) and the collapse keeping pseudo 0.

    Args:
        d_model, n_heads: layer size.
        values: "paper" for alpha_V = (I, I), "signed" for alpha_V = (I, -I).
        mask: attention mask mode of the layer.
        seed: seed of the random projections (the same seed gives the same W_Q, W_K, W_V, W_O
            as :func:`build_mha`).
    """
    check_choice("values", values, VALUE_SIGNS)
    layer = _random_layer(d_model, n_heads, 2, seed, mask=mask, collapse="global")
    eye = torch.eye(n_heads, dtype=torch.float64)
    for alpha in (layer.alpha_q, layer.alpha_k):
        alpha[:, :, 0], alpha[:, :, 1] = eye, -eye
    layer.alpha_v[:, :, 0] = eye
    layer.alpha_v[:, :, 1] = eye if values == "paper" else -eye
    layer.collapse.zero_()
    layer.collapse[torch.arange(n_heads), torch.arange(n_heads) * 2] = 1.0
    return layer


def tanh_reference(layer: InterleavedHeadAttention, x: Tensor, n_tokens: int) -> Tensor:
    """Closed form of the signed strict IHA (no mask) on ``n_tokens`` copies of x.

    Args:
        layer: a layer from ``build_strict_iha(values="signed", mask="none")``.
        x: (B, D) tokens.

    Returns:
        (B, n_tokens, D): ``W_O [tanh(S_h) v_h]_h`` at every position.
    """
    b, heads, d = x.shape[0], layer.n_heads, layer.head_dim
    q = (x @ layer.q_proj.weight.T).view(b, heads, d)
    k = (x @ layer.k_proj.weight.T).view(b, heads, d)
    v = (x @ layer.v_proj.weight.T).view(b, heads, d)
    s = (q * k).sum(-1, keepdim=True) / math.sqrt(d)  # (B, H, 1)
    y = (torch.tanh(s) * v).reshape(b, heads * d) @ layer.o_proj.weight.T  # (B, D)
    return y[:, None, :].expand(b, n_tokens, y.shape[-1])


def linearity_defect(layer: torch.nn.Module, d_model: int, n_tokens: int, seed: int = 0) -> float:
    """``max |f(a x1 + b x2) - a f(x1) - b f(x2)| / max |f|`` on identical-token inputs.

    0 (to rounding) for a map that is linear in the token, order 1 otherwise.
    """
    gen = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(2, 16, d_model, generator=gen, dtype=torch.float64)
    a, b = torch.randn(2, 16, 1, generator=gen, dtype=torch.float64)

    def f(x: Tensor) -> Tensor:
        return layer(x[:, None, :].expand(-1, n_tokens, -1).contiguous())

    with torch.no_grad():
        lhs = f(a * x1 + b * x2)
        rhs = a[:, None] * f(x1) + b[:, None] * f(x2)
        scale = torch.stack([f(x1).abs().max(), f(x2).abs().max()]).max()
    return float((lhs - rhs).abs().max() / scale)


def mha_reference(layer: InterleavedHeadAttention, x: Tensor, mask: str = "token") -> Tensor:
    """Plain float64 MHA (einsum + explicit causal mask + softmax) with ``layer``'s projections.

    Args:
        x: (B, N, D).
        mask: "token" (causal) or "none".
    """
    b, n, _ = x.shape
    heads, d = layer.n_heads, layer.head_dim
    q = (x @ layer.q_proj.weight.T).view(b, n, heads, d)
    k = (x @ layer.k_proj.weight.T).view(b, n, heads, d)
    v = (x @ layer.v_proj.weight.T).view(b, n, heads, d)
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d)
    if mask == "token":
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    out = torch.einsum("bhnm,bmhd->bnhd", scores.softmax(-1), v).reshape(b, n, heads * d)
    return out @ layer.o_proj.weight.T


def build_inclusion_pair(
    d_model: int, n_heads: int, n_pseudo: int, seed: int = 0
) -> InterleavedHeadAttention:
    """IHA in its exact-MHA init (token mask, token positions) with random projections."""
    return _random_layer(
        d_model, n_heads, n_pseudo, seed, mask="token", positions="token", collapse="global"
    )
