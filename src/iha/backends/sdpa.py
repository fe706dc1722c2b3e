"""``F.scaled_dot_product_attention`` on the interleaved tensors.

Uses ``is_causal=True`` when the mask is plain causal on the interleaved sequence (flat mask, no
window, queries and keys aligned) and no mask at all for mode "none"; otherwise it passes the
dense boolean mask from ``MaskSpec.allowed`` (the banded/blocked paths avoid that cost).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iha.masks import MaskSpec, expand_key_padding


def expand_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, G, L, d) -> (B, H, L, d): pseudo KV head g serves query heads g*H/G .. (g+1)*H/G-1."""
    B, G, L, d = x.shape
    if G == n_heads:
        return x
    return x[:, :, None].expand(B, G, n_heads // G, L, d).reshape(B, n_heads, L, d)


def attend_sdpa(
    qt: torch.Tensor,  # (B, H, Nq*P, d)
    kt: torch.Tensor,  # (B, G, Nk*P, d)
    vt: torch.Tensor,  # (B, G, Nk*P, d)
    spec: MaskSpec,
    *,
    scale: float,
    attention_mask: torch.Tensor | None = None,
    kernel: str = "softmax",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    if kernel != "softmax":
        raise ValueError(f"backend='sdpa' supports kernel='softmax' only, got kernel={kernel!r}")
    H = qt.shape[1]
    kt, vt = expand_kv(kt, H), expand_kv(vt, H)
    if attention_mask is None:
        if spec.is_plain_causal:
            return F.scaled_dot_product_attention(
                qt, kt, vt, is_causal=True, scale=scale, dropout_p=dropout_p
            )
        if spec.is_full:
            return F.scaled_dot_product_attention(qt, kt, vt, scale=scale, dropout_p=dropout_p)
    allowed = spec.allowed(qt.device)[None, None]  # (1, 1, Lq, Lk)
    alive = None
    if attention_mask is not None:
        keys = expand_key_padding(attention_mask, spec.n_pseudo)  # (B, Lk)
        allowed = allowed & keys[:, None, None, :]  # (B, 1, Lq, Lk)
        alive = allowed.any(dim=-1, keepdim=True)  # (B, 1, Lq, 1)
        # A query with no key would make softmax NaN: let it see everything, zero it below.
        allowed = allowed | ~alive
    out = F.scaled_dot_product_attention(
        qt, kt, vt, attn_mask=allowed, scale=scale, dropout_p=dropout_p
    )
    return out if alive is None else out * alive
