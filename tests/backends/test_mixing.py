"""One-pass mixing (+ RoPE) and collapse kernels against the PyTorch einsum path.

``iha.functional`` uses them on CPU whenever the compiled library is available, so the backend
tests compare against a reference that uses them too; these tests pin them to the independent
PyTorch formulation (einsum + ``apply_rope``), forward and gradients, and check the whole
functional with and without them against each other and the naive oracle.
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from oracle import float32_error_bound, oracle_iha
from test_functional import configs, make_inputs

from iha.backends import mixing
from iha.functional import interleaved_head_attention
from iha.rope import apply_rope, rope_cos_sin

pytestmark = pytest.mark.skipif(
    os.environ.get("IHA_BAND_KERNEL") == "0", reason="IHA_BAND_KERNEL=0: library not built"
)


def torch_path():
    """Run ``iha.functional`` on its PyTorch mixing/RoPE/collapse path."""
    return mock.patch.object(mixing, "usable", lambda x: False)


def _grads(out, args):
    return torch.autograd.grad(out.square().sum(), [a for a in args if a.requires_grad])


@pytest.mark.parametrize("rope", [False, True])
# The kernels mix tiles of 1024 // d tokens: the last three cases span several tiles, the last
# one with a shorter last tile (16 + 16 + 5 tokens at d = 64).
@pytest.mark.parametrize(
    "M,H,P,N,d",
    [(2, 2, 3, 5, 4), (4, 4, 1, 7, 8), (1, 1, 4, 6, 2), (3, 2, 2, 70, 16), (2, 3, 2, 64, 32),
     (2, 3, 3, 37, 64)],
)
def test_mix_rope_matches_einsum_and_apply_rope_float64(rope, M, H, P, N, d):
    g = torch.Generator().manual_seed(M * 100 + P * 10 + N)
    x = torch.randn(2, M, N, d, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(M, H, P, generator=g, dtype=torch.float64, requires_grad=True)
    cos = sin = None
    if rope:
        cos, sin = rope_cos_sin(torch.arange(3 * P, (N + 3) * P), d, 100.0, torch.float64)
    got = mixing.mix_rope(x, alpha, cos, sin)
    want = torch.einsum("bmnd,mhp->bhnpd", x, alpha).reshape(2, H, N * P, d)
    if rope:
        want = apply_rope(want, cos, sin)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(_grads(got, (x, alpha)), _grads(want, (x, alpha))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("N,d", [(5, 4), (35, 16), (35, 64)])
def test_collapse_matches_einsum_float64(per_head, N, d):
    g = torch.Generator().manual_seed(3)
    B, H, P = 2, 3, 2
    o = torch.randn(B, H, N * P, d, generator=g, dtype=torch.float64, requires_grad=True)
    R = torch.randn(H, P if per_head else H * P, generator=g, dtype=torch.float64,
                    requires_grad=True)
    from iha.functional import collapse_heads

    got = collapse_heads(o, R, P)
    o5 = o.view(B, H, N, P, d)
    if per_head:
        want = torch.einsum("bhnpd,hp->bhnd", o5, R)
    else:
        want = torch.einsum("bknpd,hkp->bhnd", o5, R.view(H, H, P))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for a, b in zip(_grads(got, (o, R)), _grads(want, (o, R))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_mixing_kernels_gradcheck_small():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    cos, sin = rope_cos_sin(torch.arange(6), 4, 10.0, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: mixing.mix_rope(a, b, cos, sin), (x, alpha))
    o = torch.randn(1, 3, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    R = torch.randn(3, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mixing.collapse, (o, R))


@settings(max_examples=40, deadline=None)
@given(configs(max_tokens=6))
def test_functional_with_and_without_one_pass_kernels_agree_float64(c):
    args, kw = make_inputs(c, requires_grad=True)
    got = interleaved_head_attention(*args, **kw, backend="reference")
    with torch_path():
        want = interleaved_head_attention(*args, **kw, backend="reference")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(_grads(got, args), _grads(want, args)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    plain = {k: v for k, v in kw.items()}
    torch.testing.assert_close(got.detach(), oracle_iha(*[a.detach() for a in args], **plain),
                               rtol=0, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(configs(max_tokens=6))
def test_one_pass_kernels_float32_error_within_twice_the_pytorch_path(c):
    args64, kw = make_inputs(c)
    exact = interleaved_head_attention(*args64, **kw, backend="reference")
    args32 = [a.float() for a in args64]
    with torch_path():
        ref = interleaved_head_attention(*args32, **kw, backend="reference")
    got = interleaved_head_attention(*args32, **kw, backend="reference")
    ref_err = (ref.double() - exact).abs().max().item()
    err = (got.double() - exact).abs().max().item()
    assert err <= float32_error_bound(ref_err, exact), (err, ref_err)
