"""Config loading: strict keys and types, --set overrides, TOML round trip, batch geometry."""

from __future__ import annotations

import sys

import pytest

from iha.train.config import (
    ConfigError,
    apply_overrides,
    batch_geometry,
    config_from_dict,
    dump_toml,
    load_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def build(raw):
    """A config from ``raw`` on top of a minimal valid base (a text corpus path)."""
    data = raw.get("data", {})
    base = {**raw, "data": {"path": "corpus.txt", **data} if isinstance(data, dict) else data}
    return config_from_dict(base, resolve_model=False)


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"trian": {}}, "trian"),
        ({"train": {"max_stepz": 3}}, "train.max_stepz"),
        ({"data": {"seq_length": 3}}, "data.seq_length"),
    ],
)
def test_unknown_key_is_an_error_naming_the_dotted_key(raw, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        build(raw)


@pytest.mark.parametrize(
    "raw, key, expected",
    [
        ({"train": {"max_steps": "ten"}}, "train.max_steps", "int"),
        ({"train": {"max_steps": 2.5}}, "train.max_steps", "int"),
        ({"train": {"compile": 1}}, "train.compile", "bool"),
        ({"train": {"batch_size": True}}, "train.batch_size", "int"),
        ({"optim": {"lr": "fast"}}, "optim.lr", "float"),
        ({"optim": {"betas": [0.9, "x"]}}, r"optim.betas\[1\]", "float"),
        ({"data": {"path": 3}}, "data.path", "str | none"),
        ({"train": "fast"}, "train", "table"),
    ],
)
def test_wrong_type_is_an_error_naming_key_and_type(raw, key, expected):
    with pytest.raises(ConfigError, match=f"'{key}'.*{expected}"):
        build(raw)


def test_choice_error_lists_the_accepted_values():
    with pytest.raises(
        ConfigError, match="'train.precision' must be one of 'auto', 'fp32', 'bf16'"
    ):
        build({"train": {"precision": "fp16"}})


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"optim": {"min_lr_ratio": 2.0}}, "optim.min_lr_ratio"),
        ({"data": {"source": "parquet"}}, "data.source"),
        ({"data": {"source": "jsonl", "path": None}}, "data.path"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction"),
    ],
)
def test_out_of_range_value_is_an_error_naming_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(raw)


def test_overrides_parse_toml_values_bare_strings_and_none():
    raw = apply_overrides(
        {"optim": {"mixing_lr": 0.1}},
        [
            "optim.lr=1e-3",
            "optim.betas=[0.8, 0.9]",
            "data.path=corpus/part-1.txt",
            "optim.mixing_lr=none",
            "train.compile=true",
            "data.task_args.n_max=8",
            "optim.weight_decay=0",
        ],
    )
    assert raw["optim"] == {"lr": 0.001, "betas": [0.8, 0.9], "mixing_lr": None, "weight_decay": 0}
    assert raw["data"] == {"path": "corpus/part-1.txt", "task_args": {"n_max": 8}}
    cfg = build(raw)
    assert cfg.optim.weight_decay == 0.0 and isinstance(cfg.optim.weight_decay, float)
    assert cfg.optim.mixing_lr is None and cfg.train.compile is True


def test_override_without_equals_or_into_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="'run_dir' is not a table"):
        apply_overrides({"run_dir": "x"}, ["run_dir.sub=1"])


def test_dumped_toml_loads_back_to_the_same_config(tmp_path):
    cfg = build(
        {
            "run_dir": "runs/x",
            "model": {"vocab_size": 259, "layer_schedule": ["L", "G"], "window": None},
            "data": {"source": "synthetic", "task": "cpm3", "task_args": {"n_max": 6, "g": 3}},
            "optim": {"betas": [0.8, 0.99], "mixing_lr": 1e-2},
            "train": {"micro_batch_size": 2, "max_steps": 3},
        }
    )
    text = dump_toml(cfg.to_dict())
    path = tmp_path / "c.toml"
    path.write_text(text)
    again = load_config(path, resolve_model=False)
    expected = cfg.to_dict()
    expected["model"].pop("window")  # TOML has no null: None keys are left out
    assert again.to_dict() == expected
    assert tomllib.loads(text)["data"]["task_args"] == {"n_max": 6, "g": 3}


def test_missing_file_and_unknown_suffix_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "c.ini"
    bad.write_text("x")
    with pytest.raises(ConfigError, match=".toml, .yaml or .yml"):
        load_config(bad)


@pytest.mark.parametrize(
    "batch, micro, world, expected",
    [(8, None, 1, (8, 1)), (8, None, 2, (4, 1)), (8, 2, 2, (2, 2)), (12, 1, 3, (1, 4))],
)
def test_batch_geometry_keeps_the_global_batch(batch, micro, world, expected):
    cfg = build({"train": {"batch_size": batch, "micro_batch_size": micro}})
    got = batch_geometry(cfg, world)
    assert got == expected
    assert got[0] * got[1] * world == batch


@pytest.mark.parametrize("batch, micro, world, key", [(8, 3, 1, "micro"), (6, None, 4, "batch")])
def test_batch_geometry_rejects_uneven_splits(batch, micro, world, key):
    cfg = build({"train": {"batch_size": batch, "micro_batch_size": micro}})
    with pytest.raises(ConfigError, match=key):
        batch_geometry(cfg, world)
