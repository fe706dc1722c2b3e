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
_state = {"enabled": True}


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
    if cos is not None:
        cos, sin = cos.to(dtype).contiguous(), sin.to(dtype).contiguous()
    if key_valid is not None:
        key_valid = key_valid.contiguous()
    P = spec.n_pseudo
    args = (
        xq.contiguous(), alpha_q.to(dtype).contiguous(), cos, sin, kt.contiguous(),
        vt.contiguous(), key_valid, R.to(dtype).contiguous(), band.MODES[spec.mode], P,
        0 if spec.window is None else spec.window, float(scale), block_rows(P),
    )
    if not needs_grad(args[0], args[1], args[4], args[5], args[7]):
        return torch.ops.iha_band.fused_forward(*args)[0]  # no graph to record
    return _FusedIHA.apply(*args)
