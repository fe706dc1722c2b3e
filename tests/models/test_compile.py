"""Regional compilation of the decoder LMs (``iha.models.compile``).

Traced with dynamo's ``eager`` backend so that the test takes seconds: it checks what regional
compilation changes (one graph per distinct block kind, the model's outputs and gradients), not
inductor's code generation; ``iha bench --suite compile`` times the real first compile.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from iha.models import DecoderLM
from iha.models.compile import compile_model
from iha.models.presets import get_preset
from iha.train.config import ConfigError, config_from_dict


def _loss_and_grads(model, ids):
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return logits, grads


def test_regional_compilation_traces_one_graph_per_block_kind_and_keeps_the_outputs():
    torch._dynamo.reset()
    counters.clear()
    cfg = get_preset("tiny", attention_variant="iha", max_position_embeddings=32)
    torch.manual_seed(0)
    model = DecoderLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 33))
    want_logits, want_grads = _loss_and_grads(model, ids)
    assert compile_model(model, "regional", backend="eager") is model
    got_logits, got_grads = _loss_and_grads(model, ids)
    kinds = set(cfg.layer_kinds())
    assert len(kinds) == 2 and len(model.layers) == 5  # 4 windowed IHA blocks + 1 global
    assert counters["stats"]["unique_graphs"] == len(kinds)
    torch.testing.assert_close(got_logits, want_logits, rtol=0, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    torch._dynamo.reset()


def test_compile_model_rejects_unknown_modes_and_models_without_blocks():
    with pytest.raises(ValueError, match="compile mode='fast'"):
        compile_model(torch.nn.Linear(2, 2), "fast")
    with pytest.raises(ValueError, match="ModuleList 'layers'"):
        compile_model(torch.nn.Linear(2, 2), "regional")


def test_train_config_accepts_the_compile_modes():
    def build(value):
        raw = {"train": {"compile": value}, "data": {"path": "corpus.txt"}}
        return config_from_dict(raw, resolve_model=False)

    for value in (False, True, "full", "regional"):
        assert build(value).train.compile == value
    with pytest.raises(ConfigError, match="train.compile"):
        build("fast")
