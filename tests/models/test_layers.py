"""The non-IHA attention layers against independent float64 references of their equations."""

from __future__ import annotations

import math

import pytest
import torch
from oracle import oracle_mha
from refs import diff_reference, talking_heads_reference

from iha.models import DiffAttention, MultiHeadAttention, TalkingHeadsAttention
from iha.models.layers import diff_lambda_init

THETA = 10000.0


def _x(B=2, N=7, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, D, generator=g, dtype=torch.float64)


def _randomize(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return module


def _weights(m):
    return m.q_proj.weight, m.k_proj.weight, m.v_proj.weight, m.o_proj.weight


@pytest.mark.parametrize("window", [None, 3])
def test_mha_matches_float64_reference_with_gqa_window_and_padding(window):
    m = _randomize(MultiHeadAttention(16, 4, 2, window=window, rope_theta=THETA).double())
    x = _x()
    pad = torch.ones(2, 7, dtype=torch.bool)
    pad[1, :3] = False  # left padding
    got = m(x, attention_mask=pad)
    ref = oracle_mha(x, *_weights(m), 4, 2, rope_theta=THETA, window=window, attention_mask=pad)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


def test_talking_heads_matches_float64_reference_of_its_equations():
    m = _randomize(TalkingHeadsAttention(16, 4, 2, rope_theta=THETA).double())
    x = _x()
    pad = torch.ones(2, 7, dtype=torch.bool)
    pad[0, :2] = False
    got = m(x, attention_mask=pad)
    ref = talking_heads_reference(
        x, *_weights(m), m.logits_mix.detach(), m.weights_mix.detach(), 4, 2, THETA, pad
    )
    # padded query rows see no key: zero attention output (the reference zeroes them too)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


def test_talking_heads_with_identity_maps_is_mha():
    m = _randomize(TalkingHeadsAttention(16, 4, 2, rope_theta=THETA).double())
    m.reset_mixing()
    x = _x()
    torch.testing.assert_close(
        m(x), oracle_mha(x, *_weights(m), 4, 2, rope_theta=THETA), atol=1e-10, rtol=1e-10
    )


@pytest.mark.parametrize("layer", [1, 4])
def test_diff_attention_matches_float64_reference_of_its_equations(layer):
    m = _randomize(DiffAttention(16, 4, 2, rope_theta=THETA, layer_index=layer).double())
    with torch.no_grad():  # keep exp(lq . lk) moderate
        for p in (m.lambda_q1, m.lambda_k1, m.lambda_q2, m.lambda_k2):
            p.mul_(0.5)
    x = _x()
    got = m(x)
    ref = diff_reference(
        x,
        *_weights(m),
        m.lambda_q1.detach(),
        m.lambda_k1.detach(),
        m.lambda_q2.detach(),
        m.lambda_k2.detach(),
        m.head_norm.weight.detach(),
        layer,
        4,
        2,
        THETA,
        1e-5,
    )
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


def test_diff_lambda_init_follows_the_paper():
    assert diff_lambda_init(1) == pytest.approx(0.2)
    assert diff_lambda_init(3) == pytest.approx(0.8 - 0.6 * math.exp(-0.6))
    assert diff_lambda_init(100) == pytest.approx(0.8, abs=1e-9)
    with pytest.raises(ValueError, match="layer_index"):
        diff_lambda_init(0)


def test_diff_needs_even_head_counts():
    with pytest.raises(ValueError, match="n_kv_heads=1"):
        DiffAttention(16, 4, 1)
    with pytest.raises(ValueError, match="n_heads=3"):
        DiffAttention(18, 3, 3)


@pytest.mark.parametrize("cls", [MultiHeadAttention, TalkingHeadsAttention, DiffAttention])
def test_layer_cache_decoding_equals_full_forward(cls):
    m = _randomize(cls(16, 4, 2, rope_theta=THETA).double())
    x = _x(N=9)
    full = m(x)
    cache = m.make_cache()
    steps = [m(x[:, :4], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-10, rtol=1e-10)


def test_mixing_parameters_are_tagged_for_param_groups():
    th = TalkingHeadsAttention(16, 4)
    diff = DiffAttention(16, 4)
    assert th.logits_mix._iha_mixing and th.weights_mix._iha_mixing
    assert all(p._iha_mixing for p in diff._lambdas())
    assert not hasattr(MultiHeadAttention(16, 4).q_proj.weight, "_iha_mixing")
