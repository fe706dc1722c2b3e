"""``InterleavedHeadAttention``: the nn.Module of docs/spec.md, (B, N, D) in and out."""

from __future__ import annotations

import torch
from torch import nn

from iha.cache import KVCache
from iha.functional import check_options, interleaved_head_attention
from iha.masks import CONVENTION, check_attention_mask, reject_key_padding_mask
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
    r"""Interleaved Head Attention (arXiv:2602.21371): ``(B, N, D)`` in, ``(B, N, D)`` out.

    Projects the input to H query heads and G key/value heads of size d, mixes each set of heads
    into P pseudo-heads per head (learned ``alpha_q`` (H, H, P), ``alpha_k`` and ``alpha_v``
    (G, G, P)), interleaves the pseudo tokens token-major (pseudo token (n, p) at index
    ``n*P + p``), applies RoPE, runs masked softmax attention over the N*P sequence, collapses
    the P pseudo outputs back to H heads (``collapse``) and applies ``o_proj``. docs/spec.md
    gives the exact semantics; :func:`iha.functional.interleaved_head_attention` is the same
    computation on already projected tensors.

    Args:
        d_model (int): model width D of the input and the output.
        n_heads (int): number of query heads H.
        n_pseudo (int, optional): pseudo-heads P per head. Default: ``None``, which means
            P = ``n_heads`` (the paper's choice). ``1`` with ``init="exact_mha"`` is plain MHA.
        n_kv_heads (int, optional): key/value heads G; must divide ``n_heads``. Default:
            ``None`` (G = H, no grouped-query attention).
        collapse (str): how the N*P outputs return to H heads. ``"global"`` (default): a
            learned (H, H*P) map, every output head reads every pseudo head (the paper's, 4 H^2 P
            mixing parameters in all); ``"per_head"``: (H, P), head h reads only its own P copies.
        mask (str): the attention mask on the interleaved sequence. ``"flat"`` (default, the
            paper's): plain causal attention over the N*P pseudo tokens, a pseudo query sees the
            pseudo keys at or before its own interleaved index; ``"token"``: block causal, the
            P pseudo tokens of a token see each other and all earlier tokens; ``"none"``: no
            mask (encoders; no ``window``).
        window (int, optional): sliding window in original tokens. Under ``"flat"`` a pseudo
            query sees the ``window * P`` pseudo keys before it (itself included), under
            ``"token"`` the last ``window`` tokens. Default: ``None`` (global attention).
        rope_theta (float, optional): RoPE base (Llama convention, ``rotate_half``). ``None``
            disables RoPE. Default: ``10000.0``.
        positions (str): RoPE position of pseudo token (n, p). ``"virtual"`` (default, the
            paper's): ``n*P + p``; ``"token"``: ``n`` (all copies of a token share a position).
        init (str): ``"default"``: alphas are the identity on the head axis and the collapse
            selects the last copy (p = P-1), plus N(0, ``init_noise``\ :sup:`2`) noise that
            breaks the symmetry between copies; ``"exact_mha"``: the same without noise, which
            makes the layer exactly the MHA of its q/k/v/o weights under ``mask="token"`` (any
            positions) and under ``"flat"`` with ``positions="token"`` or without RoPE.
            Default: ``"default"``.
        bias (bool): bias in the four projections. Default: ``False``.
        dropout (float): dropout probability on the attention weights, in training mode only,
            in [0, 1). Default: ``0.0``.
        head_dim (int, optional): head size d. Default: ``None`` (``d_model // n_heads``; then
            ``d_model`` must be divisible by ``n_heads``). Must be even when RoPE is used.
        kernel (str): ``"softmax"`` (default) or ``"linear"`` (masked scores used directly as
            weights, for the theory; only the ``"reference"`` backend implements it).
        backend (str): the attention implementation, all computing the same function:
            ``"auto"`` (default; picks per input, see :func:`iha.functional.choose_backend`),
            ``"reference"`` (einsum and a dense mask, the oracle), ``"sdpa"``
            (``F.scaled_dot_product_attention``), ``"blocked"`` (no dense mask; windows in
            O(N*P * W*P)), ``"band"`` (compiled CPU kernel for windows; runs ``"blocked"``
            where it is unavailable) or ``"flex"`` (FlexAttention).
        init_noise (float): standard deviation of the ``init="default"`` noise. Default: 0.02.
        rope_scaling (dict, optional): a ``transformers``-style RoPE scaling rule
            (``{"rope_type": "linear" | "dynamic" | "yarn" | "llama3", ...}``, lengths in
            tokens; under virtual positions they are multiplied by P). Default: ``None``.

    Attributes:
        q_proj, k_proj, v_proj, o_proj (nn.Linear): projections D -> H*d, G*d, G*d and H*d -> D.
        alpha_q (nn.Parameter): (H, H, P) query mixing, indexed [source head, target head, p].
        alpha_k, alpha_v (nn.Parameter): (G, G, P) key and value mixing.
        collapse (nn.Parameter): (H, H*P) (global) or (H, P) (per-head).

    Shape:
        - Input ``x``: (B, N, D); ``attention_mask``: (B, N) or (B, offset + N).
        - Output: (B, N, D).

    Raises:
        ValueError: an argument outside what is listed above, naming it.

    Example::

        >>> import torch
        >>> from iha import InterleavedHeadAttention
        >>> layer = InterleavedHeadAttention(d_model=32, n_heads=4, n_pseudo=2, window=8)
        >>> x = torch.randn(2, 10, 32)
        >>> layer(x).shape
        torch.Size([2, 10, 32])
        >>> mask = torch.tensor([[1] * 10, [0] * 3 + [1] * 7])  # row 1 left-padded
        >>> layer(x, attention_mask=mask).shape
        torch.Size([2, 10, 32])
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
        """See the class docstring for the arguments."""
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
        """An empty :class:`iha.KVCache` for this layer; bounded to the window for sliding-window
        layers.

        Args:
            policy (str): ``"raw"`` (default: unmixed keys/values, mixed and rotated again at
                every step; 1/P of the memory) or ``"pseudo"`` (mixed, rotated pseudo
                keys/values; no recomputation). Both give the same outputs.
        """
        return KVCache(policy=policy, max_tokens=self.window)

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        *,
        key_padding_mask: None = None,
    ) -> torch.Tensor:
        r"""Attend over ``x`` (and what ``cache`` holds) and return the layer output.

        Args:
            x (Tensor): (B, N, D) input, tokens in order.
            attention_mask (Tensor, optional): Hugging Face's padding mask: 1 / ``True`` = a
                real token, 0 / ``False`` = padding, whose P pseudo keys nobody attends to (a
                query with no visible key gives zeros). A bool tensor or an integer tensor of
                0 and 1 (floats and other values raise ``ValueError``), (B, N), or
                (B, offset + N) covering the cached tokens too (only the last N columns are
                used: the cache remembers the earlier ones). Default: ``None`` (no padding).
            cache (KVCache, optional): from :meth:`make_cache`. The call then processes the N
                tokens after those the cache holds, at their absolute positions, and appends
                them. Default: ``None``.
            key_padding_mask: not accepted; raises ``TypeError`` (its meaning here used to be
                the opposite of ``nn.MultiheadAttention``'s). Use ``attention_mask``.

        Returns:
            Tensor: (B, N, D). N = 0 gives an empty (B, 0, D) and leaves the cache untouched.

        Example::

            >>> import torch
            >>> from iha import InterleavedHeadAttention
            >>> layer = InterleavedHeadAttention(16, 2, n_pseudo=2).double()
            >>> x = torch.randn(1, 6, 16, dtype=torch.float64)
            >>> cache = layer.make_cache()
            >>> steps = [layer(x[:, :4], cache=cache), layer(x[:, 4:], cache=cache)]
            >>> torch.allclose(torch.cat(steps, 1), layer(x))
            True
        """
        reject_key_padding_mask(key_padding_mask)
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (B, N, d_model={self.d_model}), got {tuple(x.shape)}")
        B, N, _ = x.shape
        if N == 0:  # nothing new: an empty output, the cache untouched
            return x.new_zeros(B, 0, self.d_model)
        H, G, d = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, N, H, d).transpose(1, 2)  # (B, H, N, d)
        k = self.k_proj(x).view(B, N, G, d).transpose(1, 2)  # (B, G, N, d)
        v = self.v_proj(x).view(B, N, G, d).transpose(1, 2)
        attention_mask = check_attention_mask(attention_mask)
        if attention_mask is not None:
            offset = 0 if cache is None else cache.offset
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or (
                attention_mask.shape[1] not in (N, offset + N)
            ):
                raise ValueError(
                    f"attention_mask must be (B, N) = ({B}, {N}) or (B, offset + N) = "
                    f"({B}, {offset + N}), {CONVENTION}; got {tuple(attention_mask.shape)}"
                )
            attention_mask = attention_mask[:, -N:]
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
            attention_mask=attention_mask,
            backend=self.backend,
            kernel=self.kernel,
            dropout_p=self.dropout if self.training else 0.0,
            cache=cache,
        )  # (B, H, N, d)
        y = y.transpose(1, 2).reshape(B, N, H * d)
        return self.o_proj(y)
