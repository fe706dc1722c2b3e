"""`[model] factory = "module:function"` builds a user model (e.g. a converted HF checkpoint)."""

from __future__ import annotations

import pytest
from iha_train_stub import tiny_config, write_corpus

from iha.train.config import ConfigError, resolve_model_dict
from iha.train.trainer import load_trained_model, train

FACTORY_MODULE = '''
import torch
from torch import nn

class Bigram(nn.Module):
    def __init__(self, vocab_size, width):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, width)
        self.out = nn.Linear(width, vocab_size)

    def forward(self, input_ids, attention_mask=None):
        return self.out(self.emb(input_ids))

def build(table):
    return Bigram(table["vocab_size"], table["width"])
'''


def test_factory_model_trains_and_reloads(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    corpus = write_corpus(tmp_path / "corpus.txt")
    table = {"factory": "user_models:build", "vocab_size": 259, "width": 8}
    cfg = tiny_config(tmp_path / "run", corpus, model=table)
    train(cfg)
    model, config, _ = load_trained_model(tmp_path / "run")
    assert type(model).__name__ == "Bigram" and config["model"]["width"] == 8


@pytest.mark.parametrize("bad", ["user_models.build", 3])
def test_bad_factory_value_is_a_config_error_naming_the_key(bad):
    with pytest.raises(ConfigError, match="model.factory"):
        resolve_model_dict({"factory": bad})
