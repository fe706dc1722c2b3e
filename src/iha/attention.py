"""``InterleavedHeadAttention``: the nn.Module of docs/spec.md, (B, N, D) in and out."""

from __future__ import annotations

import torch
from torch import nn

from iha.cache import KVCache
from iha.functional import check_options, interleaved_head_attention
from iha.rope import check_rope_scaling
from iha.validate import check_choice, check_int

INIT_MODES = ("default", "exact_mha")
COLLAPSE_MODES = ("global", "per_head")


@torch.no_grad()
def init_exact_mha_mixing(
    alpha_q: torch.Tensor,
    alpha_k: torch.Tensor,
    alpha_v: torch.Tensor,
    collapse: torch.Tensor,
    *,
    init_noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> None:
    """The exact-MHA init, in place: alpha = identity on the head axis for every pseudo index,
    the collapse selects the last copy (p = P-1) of each head.

    alpha_q (H, H, P), alpha_k and alpha_v (G, G, P), collapse (H, P) or (H, H*P).
    ``init_noise`` > 0 then adds N(0, init_noise^2) noise (drawn in float32 from ``generator``,
    or the global generator) to all four, which breaks the symmetry between the P copies.
    """
    H, _, P = alpha_q.shape
    for a in (alpha_q, alpha_k, alpha_v):
        a.copy_(torch.eye(a.shape[0])[:, :, None].expand_as(a))
    collapse.zero_()
    if collapse.shape[1] == P:  # per-head (H, P)
        collapse[:, P - 1] = 1.0
    else:  # global (H, H*P): output head h takes pseudo head (h, P-1)
        collapse.view(H, H, P)[torch.arange(H), torch.arange(H), P - 1] = 1.0
    if init_noise > 0:
        for t in (alpha_q, alpha_k, alpha_v, collapse):
            noise = torch.randn(t.shape, generator=generator, dtype=torch.float32)
            t.add_((noise * init_noise).to(t.device, t.dtype))


class InterleavedHeadAttention(nn.Module):
    """Interleaved Head Attention layer.

    Projects (B, N, D) to H query heads and G key/value heads of size d, mixes each into P
    pseudo-heads, runs attention on the interleaved N*P sequence, collapses back to H heads and
    applies ``o_proj``. See docs/spec.md for the exact semantics.

    Init modes:
        ``"exact_mha"``: every pseudo-head is a copy of its head (alpha = identity for every p) and
        the collapse selects the last copy (p = P-1). This is exactly MHA with the same q/k/v/o
        weights for mask="token" (any positions, since all copies share a position under
        positions="token"; under "virtual" only without RoPE) and for mask="flat" with
        positions="token" or without RoPE: the last copy of token n sees all P copies of every
        token <= n. Under the paper's flat mask with virtual positions and RoPE it is *not* MHA:
        the last copy at virtual position n*P+P-1 attends to P differently rotated copies of
        each key, i.e. MHA whose keys are replaced by P copies at relative distances
        (n-m)*P + (P-1-p'). ``tests/test_attention.py`` checks both statements.
        ``"default"``: the same start plus small noise (std ``init_noise``) on the alphas and the
        collapse, which breaks the symmetry between the P copies (identical copies with an
        identical collapse receive identical gradients and would stay identical).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_pseudo: int | None = None,
        n_kv_heads: int | None = None,
        collapse: str = "global",
        mask: str = "flat",
        window: int | None = None,
        rope_theta: float | None = 10000.0,
        positions: str = "virtual",
        init: str = "default",
        bias: bool = False,
        dropout: float = 0.0,
        head_dim: int | None = None,
        kernel: str = "softmax",
        backend: str = "auto",
        init_noise: float = 0.02,
        rope_scaling: dict | None = None,
    ) -> None:
        super().__init__()
        check_int("d_model", d_model)
        check_int("n_heads", n_heads)
        n_pseudo = check_int("n_pseudo", n_heads if n_pseudo is None else n_pseudo)
        n_kv_heads = check_int("n_kv_heads", n_heads if n_kv_heads is None else n_kv_heads)
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
            head_dim = d_model // n_heads
        if head_dim < 1 or (rope_theta is not None and head_dim % 2):
            raise ValueError(f"head_dim={head_dim} must be >= 1 (and even when RoPE is used)")
        check_choice("collapse", collapse, COLLAPSE_MODES)
        check_choice("init", init, INIT_MODES)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        check_options(mask=mask, window=window, positions=positions, kernel=kernel, backend=backend)
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.n_pseudo, self.head_dim = n_pseudo, head_dim
        self.collapse_mode, self.mask, self.window = collapse, mask, window
        self.rope_theta, self.positions, self.kernel, self.backend = (
            rope_theta,
            positions,
            kernel,
            backend,
        )
        self.dropout = dropout
        self.rope_scaling = check_rope_scaling(rope_scaling)  # iha.rope rules, lengths in tokens
        H, G, P, d = n_heads, n_kv_heads, n_pseudo, head_dim
        self.q_proj = nn.Linear(d_model, H * d, bias=bias)
        self.k_proj = nn.Linear(d_model, G * d, bias=bias)
        self.v_proj = nn.Linear(d_model, G * d, bias=bias)
        self.o_proj = nn.Linear(H * d, d_model, bias=bias)
        self.alpha_q = nn.Parameter(torch.empty(H, H, P))
        self.alpha_k = nn.Parameter(torch.empty(G, G, P))
        self.alpha_v = nn.Parameter(torch.empty(G, G, P))
        self.collapse = nn.Parameter(torch.empty(H, P if collapse == "per_head" else H * P))
        self.init_mode, self.init_noise = init, init_noise
        self.reset_mixing()

    def reset_mixing(self) -> None:
        """(Re)initialise alphas and collapse according to ``init`` (projections untouched)."""
        noisy = self.init_mode == "default" and self.n_pseudo > 1
        init_exact_mha_mixing(
            self.alpha_q,
            self.alpha_k,
            self.alpha_v,
            self.collapse,
            init_noise=self.init_noise if noisy else 0.0,
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
            f"n_pseudo={self.n_pseudo}, head_dim={self.head_dim}, collapse={self.collapse_mode!r}, "
            f"mask={self.mask!r}, window={self.window}, positions={self.positions!r}, "
            f"rope_theta={self.rope_theta}"
        )

    def make_cache(self, policy: str = "raw") -> KVCache:
        """An empty cache for this layer; bounded to the window for sliding-window layers."""
        return KVCache(policy=policy, max_tokens=self.window)

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        key_padding_mask: torch.Tensor | None = None,  # (B, N) or (B, offset+N) bool, True = real
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (B, N, d_model={self.d_model}), got {tuple(x.shape)}")
        B, N, _ = x.shape
        if N == 0:  # nothing new: an empty output, the cache untouched
            return x.new_zeros(B, 0, self.d_model)
        H, G, d = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, N, H, d).transpose(1, 2)  # (B, H, N, d)
        k = self.k_proj(x).view(B, N, G, d).transpose(1, 2)  # (B, G, N, d)
        v = self.v_proj(x).view(B, N, G, d).transpose(1, 2)
        if key_padding_mask is not None:
            if key_padding_mask.dim() != 2 or key_padding_mask.shape[0] != B:
                raise ValueError(
                    f"key_padding_mask must be (B, N) bool, got {tuple(key_padding_mask.shape)}"
                )
            key_padding_mask = key_padding_mask[:, -N:].bool()
        y = interleaved_head_attention(
            q,
            k,
            v,
            self.alpha_q,
            self.alpha_k,
            self.alpha_v,
            self.collapse,
            mask=self.mask,
            window=self.window,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
            positions=self.positions,
            key_padding_mask=key_padding_mask,
            backend=self.backend,
            kernel=self.kernel,
            dropout_p=self.dropout if self.training else 0.0,
            cache=cache,
        )  # (B, H, N, d)
        y = y.transpose(1, 2).reshape(B, N, H * d)
        return self.o_proj(y)
