"""The functional core of Interleaved Head Attention, step by step as in docs/spec.md.

``interleaved_head_attention`` = mix -> interleave -> RoPE -> masked attention -> collapse, the
one pipeline of the project: the module (with either cache policy) and the converted Hugging Face
layers call it and pass in what differs (a RoPE table provider, a KV cache). The steps are also
exposed one by one (``mix_heads``, ``rope_pseudo``, ``attend``, ``collapse_heads``). Where the
compiled ``band`` kernel serves the attention (CPU sliding windows, no KV cache, >= 256 query
rows), the query mixing + RoPE, the attention and the collapse run as one fused op
(``iha.backends.fused``; same results up to float rounding).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from iha.backends import BACKENDS, fused_core, fused_mixing
from iha.cache import KVCache
from iha.masks import (
    CONVENTION,
    MASK_MODES,
    MaskSpec,
    check_attention_mask,
    expand_key_padding,
    reject_key_padding_mask,
)
from iha.rope import apply_rope, rope_cos_sin
from iha.validate import check_choice, check_window

POSITION_MODES = ("virtual", "token")
KERNELS = ("softmax", "linear")
BACKEND_NAMES = ("auto", *BACKENDS)

RopeTables = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""A RoPE table provider: positions (L,) long -> (cos, sin), each (L, d) in any float dtype."""


def mix_heads(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Mix heads and interleave (docs/spec.md steps 1-2).

    ``out[b, h, n*P + p] = sum_m alpha[m, h, p] * x[b, m, n]``.

    Args:
        x (Tensor): (B, M, N, d) per-head queries, keys or values (M heads, N tokens).
        alpha (Tensor): (M, M', P) mixing weights, indexed [source head, target head, p].

    Returns:
        Tensor: (B, M', N*P, d), pseudo token (n, p) at index ``n*P + p``.

    Example::

        >>> import torch
        >>> from iha.functional import mix_heads
        >>> x = torch.randn(1, 2, 3, 4)
        >>> eye = torch.eye(2)[:, :, None].expand(2, 2, 2)  # P = 2 identical copies
        >>> out = mix_heads(x, eye)
        >>> out.shape, torch.equal(out[:, :, 0::2], x)
        (torch.Size([1, 2, 6, 4]), True)
    """
    if fused_mixing.usable(x):  # one pass, no permuting copy (CPU, compiled library)
        return fused_mixing.mix_rope(x, alpha)
    B, M, N, d = x.shape
    P = alpha.shape[-1]
    out = torch.einsum("bmnd,mhp->bhnpd", x, alpha.to(x.dtype))  # (B, M', N, P, d)
    # contiguous: with P = 1 the reshape is a strided view and SDPA would take its slow path
    return out.reshape(B, alpha.shape[1], N * P, d).contiguous()


def pseudo_positions(
    start: int, n_tokens: int, n_pseudo: int, positions: str, device: torch.device
) -> torch.Tensor:
    """RoPE position of each pseudo token of tokens ``start .. start + n_tokens - 1``.

    Args:
        start (int): absolute index of the first token.
        n_tokens (int): number of tokens.
        n_pseudo (int): pseudo-heads P per head.
        positions (str): ``"virtual"``: pseudo token (n, p) at ``n*P + p``; ``"token"``: at n.
        device (torch.device): device of the result.

    Returns:
        Tensor: (n_tokens * P,) int64 positions, token-major.

    Example::

        >>> import torch
        >>> from iha.functional import pseudo_positions
        >>> pseudo_positions(2, 2, 3, "virtual", torch.device("cpu")).tolist()
        [6, 7, 8, 9, 10, 11]
        >>> pseudo_positions(2, 2, 3, "token", torch.device("cpu")).tolist()
        [2, 2, 2, 3, 3, 3]
    """
    if positions == "virtual":
        return torch.arange(start * n_pseudo, (start + n_tokens) * n_pseudo, device=device)
    tokens = torch.arange(start, start + n_tokens, device=device)
    return tokens.repeat_interleave(n_pseudo)


def rope_pseudo(
    xt: torch.Tensor,
    start: int,
    n_pseudo: int,
    rope_theta: float | None,
    positions: str,
    rope_tables: RopeTables | None = None,
    rope_scaling: dict | None = None,
) -> torch.Tensor:
    """Apply RoPE to interleaved pseudo tokens whose first token is ``start`` (spec step 3).

    Args:
        xt (Tensor): (B, H, N*P, d) interleaved pseudo queries or keys; d even.
        start (int): absolute index of the first token.
        n_pseudo (int): pseudo-heads P per head.
        rope_theta (float or None): RoPE base; ignored when ``rope_tables`` is given. ``None``
            and no ``rope_tables``: no RoPE (``xt`` is returned as is).
        positions (str): ``"virtual"`` (pseudo token (n, p) at ``n*P + p``) or ``"token"``
            (at n).
        rope_tables (callable, optional): positions (L,) -> (cos, sin), each (L, d), e.g. a
            pretrained model's own rotary embedding. Default: ``None``.
        rope_scaling (dict, optional): a ``transformers``-style scaling rule (``iha.rope``)
            seeing the positions RoPE sees: under virtual positions every length of the rule
            (given in tokens) is multiplied by P and linear scaling divides ``n*P + p``.
            Default: ``None``.

    Returns:
        Tensor: (B, H, N*P, d), rotated, in the dtype of ``xt``.

    Example::

        >>> import torch
        >>> from iha.functional import rope_pseudo
        >>> xt = torch.randn(1, 2, 6, 4, dtype=torch.float64)
        >>> out = rope_pseudo(xt, 0, 2, 10000.0, "virtual")
        >>> torch.equal(out[:, :, 0], xt[:, :, 0]), out.norm().item() - xt.norm().item() < 1e-9
        (True, True)
    """
    if rope_tables is None and rope_theta is None:
        return xt
    cos, sin = _pseudo_tables(
        xt, xt.shape[2] // n_pseudo, start, n_pseudo, rope_theta, positions, rope_tables,
        rope_scaling,
    )
    return apply_rope(xt, cos, sin)


def _pseudo_tables(
    x, n_tokens, start, n_pseudo, rope_theta, positions, rope_tables, rope_scaling=None
):
    """RoPE (cos, sin) of the pseudo tokens of tokens start .. start+n_tokens-1: (N*P, d) each."""
    if rope_tables is None and rope_scaling is None and not torch.compiler.is_compiling():
        return _theta_tables(start, n_tokens, n_pseudo, positions, x.shape[-1], rope_theta,
                             x.dtype, x.device)
    pos = pseudo_positions(start, n_tokens, n_pseudo, positions, x.device)  # (N*P,)
    if rope_tables is None:
        per_token = n_pseudo if positions == "virtual" else 1
        cos, sin = rope_cos_sin(pos, x.shape[-1], rope_theta, x.dtype, rope_scaling, per_token)
    else:
        cos, sin = rope_tables(pos)  # (N*P, d) each
    return cos.to(x.dtype), sin.to(x.dtype)


@functools.lru_cache(maxsize=16)
def _theta_tables(start, n_tokens, n_pseudo, positions, head_dim, rope_theta, dtype, device):
    """Plain-theta tables, cached: training calls repeat the same positions every step, and the
    float64 angles cost as much as the one-pass mixing they feed (never modified in place)."""
    pos = pseudo_positions(start, n_tokens, n_pseudo, positions, device)  # (N*P,)
    per_token = n_pseudo if positions == "virtual" else 1
    return rope_cos_sin(pos, head_dim, rope_theta, dtype, None, per_token)


def mix_rope(
    x: torch.Tensor,
    alpha: torch.Tensor,
    start: int,
    rope_theta: float | None,
    positions: str,
    rope_tables: RopeTables | None = None,
    rope_scaling: dict | None = None,
) -> torch.Tensor:
    """``rope_pseudo(mix_heads(x, alpha), start, ...)``: mix, interleave and rotate.

    On CPU with the compiled library it is one pass (``iha.backends.mixing``).

    Args:
        x (Tensor): (B, M, N, d) per-head queries or keys.
        alpha (Tensor): (M, M', P) mixing weights [source head, target head, p].
        start (int): absolute index of the first token.
        rope_theta (float or None): RoPE base, or ``None`` (no RoPE unless ``rope_tables``).
        positions (str): ``"virtual"`` or ``"token"`` (see :func:`rope_pseudo`).
        rope_tables (callable, optional): see :func:`rope_pseudo`. Default: ``None``.
        rope_scaling (dict, optional): see :func:`rope_pseudo`. Default: ``None``.

    Returns:
        Tensor: (B, M', N*P, d).

    Example::

        >>> import torch
        >>> from iha.functional import mix_heads, mix_rope, rope_pseudo
        >>> x, a = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(2, 2, 2).double()
        >>> want = rope_pseudo(mix_heads(x, a), 5, 2, 10000.0, "virtual")
        >>> torch.allclose(mix_rope(x, a, 5, 10000.0, "virtual"), want)
        True
    """
    P = alpha.shape[-1]
    if fused_mixing.usable(x) and (rope_tables is not None or rope_theta is not None):
        cos, sin = _pseudo_tables(
            x, x.shape[2], start, P, rope_theta, positions, rope_tables, rope_scaling
        )
        return fused_mixing.mix_rope(x, alpha, cos, sin)
    return rope_pseudo(
        mix_heads(x, alpha), start, P, rope_theta, positions, rope_tables, rope_scaling
    )


def _collapse_matrix(collapse: torch.Tensor, n_pseudo: int) -> torch.Tensor:
    """(H, P) per-head or (H, H*P) global collapse as R (H, H, P): y[h] = sum R[h, k, p] o[k, p]."""
    H = collapse.shape[0]
    if collapse.shape[1] != n_pseudo:
        return collapse.view(H, H, n_pseudo)
    return torch.diag_embed(collapse.T).permute(1, 2, 0)  # (H, P) -> (H, H, P), diagonal


def _fuses(q, spec, cache, kernel, backend, dropout_p, attention_mask) -> bool:
    """Whether ``iha.backends.fused`` serves this call: where the attention would run the
    compiled band kernel, without a cache, on a query block long enough to share among threads."""
    return (
        fused_core.enabled()
        and cache is None
        and kernel == "softmax"
        and dropout_p == 0.0
        and q.shape[2] * spec.n_pseudo >= fused_core.MIN_QUERY_ROWS
        and choose_backend(backend, spec, kernel, attention_mask, q.device) == "band"
        and fused_mixing.usable(q)
    )


def collapse_heads(o: torch.Tensor, collapse: torch.Tensor, n_pseudo: int) -> torch.Tensor:
    """De-interleave and collapse the pseudo outputs back to H heads (docs/spec.md step 6).

    Per-head: ``y[b, h, n] = sum_p R[h, p] * o[b, h, n*P + p]``; global:
    ``y[b, h, n] = sum_{h', p} R[h, h'*P + p] * o[b, h', n*P + p]``.

    Args:
        o (Tensor): (B, H, N*P, d) attention outputs of the pseudo queries.
        collapse (Tensor): R, (H, P) per-head or (H, H*P) global.
        n_pseudo (int): pseudo-heads P per head.

    Returns:
        Tensor: (B, H, N, d).

    Example::

        >>> import torch
        >>> from iha.functional import collapse_heads
        >>> o = torch.randn(1, 2, 6, 4)
        >>> last = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # per-head: keep copy p = 1
        >>> torch.equal(collapse_heads(o, last, 2), o[:, :, 1::2])
        True
    """
    B, H, L, d = o.shape
    if fused_mixing.usable(o):  # one pass, no permuting copy (CPU, compiled library)
        return fused_mixing.collapse(o, _collapse_matrix(collapse, n_pseudo))
    o5 = o.view(B, H, L // n_pseudo, n_pseudo, d)  # (B, H, N, P, d)
    R = collapse.to(o.dtype)
    if R.shape[1] == n_pseudo:
        return torch.einsum("bhnpd,hp->bhnd", o5, R)
    return torch.einsum("bknpd,hkp->bhnd", o5, R.view(H, H, n_pseudo))


# Global causal masks on CPU: the band kernel's block of 64 query rows scores every key its rows
# reach in one pass; up to these interleaved key counts it measured 0.5-0.97x the time of
# "blocked" (forward and forward + backward, 1 and 2 threads), beyond them 1.03-1.17x
# (docs/benchmarks.md, "Global masks on the band kernel").
BAND_MAX_KEYS = 4096
BAND_MAX_KEYS_FLAT = 2048


def choose_backend(
    backend: str,
    spec: MaskSpec,
    kernel: str,
    attention_mask: torch.Tensor | None,
    device: torch.device | None = None,
) -> str:
    """The backend ``"auto"`` resolves to for these inputs (measured: docs/benchmarks.md).

    - ``kernel="linear"``: "reference" (the only one that implements it).
    - plain causal flat mask or no mask, without padding: "sdpa" (``is_causal`` / unmasked
      fused kernel; on CUDA the flash kernel).
    - everything else (token mask, windows, padding, a query block against a longer cache):
      on CUDA "flex" (compiled FlexAttention with a block mask) or, for decoding (at most 64
      query rows: the dense mask is tiny), "sdpa"; on CPU "band" (the compiled band kernel; it
      runs "blocked" itself where it is unavailable) for sliding windows, at the cost of the
      window's FLOPs, and for global causal masks over more than 64 query rows whose rows reach
      at most ``BAND_MAX_KEYS`` interleaved keys (``BAND_MAX_KEYS_FLAT`` for the flat mask with
      padding or a cached prefix), where a block's scores stay in cache; "blocked" for the rest
      (exact pieces without a dense mask; few query rows as one piece with a small mask).

    Args:
        backend (str): ``"auto"``, or a backend name (returned as is).
        spec (MaskSpec): the mask (``iha.masks.MaskSpec``: mode, P, query and key tokens,
            offsets, window).
        kernel (str): ``"softmax"`` or ``"linear"``.
        attention_mask (Tensor, optional): (B, N_keys) padding mask, True = real token, or
            ``None``.
        device (torch.device, optional): where the call runs. Default: ``None`` (CPU).

    Returns:
        str: one of ``"reference"``, ``"sdpa"``, ``"blocked"``, ``"flex"``, ``"band"``.

    Example::

        >>> from iha.functional import choose_backend
        >>> from iha.masks import MaskSpec
        >>> choose_backend("auto", MaskSpec("flat", 2, 16, 16), "softmax", None)
        'sdpa'
        >>> choose_backend("auto", MaskSpec("flat", 2, 16, 16, window=4), "softmax", None)
        'band'
        >>> choose_backend("auto", MaskSpec("token", 2, 512, 512), "softmax", None)  # 1024 keys
        'band'
        >>> choose_backend("auto", MaskSpec("token", 2, 1, 512, q_start=511), "softmax", None)
        'blocked'
    """
    if backend != "auto":
        return backend
    if kernel != "softmax":
        return "reference"
    if attention_mask is None and (spec.is_plain_causal or spec.is_full):
        return "sdpa"
    if device is not None and device.type == "cuda":
        return "sdpa" if spec.n_q * spec.n_pseudo <= 64 else "flex"
    if device is not None and device.type != "cpu":
        return "blocked"
    if spec.window is not None:
        return "band"
    keys = spec.n_k * spec.n_pseudo
    limit = BAND_MAX_KEYS if spec.mode == "token" else BAND_MAX_KEYS_FLAT
    if spec.mode != "none" and spec.n_q * spec.n_pseudo > 64 and keys <= limit:
        return "band"
    return "blocked"


def attend(
    qt: torch.Tensor,  # (B, H, Nq*P, d)
    kt: torch.Tensor,  # (B, G, Nk*P, d)
    vt: torch.Tensor,  # (B, G, Nk*P, d)
    spec: MaskSpec,
    *,
    scale: float,
    attention_mask: torch.Tensor | None = None,
    kernel: str = "softmax",
    backend: str = "auto",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Masked attention of pseudo queries over pseudo keys (docs/spec.md steps 4-5).

    Args:
        qt (Tensor): (B, H, Nq*P, d) pseudo queries, mixed, interleaved and rotated.
        kt (Tensor): (B, G, Nk*P, d) pseudo keys (G divides H), bottom-right aligned with the
            queries.
        vt (Tensor): (B, G, Nk*P, dv) pseudo values.
        spec (MaskSpec): which pseudo keys each pseudo query sees (``iha.masks.MaskSpec``).
        scale (float): softmax scale (keyword-only).
        attention_mask (Tensor, optional): (B, Nk) bool, True = real token; a padded token
            hides its P pseudo keys. Default: ``None``.
        kernel (str): ``"softmax"`` (default) or ``"linear"``.
        backend (str): ``"auto"`` (default, :func:`choose_backend`) or a backend name.
        dropout_p (float): dropout on the attention weights. Default: ``0.0``.

    Returns:
        Tensor: (B, H, Nq*P, dv). A query with no visible key gives zeros.

    Example::

        >>> import torch
        >>> from iha.functional import attend
        >>> from iha.masks import MaskSpec
        >>> qt, kt, vt = (torch.randn(1, 2, 8, 4) for _ in range(3))
        >>> attend(qt, kt, vt, MaskSpec("token", 2, 4, 4), scale=0.5).shape
        torch.Size([1, 2, 8, 4])
    """
    name = choose_backend(backend, spec, kernel, attention_mask, qt.device)
    if qt.shape[2] == 0:  # no query rows: some backends' kernels divide by the row count
        return qt.new_zeros((*qt.shape[:3], vt.shape[3]))
    return BACKENDS[name](
        qt,
        kt,
        vt,
        spec,
        scale=scale,
        attention_mask=attention_mask,
        kernel=kernel,
        dropout_p=dropout_p,
    )


def check_options(
    *, mask: str, window: int | None, positions: str, kernel: str = "softmax", backend: str = "auto"
) -> None:
    """Validate the keyword options shared by the functional core and the module.

    Args:
        mask (str): ``"flat"``, ``"token"`` or ``"none"``.
        window (int or None): a sliding window of >= 1 tokens (not with ``"none"``), or None.
        positions (str): ``"virtual"`` or ``"token"``.
        kernel (str): ``"softmax"`` or ``"linear"``. Default: ``"softmax"``.
        backend (str): ``"auto"``, ``"reference"``, ``"sdpa"``, ``"blocked"``, ``"flex"`` or
            ``"band"``. Default: ``"auto"``.

    Raises:
        ValueError: naming the first option that is not accepted.

    Example::

        >>> from iha.functional import check_options
        >>> check_options(mask="flat", window=4, positions="virtual")
        >>> check_options(mask="causal", window=None, positions="virtual")
        Traceback (most recent call last):
        ...
        ValueError: mask='causal' is not supported; expected one of ['flat', 'token', 'none']
    """
    check_choice("mask", mask, MASK_MODES)
    check_choice("positions", positions, POSITION_MODES)
    check_choice("kernel", kernel, KERNELS)
    check_choice("backend", backend, BACKEND_NAMES)
    check_window(window, mask)


def _check_inputs(q, k, v, alpha_q, alpha_k, alpha_v, collapse, attention_mask, offset):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor (B, heads, N, d), got {_shape(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, Nq, d = q.shape
    if k.shape != v.shape:
        raise ValueError(
            f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if k.shape[0] != B or k.shape[3] != d:
        raise ValueError(f"k {tuple(k.shape)} must match q {tuple(q.shape)} in batch and head dim")
    G, Nk = k.shape[1], k.shape[2]
    if H % G:
        raise ValueError(f"k has {G} heads, which must divide the {H} query heads")
    if alpha_q.dim() != 3 or alpha_q.shape[:2] != (H, H):
        raise ValueError(f"alpha_q must be (H, H, P) = ({H}, {H}, P), got {tuple(alpha_q.shape)}")
    P = alpha_q.shape[2]
    for name, a in (("alpha_k", alpha_k), ("alpha_v", alpha_v)):
        if tuple(a.shape) != (G, G, P):
            raise ValueError(f"{name} must be (G, G, P) = ({G}, {G}, {P}), got {tuple(a.shape)}")
    if collapse.dim() != 2 or collapse.shape[0] != H or collapse.shape[1] not in (P, H * P):
        raise ValueError(
            f"collapse must be (H, P) = ({H}, {P}) or (H, H*P) = ({H}, {H * P}), "
            f"got {tuple(collapse.shape)}"
        )
    if Nk < Nq:
        raise ValueError(f"k covers {Nk} tokens, fewer than the {Nq} query tokens")
    if offset < Nk - Nq:
        raise ValueError(
            f"position_offset={offset} must be >= {Nk - Nq} (keys cover {Nk} tokens ending at the "
            f"last query)"
        )
    if attention_mask is not None and tuple(attention_mask.shape) != (B, Nk):
        raise ValueError(
            f"attention_mask must be (B, N_keys) = ({B}, {Nk}), {CONVENTION}; got "
            f"{tuple(attention_mask.shape)}"
        )
    return P


def _check_cache_call(k: torch.Tensor, n_queries: int, position_offset: int) -> None:
    if k.shape[2] != n_queries:
        raise ValueError(
            f"with a cache, k and v hold the {n_queries} new tokens of q, got {k.shape[2]}"
        )
    if position_offset != 0:
        raise ValueError(
            f"position_offset={position_offset} must be 0 with a cache (the cache holds the offset)"
        )


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def interleaved_head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha_q: torch.Tensor,
    alpha_k: torch.Tensor,
    alpha_v: torch.Tensor,
    collapse: torch.Tensor,
    *,
    mask: str = "flat",
    window: int | None = None,
    rope_theta: float | None = None,
    positions: str = "virtual",
    position_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
    kernel: str = "softmax",
    dropout_p: float = 0.0,
    rope_tables: RopeTables | None = None,
    cache: KVCache | None = None,
    rope_scaling: dict | None = None,
    key_padding_mask: None = None,
) -> torch.Tensor:
    """Interleaved Head Attention on projected tensors (docs/spec.md): mix -> interleave ->
    RoPE -> masked attention -> collapse.

    Args:
        q (Tensor): (B, H, Nq, d) projected queries, not mixed, no RoPE.
        k (Tensor): (B, G, Nk, d) projected keys; G divides H, Nk >= Nq. Without ``cache`` they
            may cover a prefix before q's tokens (keys bottom-right aligned with the queries);
            with ``cache`` they are the new tokens only (Nk = Nq).
        v (Tensor): (B, G, Nk, d) projected values, like ``k``.
        alpha_q (Tensor): (H, H, P) query mixing, indexed [source head, target head, p].
        alpha_k (Tensor): (G, G, P) key mixing.
        alpha_v (Tensor): (G, G, P) value mixing.
        collapse (Tensor): (H, P) per-head or (H, H*P) global collapse.
        mask (str): ``"flat"`` (default; causal on the interleaved N*P sequence),
            ``"token"`` (block causal: the P copies of a token see each other and earlier
            tokens) or ``"none"``.
        window (int, optional): sliding window in original tokens (``window*P`` pseudo keys
            under ``"flat"``). Default: ``None``.
        rope_theta (float, optional): RoPE base. Default: ``None`` (no RoPE).
        positions (str): RoPE position of pseudo token (n, p): ``"virtual"`` (default,
            ``n*P + p``) or ``"token"`` (``n``).
        position_offset (int): absolute token index of q's first token; at least Nk - Nq.
            Default: 0. Must be 0 with ``cache`` (the cache knows the offset).
        attention_mask (Tensor, optional): (B, Nk) Hugging Face padding mask over the key
            tokens: 1 / ``True`` = real token, 0 / ``False`` = padding. Bool, or integers 0 and
            1; floats and other values raise ``ValueError``. With ``cache``: the new tokens'
            (B, Nq). Default: ``None``.
        scale (float, optional): softmax scale. Default: ``None`` (1/sqrt(d)).
        backend (str): ``"auto"`` (default), ``"reference"``, ``"sdpa"``, ``"blocked"``,
            ``"flex"`` or ``"band"``; all compute the same function (:func:`choose_backend`).
        kernel (str): ``"softmax"`` (default), or ``"linear"`` (masked scores used as weights;
            for the theory; ``"reference"`` backend).
        dropout_p (float): dropout on the attention weights (pass 0 in evaluation). Default: 0.
        rope_tables (callable, optional): positions (L,) -> (cos, sin), each (L, d), used
            instead of ``rope_theta`` (e.g. a pretrained model's rotary embedding).
            Default: ``None``.
        cache (KVCache, optional): k, v (and the padding) of the new tokens are appended to
            it and q attends over everything it holds. Policy ``"raw"`` stores k, v as given
            and mixes and rotates the whole cache at every call; ``"pseudo"`` stores them mixed
            and rotated. Default: ``None``.
        rope_scaling (dict, optional): a ``transformers``-style RoPE scaling rule
            (``iha.rope``), lengths in tokens; under virtual positions they are multiplied by P
            (:func:`rope_pseudo`). Default: ``None``.
        key_padding_mask: not accepted; raises ``TypeError`` naming ``attention_mask``.

    Returns:
        Tensor: (B, H, Nq, d) collapsed per-head outputs, before any output projection.

    Example::

        >>> import torch
        >>> from iha.functional import interleaved_head_attention
        >>> B, H, G, N, d, P = 2, 4, 2, 6, 8, 2
        >>> q, k, v = torch.randn(B, H, N, d), torch.randn(B, G, N, d), torch.randn(B, G, N, d)
        >>> a_q, a_k, a_v = torch.randn(H, H, P), torch.randn(G, G, P), torch.randn(G, G, P)
        >>> R = torch.randn(H, H * P)  # global collapse
        >>> keep = torch.ones(B, N, dtype=torch.long)
        >>> keep[1, :2] = 0  # row 1: two padding tokens on the left
        >>> o = interleaved_head_attention(q, k, v, a_q, a_k, a_v, R, mask="token", window=3,
        ...                                rope_theta=10000.0, attention_mask=keep)
        >>> o.shape
        torch.Size([2, 4, 6, 8])
    """
    reject_key_padding_mask(key_padding_mask)
    check_options(mask=mask, window=window, positions=positions, kernel=kernel, backend=backend)
    attention_mask = check_attention_mask(attention_mask)
    P = _check_inputs(
        q, k, v, alpha_q, alpha_k, alpha_v, collapse, attention_mask, position_offset
    )
    if rope_tables is not None and rope_theta is not None:
        raise ValueError("pass rope_theta or rope_tables, not both")
    if rope_tables is not None and rope_scaling is not None:
        raise ValueError("rope_scaling applies to rope_theta's tables; rope_tables bring their own")
    Nq, d = q.shape[2], q.shape[3]
    if Nq == 0:  # an empty step: an empty output, the cache left as it was
        if cache is not None:
            _check_cache_call(k, Nq, position_offset)
        return q.new_zeros(q.shape)

    def rope(x: torch.Tensor, alpha: torch.Tensor, start: int) -> torch.Tensor:
        return mix_rope(x, alpha, start, rope_theta, positions, rope_tables, rope_scaling)

    kt = vt = None
    if cache is not None:
        _check_cache_call(k, Nq, position_offset)
        position_offset = cache.offset
        if cache.policy == "pseudo":  # the new keys are mixed and rotated once, then stored
            kt, vt = rope(k, alpha_k, position_offset), mix_heads(v, alpha_v)
            kt, vt, attention_mask, _ = cache.update(kt, vt, Nq, attention_mask)
        else:
            k, v, attention_mask, _ = cache.update(k, v, Nq, attention_mask)
    Nk = k.shape[2] if kt is None else kt.shape[2] // P  # key tokens, cached prefix included
    k_start = position_offset + Nq - Nk
    spec = MaskSpec(mask, P, Nq, Nk, q_start=position_offset, k_start=k_start, window=window)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    fuses = _fuses(q, spec, cache, kernel, backend, dropout_p, attention_mask)
    if fuses:  # mixing + RoPE of q (and under a window of k, v), attention, collapse in one op
        cos = sin = None
        if rope_tables is not None or rope_theta is not None:
            cos, sin = _pseudo_tables(
                q, Nq, position_offset, P, rope_theta, positions, rope_tables, rope_scaling
            )
        keys = None if attention_mask is None else expand_key_padding(attention_mask, P)
        R = _collapse_matrix(collapse, P)
        if kt is None and fused_core.window_enabled() and fused_core.window_fuses(spec, k):
            return fused_core.fused_window_iha(
                q, alpha_q, k, alpha_k, v, alpha_v, cos, sin, R, spec, scale, keys
            )  # the keys' rows are the queries' (same tokens): the same tables
    if kt is None:
        kt, vt = rope(k, alpha_k, k_start), mix_heads(v, alpha_v)  # (B, G, Nk*P, d)
    if fuses:
        return fused_core.fused_iha(q, alpha_q, cos, sin, kt, vt, R, spec, scale, keys)
    qt = rope(q, alpha_q, position_offset)  # (B, H, Nq*P, d)
    o = attend(
        qt,
        kt,
        vt,
        spec,
        scale=scale,
        attention_mask=attention_mask,
        kernel=kernel,
        backend=backend,
        dropout_p=dropout_p,
    )  # (B, H, Nq*P, d)
    return collapse_heads(o, collapse, P)
