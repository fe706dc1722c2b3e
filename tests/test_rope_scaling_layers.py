"""RoPE scaling through the functional core, the layers and the decoder: checked against the naive
oracle rotating with transformers' own frequencies, with the rule's lengths in RoPE positions
(multiplied by P under virtual positions)."""

from __future__ import annotations

import pytest
import torch
from oracle import oracle_iha, oracle_mha

from iha import InterleavedHeadAttention
from iha.functional import interleaved_head_attention
from iha.models import DecoderLM, ModelConfig
from iha.models.layers import MultiHeadAttention

transformers = pytest.importorskip("transformers")


def transformers_frequencies(rule: dict, head_dim: int, theta: float, per_token: int,
                             seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """inv_freq and attention factor of ``rule`` from transformers, lengths in RoPE positions."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rule = dict(rule)
    original = rule.pop("original_max_position_embeddings", 1) * per_token
    if rule["rope_type"] in ("yarn", "llama3"):
        rule["original_max_position_embeddings"] = original
    # the dynamic rule reads its original length from max_position_embeddings
    longest = original if rule["rope_type"] == "dynamic" else 64 * original
    config = LlamaConfig(hidden_size=2 * head_dim, num_attention_heads=2, head_dim=head_dim,
                         rope_theta=theta, rope_scaling=rule, max_position_embeddings=longest)
    inv_freq, attention = ROPE_INIT_FUNCTIONS[rule["rope_type"]](
        config, torch.device("cpu"), seq_len=seq_len
    )
    return inv_freq.double(), float(attention)


def _inputs(B=2, H=4, G=2, Nq=5, Nk=7, d=8, P=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return (r(B, H, Nq, d), r(B, G, Nk, d), r(B, G, Nk, d), r(H, H, P), r(G, G, P), r(G, G, P),
            r(H, H * P))


@pytest.mark.parametrize(
    "rule,positions,P",
    [
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2}, "virtual", 3),
        ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}, "virtual", 2),
        ({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4},
         "virtual", 3),
        ({"rope_type": "linear", "factor": 3.0}, "virtual", 2),
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 3}, "token", 2),
    ],
    ids=lambda v: v["rope_type"] if isinstance(v, dict) else str(v),
)
def test_functional_core_scales_rope_at_the_positions_it_rotates(rule, positions, P):
    q, k, v, aq, ak, av, R = _inputs(P=P)
    theta, offset = 50.0, 11  # q covers tokens 11..15 of a 16-token sequence, k tokens 9..15
    per_token = P if positions == "virtual" else 1
    end = (offset + q.shape[2]) * per_token  # the dynamic rule's current length, in positions
    inv_freq, attention = transformers_frequencies(rule, q.shape[-1], theta, per_token, end)
    expected = oracle_iha(q, k, v, aq, ak, av, R, rope_theta=theta, positions=positions,
                          position_offset=offset, inv_freq=inv_freq,
                          attention_factor=attention)
    got = interleaved_head_attention(q, k, v, aq, ak, av, R, rope_theta=theta,
                                     positions=positions, position_offset=offset,
                                     rope_scaling=rule, backend="reference")
    # transformers' frequencies are float32: angles agree to ~1e-7 relative
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    plain = interleaved_head_attention(q, k, v, aq, ak, av, R, rope_theta=theta,
                                       positions=positions, position_offset=offset)
    assert (plain - got).abs().max() > 1e-3  # the rule changes the result


def test_mha_layer_applies_the_rule_at_token_positions():
    torch.manual_seed(0)
    rule = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4}
    layer = MultiHeadAttention(32, 4, 2, rope_theta=100.0, rope_scaling=rule).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    inv_freq, attention = transformers_frequencies(rule, 8, 100.0, 1)
    expected = oracle_mha(x, layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight,
                          layer.o_proj.weight, 4, 2, rope_theta=100.0, inv_freq=inv_freq,
                          attention_factor=attention)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["raw", "pseudo"])
def test_decoder_with_rope_scaling_decodes_with_cache_like_a_full_forward(policy):
    rule = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}
    cfg = ModelConfig(vocab_size=32, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                      num_pseudo_heads=2, layer_schedule="IGT", max_position_embeddings=32,
                      iha_window=3, rope_theta=100.0, rope_scaling=rule)
    torch.manual_seed(0)
    model = DecoderLM(cfg).double().eval()
    for layer in model.layers:
        assert layer.self_attn.rope_scaling == cfg.rope_scaling
    ids = torch.randint(0, 32, (2, 12))
    with torch.no_grad():
        full = model(ids)  # (B, N, V)
        cache = model.make_cache(2, policy)
        steps = [model(ids[:, :5], cache=cache)]
        steps += [model(ids[:, i : i + 1], cache=cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-9, atol=1e-9)
    unscaled = DecoderLM(cfg.replace(rope_scaling=None)).double().eval()
    unscaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (unscaled(ids) - full).abs().max() > 1e-4


def test_module_rejects_a_bad_rule_naming_the_key():
    with pytest.raises(ValueError, match="factor"):
        InterleavedHeadAttention(16, 2, rope_scaling={"rope_type": "linear"})
    with pytest.raises(ValueError, match="rope_type"):
        MultiHeadAttention(16, 2, rope_scaling={"rope_type": "su"})
