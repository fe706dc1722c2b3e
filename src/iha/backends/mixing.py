"""Mixing (+ interleave + RoPE) and collapse in one pass each, from the compiled band kernel's
library (``csrc/band_attention.cpp``; built and cached by ``iha.backends.band``).

In PyTorch these steps are einsums whose outputs need a permuting copy, and RoPE on N*P rows is a
few more passes with temporaries, forward and backward; with the attention at the cost of its
FLOPs they weigh as much as half of it (docs/benchmarks.md). Here each is one pass over the
(B, H, N*P, d) tensor: tiles of tokens are mixed by one small matrix product each (BLAS) in a
buffer that stays in cache, and only the copy between that buffer and the interleaved layout,
with the rotation, is elementwise. Used by ``iha.functional`` on CPU float32/float64 when the
library is available, also under ``torch.compile`` (as opaque ops: fewer kernels for inductor to
generate, a shorter first compile); the PyTorch version stays the reference they are tested
against."""

from __future__ import annotations

import torch

from iha.backends import band
from iha.backends.band import needs_grad


def usable(x: torch.Tensor) -> bool:
    """Whether the one-pass kernels serve ``x`` (CPU float32/float64, library built)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    return band.kernel_available()


def _require() -> None:
    if not band.kernel_available():
        raise RuntimeError(f"the compiled library is unavailable: {band.unavailable_reason()}")


class _Spread(torch.autograd.Function):
    """out[b, h, n*P + p] = rope(sum_m alpha[m, h, p] x[b, m, n]) at table row n*P + p."""

    @staticmethod
    def forward(ctx, x, alpha, cos, sin):
        ctx.save_for_backward(x, alpha, cos, sin)
        return torch.ops.iha_band.spread(x, alpha, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        x, alpha, cos, sin = ctx.saved_tensors
        want_alpha = ctx.needs_input_grad[1]
        gx, galpha = torch.ops.iha_band.gather(
            grad.contiguous(), alpha, x if want_alpha else None, cos, sin
        )
        return gx, galpha if want_alpha else None, None, None


class _Collapse(torch.autograd.Function):
    """y[b, h, n] = sum_{k, p} R[h, k, p] o[b, k, n*P + p]."""

    @staticmethod
    def forward(ctx, o, R):
        ctx.save_for_backward(o, R)
        y, _ = torch.ops.iha_band.gather(o, R, None, None, None)
        return y

    @staticmethod
    def backward(ctx, grad):
        o, R = ctx.saved_tensors
        grad = grad.contiguous()
        go = torch.ops.iha_band.spread(grad, R, None, None) if ctx.needs_input_grad[0] else None
        gR = None
        if ctx.needs_input_grad[1]:  # gR[h, k, p] = sum_{b, n} grad[b, h, n] . o[b, k, n*P + p]
            _, gR = torch.ops.iha_band.gather(o, R, grad, None, None, False)
        return go, gR


def mix_rope(
    x: torch.Tensor,  # (B, M, N, d)
    alpha: torch.Tensor,  # (M, M', P)
    cos: torch.Tensor | None = None,  # (N*P, d)
    sin: torch.Tensor | None = None,  # (N*P, d)
) -> torch.Tensor:
    """Mix heads, interleave and (with tables) rotate in one pass: -> (B, M', N*P, d)."""
    _require()
    if cos is not None:
        cos, sin = cos.to(x.dtype).contiguous(), sin.to(x.dtype).contiguous()
    x, alpha = x.contiguous(), alpha.to(x.dtype).contiguous()
    if not needs_grad(x, alpha):
        return torch.ops.iha_band.spread(x, alpha, cos, sin)
    return _Spread.apply(x, alpha, cos, sin)


def collapse(o: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """De-interleave and collapse (B, H, N*P, d) with R (H, H, P) -> (B, H, N, d)."""
    _require()
    o, R = o.contiguous(), R.to(o.dtype).contiguous()
    if not needs_grad(o, R):
        return torch.ops.iha_band.gather(o, R, None, None, None)[0]
    return _Collapse.apply(o, R)
