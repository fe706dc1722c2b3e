"""2-simplicial attention: the paper's strongest baseline on relation composition.

Clift et al. 2019 ("Logic and the 2-simplicial Transformer") attend from a query to *pairs* of
keys; this module follows the formulation of Roy et al. 2025 ("Fast and Simplex: 2-Simplicial
Attention in Triton"). Per head, with queries q, two key sets k, k' and two value sets v, v'
(all (N, d)):

    logits[i, j, l] = sum_c q[i, c] * k[j, c] * k'[l, c] * scale      (trilinear form)
    A[i, j, l]      = softmax over the allowed (j, l) pairs of logits[i]
    out[i, c]       = sum_{j, l} A[i, j, l] * v[j, c] * v'[l, c]        (elementwise value product)

``scale`` defaults to 1/sqrt(d), as in both papers' dot-product analogue. Masks:

* ``"none"``: every (j, l) pair (bidirectional; what the relation-composition experiments use);
* ``"causal"``: j <= i and l <= i;
* ``"causal"`` with ``window=(w1, w2)`` (Roy et al.'s sliding windows): additionally
  i - j < w1 and i - l < w2.

A ``attention_mask`` removes a padded token as j and as l. A query left with no allowed pair
gets an all-zero output. Cost: the (j, l) pairs make attention cubic in N (see
:func:`iha.flops.simplicial_attention_flops`); this dense implementation materialises the
(B, H, N, N, N) logits, which is fine for the synthetic tasks (N <= 100) and not meant for long
sequences.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from iha.masks import CONVENTION, check_attention_mask
from iha.validate import check_int

SIMPLICIAL_MASKS = ("none", "causal")


def _check_window(window, mask: str) -> tuple[int, int] | None:
    if window is None:
        return None
    if isinstance(window, int) and not isinstance(window, bool):
        window = (window, window)
    ok = (
        isinstance(window, tuple)
        and len(window) == 2
        and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in window)
    )
    if not ok:
        raise ValueError(f"window={window!r} must be None, an int >= 1 or a pair (w1, w2) of them")
    if mask != "causal":
        raise ValueError(f"window is only defined for mask='causal', not mask={mask!r}")
    return window


def simplicial_allowed(
    n_tokens: int,
    mask: str = "none",
    window: int | tuple[int, int] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Bool (N, N, N) mask over (query i, key j, key l), True = allowed; None for mask="none"."""
    if mask not in SIMPLICIAL_MASKS:
        raise ValueError(f"mask={mask!r} is not supported; expected one of {SIMPLICIAL_MASKS}")
    window = _check_window(window, mask)
    if mask == "none":
        return None
    pos = torch.arange(n_tokens, device=device)
    dist = pos[:, None] - pos[None, :]  # (N, N): i - j
    ok_j = dist >= 0
    ok_l = dist >= 0
    if window is not None:
        ok_j = ok_j & (dist < window[0])
        ok_l = ok_l & (dist < window[1])
    return ok_j[:, :, None] & ok_l[:, None, :]  # (N, N, N)


def two_simplicial_attention(
    q: torch.Tensor,  # (B, H, N, d)
    k: torch.Tensor,  # (B, H, N, d)
    v: torch.Tensor,  # (B, H, N, d)
    k2: torch.Tensor,  # (B, H, N, d): the second keys k'
    v2: torch.Tensor,  # (B, H, N, d): the second values v'
    *,
    mask: str = "none",
    window: int | tuple[int, int] | None = None,
    attention_mask: torch.Tensor | None = None,  # (B, N) bool, True = real token
    scale: float | None = None,
) -> torch.Tensor:
    """2-simplicial attention (module docstring): five (B, H, N, d) tensors -> (B, H, N, d)."""
    tensors = {"q": q, "k": k, "v": v, "k2": k2, "v2": v2}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating 4-D tensor (B, H, N, d)")
        if t.shape != q.shape or t.dtype != q.dtype:
            raise ValueError(
                f"{name} {tuple(t.shape)} {t.dtype} must match q {tuple(q.shape)} {q.dtype}"
            )
    B, H, N, d = q.shape
    attention_mask = check_attention_mask(attention_mask)
    if attention_mask is not None and tuple(attention_mask.shape) != (B, N):
        raise ValueError(f"attention_mask must be (B, N) = ({B}, {N}), {CONVENTION}")
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    allowed = simplicial_allowed(N, mask, window, q.device)  # (N, N, N) or None
    # logits[i, j, l] = sum_c (q_i * k_j)[c] * k'_l[c]: one (N*N, d) @ (d, N) product per head
    qk = (q * scale)[:, :, :, None, :] * k[:, :, None, :, :]  # (B, H, N, N, d)
    logits = (qk.reshape(B, H, N * N, d) @ k2.transpose(-1, -2)).view(B, H, N, N, N)
    if attention_mask is not None:
        real = attention_mask[:, None, :, None] & attention_mask[:, None, None, :]  # (B,1,N,N)
        pair_ok = real[:, :, None]  # (B, 1, 1, N, N) over (j, l)
        allowed = pair_ok if allowed is None else allowed & pair_ok
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    flat = logits.view(B, H, N, N * N)
    if allowed is not None:  # a query with no allowed pair: softmax of a zero row, zeroed below
        alive = torch.isfinite(flat).any(dim=-1, keepdim=True)  # (B, H, N, 1)
        flat = flat.masked_fill(~alive, 0.0)
    weights = torch.softmax(flat, dim=-1)
    if allowed is not None:
        weights = weights * alive
    # out[i] = sum_j v_j * (sum_l A[i, j, l] v'_l): one (N*N, N) @ (N, d) product per head
    inner = weights.view(B, H, N * N, N) @ v2  # (B, H, N*N, d)
    return (inner.view(B, H, N, N, d) * v[:, :, None, :, :]).sum(dim=3)  # (B, H, N, d)


class TwoSimplicialAttention(nn.Module):
    """Multi-head 2-simplicial attention layer: (B, N, D) in and out.

    Five projections (``q_proj``, ``k_proj``, ``v_proj``, ``k2_proj``, ``v2_proj``, each
    D -> H*d) feed :func:`two_simplicial_attention`; ``o_proj`` maps the H*d outputs back to D.

    Args:
        d_model: model width D.
        n_heads: H.
        head_dim: d (default D / H).
        mask: "none" (bidirectional) or "causal".
        window: for mask="causal", None or (w1, w2) (an int means w1 = w2).
        bias: bias on the projections.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        head_dim: int | None = None,
        mask: str = "none",
        window: int | tuple[int, int] | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        check_int("d_model", d_model, 1)
        check_int("n_heads", n_heads, 1)
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
            head_dim = d_model // n_heads
        if mask not in SIMPLICIAL_MASKS:
            raise ValueError(f"mask={mask!r} is not supported; expected one of {SIMPLICIAL_MASKS}")
        self.window = _check_window(window, mask)
        self.d_model, self.n_heads, self.head_dim, self.mask = d_model, n_heads, head_dim, mask
        width = n_heads * head_dim
        self.q_proj = nn.Linear(d_model, width, bias=bias)
        self.k_proj = nn.Linear(d_model, width, bias=bias)
        self.v_proj = nn.Linear(d_model, width, bias=bias)
        self.k2_proj = nn.Linear(d_model, width, bias=bias)
        self.v2_proj = nn.Linear(d_model, width, bias=bias)
        self.o_proj = nn.Linear(width, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
            f"mask={self.mask!r}, window={self.window}"
        )

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); ``attention_mask`` (B, N) bool, True = real token."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (B, N, d_model={self.d_model}), got {tuple(x.shape)}")
        B, N, _ = x.shape
        H, d = self.n_heads, self.head_dim

        def heads(proj: nn.Linear) -> torch.Tensor:
            return proj(x).view(B, N, H, d).transpose(1, 2)  # (B, H, N, d)

        y = two_simplicial_attention(
            heads(self.q_proj),
            heads(self.k_proj),
            heads(self.v_proj),
            heads(self.k2_proj),
            heads(self.v2_proj),
            mask=self.mask,
            window=self.window,
            attention_mask=attention_mask,
        )
        return self.o_proj(y.transpose(1, 2).reshape(B, N, H * d))
