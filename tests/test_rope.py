"""RoPE tables: float64 precision at long virtual positions, and the context-extension rules
checked against ``transformers``' own RoPE initialisation functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iha.rope import check_rope_scaling, rope_cos_sin, rope_inv_freq


def test_float32_tables_within_1e6_of_float64_closed_form_up_to_2_pow_21():
    head_dim, theta = 8, 500000.0
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (d/2,)
    worst = 0.0
    chunk = 2**19
    for start in range(0, 2**21 + 1, chunk):
        stop = min(start + chunk, 2**21 + 1)
        cos, sin = rope_cos_sin(torch.arange(start, stop), head_dim, theta, torch.float32)
        angles = np.arange(start, stop, dtype=np.float64)[:, None] * inv_freq[None, :]
        for table, exact in ((cos, np.cos(angles)), (sin, np.sin(angles))):
            got = table.numpy().astype(np.float64)  # (L, d): both halves hold the same angles
            worst = max(worst, np.abs(got[:, : head_dim // 2] - exact).max())
            worst = max(worst, np.abs(got[:, head_dim // 2 :] - exact).max())
    assert worst < 1e-6, worst


def test_rope_tables_at_a_million_keep_float64_phase_in_bfloat16_and_float64():
    pos = torch.tensor([999_999, 1_310_719])
    inv_freq = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    exact = np.cos(pos.numpy()[:, None].astype(np.float64) * inv_freq[None])
    cos64, _ = rope_cos_sin(pos, 8, 10000.0, torch.float64)
    np.testing.assert_allclose(cos64[:, :4].numpy(), exact, rtol=0, atol=1e-9)
    cos16, _ = rope_cos_sin(pos, 8, 10000.0, torch.bfloat16)
    assert np.abs(cos16[:, :4].double().numpy() - exact).max() <= 2**-8


# ---------------------------------------------------------------- scaling rules vs transformers
transformers = pytest.importorskip("transformers")


def _transformers_rope(rope_scaling: dict, head_dim: int, theta: float, max_positions: int,
                       seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """inv_freq and attention factor from transformers' own rope init function."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(
        hidden_size=2 * head_dim,
        num_attention_heads=2,
        head_dim=head_dim,
        rope_theta=theta,
        rope_scaling=dict(rope_scaling),
        max_position_embeddings=max_positions,
    )
    inv_freq, attention = ROPE_INIT_FUNCTIONS[rope_scaling["rope_type"]](
        config, torch.device("cpu"), seq_len=seq_len
    )
    return inv_freq, float(attention)


def _in_positions(rope_scaling: dict, per_token: int) -> dict:
    """The same rule with its lengths given in RoPE positions instead of tokens."""
    out = dict(rope_scaling)
    if "original_max_position_embeddings" in out:
        out["original_max_position_embeddings"] *= per_token
    return out


RULES = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "linear", "factor": 1.5},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
    {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0,
     "original_max_position_embeddings": 256},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 256,
     "beta_fast": 16, "beta_slow": 2, "truncate": False},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
     "mscale": 0.707, "mscale_all_dim": 1.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
     "attention_factor": 1.25},
]


@pytest.mark.parametrize("per_token", [1, 3])
@pytest.mark.parametrize("head_dim,theta", [(16, 10000.0), (64, 500000.0)])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: "-".join(f"{v}" for v in r.values()))
def test_scaling_rule_matches_transformers_with_lengths_in_positions(rule, head_dim, theta,
                                                                    per_token):
    ours, our_attention = rope_inv_freq(head_dim, theta, rule, positions_per_token=per_token)
    theirs, their_attention = _transformers_rope(
        _in_positions(rule, per_token), head_dim, theta, max_positions=4096 * per_token
    )
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours.float(), theirs, rtol=2e-6, atol=0)
    assert our_attention == pytest.approx(their_attention, rel=1e-12)


@pytest.mark.parametrize("per_token", [1, 4])
@pytest.mark.parametrize("tokens", [10, 64, 65, 200, 1000])
def test_dynamic_rule_matches_transformers_at_the_current_length(tokens, per_token):
    head_dim, theta, original = 32, 10000.0, 64
    rule = {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": original}
    seq_len = tokens * per_token  # in RoPE positions
    ours, attention = rope_inv_freq(
        head_dim, theta, rule, positions_per_token=per_token, seq_len=seq_len
    )
    # transformers' dynamic rule reads the original length from max_position_embeddings
    theirs, _ = _transformers_rope(
        {"rope_type": "dynamic", "factor": 2.0}, head_dim, theta,
        max_positions=original * per_token, seq_len=seq_len,
    )
    torch.testing.assert_close(ours.float(), theirs, rtol=2e-6, atol=0)
    assert attention == 1.0
    if tokens <= original:  # no change inside the original context
        plain, _ = rope_inv_freq(head_dim, theta)
        torch.testing.assert_close(ours, plain, rtol=1e-12, atol=0)


def test_cos_sin_tables_apply_frequencies_and_attention_factor_in_float64():
    rule = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32}
    head_dim, theta, P = 16, 10000.0, 4
    positions = torch.arange(0, 4096 * P, 7)
    theirs, attention = _transformers_rope(_in_positions(rule, P), head_dim, theta, 4096 * P)
    assert attention > 1.0
    angles = positions.double()[:, None] * theirs.double()[None]  # (L, d/2)
    cos, sin = rope_cos_sin(positions, head_dim, theta, torch.float64, rule, positions_per_token=P)
    # transformers' float32 frequencies differ from ours by ~1 ulp, i.e. <= 1e-7 * angle
    tolerance = 2e-7 * float(angles.max())
    torch.testing.assert_close(cos[:, : head_dim // 2], attention * angles.cos(), rtol=0,
                               atol=tolerance)
    torch.testing.assert_close(sin[:, head_dim // 2 :], attention * angles.sin(), rtol=0,
                               atol=tolerance)


def test_linear_scaling_divides_the_virtual_position():
    rule = {"rope_type": "linear", "factor": 4.0}
    positions = torch.arange(0, 1000, 3)
    scaled = rope_cos_sin(positions, 8, 10000.0, torch.float64, rule, positions_per_token=5)
    inv_freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angles = (positions.double() / 4.0)[:, None] * inv_freq[None]
    torch.testing.assert_close(scaled[0][:, :4], angles.cos(), rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled[1][:, 4:], angles.sin(), rtol=0, atol=1e-12)


def test_dynamic_rule_in_tables_uses_largest_position_plus_one():
    rule = {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16}
    positions = torch.arange(100, 200)  # current length 200 positions
    cos, _ = rope_cos_sin(positions, 8, 10000.0, torch.float64, rule)
    inv_freq, _ = rope_inv_freq(8, 10000.0, rule, seq_len=200)
    expected = (positions.double()[:, None] * inv_freq[None]).cos()
    torch.testing.assert_close(cos[:, :4], expected, rtol=0, atol=1e-12)
    base = 10000.0 * (2.0 * 200 / 16 - 1.0) ** (8 / 6)
    torch.testing.assert_close(inv_freq[1], torch.tensor(base ** -0.25, dtype=torch.float64))


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "rope_scaling,message",
    [
        ({"rope_type": "ntk"}, "rope_type"),
        ({"factor": 2.0}, "rope_type"),
        ({"rope_type": "linear"}, "'factor'"),
        ({"rope_type": "linear", "factor": 0.5}, "'factor'"),
        ({"rope_type": "linear", "factor": "2"}, "'factor'"),
        ({"rope_type": "linear", "factor": 2.0, "beta_fast": 3}, "beta_fast"),
        ({"rope_type": "dynamic", "factor": 2.0}, "original_max_position_embeddings"),
        ({"rope_type": "yarn", "factor": 2.0}, "original_max_position_embeddings"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64.5},
         "original_max_position_embeddings"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
          "beta_fast": 1, "beta_slow": 2}, "beta_fast"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
          "attention_factor": -1.0}, "attention_factor"),
        ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
          "truncate": "no"}, "truncate"),
        ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
          "low_freq_factor": 1.0}, "high_freq_factor"),
        ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
          "low_freq_factor": 4.0, "high_freq_factor": 1.0}, "high_freq_factor"),
        ({"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5},
         "partial_rotary_factor"),
        ("linear", "rope_scaling"),
    ],
)
def test_bad_rope_scaling_raises_value_error_naming_the_key(rope_scaling, message):
    with pytest.raises(ValueError, match=message):
        check_rope_scaling(rope_scaling)


def test_default_type_and_legacy_type_key_are_accepted():
    assert check_rope_scaling(None) is None
    assert check_rope_scaling({"rope_type": "default", "rope_theta": 1e4}) is None
    assert check_rope_scaling({"type": "linear", "factor": 2}) == {
        "rope_type": "linear", "factor": 2
    }
    with pytest.raises(ValueError, match="positions_per_token"):
        rope_inv_freq(8, 1e4, positions_per_token=0)
    assert math.isclose(float(rope_inv_freq(8, 1e4)[0][1]), 1e4 ** -0.25, rel_tol=1e-15)
