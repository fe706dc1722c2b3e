"""ModelConfig: validation, (de)serialisation, schedules and presets."""

from __future__ import annotations

import pytest

from iha.models import ModelConfig, get_preset, list_presets


def test_to_dict_from_dict_round_trip_and_unknown_key_named():
    cfg = ModelConfig(attention_variant="iha", num_key_value_heads=2, layer_schedule=["iha_local"])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="hidden_sizes"):
        ModelConfig.from_dict({**cfg.to_dict(), "hidden_sizes": 3})


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"attention_variant": "mqa"}, "attention_variant"),
        ({"num_key_value_heads": 3}, "num_key_value_heads=3"),
        ({"hidden_size": 66}, "hidden_size=66"),
        ({"num_pseudo_heads": 0}, "num_pseudo_heads"),
        ({"sliding_window": 0}, "sliding_window"),
        ({"iha_window": -1}, "iha_window"),
        ({"layer_schedule": "GXG"}, "layer_schedule"),
        ({"layer_schedule": ["global", "mamba"]}, r"layer_schedule\[1\]"),
        ({"layer_schedule": "GGG", "num_hidden_layers": 2}, "more than num_hidden_layers"),
        ({"iha_mask": "none"}, "iha_mask"),
        ({"attention_backend": "cuda"}, "attention_backend"),
        ({"attention_variant": "diff", "num_key_value_heads": 1}, "even"),
        ({"hidden_size": 12, "num_attention_heads": 4}, "head_dim"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ModelConfig(**kwargs)


def test_variant_schedules_and_repetition():
    expect = {
        "global": "GGGGGGG",
        "global_local": "LLLLGLL",
        "talking_heads": "TTTTTTT",
        "diff": "DDDDDDD",
        "iha": "IIIIGII",
        "iha_global": "HHHHHHH",
    }
    for variant, sched in expect.items():
        cfg = ModelConfig(num_hidden_layers=7, attention_variant=variant)
        assert cfg.schedule_string() == sched
    cfg = ModelConfig(num_hidden_layers=4, layer_schedule=["diff", "iha_global"])
    assert cfg.layer_kinds() == ["diff", "iha_global", "diff", "iha_global"]


def test_iha_window_is_n_over_2p_squared_at_least_one():
    assert ModelConfig(max_position_embeddings=1024, num_pseudo_heads=4).iha_window_tokens == 32
    assert ModelConfig(max_position_embeddings=1000, num_pseudo_heads=4).iha_window_tokens == 31
    assert ModelConfig(max_position_embeddings=16, num_pseudo_heads=4).iha_window_tokens == 1
    assert ModelConfig(max_position_embeddings=1024, iha_window=7).iha_window_tokens == 7
    # P defaults to H
    assert ModelConfig(max_position_embeddings=256, num_attention_heads=4).iha_window_tokens == 8


def test_swiglu_default_width_is_8_3_hidden_rounded_up_to_8():
    assert ModelConfig(hidden_size=48).ffn_size == 128
    assert ModelConfig(hidden_size=64).ffn_size == 176  # 170.67 -> 176
    assert ModelConfig(hidden_size=64, intermediate_size=100).ffn_size == 100


def test_presets_build_configs_and_take_overrides():
    assert {"paper-2.4b", "tiny", "small"} <= set(list_presets())
    cfg = get_preset("tiny", attention_variant="iha")
    assert cfg.attention_variant == "iha"
    paper = get_preset("paper-2.4b")
    assert (paper.num_hidden_layers, paper.hidden_size, paper.num_attention_heads) == (26, 2560, 20)
    assert (paper.head_dim, paper.vocab_size, paper.rope_theta) == (128, 128256, 500000.0)
    assert paper.max_position_embeddings == 8192
    with pytest.raises(ValueError, match="preset"):
        get_preset("gpt5")


def test_iha_window_is_stored_when_made_and_kept_when_the_context_changes():
    cfg = ModelConfig(attention_variant="iha", max_position_embeddings=1024, num_pseudo_heads=4)
    assert cfg.iha_window == 32 and cfg.to_dict()["iha_window"] == 32
    longer = cfg.replace(max_position_embeddings=4096)
    assert longer.iha_window_tokens == 32  # not 4096 / 32 = 128
    assert ModelConfig.from_dict(longer.to_dict()).iha_window == 32
    assert cfg.replace(max_position_embeddings=4096, iha_window=128).iha_window == 128
    old = {k: v for k, v in cfg.to_dict().items() if k != "iha_window"}  # saved before storing
    assert ModelConfig.from_dict({**old, "max_position_embeddings": 512}).iha_window == 16


def test_rope_scaling_is_validated_and_round_trips():
    rule = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 128}
    cfg = ModelConfig(rope_scaling=rule)
    assert cfg.rope_scaling == rule
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig(rope_scaling={"rope_type": "default"}).rope_scaling is None
    with pytest.raises(ValueError, match="original_max_position_embeddings"):
        ModelConfig(rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="rope_type"):
        ModelConfig(rope_scaling={"rope_type": "longrope", "factor": 4.0})
