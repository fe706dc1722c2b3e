"""Bad input to the command line is a clear error (exit status 2, naming the argument and what
is accepted), never a traceback: damaged or unknown models for ``iha convert``, a prompt that
is not UTF-8, a device torch does not know, an output file that cannot be written (found
before the benchmark runs), and the choice ``none`` given with ``--set``."""

from __future__ import annotations

import json

import pytest
import torch

from iha.cli import main
from iha.train.config import apply_overrides, config_from_dict


def _hf_dir(path, model_type="llama"):
    """A directory with a config.json and one small valid safetensors file."""
    from safetensors.torch import save_file

    path.mkdir()
    config = {"model_type": model_type, "architectures": ["LlamaForCausalLM"], "vocab_size": 8,
              "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 16}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    save_file({"model.embed_tokens.weight": torch.randn(8, 8)}, str(path / "model.safetensors"))
    return path


@pytest.mark.parametrize(
    "damage,named",
    [
        ("garbage", "model.safetensors' is not a readable safetensors file"),
        ("truncated", "model.safetensors' is not a readable safetensors file"),
        ("model_type", "has model_type 'banana'; iha convert reads llama, qwen2, mistral"),
    ],
)
def test_convert_refuses_damaged_weights_and_unknown_model_types(tmp_path, capsys, damage, named):
    pytest.importorskip("transformers")
    src = _hf_dir(tmp_path / "src", "banana" if damage == "model_type" else "llama")
    weights = src / "model.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"this is not a safetensors file at all")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 100])
    assert main(["convert", str(src), str(tmp_path / "dst")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


def test_generate_refuses_a_prompt_that_is_not_utf8(tmp_path, capsys):
    # bytes that are not UTF-8 reach sys.argv as lone surrogates (surrogateescape)
    prompt = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    assert main(["generate", str(tmp_path), "--prompt", prompt]) == 2
    err = capsys.readouterr().err
    assert "--prompt b'caf\\xe9' is not UTF-8 text (byte 3)" in err


@pytest.mark.parametrize(
    "command", [["generate", "RUN", "--prompt", "a"], ["eval", "gsm8k", "RUN"]], ids=["gen", "eval"]
)
def test_an_unknown_device_is_a_clear_error(tmp_path, capsys, command):
    argv = [str(tmp_path) if a == "RUN" else a for a in command] + ["--device", "banana"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "device 'banana' is not a device: use auto, cpu, cuda or cuda:N" in err
    assert "Traceback" not in err


def test_bench_refuses_an_unwritable_output_before_running(monkeypatch, capsys):
    from iha.cli import bench

    def never(*args, **kwargs):
        raise AssertionError("the benchmark ran before the output was checked")

    monkeypatch.setattr(bench, "SUITE_FUNCS", {name: never for name in bench.SUITE_FUNCS})
    assert main(["bench", "--smoke", "--json", "/dev/full"]) == 2
    assert "--json '/dev/full' cannot be written (No space left on device)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("word", ["none", "None", "null"])
def test_set_none_is_the_choice_none_where_the_option_accepts_it(tmp_path, word):
    raw = {"run_dir": str(tmp_path / "run"), "model": {"preset": "tiny"},
           "data": {"source": "text", "path": str(tmp_path)}}  # fmt: skip
    cfg = config_from_dict(apply_overrides(raw, [f"logging.progress={word}"]), False)
    assert cfg.logging.progress == "none"
    cfg = config_from_dict(apply_overrides(raw, [f"train.init_from={word}"]), False)
    assert cfg.train.init_from is None  # an optional key is still cleared
