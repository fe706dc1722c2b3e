"""The one IHA pipeline with what its callers pass in: a RoPE table provider and a KV cache.

``interleaved_head_attention(..., rope_tables=...)`` serves the converted Hugging Face layers (the
model's own rotary embedding) and ``cache=...`` serves the module's two cache policies. Both are
checked against the independent float64 oracle (tests/oracle.py).
"""

from __future__ import annotations

import pytest
import torch
from oracle import oracle_iha

from iha.cache import KVCache
from iha.functional import interleaved_head_attention


def _inputs(B=2, H=4, G=2, N=7, d=4, P=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q, k, v = r(B, H, N, d), r(B, G, N, d), r(B, G, N, d)
    return q, k, v, r(H, H, P), r(G, G, P), r(G, G, P), r(H, H * P)


def _naive_tables(theta: float, d: int, calls: list):
    """cos/sin at the given positions, written out per frequency (no iha.rope code)."""

    def tables(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(positions.clone())
        cols = [positions.double() * theta ** (-2.0 * (i % (d // 2)) / d) for i in range(d)]
        angles = torch.stack(cols, dim=-1)  # (L, d): column i pairs with i + d/2
        return angles.cos().float(), angles.sin().float()  # a provider may return any dtype

    return tables


@pytest.mark.parametrize("positions", ["virtual", "token"])
@pytest.mark.parametrize("prefix", [0, 3])
def test_rope_tables_provider_gives_the_oracle_rope_at_the_spec_positions(positions, prefix):
    q, k, v, aq, ak, av, R = _inputs(N=6)
    q = q[:, :, prefix:]  # queries: the last tokens, keys: the whole prefix
    calls: list = []
    kw = dict(mask="flat", window=3, positions=positions, position_offset=prefix + 2)
    got = interleaved_head_attention(
        q, k, v, aq, ak, av, R, **kw, rope_tables=_naive_tables(500.0, 4, calls)
    )
    want = oracle_iha(q, k, v, aq, ak, av, R, **kw, rope_theta=500.0)
    # float32 tables (what the provider returns) cast to float64: about 1e-7 relative
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert len(calls) == 2  # queries and keys, each rotated once
    without = oracle_iha(q, k, v, aq, ak, av, R, **kw)
    assert (got - without).abs().max() > 1e-2  # the tables were applied


@pytest.mark.parametrize("policy", ["raw", "pseudo"])
@pytest.mark.parametrize("mask,window", [("flat", None), ("token", 2), ("flat", 2)])
def test_cache_calls_chunk_by_chunk_equal_the_oracle_on_the_whole_sequence(policy, mask, window):
    q, k, v, aq, ak, av, R = _inputs(N=7)
    kpm = torch.ones(2, 7, dtype=torch.bool)
    kpm[0, :2] = False  # left padding of row 0
    kw = dict(mask=mask, window=window, rope_theta=100.0, positions="virtual")
    want = oracle_iha(q, k, v, aq, ak, av, R, **kw, attention_mask=kpm)
    cache = KVCache(policy=policy, max_tokens=window)
    outs = []
    for a, b in ((0, 3), (3, 4), (4, 5), (5, 7)):
        outs.append(
            interleaved_head_attention(
                q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], aq, ak, av, R, **kw,
                attention_mask=kpm[:, a:b], cache=cache,
            )
        )  # fmt: skip
    got = torch.cat(outs, dim=2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert cache.offset == 7
    per_token = 3 if policy == "pseudo" else 1  # P pseudo keys per token, or the raw key
    held = 7 if window is None else window
    assert cache.keys.shape[2] == held * per_token


def test_pipeline_arguments_that_contradict_each_other_raise_value_error():
    q, k, v, aq, ak, av, R = _inputs(N=4)
    with pytest.raises(ValueError, match="rope_theta or rope_tables"):
        interleaved_head_attention(
            q, k, v, aq, ak, av, R, rope_theta=10.0, rope_tables=_naive_tables(10.0, 4, [])
        )
    with pytest.raises(ValueError, match="new tokens"):
        interleaved_head_attention(q[:, :, 2:], k, v, aq, ak, av, R, position_offset=2,
                                   cache=KVCache())  # fmt: skip
    with pytest.raises(ValueError, match="position_offset"):
        interleaved_head_attention(q, k, v, aq, ak, av, R, position_offset=3, cache=KVCache())
