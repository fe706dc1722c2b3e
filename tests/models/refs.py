"""Independent float64 references of the defining equations of talking-heads and differential
attention, written from the papers with explicit loops/matrices. They share no code with
``iha.models`` (RoPE comes from ``tests/oracle.py``, which shares no code with ``iha``)."""

from __future__ import annotations

import math

import torch
from oracle import _rope


def _causal(N: int, window: int | None = None) -> torch.Tensor:
    i = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= i - j < window
    return allowed


def _softmax_rows(s: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Row softmax over allowed entries; rows without any allowed entry are zero."""
    out = torch.zeros_like(s)
    for r in range(s.shape[0]):
        idx = allowed[r].nonzero().flatten()
        if idx.numel():
            e = torch.exp(s[r, idx] - s[r, idx].max())
            out[r, idx] = e / e.sum()
    return out


def talking_heads_reference(x, wq, wk, wv, wo, mix_logits, mix_weights, H, G, theta, pad=None):
    """Shazeer et al. 2020, eqs. for one batch element at a time, float64.

    J[h] = Q_h K_h^T / sqrt(d); L[j] = sum_h mix_logits[h, j] J[h]; W = softmax(L) (causal);
    U[j] = sum_h mix_weights[h, j] W[h]; O_j = U[j] V_j.
    """
    B, N, D = x.shape
    d = wq.shape[0] // H
    pos = torch.arange(N)
    out = torch.zeros(B, N, D, dtype=x.dtype)
    for b in range(B):
        Q = _rope((x[b] @ wq.T).view(N, H, d).transpose(0, 1), pos, theta)  # (H, N, d)
        K = _rope((x[b] @ wk.T).view(N, G, d).transpose(0, 1), pos, theta)
        V = (x[b] @ wv.T).view(N, G, d).transpose(0, 1)
        allowed = _causal(N)
        if pad is not None:
            allowed = allowed & pad[b][None, :]
        J = torch.stack([Q[h] @ K[h // (H // G)].T / math.sqrt(d) for h in range(H)])
        L = torch.stack([sum(mix_logits[h, j] * J[h] for h in range(H)) for j in range(H)])
        W = torch.stack([_softmax_rows(L[j], allowed) for j in range(H)])
        U = torch.stack([sum(mix_weights[h, j] * W[h] for h in range(H)) for j in range(H)])
        heads = [U[j] @ V[j // (H // G)] for j in range(H)]  # each (N, d)
        out[b] = torch.cat(heads, dim=-1) @ wo.T
    return out


def diff_reference(x, wq, wk, wv, wo, lq1, lk1, lq2, lk2, norm_w, layer, H, G, theta, eps):
    """Ye et al. 2024 (Differential Transformer), float64, H/2 differential heads.

    Head i: [Q1; Q2] from query heads (2i, 2i+1), [K1; K2] from key heads of its group, V of
    width 2d. DiffAttn = (softmax(Q1 K1^T/sqrt d) - lambda softmax(Q2 K2^T/sqrt d)) V,
    lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init, lambda_init = 0.8 - 0.6 exp(-0.3 (l-1)),
    head = (1 - lambda_init) * RMSNorm(DiffAttn), out = concat(heads) W_O.
    """
    B, N, D = x.shape
    d = wq.shape[0] // H
    Hd, Gd = H // 2, G // 2
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))
    lam = math.exp(float(lq1 @ lk1)) - math.exp(float(lq2 @ lk2)) + lam_init
    pos = torch.arange(N)
    allowed = _causal(N)
    out = torch.zeros(B, N, D, dtype=x.dtype)
    for b in range(B):
        Q = _rope((x[b] @ wq.T).view(N, H, d).transpose(0, 1), pos, theta)  # (H, N, d)
        K = _rope((x[b] @ wk.T).view(N, G, d).transpose(0, 1), pos, theta)  # (G, N, d)
        V = (x[b] @ wv.T).view(N, Gd, 2 * d).transpose(0, 1)  # (Gd, N, 2d)
        heads = []
        for i in range(Hd):
            g = i // (Hd // Gd)
            A1 = _softmax_rows(Q[2 * i] @ K[2 * g].T / math.sqrt(d), allowed)
            A2 = _softmax_rows(Q[2 * i + 1] @ K[2 * g + 1].T / math.sqrt(d), allowed)
            o = (A1 - lam * A2) @ V[g]  # (N, 2d)
            o = o / torch.sqrt((o * o).mean(-1, keepdim=True) + eps) * norm_w
            heads.append((1 - lam_init) * o)
        out[b] = torch.cat(heads, dim=-1) @ wo.T
    return out
