"""iha.hf.cost: FLOPs of a model before and after conversion.

The original's count is checked against torch's own FLOP counter (``FlopCounterMode``, which
counts every matrix product) on a real forward of a tiny Llama in eager attention: one token
alone, and one token decoded from a KV cache after n tokens (its causal cost, exactly what the
difference of two whole-sequence counts must give). The converted model's extra cost is checked
against the count written out by hand.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="iha.hf needs transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from iha.hf.cost import conversion_cost, forward_flops  # noqa: E402

CFG = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    attn_implementation="eager",
)


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("context", [0, 5, 17])
def test_the_original_count_is_torchs_count_of_a_cached_decode_step(context):
    cfg = transformers.LlamaConfig(**CFG)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, context + 1))
    with torch.no_grad():
        cache = None
        if context:
            cache = model(input_ids=ids[:, :context], use_cache=True).past_key_values
        step = counted(lambda: model(input_ids=ids[:, context:], past_key_values=cache))
    none = dict(num_pseudo_heads=1, layers=[])
    ours = forward_flops(cfg, context + 1, **none) - forward_flops(cfg, context, **none)
    assert ours == step


def test_the_converted_extra_cost_is_the_hand_count():
    cfg = transformers.LlamaConfig(**CFG)
    H, G, d, L, P, n = 4, 2, 8, 2, 3, 20
    base = forward_flops(cfg, n, num_pseudo_heads=1, layers=[])
    conv = forward_flops(cfg, n, num_pseudo_heads=P)
    pairs = n * (n + 1) // 2  # causal (query, key) token pairs
    attention = 4 * d * H * pairs * (P * P - 1)  # P^2 pseudo pairs per token pair
    mixing = 2 * n * d * P * (H * H + 2 * G * G)  # alpha_q, alpha_k, alpha_v
    collapse = 2 * n * d * H * P * H  # global collapse (H, H*P)
    assert conv - base == L * (attention + mixing + collapse)
    # a config's own conversion record gives the same count as the arguments
    cfg.iha_conversion = {"format_version": 1, "layers": [
        {"layer": i, "num_pseudo_heads": P, "mode": "exact", "collapse": "global"}
        for i in range(L)]}  # fmt: skip
    assert forward_flops(cfg, n) == conv


def test_conversion_cost_ratios_grow_with_p_and_context():
    cfg = transformers.LlamaConfig(**CFG)
    one = conversion_cost(cfg, 1, 64)
    assert one["forward"] > 1.0  # P = 1 still pays its mixing and collapse
    small, large = conversion_cost(cfg, 2, 64), conversion_cost(cfg, 2, 256)
    assert 1.0 < small["forward"] < large["forward"]
    assert small["forward"] < small["decode"]  # the last token sees the longest context
    assert conversion_cost(cfg, 4, 64)["forward"] > small["forward"]
