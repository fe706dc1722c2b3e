"""IHA on the compiled band kernel with the query side and the collapse fused in.

On the unfused CPU path the mixed and rotated queries (B, H, N*P, d) are written out and read
back by the attention, forward and backward; the attention output is read again by the collapse,
and in the backward the output gradient is spread to (B, H, N*P, d) and the output read once more
for the collapse weights' gradient. Each of those passes moves a tensor P times the size of the
layer's inputs through memory, each new one page-faulted fresh. Here (``fused_forward`` /
``fused_backward`` in ``csrc/band_attention.cpp``) a block of query rows is mixed (one small
matrix product) and rotated in a task buffer just before its attention, its output rows are
collapsed while still in cache, and the backward recomputes a block's query rows and output
gradient rows instead of reading them. Keys and values are still spread once (several blocks
read each key row); the query gradient still goes through the one-pass gather.

Under a causal sliding window (``fused_window_iha``) the keys and values are not spread either:
each thread keeps a ring of the mixed and rotated key and value rows its blocks read, spreading
each token's rows once as the blocks advance (``fused_window_forward``), and the backward
recomputes them the same way, accumulates their gradients in rings of its own and gathers a
token's rows onto the unmixed keys and values as soon as no later block reads them, and the query
gradient a few blocks at a time (``fused_window_backward``). So none of the (B, H, N*P, d)
tensors of the keys, values, their gradients or the query gradient is written out. Each thread
runs a few blocks head by head, so that a head's key and value rows stay in cache from one block
to the next. The blocks' products skip sgemm: a few blocks' keys (and, backward, values) are
packed once per head into 16-key panels for the score products, the products with key and value
rows read the rings' rows directly, and each group of rows (or keys) computes only the part of
the block that its band reaches, instead of the whole block with its two masked triangles (float32
with AVX-512 and float64; float32 without AVX-512 keeps sgemm).

``iha.functional`` uses it where it would run the ``"band"`` kernel on the attention (CPU
float32/float64, softmax, no dropout) without a KV cache, on query blocks of at least
``MIN_QUERY_ROWS`` interleaved rows (shorter ones make too few tasks to share among threads).
Results equal the unfused path's up to float rounding (tests/backends/test_fused.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from iha.backends import band
from iha.backends.band import needs_grad
from iha.masks import MaskSpec

MIN_QUERY_ROWS = 4 * band.BLOCK_ROWS
_state = {"enabled": True, "window": True}


def enabled() -> bool:
    """Whether ``iha.functional`` may take the fused path (see :func:`disabled`)."""
    return _state["enabled"]


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Inside this block ``iha.functional`` runs the unfused path (A/B measurements, checks).
    A process-wide switch, not per thread."""
    old, _state["enabled"] = _state["enabled"], False
    try:
        yield
    finally:
        _state["enabled"] = old


def window_enabled() -> bool:
    """Whether ``iha.functional`` may take :func:`fused_window_iha` under a sliding window (see
    :func:`window_disabled`)."""
    return _state["window"]


@contextlib.contextmanager
def window_disabled() -> Iterator[None]:
    """Inside this block a sliding window runs :func:`fused_iha` on spread keys and values
    instead of :func:`fused_window_iha` (A/B measurements, checks). Process-wide."""
    old, _state["window"] = _state["window"], False
    try:
        yield
    finally:
        _state["window"] = old


def block_rows(n_pseudo: int) -> int:
    """Query rows per block: whole tokens, about ``band.BLOCK_ROWS`` rows."""
    return n_pseudo * max(1, round(band.BLOCK_ROWS / n_pseudo))


class _FusedIHA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xq, alpha_q, cos, sin, kt, vt, key_valid, R, mode, P, window, scale, block):
        y, o, lse = torch.ops.iha_band.fused_forward(
            xq, alpha_q, cos, sin, kt, vt, key_valid, R, mode, P, window, scale, block
        )
        ctx.save_for_backward(xq, alpha_q, cos, sin, kt, vt, o, lse, key_valid, R)
        ctx.options = (mode, P, window, scale, block)
        return y

    @staticmethod
    def backward(ctx, grad):
        xq, alpha_q, cos, sin, kt, vt, o, lse, key_valid, R = ctx.saved_tensors
        dxq, dalpha, dk, dv, dR = torch.ops.iha_band.fused_backward(
            grad.contiguous(), xq, alpha_q, cos, sin, kt, vt, o, lse, key_valid, R, *ctx.options
        )  # dk, dv per query head: (B, H, Lk, d)
        B, H, G = xq.shape[0], alpha_q.shape[1], kt.shape[1]
        if G != H:
            dk = dk.view(B, G, H // G, *dk.shape[2:]).sum(2)
            dv = dv.view(B, G, H // G, *dv.shape[2:]).sum(2)
        want = ctx.needs_input_grad
        return (dxq if want[0] else None, dalpha if want[1] else None, None, None, dk, dv, None,
                dR if want[7] else None, None, None, None, None, None)


def _side_inputs(dtype, cos, sin, key_valid):
    """RoPE tables in the inputs' dtype and the key mask, contiguous (as the ops take them)."""
    if cos is not None:
        cos, sin = cos.to(dtype).contiguous(), sin.to(dtype).contiguous()
    if key_valid is not None:
        key_valid = key_valid.contiguous()
    return cos, sin, key_valid


def fused_iha(
    xq: torch.Tensor,  # (B, H, Nq, d): queries, not mixed, not rotated
    alpha_q: torch.Tensor,  # (H, H, P)
    cos: torch.Tensor | None,  # (Nq*P, d) RoPE tables of the query rows, or None
    sin: torch.Tensor | None,
    kt: torch.Tensor,  # (B, G, Nk*P, d): mixed and rotated keys
    vt: torch.Tensor,  # (B, G, Nk*P, dv): mixed values
    R: torch.Tensor,  # (H, H, P): y[h] = sum_{k, p} R[h, k, p] o[k, pseudo p]
    spec: MaskSpec,
    scale: float,
    key_valid: torch.Tensor | None = None,  # (B, Nk*P) bool, True = real key
) -> torch.Tensor:
    """Mixing + RoPE of q, band attention and collapse as one op: -> (B, H, Nq, dv)."""
    if not band.kernel_available():
        raise RuntimeError(f"the compiled band kernel is unavailable: {band.unavailable_reason()}")
    dtype = xq.dtype
    cos, sin, key_valid = _side_inputs(dtype, cos, sin, key_valid)
    P = spec.n_pseudo
    args = (
        xq.contiguous(), alpha_q.to(dtype).contiguous(), cos, sin, kt.contiguous(),
        vt.contiguous(), key_valid, R.to(dtype).contiguous(), band.MODES[spec.mode], P,
        0 if spec.window is None else spec.window, float(scale), block_rows(P),
    )
    if not needs_grad(args[0], args[1], args[4], args[5], args[7]):
        return torch.ops.iha_band.fused_forward(*args)[0]  # no graph to record
    return _FusedIHA.apply(*args)


class _FusedWindowIHA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, key_valid, R, mode, P,
                window, scale, block):
        y, o, lse = torch.ops.iha_band.fused_window_forward(
            xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, key_valid, R, mode, P, window,
            scale, block,
        )
        ctx.save_for_backward(xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, o, lse,
                              key_valid, R)
        ctx.options = (mode, P, window, scale, block)
        return y

    @staticmethod
    def backward(ctx, grad):
        xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, o, lse, key_valid, R = ctx.saved_tensors
        grads = torch.ops.iha_band.fused_window_backward(
            grad.contiguous(), xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, o, lse,
            key_valid, R, *ctx.options,
        )  # dxq, dalpha_q, dxk, dalpha_k, dxv, dalpha_v, dR
        want = ctx.needs_input_grad
        dxq, daq, dxk, dak, dxv, dav, dR = (g if w else None for g, w in zip(
            grads, (want[0], want[1], want[2], want[3], want[4], want[5], want[9])
        ))
        return dxq, daq, dxk, dak, dxv, dav, None, None, None, dR, None, None, None, None, None


# The most memory one ring of key or value rows (or of their gradients) may take per thread:
# a window too wide for it (each thread would hold most of the sequence's keys four times) runs
# fused_iha on spread keys and values instead.
MAX_RING_BYTES = 64 << 20


def ring_bytes(spec: MaskSpec, kv_heads: int, head_dim: int, itemsize: int) -> int:
    """Bytes of one per-thread ring of :func:`fused_window_iha`, a bound on what
    ``csrc/band_attention.cpp`` allocates: the window, a block with its keys widened to 16 rows
    and eight more blocks of tokens (11 blocks cover the last two), at most the sequence."""
    P, tokens = spec.n_pseudo, block_rows(spec.n_pseudo) // spec.n_pseudo
    span = min(spec.n_k, (spec.window or spec.n_k) + 11 * tokens)
    return kv_heads * span * P * head_dim * itemsize


def window_fuses(spec: MaskSpec, k: torch.Tensor | None = None) -> bool:
    """Whether :func:`fused_window_iha` serves ``spec``: a causal (flat or token) mask under a
    sliding window, keys and queries the same tokens (no cache), and, given the keys ``k``
    (B, G, N, d), rings within ``MAX_RING_BYTES``."""
    return (
        spec.window is not None
        and spec.mode in ("flat", "token")
        and spec.n_q == spec.n_k
        and spec.q_start == spec.k_start
        and (k is None or ring_bytes(spec, k.shape[1], k.shape[3], k.element_size())
             <= MAX_RING_BYTES)
    )


def fused_window_iha(
    xq: torch.Tensor,  # (B, M, N, d): queries, not mixed, not rotated
    alpha_q: torch.Tensor,  # (M, H, P)
    xk: torch.Tensor,  # (B, Mk, N, d): keys, not mixed, not rotated
    alpha_k: torch.Tensor,  # (Mk, G, P)
    xv: torch.Tensor,  # (B, Mk, N, dv): values, not mixed
    alpha_v: torch.Tensor,  # (Mk, G, P)
    cos: torch.Tensor | None,  # (N*P, d) RoPE tables of the pseudo rows (queries' = keys'), or None
    sin: torch.Tensor | None,
    R: torch.Tensor,  # (H, H, P): y[h] = sum_{k, p} R[h, k, p] o[k, pseudo p]
    spec: MaskSpec,
    scale: float,
    key_valid: torch.Tensor | None = None,  # (B, N*P) bool, True = real key
) -> torch.Tensor:
    """Mixing + RoPE of q, k and v, sliding-window band attention and collapse as one op:
    -> (B, H, N, dv). ``spec`` must pass :func:`window_fuses`."""
    if not band.kernel_available():
        raise RuntimeError(f"the compiled band kernel is unavailable: {band.unavailable_reason()}")
    if not window_fuses(spec):
        raise ValueError(
            f"fused_window_iha needs a flat or token mask under a window over the queries' own "
            f"tokens; got mask={spec.mode!r}, window={spec.window}, {spec.n_q} query and "
            f"{spec.n_k} key tokens"
        )
    dtype = xq.dtype
    cos, sin, key_valid = _side_inputs(dtype, cos, sin, key_valid)
    P = spec.n_pseudo
    args = (
        xq.contiguous(), alpha_q.to(dtype).contiguous(), xk.contiguous(),
        alpha_k.to(dtype).contiguous(), xv.contiguous(), alpha_v.to(dtype).contiguous(), cos,
        sin, key_valid, R.to(dtype).contiguous(), band.MODES[spec.mode], P, spec.window,
        float(scale), block_rows(P),
    )
    if not needs_grad(*args[:6], args[9]):
        return torch.ops.iha_band.fused_window_forward(*args)[0]  # no graph to record
    return _FusedWindowIHA.apply(*args)
