"""The functional core against an independent naive oracle (tests/oracle.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import float32_error_bound, oracle_iha

from iha.functional import interleaved_head_attention

BACKENDS = ["reference", "sdpa", "auto"]


@st.composite
def configs(draw, max_tokens=5):
    G = draw(st.sampled_from([1, 2]))
    H = G * draw(st.sampled_from([1, 2]))
    P = draw(st.integers(1, 3))
    Nq = draw(st.integers(1, max_tokens))
    extra = draw(st.integers(0, 3))  # cached prefix beyond the queries
    d = draw(st.sampled_from([2, 4]))
    mask = draw(st.sampled_from(["flat", "token", "none"]))
    window = None if mask == "none" else draw(st.one_of(st.none(), st.integers(1, 4)))
    return dict(
        B=draw(st.integers(1, 2)), H=H, G=G, P=P, Nq=Nq, Nk=Nq + extra, d=d, mask=mask,
        window=window, rope=draw(st.sampled_from([None, 10000.0, 7.0])),
        positions=draw(st.sampled_from(["virtual", "token"])),
        collapse=draw(st.sampled_from(["per_head", "global"])),
        padding=draw(st.booleans()), offset_extra=draw(st.integers(0, 2)),
        seed=draw(st.integers(0, 2**16)),
    )


def make_inputs(c, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(c["seed"])
    B, H, G, P, d = c["B"], c["H"], c["G"], c["P"], c["d"]

    def r(*shape):
        t = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        return t.requires_grad_(requires_grad)

    q, k, v = r(B, H, c["Nq"], d), r(B, G, c["Nk"], d), r(B, G, c["Nk"], d)
    aq, ak, av = r(H, H, P), r(G, G, P), r(G, G, P)
    R = r(H, P) if c["collapse"] == "per_head" else r(H, H * P)
    kpm = None
    if c["padding"]:
        kpm = torch.rand(B, c["Nk"], generator=g) > 0.3
    kwargs = dict(
        mask=c["mask"], window=c["window"], rope_theta=c["rope"], positions=c["positions"],
        position_offset=c["Nk"] - c["Nq"] + c["offset_extra"], attention_mask=kpm,
    )
    return (q, k, v, aq, ak, av, R), kwargs


@settings(max_examples=40, deadline=None)
@given(configs())
def test_reference_backend_matches_naive_oracle(c):
    args, kw = make_inputs(c)
    want = oracle_iha(*args, **kw)
    got = interleaved_head_attention(*args, **kw, backend="reference")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(configs(max_tokens=8), st.sampled_from(BACKENDS))
def test_every_backend_matches_reference_float64_forward_and_grad(c, backend):
    args, kw = make_inputs(c, requires_grad=True)
    want = interleaved_head_attention(*args, **kw, backend="reference")
    gw = torch.autograd.grad(want.square().sum(), args)
    got = interleaved_head_attention(*args, **kw, backend=backend)
    gg = torch.autograd.grad(got.square().sum(), args)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(gg, gw):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(configs(max_tokens=8), st.sampled_from(["sdpa", "auto"]))
def test_float32_error_within_twice_reference_error(c, backend):
    args64, kw = make_inputs(c)
    exact = interleaved_head_attention(*args64, **kw, backend="reference")
    args32 = [a.float() for a in args64]
    ref_err = (interleaved_head_attention(*args32, **kw, backend="reference").double()
               - exact).abs().max().item()
    err = (interleaved_head_attention(*args32, **kw, backend=backend).double()
           - exact).abs().max().item()
    assert err <= float32_error_bound(ref_err, exact), (err, ref_err)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize(
    "mask,window", [("flat", None), ("flat", 2), ("token", None), ("token", 1)]
)
def test_gradcheck_small(backend, mask, window):
    c = dict(B=1, H=2, G=1, P=2, Nq=3, Nk=3, d=2, mask=mask, window=window, rope=100.0,
             positions="virtual", collapse="global", padding=False, offset_extra=0, seed=3)
    args, kw = make_inputs(c, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: interleaved_head_attention(*a, **kw, backend=backend), args
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mask", ["flat", "token", "none"])
def test_p1_identity_mixing_is_standard_mha(backend, mask):
    torch.manual_seed(0)
    B, H, N, d = 2, 3, 6, 4
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64) for _ in range(3))
    eye = torch.eye(H, dtype=torch.float64)[:, :, None]
    got = interleaved_head_attention(q, k, v, eye, eye, eye, torch.ones(H, 1, dtype=torch.float64),
                                     mask=mask, backend=backend)
    s = q @ k.transpose(-1, -2) / d**0.5
    if mask != "none":
        s = s.masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), float("-inf"))
    want = torch.softmax(s, -1) @ v
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_rows_are_zero_with_finite_gradients(backend):
    torch.manual_seed(0)
    B, H, N, d, P = 2, 2, 4, 4, 2
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    a = torch.randn(H, H, P, dtype=torch.float64, requires_grad=True)
    R = torch.randn(H, H * P, dtype=torch.float64)
    kpm = torch.tensor([[False, False, True, True], [True, True, True, True]])  # left padding
    y = interleaved_head_attention(q, k, v, a, a, a, R, attention_mask=kpm, backend=backend)
    assert torch.equal(y[0, :, :2], torch.zeros_like(y[0, :, :2]))
    assert y[0, :, 2:].abs().sum() > 0
    y.sum().backward()
    for t in (q, k, v, a):
        assert torch.isfinite(t.grad).all()


def test_sdpa_flat_mask_without_window_builds_no_dense_mask(monkeypatch):
    from iha.masks import MaskSpec

    def boom(self, device=None):
        raise AssertionError("dense mask built")

    monkeypatch.setattr(MaskSpec, "allowed", boom)
    q, k, v = (torch.randn(1, 2, 8, 4) for _ in range(3))
    a = torch.eye(2)[:, :, None].repeat(1, 1, 3)
    interleaved_head_attention(q, k, v, a, a, a, torch.ones(2, 3), backend="sdpa")
    interleaved_head_attention(q, k, v, a, a, a, torch.ones(2, 3), mask="none", backend="auto")


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(mask="causal"), "mask"),
        (dict(window=0), "window"),
        (dict(window=2, mask="none"), "window"),
        (dict(positions="absolute"), "positions"),
        (dict(backend="flash3"), "backend"),
        (dict(kernel="relu"), "kernel"),
        (dict(position_offset=-1), "position_offset"),
    ],
)
def test_bad_options_raise_value_error_naming_argument(kwargs, needle):
    q, k, v = (torch.randn(1, 2, 3, 4) for _ in range(3))
    a = torch.eye(2)[:, :, None]
    with pytest.raises(ValueError, match=needle):
        interleaved_head_attention(q, k, v, a, a, a, torch.ones(2, 1), **kwargs)


def test_bad_shapes_and_dtypes_raise_value_error():
    q, k, v = (torch.randn(1, 4, 3, 4) for _ in range(3))
    a = torch.eye(4)[:, :, None]
    R = torch.ones(4, 1)
    with pytest.raises(ValueError, match="alpha_q"):
        interleaved_head_attention(q, k, v, a[:3, :3], a, a, R)
    with pytest.raises(ValueError, match="alpha_k"):
        interleaved_head_attention(q, k, v, a, a.repeat(1, 1, 2), a, R)
    with pytest.raises(ValueError, match="collapse"):
        interleaved_head_attention(q, k, v, a, a, a, torch.ones(4, 3))
    with pytest.raises(ValueError, match="dtype"):
        interleaved_head_attention(q, k.double(), v, a, a, a, R)
    with pytest.raises(ValueError, match="divide"):
        k3 = torch.randn(1, 3, 3, 4)
        interleaved_head_attention(q, k3, k3, a, a[:3, :3], a[:3, :3], R)
    with pytest.raises(ValueError, match="attention_mask"):
        interleaved_head_attention(q, k, v, a, a, a, R, attention_mask=torch.ones(1, 3))


def test_attention_mask_accepts_integer_refuses_float_and_the_old_keyword():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 3, 4, dtype=torch.float64) for _ in range(3))
    a = torch.randn(2, 2, 2, dtype=torch.float64)
    R = torch.randn(2, 4, dtype=torch.float64)
    keep = torch.tensor([[False, True, True], [True, True, True]])
    want = interleaved_head_attention(q, k, v, a, a, a, R, attention_mask=keep)
    got = interleaved_head_attention(q, k, v, a, a, a, R, attention_mask=keep.long())
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="1/True = real token"):
        interleaved_head_attention(q, k, v, a, a, a, R, attention_mask=keep.double())
    with pytest.raises(ValueError, match="only 0 and 1"):
        interleaved_head_attention(q, k, v, a, a, a, R, attention_mask=keep.long() * 3)
    with pytest.raises(TypeError, match="attention_mask"):
        interleaved_head_attention(q, k, v, a, a, a, R, key_padding_mask=keep)
