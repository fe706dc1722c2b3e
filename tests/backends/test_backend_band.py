"""The "band" backend (compiled C++ band kernel) against the reference backend.

The reference backend is itself checked against the independent naive oracle
(tests/test_functional.py); these tests reuse that file's ``configs`` strategy and inputs. The
kernel is compiled once per machine (cached); with ``IHA_BAND_KERNEL=0`` these tests check the
fallback only.
"""

from __future__ import annotations

import os
import warnings
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import float32_error_bound
from test_functional import configs, make_inputs

from iha.backends import BACKENDS, band
from iha.backends.band import attend_band, band_attention
from iha.backends.blocked import attend_blocked
from iha.backends.reference import attend_reference
from iha.functional import interleaved_head_attention
from iha.masks import MaskSpec, expand_key_padding

DISABLED = os.environ.get("IHA_BAND_KERNEL") == "0"
needs_kernel = pytest.mark.skipif(DISABLED, reason="IHA_BAND_KERNEL=0: kernel not built")


def _grads(out, args):
    return torch.autograd.grad(out.square().sum(), [a for a in args if a.requires_grad])


def test_band_is_registered_and_the_kernel_builds_here():
    assert BACKENDS["band"] is attend_band
    if not DISABLED:  # a clean clone with g++ and ninja must build it (else: the reason)
        assert band.kernel_available(), band.unavailable_reason()


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(configs(max_tokens=8))
def test_band_matches_reference_float64_forward_and_grad(c):
    # every mask mode, windows, GQA, RoPE, key padding, cached prefixes (bottom-right aligned)
    args, kw = make_inputs(c, requires_grad=True)
    want = interleaved_head_attention(*args, **kw, backend="reference")
    got = interleaved_head_attention(*args, **kw, backend="band")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(_grads(got, args), _grads(want, args)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@st.composite
def band_cases(draw):
    """Longer sequences and windows than ``configs``, any block length, cached prefixes."""
    P = draw(st.integers(1, 4))
    G = draw(st.sampled_from([1, 2]))
    Nq = draw(st.integers(1, 30))
    window = draw(st.one_of(st.none(), st.integers(1, 12)))
    return dict(
        P=P, G=G, H=G * draw(st.sampled_from([1, 3])), W=window, Nq=Nq,
        Nk=Nq + draw(st.sampled_from([0, 0, 1, 7, 13])),
        mode=draw(st.sampled_from(["flat", "token"] + ([] if window else ["none"]))),
        block=draw(st.integers(1, 40)), padding=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(band_cases())
def test_band_kernel_matches_reference_for_every_block_length(c):
    g = torch.Generator().manual_seed(c["seed"])
    P, H, G, d = c["P"], c["H"], c["G"], 4
    Lq, Lk = c["Nq"] * P, c["Nk"] * P
    spec = MaskSpec(c["mode"], P, c["Nq"], c["Nk"], q_start=c["Nk"] - c["Nq"], window=c["W"])
    q = torch.randn(2, H, Lq, d, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, G, Lk, d, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    kpm = torch.rand(2, c["Nk"], generator=g) > 0.3 if c["padding"] else None
    keys = None if kpm is None else expand_key_padding(kpm, P)
    got = band_attention(q, k, v, spec, 0.5, keys, block=c["block"])
    want = attend_reference(q, k, v, spec, scale=0.5, attention_mask=kpm)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(_grads(got, (q, k, v)), _grads(want, (q, k, v))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@needs_kernel
@pytest.mark.parametrize("mask,window,padding", [("flat", 2, False), ("token", 1, True),
                                                 ("token", None, True), ("none", None, False)])
def test_band_gradcheck_small(mask, window, padding):
    g = torch.Generator().manual_seed(5)
    P, H, Nq, Nk = 2, 2, 3, 4
    spec = MaskSpec(mask, P, Nq, Nk, q_start=Nk - Nq, window=window)
    kpm = torch.tensor([[False, True, True, True]]) if padding else None
    q = torch.randn(1, H, Nq * P, 3, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, 1, Nk * P, 3, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    assert torch.autograd.gradcheck(
        lambda *a: attend_band(*a, spec, scale=0.7, attention_mask=kpm), (q, k, v)
    )


@needs_kernel
@settings(max_examples=30, deadline=None)
@given(configs(max_tokens=8))
def test_band_float32_error_within_twice_reference_error(c):
    args64, kw = make_inputs(c)
    exact = interleaved_head_attention(*args64, **kw, backend="reference")
    args32 = [a.float() for a in args64]
    ref = interleaved_head_attention(*args32, **kw, backend="reference")
    got = interleaved_head_attention(*args32, **kw, backend="band")
    ref_err = (ref.double() - exact).abs().max().item()
    err = (got.double() - exact).abs().max().item()
    assert err <= float32_error_bound(ref_err, exact), (err, ref_err)


@needs_kernel
@pytest.mark.parametrize(
    "mode,window,n_prefix,d",
    [("flat", 16, 0, 64), ("token", 8, 0, 64), ("flat", 16, 40, 64), ("flat", 8, 0, 16),
     ("token", None, 0, 64),
     # windows wider than a block: its products split into a common rectangle and triangles
     ("flat", 64, 0, 64), ("token", 32, 24, 64)],
)
def test_band_float32_error_and_gradients_within_twice_reference_at_realistic_sizes(
    mode, window, n_prefix, d
):
    g = torch.Generator().manual_seed(0)
    N, P = 256, 4
    spec = MaskSpec(mode, P, N, N + n_prefix, q_start=n_prefix, window=window)
    q = 3 * torch.randn(1, 4, N * P, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, 4, (N + n_prefix) * P, d, generator=g, dtype=torch.float64)
            for _ in range(2))
    grad = torch.randn(1, 4, N * P, d, generator=g, dtype=torch.float64)

    def run(fn, dtype):
        x = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*x, spec, scale=d**-0.5)
        return [out.double(), *(t.double() for t in torch.autograd.grad(out, x, grad.to(dtype)))]

    exact = run(attend_reference, torch.float64)
    ref = run(attend_reference, torch.float32)
    got = run(attend_band, torch.float32)
    for name, e, r, b in zip(("out", "dq", "dk", "dv"), exact, ref, got):
        ref_err, err = (r - e).abs().max().item(), (b - e).abs().max().item()
        assert err <= float32_error_bound(ref_err, e), (name, err, ref_err)


@needs_kernel
def test_band_fully_masked_rows_are_zero_with_finite_gradients():
    torch.manual_seed(0)
    B, H, N, d, P = 2, 2, 6, 4, 2
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    a = torch.randn(H, H, P, dtype=torch.float64, requires_grad=True)
    R = torch.randn(H, H * P, dtype=torch.float64)
    kpm = torch.ones(B, N, dtype=torch.bool)
    kpm[0, :3] = False  # left padding: the first 3 tokens of sequence 0 see no key
    y = interleaved_head_attention(
        q, k, v, a, a, a, R, mask="token", window=2, attention_mask=kpm, backend="band"
    )
    assert torch.equal(y[0, :, :3], torch.zeros_like(y[0, :, :3]))
    assert y[0, :, 3:].abs().sum() > 0
    y.sum().backward()
    for t in (q, k, v, a):
        assert torch.isfinite(t.grad).all()


@needs_kernel
def test_softmax_exp_is_as_accurate_as_torch_exp_and_exact_at_the_edges():
    # The kernel's own float32 exp for s - max <= 0: relative error against float64 exp within
    # 1 float32 eps wherever the result is a normal float (torch.exp's SLEEF: about 0.5), and
    # exactly 0 for -inf (padded keys) and below float32's range, exactly 1 at 0.
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([
        torch.linspace(-87.0, 0.0, 2**20, dtype=torch.float64),
        -torch.rand(2**18, generator=gen, dtype=torch.float64) * 1e-3,  # near 0: r tiny
        -torch.rand(2**18, generator=gen, dtype=torch.float64) * 20,
        torch.tensor([0.0, -1e-30, -0.3465, -0.3466, -0.6931, -0.6932, -50.5, -86.9]),
    ]).float()  # 1,572,872 values: whole vectors and a scalar tail
    assert band.kernel_available(), band.unavailable_reason()
    y = torch.ops.iha_band.softmax_exp(x)
    ref = torch.exp(x.double())
    normal = ref >= torch.finfo(torch.float32).tiny
    rel = ((y.double() - ref).abs() / ref)[normal].max().item()
    assert rel <= torch.finfo(torch.float32).eps, rel
    assert y[x == 0].eq(1).all()
    edges = torch.tensor([-float("inf"), -200.0, -110.0, -105.0] + [-float("inf")] * 12 + [-1e4])
    assert torch.ops.iha_band.softmax_exp(edges).eq(0).all()
    tiny = torch.linspace(-103.0, -87.5, 1024)  # subnormal results: within one subnormal step
    err = (torch.ops.iha_band.softmax_exp(tiny).double() - torch.exp(tiny.double())).abs().max()
    assert err <= 2 * 2.0**-149


def test_band_falls_back_to_blocked_with_a_warning_when_the_kernel_is_unavailable():
    torch.manual_seed(2)
    spec = MaskSpec("flat", 2, 40, 40, window=5)
    q, k, v = (torch.randn(1, 2, 80, 8, dtype=torch.float64) for _ in range(3))
    state = {"ok": False, "reason": "no compiler (test)"}
    with mock.patch.dict(band._state, state, clear=True), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = attend_band(q, k, v, spec, scale=0.3)
    assert any("blocked" in str(x.message) and "no compiler" in str(x.message) for x in w)
    torch.testing.assert_close(got, attend_blocked(q, k, v, spec, scale=0.3), rtol=0, atol=0)


def test_band_serves_other_dtypes_and_dropout_through_blocked():
    torch.manual_seed(3)
    spec = MaskSpec("token", 2, 40, 40, window=4)
    q, k, v = (torch.randn(1, 2, 80, 8, dtype=torch.bfloat16) for _ in range(3))
    got = attend_band(q, k, v, spec, scale=0.3)
    torch.testing.assert_close(got, attend_blocked(q, k, v, spec, scale=0.3), rtol=0, atol=0)
    out = attend_band(q.float(), k.float(), v.float(), spec, scale=0.3, dropout_p=0.5)
    assert out.shape == q.shape and torch.isfinite(out).all()
