"""The fused IHA core (``iha.backends.fused``: query mixing + RoPE and the collapse inside the
compiled band kernel) against the float64 oracle (tests/oracle.py) and the reference backend.

``iha.functional`` takes the fused path only for query blocks of at least ``MIN_QUERY_ROWS``
rows; the property tests lower that bound to 0 so that the small hypothesis configurations
(every mask mode, windows, GQA, RoPE variants, padding, cached prefixes, both collapses) run
through it, and check that they did.
"""

from __future__ import annotations

import contextlib
import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from oracle import float32_error_bound, oracle_iha
from test_functional import configs, make_inputs

from iha.attention import InterleavedHeadAttention
from iha.backends import fused
from iha.cache import KVCache
from iha.functional import _fuses, interleaved_head_attention
from iha.masks import MaskSpec

pytestmark = pytest.mark.skipif(
    os.environ.get("IHA_BAND_KERNEL") == "0", reason="IHA_BAND_KERNEL=0: kernel not built"
)


class _Counted:
    """Lowers the fused path's length bound and counts its calls: ``calls`` of either fused op,
    ``window_calls`` of the sliding-window one (keys and values mixed in)."""

    def __init__(self, min_rows: int = 0):
        self.calls = 0
        self.window_calls = 0
        self.min_rows = min_rows
        self._real = fused.fused_iha
        self._real_window = fused.fused_window_iha

    def __enter__(self):
        def counted(*a, **k):
            self.calls += 1
            return self._real(*a, **k)

        def counted_window(*a, **k):
            self.calls += 1
            self.window_calls += 1
            return self._real_window(*a, **k)

        self._patches = [
            mock.patch.object(fused, "MIN_QUERY_ROWS", self.min_rows),
            mock.patch.object(fused, "fused_iha", counted),
            mock.patch.object(fused, "fused_window_iha", counted_window),
        ]
        for p in self._patches:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self._patches:
            p.stop()


def _grads(out, args):
    return torch.autograd.grad(out.square().sum(), [a for a in args if a.requires_grad])


@settings(max_examples=60, deadline=None)
@given(configs(max_tokens=8))
def test_fused_matches_oracle_and_reference_gradients_float64(c):
    args, kw = make_inputs(c, requires_grad=True)
    with _Counted() as counted:
        got = interleaved_head_attention(*args, **kw, backend="band")
    assert counted.calls == 1
    want = interleaved_head_attention(*args, **kw, backend="reference")
    oracle = oracle_iha(*[a.detach() for a in args], **kw)
    torch.testing.assert_close(got.detach(), oracle, rtol=0, atol=1e-10)
    for a, b in zip(_grads(got, args), _grads(want, args)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(configs(max_tokens=8))
def test_fused_float32_error_within_twice_reference_error(c):
    args64, kw = make_inputs(c)
    exact = oracle_iha(*args64, **kw)
    args32 = [a.float() for a in args64]
    ref = interleaved_head_attention(*args32, **kw, backend="reference")
    with _Counted() as counted:
        got = interleaved_head_attention(*args32, **kw, backend="band")
    assert counted.calls == 1
    ref_err = (ref.double() - exact).abs().max().item()
    err = (got.double() - exact).abs().max().item()
    assert err <= float32_error_bound(ref_err, exact), (err, ref_err)


# Several blocks of whole tokens, a shorter last block (N not a multiple of the block's tokens),
# head dims that make several mixing tiles, GQA, padding, a prefix of keys before the queries.
@pytest.mark.parametrize(
    "P,N,n_prefix,d,G,mask,window,padding,collapse",
    [
        (4, 37, 0, 64, 2, "flat", 6, False, "global"),
        (3, 50, 5, 16, 1, "token", 4, True, "per_head"),
        (2, 70, 0, 8, 2, "none", None, True, "global"),
        (1, 150, 3, 32, 2, "flat", 20, False, "per_head"),
    ],
)
def test_fused_at_several_blocks_matches_oracle_and_unfused_gradients(
    P, N, n_prefix, d, G, mask, window, padding, collapse
):
    assert N * P > 2 * fused.block_rows(P)  # at least three blocks
    c = dict(B=2, H=2 * G, G=G, P=P, Nq=N, Nk=N + n_prefix, d=d, mask=mask, window=window,
             rope=10000.0, positions="virtual", collapse=collapse, padding=padding,
             offset_extra=1, seed=P * 1000 + N)
    args, kw = make_inputs(c, requires_grad=True)
    with _Counted() as counted:
        got = interleaved_head_attention(*args, **kw, backend="band")
    assert counted.calls == 1
    with _Counted(min_rows=10**9) as none:
        unfused = interleaved_head_attention(*args, **kw, backend="band")
    assert none.calls == 0
    torch.testing.assert_close(got.detach(), oracle_iha(*[a.detach() for a in args], **kw),
                               rtol=0, atol=1e-10)
    for a, b in zip(_grads(got, args), _grads(unfused, args)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_fused_gradcheck_small():
    g = torch.Generator().manual_seed(2)
    B, H, G, P, N, d = 1, 2, 1, 2, 5, 4
    spec = MaskSpec("token", P, N, N, window=2)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    xq, aq, kt, vt, R = r(B, H, N, d), r(H, H, P), r(B, G, N * P, d), r(B, G, N * P, d), r(H, H, P)
    cos = torch.rand(N * P, d, generator=g, dtype=torch.float64)
    sin = torch.rand(N * P, d, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda *a: fused.fused_iha(a[0], a[1], cos, sin, a[2], a[3], a[4], spec, 0.6),
        (xq, aq, kt, vt, R),
    )


def test_the_fused_path_serves_long_band_queries_only():
    spec = MaskSpec("flat", 4, 64, 64, window=4)
    q = torch.zeros(1, 2, 64, 8)
    assert _fuses(q, spec, None, "softmax", "auto", 0.0, None)  # 256 rows, a window: band
    with fused.disabled():
        assert not _fuses(q, spec, None, "softmax", "auto", 0.0, None)
    assert fused.enabled()
    assert not _fuses(q[:, :, :63], MaskSpec("flat", 4, 63, 63, window=4), None, "softmax",
                      "auto", 0.0, None)  # fewer rows than MIN_QUERY_ROWS
    assert not _fuses(q, MaskSpec("flat", 4, 64, 64), None, "softmax", "auto", 0.0, None)  # sdpa
    assert not _fuses(q, spec, KVCache(), "softmax", "auto", 0.0, None)
    assert not _fuses(q, spec, None, "softmax", "auto", 0.1, None)
    assert not _fuses(q, spec, None, "linear", "auto", 0.0, None)
    assert not _fuses(q, spec, None, "softmax", "blocked", 0.0, None)
    assert not _fuses(q.to(torch.bfloat16), spec, None, "softmax", "auto", 0.0, None)


def test_fused_op_rejects_blocks_that_split_tokens():
    spec = MaskSpec("flat", 3, 8, 8, window=2)
    x = torch.randn(1, 2, 8, 4)
    kt = torch.randn(1, 2, 24, 4)
    args = (x, torch.randn(2, 2, 3), None, None, kt, kt, None, torch.randn(2, 2, 3),
            0, 3, 2, 0.5)
    with pytest.raises(RuntimeError, match="multiple of P"):
        torch.ops.iha_band.fused_forward(*args, 4)
    assert spec.n_pseudo == 3 and fused.block_rows(3) % 3 == 0


def test_module_training_step_takes_the_fused_path_under_compile():
    torch.manual_seed(0)
    m = InterleavedHeadAttention(16, 2, n_pseudo=2, mask="flat", window=3).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    want = m(x)
    want_grads = torch.autograd.grad(want.square().sum(), list(m.parameters()))
    torch._dynamo.reset()
    with _Counted() as counted:
        compiled = torch.compile(m, backend="aot_eager")
        got = compiled(x)
        got_grads = torch.autograd.grad(got.square().sum(), list(m.parameters()))
    torch._dynamo.reset()
    assert counted.calls >= 1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _window_case(B, P, N, d, G, mask, window, padding, collapse, n_prefix=0):
    c = dict(B=B, H=2 * G, G=G, P=P, Nq=N, Nk=N + n_prefix, d=d, mask=mask, window=window,
             rope=10000.0, positions="virtual", collapse=collapse, padding=padding,
             offset_extra=1, seed=P * 1000 + N + d)
    return c


# A sliding window over the queries' own tokens takes the fused window path (keys and values
# mixed into per-thread rings, their gradients gathered as blocks advance): several blocks,
# GQA, padding, windows of one token and wider than the sequence, batches, 1 to 3 threads (a
# thread's first block adds to key tokens of the thread before it).
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "B,P,N,d,G,mask,window,padding,collapse",
    [
        (2, 4, 37, 64, 2, "flat", 6, False, "global"),
        (2, 3, 50, 16, 1, "token", 4, True, "per_head"),
        (1, 1, 150, 32, 2, "flat", 20, False, "per_head"),
        (3, 2, 90, 8, 2, "token", 1, True, "global"),
        (1, 5, 40, 8, 1, "flat", 100, False, "global"),
    ],
)
def test_fused_window_matches_oracle_and_spread_path_gradients(
    threads, B, P, N, d, G, mask, window, padding, collapse
):
    c = _window_case(B, P, N, d, G, mask, window, padding, collapse)
    args, kw = make_inputs(c, requires_grad=True)
    with _threads(threads):
        with _Counted() as counted:
            got = interleaved_head_attention(*args, **kw, backend="band")
        assert (counted.calls, counted.window_calls) == (1, 1)
        with _Counted() as spread, fused.window_disabled():
            want = interleaved_head_attention(*args, **kw, backend="band")
        assert (spread.calls, spread.window_calls) == (1, 0)
        got_grads, want_grads = _grads(got, args), _grads(want, args)
    torch.testing.assert_close(got.detach(), oracle_iha(*[a.detach() for a in args], **kw),
                               rtol=0, atol=1e-10)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mask,P,window", [("flat", 4, 9), ("token", 3, 5)])
@pytest.mark.parametrize("d", [48, 64, 72])
def test_fused_window_float32_error_within_twice_spread_path_error(d, mask, P, window):
    """float32 (the vectorised row mixing: chunks of 64 and 16 lanes and a scalar tail; the
    packed score tiles, whose blocks start off a 16-key boundary under the token mask with P = 3)
    against the float64 result, beside the spread path's float32 error."""
    c = _window_case(2, P, 70, d, 2, mask, window, True, "global")
    args64, kw = make_inputs(c, requires_grad=True)
    want = interleaved_head_attention(*args64, **kw, backend="band")
    want_grads = _grads(want, args64)
    args32 = [a.detach().float().requires_grad_() for a in args64]
    with _threads(2):
        with _Counted() as counted:
            got = interleaved_head_attention(*args32, **kw, backend="band")
        with fused.window_disabled():
            ref = interleaved_head_attention(*args32, **kw, backend="band")
        got_grads, ref_grads = _grads(got, args32), _grads(ref, args32)
    assert counted.window_calls == 1

    def err(a, b):
        return (a.double() - b).abs().max().item() / b.abs().max().item()

    assert err(got.detach(), want.detach()) <= 2 * err(ref.detach(), want.detach()) + 1e-7
    for g, r, w in zip(got_grads, ref_grads, want_grads):
        assert err(g, w) <= 2 * err(r, w) + 1e-7, (err(g, w), err(r, w))


def test_fused_window_leaves_a_cached_prefix_to_the_spread_path():
    c = _window_case(1, 2, 40, 8, 1, "flat", 5, False, "global", n_prefix=3)
    args, kw = make_inputs(c)
    with _Counted() as counted:
        got = interleaved_head_attention(*args, **kw, backend="band")
    assert (counted.calls, counted.window_calls) == (1, 0)
    torch.testing.assert_close(got, oracle_iha(*args, **kw), rtol=0, atol=1e-10)
    assert not fused.window_fuses(MaskSpec("flat", 2, 40, 43, q_start=3, k_start=0, window=5))
    assert not fused.window_fuses(MaskSpec("flat", 2, 40, 40))  # global
    assert not fused.window_fuses(MaskSpec("none", 2, 40, 40, window=5))
    assert fused.window_fuses(MaskSpec("token", 2, 40, 40, q_start=7, k_start=7, window=5))


def test_a_window_too_wide_for_the_rings_takes_the_spread_path():
    # the ring of one thread holds window + 11 blocks of tokens (at most the sequence): with
    # MAX_RING_BYTES lowered below that, the same call runs fused_iha on spread keys and values
    c = _window_case(1, 2, 500, 8, 2, "flat", 30, False, "global")
    args, kw = make_inputs(c)
    spec = MaskSpec("flat", 2, 500, 500, q_start=1, k_start=1, window=30)
    need = fused.ring_bytes(spec, 2, 8, 8)
    assert need == 2 * (30 + 11 * fused.block_rows(2) // 2) * 2 * 8 * 8
    assert fused.window_fuses(spec, args[1])
    want = oracle_iha(*args, **kw)
    for limit, window_calls in ((need, 1), (need - 1, 0)):
        with mock.patch.object(fused, "MAX_RING_BYTES", limit), _Counted() as counted:
            got = interleaved_head_attention(*args, **kw, backend="band")
        assert (counted.calls, counted.window_calls) == (1, window_calls)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_fused_window_gradcheck_small():
    g = torch.Generator().manual_seed(3)
    B, H, G, P, N, d = 2, 2, 1, 2, 9, 4
    spec = MaskSpec("flat", P, N, N, window=2)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    inputs = (r(B, H, N, d), r(H, H, P), r(B, G, N, d), r(G, G, P), r(B, G, N, d), r(G, G, P),
              r(H, H, P))
    cos = torch.rand(N * P, d, generator=g, dtype=torch.float64)
    sin = torch.rand(N * P, d, generator=g, dtype=torch.float64)
    with mock.patch.object(fused, "block_rows", lambda P: 2 * P):  # several blocks of 2 tokens
        assert torch.autograd.gradcheck(
            lambda *a: fused.fused_window_iha(*a[:6], cos, sin, a[6], spec, 0.6), inputs
        )


def test_fused_window_rejects_what_it_cannot_serve():
    x = torch.randn(1, 2, 8, 4)
    a = torch.randn(2, 2, 2)
    with pytest.raises(ValueError, match="window"):
        fused.fused_window_iha(x, a, x, a, x, a, None, None, a, MaskSpec("flat", 2, 8, 8), 0.5)
    ops = torch.ops.iha_band
    with pytest.raises(RuntimeError, match="causal"):
        ops.fused_window_forward(x, a, x, a, x, a, None, None, None, a, 2, 2, 3, 0.5, 4)
    with pytest.raises(RuntimeError, match="xk"):
        ops.fused_window_forward(x, a, x[:, :, :5], a, x, a, None, None, None, a, 0, 2, 3, 0.5, 4)
    with pytest.raises(RuntimeError, match="multiple of P"):
        ops.fused_window_forward(x, a, x, a, x, a, None, None, None, a, 0, 2, 3, 0.5, 3)
    with pytest.raises(RuntimeError, match="key_valid"):
        ops.fused_window_forward(x, a, x, a, x, a, None, None, torch.ones(1, 8, dtype=torch.bool),
                                 a, 0, 2, 3, 0.5, 4)
