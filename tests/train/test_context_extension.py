"""Extending a trained model's context keeps its IHA window: short inputs give the same logits."""

from __future__ import annotations

import json

import torch
from iha_train_stub import TINY_MODEL, tiny_config, write_corpus

from iha.models import DecoderLM, ModelConfig
from iha.train import checkpoint as ckpt
from iha.train.config import config_from_dict
from iha.train.trainer import train

# "iha": both layers are sliding-window IHA layers; N=16, P=2 gives a window of 16 / 8 = 2 tokens
WINDOWED = {**TINY_MODEL, "attention_variant": "iha"}


def _trained_run(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    train(tiny_config(tmp_path / "base", corpus, model=WINDOWED))
    found = ckpt.resolve_checkpoint(tmp_path / "base")
    return corpus, found


def _logits(model_dict: dict, state: dict, tokens: torch.Tensor) -> torch.Tensor:
    model = DecoderLM(ModelConfig.from_dict(model_dict)).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        return model(tokens)  # (B, N, vocab)


def test_extending_a_trained_models_context_keeps_window_and_short_input_logits(tmp_path):
    corpus, found = _trained_run(tmp_path)
    base = ckpt.read_meta(found)["config"]["model"]
    assert base["iha_window"] == 2  # stored in the run config, from the pretraining length
    extended = config_from_dict({
        "run_dir": str(tmp_path / "long"),
        "train": {"init_from": str(tmp_path / "base")},
        "data": {"path": str(corpus), "seq_len": 64},
        "model": {"max_position_embeddings": 64,
                  "rope_scaling": {"rope_type": "linear", "factor": 1.0}},
    }).model
    assert extended["max_position_embeddings"] == 64 and extended["iha_window"] == 2
    state = ckpt.load_model_weights(found / ckpt.MODEL_FILE)
    tokens = torch.randint(0, 259, (2, 12), generator=torch.Generator().manual_seed(0))
    before, after = _logits(base, state, tokens), _logits(extended, state, tokens)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # the window derived from the new length (64 / 8 = 8 tokens) would change the model
    rederived = _logits({**extended, "iha_window": 8}, state, tokens)
    assert (rederived - before).abs().max() > 1e-3


def test_a_run_saved_without_a_stored_window_derives_it_from_its_own_length(tmp_path):
    corpus, found = _trained_run(tmp_path)
    meta_path = found / ckpt.META_FILE
    meta = json.loads(meta_path.read_text())
    meta["config"]["model"]["iha_window"] = None  # as written before the window was stored
    meta_path.write_text(json.dumps(meta))
    ckpt._write_manifest(found, [ckpt.MODEL_FILE, ckpt.STATE_FILE, ckpt.META_FILE])  # that run's
    extended = config_from_dict({
        "run_dir": str(tmp_path / "long"),
        "train": {"init_from": str(tmp_path / "base")},
        "data": {"path": str(corpus)},
        "model": {"max_position_embeddings": 64},
    }).model
    assert extended["iha_window"] == 2


def test_a_preset_with_a_new_context_derives_the_window_from_that_context(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    raw = {"run_dir": str(tmp_path / "r"), "data": {"path": str(corpus)},
           "model": {"preset": "tiny", "attention_variant": "iha", "max_position_embeddings": 512}}
    # tiny: P = 2; a new config made at 512 tokens has W = 512 / 8, not the preset's 128 / 8
    assert config_from_dict(raw).model["iha_window"] == 64


def test_the_64k_recipe_extends_an_init_run_keeping_its_window(tmp_path):
    from pathlib import Path

    from iha.train.config import load_config

    corpus, _ = _trained_run(tmp_path)
    recipe = Path(__file__).resolve().parents[2] / "configs" / "paper-2.4b-64k.toml"
    cfg = load_config(recipe, [f"train.init_from={json.dumps(str(tmp_path / 'base'))}",
                               f"run_dir={json.dumps(str(tmp_path / 'long'))}"])
    assert cfg.model["max_position_embeddings"] == 65536 and cfg.data.seq_len == 65536
    assert cfg.model["iha_window"] == 2  # the init run's, not 65536 / 8
    assert cfg.model["rope_scaling"] == {"rope_type": "yarn", "factor": 8.0,
                                         "original_max_position_embeddings": 8192,
                                         "truncate": True}
    assert cfg.model["hidden_size"] == WINDOWED["hidden_size"]  # the init run's architecture
