"""The non-IHA attention layers of the decoder and its norm/MLP blocks.

Every attention layer here has the same interface as ``iha.InterleavedHeadAttention``:
``forward(x (B, N, D), attention_mask=None, cache=None) -> (B, N, D)`` and
``make_cache(policy) -> iha.KVCache``. They use the one RoPE (``iha.rope``, token positions),
the one mask definition (``iha.masks.MaskSpec`` with P = 1) and the one cache
(``iha.KVCache``, policy ``"raw"``: keys are stored already rotated at their absolute position).

- :class:`MultiHeadAttention`: causal GQA attention, global or sliding-window, through
  ``iha.functional.attend`` (``F.scaled_dot_product_attention`` with ``is_causal`` when there is
  no window and no padding). No mixing parameters.
- :class:`TalkingHeadsAttention`: Shazeer et al. 2020, arXiv:2003.02436. Learned H x H maps mix
  the attention logits across heads before the softmax and the weights after it.
- :class:`DiffAttention`: Differential Transformer, Ye et al. 2024, arXiv:2410.05258.
  Half as many heads, each the difference of two softmax maps, scaled by a learned lambda.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iha.backends import expand_kv
from iha.cache import CACHE_POLICIES, KVCache
from iha.functional import attend, check_options, rope_pseudo
from iha.masks import CONVENTION, MaskSpec, check_attention_mask
from iha.rope import check_rope_scaling
from iha.validate import check_choice, check_int


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension (in at least float32), learned scale:
    ``weight * x / sqrt(mean(x^2) + eps)``.

    Args:
        dim (int): size of the last dimension (and of ``weight``, initialised to ones).
        eps (float): added to the mean square. Default: 1e-5.

    Shape:
        - Input: (..., dim). Output: the same shape and dtype.

    Example::

        >>> import torch
        >>> from iha.models import RMSNorm
        >>> y = RMSNorm(4, eps=0.0)(torch.tensor([[2.0, -2.0, 2.0, -2.0]]))
        >>> y.tolist()
        [[1.0, -1.0, 1.0, -1.0]]
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        """See the class docstring for the arguments."""
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x (Tensor): (..., dim).

        Returns:
            Tensor: like ``x``.
        """
        xw = x.to(torch.promote_types(x.dtype, torch.float32))
        xw = xw * torch.rsqrt(xw.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xw.to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        """See the class docstring for the arguments."""
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GELUMLP(nn.Module):
    """down(gelu(up(x))): the plain two-matrix MLP (GPT-2, the original Transformer's FFN)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        """See the class docstring for the arguments."""
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


def rotate(
    x: torch.Tensor, start: int, theta: float, rope_scaling: dict | None = None
) -> torch.Tensor:
    """RoPE at token positions start .. start+N-1 for x (B, heads, N, d): the IHA core's RoPE
    with one pseudo token per token, scaled by ``rope_scaling`` (lengths in tokens)."""
    return rope_pseudo(x, start, 1, theta, "token", rope_scaling=rope_scaling)


def _check_input(x: torch.Tensor, d_model: int) -> None:
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x must be (B, N, d_model={d_model}), got {tuple(x.shape)}")


def _new_padding(attention_mask: torch.Tensor | None, n_new: int) -> torch.Tensor | None:
    """The (B, n_new) padding of the new tokens from a (B, n_new) or (B, offset+n_new) mask."""
    attention_mask = check_attention_mask(attention_mask)
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[1] < n_new:
        raise ValueError(
            f"attention_mask must be (B, N) or (B, offset + N), {CONVENTION}; got "
            f"{tuple(attention_mask.shape)}"
        )
    return attention_mask[:, -n_new:]


def _attention_mask(
    n_q: int,
    n_k: int,
    offset: int,
    window: int | None,
    attention_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """Allowed (query, key) pairs, (1 or B, 1, n_q, n_k) bool, keys bottom-right aligned."""
    spec = MaskSpec("flat", 1, n_q, n_k, q_start=offset, k_start=offset + n_q - n_k, window=window)
    allowed = spec.allowed(device)[None, None]  # (1, 1, n_q, n_k)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :]  # (B, 1, n_q, n_k)
    return allowed


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where ``allowed``; a row with no allowed key is all zero."""
    alive = allowed.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    scores = scores.masked_fill(~alive, 0.0)  # finite, so neither direction sees NaN
    return torch.softmax(scores, dim=-1) * alive


class _Attention(nn.Module):
    """Shared plumbing: argument checks, q/k/v/o projections (H and G heads of d = D / H),
    RoPE, cache update."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None,
        rope_theta: float,
        window: int | None,
        backend: str = "auto",
        rope_scaling: dict | None = None,
    ) -> None:
        """See the class docstring for the arguments."""
        super().__init__()
        check_int("d_model", d_model)
        check_int("n_heads", n_heads)
        check_options(mask="flat", window=window, positions="token", backend=backend)
        G = check_int("n_kv_heads", n_heads if n_kv_heads is None else n_kv_heads)
        if n_heads % G:
            raise ValueError(f"n_kv_heads={G} must divide n_heads={n_heads}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        d = d_model // n_heads
        self.d_model, self.n_heads, self.n_kv_heads, self.head_dim = d_model, n_heads, G, d
        self.rope_theta, self.window, self.backend = rope_theta, window, backend
        self.rope_scaling = check_rope_scaling(rope_scaling)
        self.q_proj = nn.Linear(d_model, n_heads * d, bias=False)
        self.k_proj = nn.Linear(d_model, G * d, bias=False)
        self.v_proj = nn.Linear(d_model, G * d, bias=False)
        self.o_proj = nn.Linear(n_heads * d, d_model, bias=False)

    def make_cache(self, policy: str = "raw") -> KVCache:
        """An empty cache (rotated keys, values); bounded to the window for local layers.

        ``policy`` is accepted for a uniform interface; these layers have one kind of cache.
        """
        check_choice("policy", policy, CACHE_POLICIES)
        return KVCache(policy="raw", max_tokens=self.window)

    def _project(
        self,
        x: torch.Tensor,  # (B, N, D)
        attention_mask: torch.Tensor | None,
        cache: KVCache | None,
        q_heads: int,
        k_heads: int,
        v_heads: int,
        v_width: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """Project, rotate q and k at the cache offset, and append k, v to the cache.

        Returns q (B, q_heads, N, d), k (B, k_heads, L, d), v (B, v_heads, L, v_width), the key
        padding mask (B, L) or None, and the offset of the first new token.
        """
        _check_input(x, self.d_model)
        B, N, _ = x.shape
        d = self.head_dim
        offset = 0 if cache is None else cache.offset
        kpm = _new_padding(attention_mask, N)
        theta, scaling = self.rope_theta, self.rope_scaling
        q = rotate(self.q_proj(x).view(B, N, q_heads, d).transpose(1, 2), offset, theta, scaling)
        k = rotate(self.k_proj(x).view(B, N, k_heads, d).transpose(1, 2), offset, theta, scaling)
        v = self.v_proj(x).view(B, N, v_heads, v_width).transpose(1, 2)
        if cache is not None:
            k, v, kpm, _ = cache.update(k, v, N, kpm)
        return q, k, v, kpm, offset

    def _window(self, offset: int, n_new: int) -> int | None:
        """The window, or None when no key can be farther back than it (enables is_causal)."""
        if self.window is None or self.window >= offset + n_new:
            return None
        return self.window


class MultiHeadAttention(_Attention):
    """Causal GQA multi-head attention with RoPE; ``window`` (tokens) makes it local.

    Projections ``q_proj`` (D -> H d), ``k_proj``/``v_proj`` (D -> G d), ``o_proj`` (H d -> D).

    Args:
        d_model (int): model width D.
        n_heads (int): query heads H (D must be divisible by H; d = D / H, even for RoPE).
        n_kv_heads (int, optional): key/value heads G, dividing H. Default: ``None`` (G = H).
        window (int, optional): sliding window in tokens (a query sees itself and the
            ``window - 1`` tokens before it). Default: ``None`` (global).
        rope_theta (float): RoPE base, token positions. Default: 10000.0.
        backend (str): the ``iha.functional`` attention backend (``"auto"``, ``"sdpa"``,
            ``"blocked"``, ``"band"``, ``"flex"``, ``"reference"``). Default: ``"auto"``.
        rope_scaling (dict, optional): ``transformers``-style RoPE scaling rule
            (``iha.rope``). Default: ``None``.

    Shape:
        - Input: (B, N, D). Output: (B, N, D).

    Example::

        >>> import torch
        >>> from iha.models import MultiHeadAttention
        >>> MultiHeadAttention(32, 4, n_kv_heads=2, window=3)(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        window: int | None = None,
        rope_theta: float = 10000.0,
        backend: str = "auto",
        rope_scaling: dict | None = None,
    ) -> None:
        """See the class docstring for the arguments."""
        super().__init__(
            d_model, n_heads, n_kv_heads, rope_theta, window, backend, rope_scaling
        )

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, window={self.window}"

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        attention_mask: torch.Tensor | None = None,  # (B, N) or (B, offset+N) bool, True = real
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Causal attention of the N new tokens over the cache and themselves.

        Args:
            x (Tensor): (B, N, D) input.
            attention_mask (Tensor, optional): Hugging Face's padding mask, 1 / ``True`` = real
                token, 0 / ``False`` = padding (bool or 0/1 integers), (B, N) or
                (B, offset + N). Default: ``None``.
            cache (KVCache, optional): from :meth:`make_cache`; the call processes the N tokens
                after those it holds and appends them. Default: ``None``.

        Returns:
            Tensor: (B, N, D).

        Example::

            >>> import torch
            >>> from iha.models import MultiHeadAttention
            >>> layer = MultiHeadAttention(32, 4)
            >>> mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
            >>> layer(torch.randn(2, 5, 32), attention_mask=mask).shape
            torch.Size([2, 5, 32])
        """
        B, N, _ = x.shape
        H, G, d = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v, kpm, offset = self._project(x, attention_mask, cache, H, G, G, d)
        n_k = k.shape[2]
        spec = MaskSpec(
            "flat",
            1,
            N,
            n_k,
            q_start=offset,
            k_start=offset + N - n_k,
            window=self._window(offset, N),
        )
        y = attend(
            q, k, v, spec, scale=1.0 / math.sqrt(d), attention_mask=kpm, backend=self.backend
        )  # (B, H, N, d)
        return self.o_proj(y.transpose(1, 2).reshape(B, N, H * d))


class TalkingHeadsAttention(_Attention):
    """Talking-heads attention (Shazeer et al. 2020), causal, GQA, RoPE.

    With per-head logits ``J[h] = q_h k_h^T / sqrt(d)``:
    ``L[h'] = sum_h logits_mix[h, h'] J[h]``, ``W = softmax(L)`` (masked),
    ``U[h''] = sum_h' weights_mix[h', h''] W[h']``, ``out[h''] = U[h''] v_h''``.
    Both H x H maps start as the identity (the layer starts as MHA) and are tagged
    ``_iha_mixing`` so that ``iha.param_groups`` keeps them free of weight decay. The attention
    matrix is explicit: (B, H, N, N) memory.

    Args:
        d_model (int): model width D.
        n_heads (int): query heads H (D must be divisible by H; d = D / H, even for RoPE).
        n_kv_heads (int, optional): key/value heads G, dividing H. Default: ``None`` (G = H).
        rope_theta (float): RoPE base, token positions. Default: 10000.0.
        rope_scaling (dict, optional): ``transformers``-style RoPE scaling rule. Default:
            ``None``.

    Shape:
        - Input: (B, N, D). Output: (B, N, D).

    Example::

        >>> import torch
        >>> from iha.models import TalkingHeadsAttention
        >>> TalkingHeadsAttention(32, 4)(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        rope_theta: float = 10000.0,
        rope_scaling: dict | None = None,
    ) -> None:
        """See the class docstring for the arguments."""
        super().__init__(
            d_model, n_heads, n_kv_heads, rope_theta, None, rope_scaling=rope_scaling
        )
        self.logits_mix = nn.Parameter(torch.eye(n_heads))
        self.weights_mix = nn.Parameter(torch.eye(n_heads))
        self.logits_mix._iha_mixing = True
        self.weights_mix._iha_mixing = True

    @torch.no_grad()
    def reset_mixing(self) -> None:
        """Both mixing maps back to the identity."""
        self.logits_mix.copy_(torch.eye(self.n_heads))
        self.weights_mix.copy_(torch.eye(self.n_heads))

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Causal attention of the N new tokens over the cache and themselves.

        Args:
            x (Tensor): (B, N, D) input.
            attention_mask (Tensor, optional): Hugging Face's padding mask, 1 / ``True`` = real
                token, 0 / ``False`` = padding (bool or 0/1 integers), (B, N) or
                (B, offset + N). Default: ``None``.
            cache (KVCache, optional): from :meth:`make_cache`; the call processes the N tokens
                after those it holds and appends them. Default: ``None``.

        Returns:
            Tensor: (B, N, D).

        Example::

            >>> import torch
            >>> from iha.models import TalkingHeadsAttention
            >>> layer = TalkingHeadsAttention(32, 4)
            >>> mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
            >>> layer(torch.randn(2, 5, 32), attention_mask=mask).shape
            torch.Size([2, 5, 32])
        """
        B, N, _ = x.shape
        H, G, d = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v, kpm, offset = self._project(x, attention_mask, cache, H, G, G, d)
        k, v = expand_kv(k, H), expand_kv(v, H)  # (B, H, Nk, d)
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)  # (B, H, N, Nk)
        logits = torch.einsum("bhqk,hj->bjqk", logits, self.logits_mix.to(x.dtype))
        allowed = _attention_mask(N, k.shape[2], offset, None, kpm, x.device)
        weights = masked_softmax(logits, allowed)
        weights = torch.einsum("bhqk,hj->bjqk", weights, self.weights_mix.to(x.dtype))
        y = torch.einsum("bhqk,bhkd->bhqd", weights, v)  # (B, H, N, d)
        return self.o_proj(y.transpose(1, 2).reshape(B, N, H * d))


def diff_lambda_init(layer_index: int) -> float:
    """lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1)) for layer l = 1, 2, ... (Ye et al. 2024)."""
    check_int("layer_index", layer_index, 1)  # 1-based
    return 0.8 - 0.6 * math.exp(-0.3 * (layer_index - 1))


class DiffAttention(_Attention):
    """Differential attention (Ye et al. 2024), causal, GQA, RoPE.

    The H query heads of size d are paired into H/2 differential heads (the paper halves the
    head count to keep the parameters of MHA): head i has queries (q1, q2) = query heads
    (2i, 2i+1), keys (k1, k2) likewise from the G key heads (G/2 pairs), and one value of size
    2d (the value projection is read as G/2 heads of 2d). Then
    ``out_i = (softmax(q1 k1^T / sqrt d) - lambda softmax(q2 k2^T / sqrt d)) v``,
    ``lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init``,
    ``head_i = (1 - lambda_init) * RMSNorm(out_i)`` (one 2d-wide norm shared by the heads),
    concatenated and projected by ``o_proj``. The lambda vectors (size d) start at
    N(0, 0.1^2) and are tagged ``_iha_mixing``.

    Args:
        d_model (int): model width D.
        n_heads (int): query heads H, even (H/2 differential heads).
        n_kv_heads (int, optional): key/value heads G, even, dividing H. Default: ``None``.
        rope_theta (float): RoPE base, token positions. Default: 10000.0.
        layer_index (int): 1-based depth l of the layer, for
            ``lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1))``. Default: 1.
        eps (float): epsilon of the shared head norm. Default: 1e-5.
        backend (str): the ``iha.functional`` attention backend. Default: ``"auto"``.
        rope_scaling (dict, optional): ``transformers``-style RoPE scaling rule. Default:
            ``None``.

    Shape:
        - Input: (B, N, D). Output: (B, N, D).

    Example::

        >>> import torch
        >>> from iha.models import DiffAttention
        >>> DiffAttention(32, 4, layer_index=2)(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        rope_theta: float = 10000.0,
        layer_index: int = 1,
        eps: float = 1e-5,
        backend: str = "auto",
        rope_scaling: dict | None = None,
    ) -> None:
        """See the class docstring for the arguments."""
        super().__init__(
            d_model, n_heads, n_kv_heads, rope_theta, None, backend, rope_scaling
        )
        G, d = self.n_kv_heads, self.head_dim
        if n_heads % 2 or G % 2:
            raise ValueError(
                f"n_heads={n_heads} and n_kv_heads={G} must both be even (heads come in pairs)"
            )
        self.layer_index = layer_index
        self.lambda_init = diff_lambda_init(layer_index)
        self.lambda_q1 = nn.Parameter(torch.empty(d))
        self.lambda_k1 = nn.Parameter(torch.empty(d))
        self.lambda_q2 = nn.Parameter(torch.empty(d))
        self.lambda_k2 = nn.Parameter(torch.empty(d))
        for p in self._lambdas():
            p._iha_mixing = True
        self.head_norm = RMSNorm(2 * d, eps=eps)
        self.reset_mixing()

    def _lambdas(self) -> tuple[nn.Parameter, ...]:
        return (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2)

    @torch.no_grad()
    def reset_mixing(self) -> None:
        """lambda vectors ~ N(0, 0.1^2), as in the paper."""
        for p in self._lambdas():
            p.normal_(0.0, 0.1)

    def lambda_value(self) -> torch.Tensor:
        """The scalar lambda of this layer."""
        return (
            torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
            - torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
            + self.lambda_init
        )

    def extra_repr(self) -> str:
        return (
            f"diff_heads={self.n_heads // 2}, n_kv_heads={self.n_kv_heads}, "
            f"lambda_init={self.lambda_init:.4f}"
        )

    def forward(
        self,
        x: torch.Tensor,  # (B, N, D)
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Causal attention of the N new tokens over the cache and themselves.

        Args:
            x (Tensor): (B, N, D) input.
            attention_mask (Tensor, optional): Hugging Face's padding mask, 1 / ``True`` = real
                token, 0 / ``False`` = padding (bool or 0/1 integers), (B, N) or
                (B, offset + N). Default: ``None``.
            cache (KVCache, optional): from :meth:`make_cache`; the call processes the N tokens
                after those it holds and appends them. Default: ``None``.

        Returns:
            Tensor: (B, N, D).

        Example::

            >>> import torch
            >>> from iha.models import DiffAttention
            >>> layer = DiffAttention(32, 4)
            >>> mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
            >>> layer(torch.randn(2, 5, 32), attention_mask=mask).shape
            torch.Size([2, 5, 32])
        """
        B, N, _ = x.shape
        Hd, Gd, d = self.n_heads // 2, self.n_kv_heads // 2, self.head_dim
        # query head 2i + c is component c of differential head i; values (B, Gd, L, 2d)
        q, k, v, kpm, offset = self._project(x, attention_mask, cache, 2 * Hd, 2 * Gd, Gd, 2 * d)
        n_k = k.shape[2]
        spec = MaskSpec("flat", 1, N, n_k, q_start=offset, k_start=offset + N - n_k)
        scale = 1.0 / math.sqrt(d)
        q1, q2 = q[:, 0::2], q[:, 1::2]  # (B, Hd, N, d)
        k1, k2 = k[:, 0::2], k[:, 1::2]  # (B, Gd, Nk, d)
        # (A1 - lambda A2) v = A1 v - lambda A2 v: two fused softmax-attention calls
        o1 = attend(q1, k1, v, spec, scale=scale, attention_mask=kpm, backend=self.backend)
        o2 = attend(q2, k2, v, spec, scale=scale, attention_mask=kpm, backend=self.backend)
        # o1, o2: (B, Hd, N, 2d), values twice as wide as queries
        o = o1 - self.lambda_value().to(x.dtype) * o2
        o = self.head_norm(o) * (1.0 - self.lambda_init)
        return self.o_proj(o.transpose(1, 2).reshape(B, N, 2 * Hd * d))
