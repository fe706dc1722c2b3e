"""Plain einsum + explicit mask + softmax: the oracle every other backend is tested against."""

from __future__ import annotations

import torch

from iha.masks import MaskSpec, expand_key_padding


def attend_reference(
    qt: torch.Tensor,  # (B, H, Nq*P, d)
    kt: torch.Tensor,  # (B, G, Nk*P, d)
    vt: torch.Tensor,  # (B, G, Nk*P, d)
    spec: MaskSpec,
    *,
    scale: float,
    attention_mask: torch.Tensor | None = None,  # (B, Nk) bool, True = real
    kernel: str = "softmax",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    B, H, Lq, d = qt.shape
    G = kt.shape[1]
    group = H // G
    qg = qt.view(B, G, group, Lq, d)
    scores = torch.einsum("bgrqd,bgkd->bgrqk", qg, kt) * scale  # (B, G, H/G, Lq, Lk)
    allowed = spec.allowed(qt.device)[None, None, None]  # (1, 1, 1, Lq, Lk)
    if attention_mask is not None:
        keys = expand_key_padding(attention_mask, spec.n_pseudo)  # (B, Lk)
        allowed = allowed & keys[:, None, None, None, :]
    if kernel == "linear":
        weights = scores * allowed
    else:
        alive = allowed.any(dim=-1, keepdim=True)  # queries with at least one key
        # Dead rows get finite scores (0) so neither the forward nor the backward sees NaN,
        # and are zeroed after the softmax.
        scores = torch.where(allowed, scores, torch.tensor(float("-inf"), dtype=scores.dtype))
        scores = torch.where(alive, scores, torch.zeros((), dtype=scores.dtype))
        weights = torch.softmax(scores, dim=-1) * alive
    if dropout_p > 0.0:
        weights = torch.nn.functional.dropout(weights, p=dropout_p)
    out = torch.einsum("bgrqk,bgkd->bgrqd", weights, vt)  # (B, G, H/G, Lq, d)
    return out.reshape(B, H, Lq, vt.shape[-1])  # value width may differ from d
