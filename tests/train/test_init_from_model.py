"""A fine-tuning config with `train.init_from` takes the init run's model unless it names one."""

from __future__ import annotations

import pytest
from iha_train_stub import TINY_MODEL, tiny_config, write_corpus

from iha.train.config import ConfigError, config_from_dict
from iha.train.trainer import train


def test_empty_model_table_takes_the_init_runs_model_with_overrides_on_top(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    train(tiny_config(tmp_path / "base", corpus))
    raw = {"run_dir": str(tmp_path / "ft"), "train": {"init_from": str(tmp_path / "base")},
           "data": {"path": str(corpus)},
           "model": {"rms_norm_eps": 1e-6}}
    cfg = config_from_dict(raw)
    for key, value in TINY_MODEL.items():
        assert cfg.model[key] == value
    assert cfg.model["rms_norm_eps"] == 1e-6


def test_missing_init_run_is_a_config_error_naming_the_key(tmp_path):
    raw = {"train": {"init_from": str(tmp_path / "nowhere")}, "data": {"path": "x.txt"}}
    with pytest.raises(ConfigError, match="train.init_from"):
        config_from_dict(raw)
