"""The "blocked" backend (LSE-merged pieces, banded windows) against the reference backend.

The reference backend is itself checked against the independent naive oracle
(tests/test_functional.py); these tests reuse that file's ``configs`` strategy and inputs.
"""

from __future__ import annotations

import contextlib
import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import float32_error_bound
from test_functional import configs, make_inputs

from iha.backends import BACKENDS, blocked
from iha.backends.banded import band_pieces
from iha.backends.blocked import attend_blocked, full_pieces, merged_attention
from iha.backends.reference import attend_reference
from iha.functional import interleaved_head_attention
from iha.masks import MaskSpec, expand_key_padding


def pieces_always():
    """Run every problem as pieces (by default tiny ones run as one dense piece)."""
    return mock.patch.multiple(blocked, DENSE_MAX_ROWS=0, DENSE_MAX_SCORES=0)


def _grads(out, args):
    return torch.autograd.grad(out.square().sum(), [a for a in args if a.requires_grad])


def _assert_matches_reference(c, backend="blocked", atol=1e-10):
    args, kw = make_inputs(c, requires_grad=True)
    want = interleaved_head_attention(*args, **kw, backend="reference")
    got = interleaved_head_attention(*args, **kw, backend=backend)
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
    for a, b in zip(_grads(got, args), _grads(want, args)):
        torch.testing.assert_close(a, b, rtol=0, atol=10 * atol)


def test_blocked_is_registered():
    assert BACKENDS["blocked"] is attend_blocked


@settings(max_examples=40, deadline=None)
@given(configs(max_tokens=8))
def test_blocked_pieces_match_reference_float64_forward_and_grad(c):
    with pieces_always():
        _assert_matches_reference(c)


@settings(max_examples=20, deadline=None)
@given(configs(max_tokens=8))
def test_blocked_small_problems_as_one_dense_piece_match_reference_float64(c):
    _assert_matches_reference(c)


@settings(max_examples=20, deadline=None)
@given(configs(max_tokens=8))
def test_blocked_matmul_path_matches_reference_float64(c):
    # The path used off-CPU (no fused kernel): same pieces, plain matmul forward and backward.
    with mock.patch.object(blocked, "_use_flash", lambda q, v: False), pieces_always():
        _assert_matches_reference(c)


@pytest.mark.parametrize(
    "mode,window,n_prefix,d",
    [("token", None, 0, 64), ("flat", 16, 0, 64), ("token", 8, 0, 64), ("flat", None, 56, 64),
     ("flat", 8, 0, 16), ("token", None, 0, 16)],
)
def test_blocked_float32_error_within_twice_reference_error_at_realistic_sizes(
    mode, window, n_prefix, d
):
    # Merging float32 pieces adds a relative error of about |lse| * 2^-24 per merge; at
    # realistic sizes that stays within the flash-attention rule (2x the reference's error).
    g = torch.Generator().manual_seed(0)
    N, P = 256, 4
    spec = MaskSpec(mode, P, N, N + n_prefix, q_start=n_prefix, window=window)
    q = 3 * torch.randn(1, 4, N * P, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, 4, (N + n_prefix) * P, d, generator=g, dtype=torch.float64)
            for _ in range(2))
    exact = attend_reference(q, k, v, spec, scale=d**-0.5)
    low = [t.float() for t in (q, k, v)]
    ref_err = (attend_reference(*low, spec, scale=d**-0.5).double() - exact).abs().max()
    err = (attend_blocked(*low, spec, scale=d**-0.5).double() - exact).abs().max()
    assert err <= 2 * ref_err, (err, ref_err)


@settings(max_examples=30, deadline=None)
@given(configs(max_tokens=8))
def test_blocked_float32_error_within_twice_reference_error(c):
    args64, kw = make_inputs(c)
    exact = interleaved_head_attention(*args64, **kw, backend="reference")
    args32 = [a.float() for a in args64]
    ref = interleaved_head_attention(*args32, **kw, backend="reference")
    got = interleaved_head_attention(*args32, **kw, backend="blocked")
    ref_err = (ref.double() - exact).abs().max().item()
    err = (got.double() - exact).abs().max().item()
    assert err <= float32_error_bound(ref_err, exact), (err, ref_err)


@st.composite
def band_cases(draw):
    """Longer sequences and windows than ``configs``, any chunk length, cached prefixes."""
    P = draw(st.integers(1, 4))
    W = draw(st.integers(1, 12))
    Nq = draw(st.integers(1, 30))
    return dict(
        P=P, W=W, Nq=Nq, Nk=Nq + draw(st.sampled_from([0, 0, 1, 7, 13])),
        mode=draw(st.sampled_from(["flat", "token"])), chunk=draw(st.integers(1, W)),
        padding=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=40, deadline=None)
@given(band_cases())
def test_banded_pieces_match_reference_for_every_chunk_length(c):
    g = torch.Generator().manual_seed(c["seed"])
    P, H, d = c["P"], 2, 4
    Lq, Lk = c["Nq"] * P, c["Nk"] * P
    spec = MaskSpec(c["mode"], P, c["Nq"], c["Nk"], q_start=c["Nk"] - c["Nq"], window=c["W"])
    q, k, v = (torch.randn(1, H, n, d, generator=g, dtype=torch.float64) for n in (Lq, Lk, Lk))
    for t in (q, k, v):
        t.requires_grad_()
    kpm = torch.rand(1, c["Nk"], generator=g) > 0.3 if c["padding"] else None
    keys = None if kpm is None else expand_key_padding(kpm, P)
    pieces = band_pieces(1, H, Lq, Lk, spec, keys, q.dtype, q.device, chunk=c["chunk"])
    got = merged_attention(q, k, v, pieces, 0.5)
    want = attend_reference(q, k, v, spec, scale=0.5, attention_mask=kpm)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(_grads(got, (q, k, v)), _grads(want, (q, k, v))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mask,window,padding", [("flat", 2, False), ("token", None, True)])
def test_blocked_gradcheck_small(mask, window, padding):
    g = torch.Generator().manual_seed(5)
    P, H, Nq, Nk = 2, 2, 3, 4
    spec = MaskSpec(mask, P, Nq, Nk, q_start=Nk - Nq, window=window)
    kpm = torch.tensor([[False, True, True, True]]) if padding else None
    q = torch.randn(1, H, Nq * P, 2, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, 1, Nk * P, 2, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    with pieces_always():
        assert torch.autograd.gradcheck(
            lambda *a: attend_blocked(*a, spec, scale=0.7, attention_mask=kpm), (q, k, v),
            fast_mode=True,
        )


@pytest.mark.parametrize("as_pieces", [True, False])
@pytest.mark.parametrize("window", [None, 2])
def test_blocked_fully_masked_rows_are_zero_with_finite_gradients(window, as_pieces):
    torch.manual_seed(0)
    B, H, N, d, P = 2, 2, 6, 4, 2
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    a = torch.randn(H, H, P, dtype=torch.float64, requires_grad=True)
    R = torch.randn(H, H * P, dtype=torch.float64)
    kpm = torch.ones(B, N, dtype=torch.bool)
    kpm[0, :3] = False  # left padding: the first 3 tokens of sequence 0 see no key
    with pieces_always() if as_pieces else contextlib.nullcontext():
        y = interleaved_head_attention(
            q, k, v, a, a, a, R, mask="token", window=window, attention_mask=kpm,
            backend="blocked",
        )
    assert torch.equal(y[0, :, :3], torch.zeros_like(y[0, :, :3]))
    assert y[0, :, 3:].abs().sum() > 0
    y.sum().backward()
    for t in (q, k, v, a):
        assert torch.isfinite(t.grad).all()


def test_blocked_value_width_may_differ_from_query_width():
    # The Differential Transformer's values are twice as wide as its queries.
    torch.manual_seed(1)
    spec = MaskSpec("token", 2, 5, 5, window=3)
    q, k = (torch.randn(1, 2, 10, 4, dtype=torch.float64) for _ in range(2))
    v = torch.randn(1, 2, 10, 8, dtype=torch.float64)
    with pieces_always():
        got = attend_blocked(q, k, v, spec, scale=0.5)
    torch.testing.assert_close(got, attend_reference(q, k, v, spec, scale=0.5), rtol=0, atol=1e-12)


def _record_dense_masks(monkeypatch) -> list[int]:
    sizes: list[int] = []
    original = MaskSpec.allowed

    def recording(self, device=None):
        sizes.append(self.n_q * self.n_k * self.n_pseudo**2)
        return original(self, device)

    monkeypatch.setattr(MaskSpec, "allowed", recording)
    return sizes


@pytest.mark.parametrize("mask,window", [("flat", 4), ("token", 4), ("token", None)])
def test_blocked_builds_no_mask_larger_than_a_chunk_band(monkeypatch, mask, window):
    sizes = _record_dense_masks(monkeypatch)
    P, N = 4, 256  # 1024 rows: above the small-problem limit
    q, k, v = (torch.randn(1, 2, N * P, 8) for _ in range(3))
    spec = MaskSpec(mask, P, N, N, window=window)
    attend_blocked(q, k, v, spec, scale=0.3)
    bound = 0 if window is None else 4 * (window * P) ** 2
    assert max(sizes, default=0) <= bound < (N * P) ** 2 // 100


def _scores_computed(pieces, H) -> int:
    """Score entries the pieces evaluate per (batch, head)."""
    total = 0
    for p in pieces:
        rows = p.rows[1] - p.rows[0]
        keys = p.keys[1] - p.keys[0] if p.chunk is None else (p.key_len or p.chunk)
        total += rows * keys
    return total


@pytest.mark.parametrize("mask", ["flat", "token"])
def test_banded_work_is_linear_in_sequence_length(mask):
    # FLOP-matched window of the paper (W = N / (2 P^2)) at fixed W: O(N*P * W*P) scores and
    # masks of O(N*P * chunk) entries, never O((N*P)^2).
    P, W = 4, 16
    work = {}
    for N in (512, 1024, 2048):
        spec = MaskSpec(mask, P, N, N, window=W)
        pieces = band_pieces(1, 8, N * P, N * P, spec, None, torch.float32, torch.device("cpu"))
        work[N] = _scores_computed(pieces, 8)
        assert work[N] <= 1.6 * (N * P) * (W * P)  # within 1.6x of the useful scores
        assert sum(p.mask.numel() for p in pieces if p.mask is not None) <= 2 * (N * P) * W * P
    assert math.isclose(work[2048] - work[1024], 2 * (work[1024] - work[512]), rel_tol=0.01)


def test_token_mask_without_window_is_flat_plus_within_token_pieces():
    spec = MaskSpec("token", 3, 4, 4)
    pieces = full_pieces(1, 2, 12, 12, spec, None, torch.float32, torch.device("cpu"))
    assert [p.causal for p in pieces] == [True, False]
    assert pieces[1].chunk == 3 and tuple(pieces[1].mask.shape) == (1, 1, 3, 3)


def test_blocked_with_dropout_runs_and_matches_shape():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 12, 4) for _ in range(3))
    spec = MaskSpec("token", 3, 4, 4, window=2)
    out = attend_blocked(q, k, v, spec, scale=0.5, dropout_p=0.5)
    assert out.shape == q.shape and torch.isfinite(out).all()
