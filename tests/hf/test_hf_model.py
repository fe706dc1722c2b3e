"""iha.hf: IHAConfig / IHAForCausalLM with the transformers Auto classes, safetensors round trip,
generate() with and without a cache, past_key_values in the caller's hands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from iha.hf import IHACache, IHAConfig, IHAForCausalLM  # noqa: E402
from iha.models import VARIANTS, DecoderLM, generate  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hf_config(variant: str = "iha", **kw) -> IHAConfig:
    base = dict(
        vocab_size=32,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attention_variant=variant,
        num_pseudo_heads=2,
        iha_window=3,
        sliding_window=4,
        pad_token_id=0,
    )
    base.update(kw)
    return IHAConfig(**base)


def hf_model(variant: str = "iha", seed: int = 0, **kw) -> IHAForCausalLM:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(hf_config(variant, **kw)).double().eval()


def prompts(B=2, N=6, seed=1):
    return torch.randint(1, 32, (B, N), generator=torch.Generator().manual_seed(seed))


def test_auto_classes_resolve_the_iha_model_type():
    cfg = hf_config()
    assert isinstance(AutoConfig.for_model("iha", attention_variant="diff"), IHAConfig)
    model = AutoModelForCausalLM.from_config(cfg)
    assert isinstance(model, IHAForCausalLM)
    assert isinstance(model.model, DecoderLM)  # the plain network, not a second copy
    assert model.model.config == cfg.to_model_config()


def test_config_round_trips_and_rejects_bad_values(tmp_path):
    cfg = hf_config(layer_schedule=["iha_local", "global", "diff"], cache_policy="pseudo")
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "iha" and saved["num_pseudo_heads"] == 2
    again = AutoConfig.from_pretrained(tmp_path)
    assert again.to_model_config() == cfg.to_model_config()
    assert again.cache_policy == "pseudo"
    with pytest.raises(ValueError, match="attention_variant"):
        IHAConfig(attention_variant="linear")
    with pytest.raises(ValueError, match="cache_policy"):
        IHAConfig(cache_policy="fp8")


@pytest.mark.parametrize(
    "rule",
    [
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16},
        {"rope_type": "linear", "factor": 2.0},
    ],
)
def test_rope_scaling_and_stored_window_round_trip_through_config_json(tmp_path, rule):
    cfg = hf_config(rope_scaling=rule, rope_theta=5e5, iha_window=None)
    assert cfg.iha_window == 64 // (2 * 2**2)  # stored when made
    assert cfg.rope_scaling["rope_type"] == rule["rope_type"]
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["iha_window"] == 8
    again = AutoConfig.from_pretrained(tmp_path, max_position_embeddings=256)
    model_cfg = again.to_model_config()
    assert model_cfg.rope_scaling == cfg.to_model_config().rope_scaling
    assert model_cfg.rope_scaling["factor"] == rule["factor"] and model_cfg.rope_theta == 5e5
    assert model_cfg.iha_window == 8 and model_cfg.max_position_embeddings == 256
    with pytest.raises(ValueError, match="factor"):
        hf_config(rope_scaling={"rope_type": "linear"})


def test_config_json_without_a_stored_window_derives_it_from_its_own_length(tmp_path):
    hf_config(iha_window=None).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    for key in ("iha_window", "rope_scaling", "rope_parameters"):
        saved.pop(key, None)
    saved["max_position_embeddings"] = 128  # an older file: the window was derived from this
    path.write_text(json.dumps(saved))
    again = AutoConfig.from_pretrained(tmp_path)
    assert again.iha_window == 128 // 8 and again.to_model_config().rope_scaling is None


def test_hf_logits_are_the_decoder_lm_logits():
    model = hf_model()
    ids = prompts()
    torch.testing.assert_close(model(ids).logits, model.model(ids), atol=0, rtol=0)
    names = {n for n, _ in model.named_parameters()}
    assert "model.layers.0.self_attn.alpha_q" in names and "model.embed_tokens.weight" in names


@pytest.mark.parametrize("tie", [False, True])
def test_save_load_round_trip_gives_identical_logits_for_every_variant(tmp_path, tie):
    ids = prompts()
    for variant in VARIANTS:
        model = hf_model(variant, tie_word_embeddings=tie).float()
        path = tmp_path / f"{variant}-{tie}"
        model.save_pretrained(path)
        assert (path / "model.safetensors").is_file()
        loaded = AutoModelForCausalLM.from_pretrained(path).eval()
        assert type(loaded) is IHAForCausalLM
        assert torch.equal(loaded(ids).logits, model(ids).logits), variant
        if tie:
            assert loaded.model.lm_head.weight is loaded.model.embed_tokens.weight


@pytest.mark.parametrize("variant", ["iha", "global_local", "diff", "talking_heads"])
def test_hf_generate_with_and_without_cache_equals_iha_generate_left_padded(variant):
    model = hf_model(variant)
    ids = prompts()
    ids[1, :3] = 0  # left padding
    mask = (torch.arange(6) >= 3).long().expand(2, 6).clone()
    mask[0] = 1
    ref = generate(model, ids, mask, max_new_tokens=8)  # iha's own loop, KV cache
    for use_cache in (True, False):
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=8, do_sample=False, use_cache=use_cache
        )
        assert torch.equal(out[:, 6:], ref), use_cache


def test_past_key_values_can_be_driven_by_the_caller():
    model = hf_model("iha", cache_policy="pseudo")
    ids = prompts(N=9)
    full = model(ids, use_cache=False).logits
    out = model(ids[:, :5], use_cache=True)
    pkv = out.past_key_values
    assert isinstance(pkv, IHACache) and pkv.get_seq_length() == 5
    logits = [out.logits]
    for i in range(5, 9):
        step = model(ids[:, i : i + 1], past_key_values=pkv, use_cache=True)
        assert step.past_key_values is pkv
        logits.append(step.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-10, rtol=1e-10)
    assert pkv.get_seq_length() == 9 and pkv.nbytes() > 0
    with pytest.raises(ValueError, match="IHACache"):
        model(ids, past_key_values=object())


def test_raw_and_pseudo_cache_policies_generate_the_same_tokens():
    model = hf_model("iha_global")
    ids = prompts()
    outs = []
    for policy in ("raw", "pseudo"):
        model.config.cache_policy = policy
        outs.append(model.generate(ids, max_new_tokens=6, do_sample=False))
    assert torch.equal(outs[0], outs[1])


def test_labels_give_the_shifted_cross_entropy():
    model = hf_model("global")
    ids = prompts()
    labels = ids.clone()
    labels[0, 2] = -100
    out = model(ids, labels=labels)
    logits = out.logits.double()
    terms = [
        -torch.log_softmax(logits[b, t], -1)[labels[b, t + 1]]
        for b in range(2)
        for t in range(5)
        if labels[b, t + 1] != -100
    ]
    torch.testing.assert_close(out.loss.double(), torch.stack(terms).mean(), atol=1e-10, rtol=0)


def test_beam_search_reorders_the_cache_like_recomputing_without_it():
    model = hf_model("iha")
    ids = prompts()
    cached = model.generate(ids, max_new_tokens=6, num_beams=3, do_sample=False)
    plain = model.generate(ids, max_new_tokens=6, num_beams=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)


def test_import_iha_and_its_models_leaves_transformers_unimported():
    """docs/models.md: ``import iha`` does not import transformers; ``import iha.hf`` does."""

    def imports_transformers(statement: str) -> bool:
        code = f"import sys; {statement}; print('transformers' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip() == "True"

    assert not imports_transformers("import iha, iha.models, iha.functional, iha.flops")
    assert imports_transformers("import iha.hf")


def test_hf_forward_refuses_a_float_attention_mask_naming_the_convention():
    model = hf_model("iha")
    ids = prompts()
    with pytest.raises(ValueError, match="1/True = real token, 0/False = padding"):
        model(ids, attention_mask=torch.ones(ids.shape))
