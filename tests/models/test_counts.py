"""Parameter and FLOP counts against hand-computed values; describe(); the paper's model size."""

from __future__ import annotations

import pytest
import torch

from iha.models import DecoderLM, ModelConfig, count_parameters, describe, get_preset, model_flops

# V=11, D=16, H=4, G=2, d=4, F=24, 5 layers, N=8, P=2, IHA window 2 tokens
V, D, H, G, d, F, N, P = 11, 16, 4, 2, 4, 24, 8, 2
SMALL = dict(
    vocab_size=11,
    hidden_size=16,
    num_hidden_layers=5,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=24,
    max_position_embeddings=8,
    num_pseudo_heads=2,
    iha_window=2,
)


def brute_pairs(n_virtual: int, window_virtual: int | None) -> int:
    """Allowed (query, key) pairs of a causal (windowed) mask, by enumeration."""
    return sum(
        1
        for i in range(n_virtual)
        for j in range(n_virtual)
        if j <= i and (window_virtual is None or i - j < window_virtual)
    )


def test_parameter_counts_match_hand_computed_small_config():
    attn = D * H * d + 2 * D * G * d + H * d * D  # q, k, v, o
    per_layer = 2 * D + attn + 3 * D * F  # norms, attention, SwiGLU
    iha_extra = H * H * P + 2 * G * G * P + H * H * P  # alpha_q, alpha_k and alpha_v, R
    outer = 2 * V * D + D  # embedding, head, final norm
    expect = {
        "global": outer + 5 * per_layer,
        "global_local": outer + 5 * per_layer,
        "iha": outer + 5 * per_layer + 4 * iha_extra,
        "iha_global": outer + 5 * per_layer + 5 * iha_extra,
        "talking_heads": outer + 5 * per_layer + 5 * 2 * H * H,
        "diff": outer + 5 * per_layer + 5 * (4 * d + 2 * d),  # 4 lambdas of d, norm of 2d
    }
    for variant, n in expect.items():
        cfg = ModelConfig(**SMALL, attention_variant=variant)
        assert DecoderLM(cfg).num_parameters() == n, variant
        assert count_parameters(cfg)["params"] == n, variant
    tied = ModelConfig(**SMALL, tie_word_embeddings=True)
    assert DecoderLM(tied).num_parameters() == expect["global"] - V * D


def test_flop_counts_match_hand_computed_small_config():
    proj = 2 * N * (D * H * d + 2 * D * G * d + H * d * D)
    causal = brute_pairs(N, None)  # 36 per head
    mha_attn = H * causal * 4 * d  # QK^T and AV, 2 FLOPs per multiply-add
    iha_attn = H * brute_pairs(N * P, 2 * P) * 4 * d  # flat mask, window 2 tokens = 4 virtual
    iha_mix = 2 * N * d * P * (H * H + 2 * G * G) + 2 * N * H * (H * P) * d  # mixing + collapse
    mlp, head = 2 * N * 3 * D * F, 2 * N * D * V
    expect_total = {
        "global": 5 * (proj + mha_attn + mlp) + head,
        "iha": 5 * (proj + mlp) + 4 * (iha_attn + iha_mix) + mha_attn + head,
        "talking_heads": 5 * (proj + mha_attn + 2 * 2 * H * H * causal + mlp) + head,
        "diff": 5 * (proj + mha_attn + 2 * (H // 2) * causal + mlp) + head,
    }
    for variant, total in expect_total.items():
        cfg = ModelConfig(**SMALL, attention_variant=variant)
        f = model_flops(cfg, N)
        assert f["total"] == total, variant
        assert DecoderLM(cfg).flops_per_token(N) == pytest.approx(total / N)
    f = model_flops(ModelConfig(**SMALL, attention_variant="iha"), N)
    assert f["attention"] == 4 * iha_attn + mha_attn
    assert f["mlp"] == 5 * mlp and f["lm_head"] == head


def test_iha_schedule_costs_three_fifths_of_global_by_the_paper_formula_not_with_causal_masks():
    N, P, H, d = 8192, 4, 4, 16  # W = N / (2 P^2) = 256 tokens exactly
    cfg = ModelConfig(
        vocab_size=16,
        hidden_size=H * d,
        num_hidden_layers=5,
        num_attention_heads=H,
        max_position_embeddings=N,
        num_pseudo_heads=P,
    )
    assert cfg.iha_window_tokens == 256
    rows = {r["variant"]: r for r in describe(cfg)}
    assert rows["iha"]["paper_attn_vs_global"] == pytest.approx(3 / 5, rel=1e-12)
    # causal masks counted: a windowed IHA layer has sum_t min(t+1, W P) pairs over N P virtual
    # queries, about N^2/2 - N^2/(8 P^2): nearly a causal global layer (N (N+1) / 2 pairs)
    WP, NP = 256 * P, N * P
    iha_pairs = WP * (WP + 1) // 2 + (NP - WP) * WP
    global_pairs = N * (N + 1) // 2
    exact = (4 * iha_pairs + global_pairs) / (5 * global_pairs)
    assert rows["iha"]["attn_vs_global"] == pytest.approx(exact, rel=1e-12)
    assert 0.98 < exact < 1.0
    assert rows["global"]["attn_vs_global"] == 1.0
    assert rows["iha_global"]["attn_vs_global"] == pytest.approx(
        brute_pairs_closed(NP) / global_pairs, rel=1e-12
    )


def brute_pairs_closed(n: int) -> int:
    return n * (n + 1) // 2


def test_describe_has_every_variant_and_a_markdown_table():
    cfg = get_preset("tiny", layer_schedule="IG")
    rows = describe(cfg)
    assert [r["variant"] for r in rows] == [
        "custom",
        "global",
        "global_local",
        "talking_heads",
        "diff",
        "iha",
        "iha_global",
    ]
    assert rows[0]["schedule"] == "IGIGI"
    table = describe(cfg, as_markdown=True)
    assert table.splitlines()[0].startswith("| variant | schedule")
    assert len(table.splitlines()) == 2 + len(rows)


def test_paper_2_4b_has_about_2_4b_parameters_on_the_meta_device():
    cfg = get_preset("paper-2.4b")
    with torch.device("meta"):
        model = DecoderLM(cfg)
    assert all(p.is_meta for p in model.parameters())
    n = model.num_parameters()
    D, L, F, V = 2560, 26, 6912, 128256
    assert n == V * D + L * (4 * D * D + 3 * D * F + 2 * D) + D  # tied embeddings
    assert abs(n - 2.4e9) / 2.4e9 < 0.01
    # the IHA variant adds 4 H^2 P mixing parameters per IHA layer (P = H = 20), 21 of 26 layers
    iha = count_parameters(cfg.replace(attention_variant="iha"))
    assert iha["mixing"] == 21 * 4 * 20 * 20 * 20
