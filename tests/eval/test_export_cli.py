"""``iha export``: an ``iha train`` run as a Hugging Face directory, from the command line."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers", reason="the HF export needs transformers (iha[eval])")
pytest.importorskip("tokenizers", reason="the HF byte tokenizer needs tokenizers (iha[eval])")

import torch  # noqa: E402

from iha.cli import main  # noqa: E402
from iha.train.trainer import load_trained_model  # noqa: E402


def test_iha_export_writes_a_directory_transformers_loads_with_the_same_logits(
    tiny_run, tmp_path, capsys
):
    from transformers import AutoModelForCausalLM

    import iha.hf  # noqa: F401  registers model_type "iha"

    out = tmp_path / "hf"
    assert main(["export", str(tiny_run), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["model_type"] == "iha"
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    model, _, _ = load_trained_model(tiny_run)
    ids = torch.tensor([[256, 72, 105, 33, 10]])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(input_ids=ids).logits, model(ids), rtol=0, atol=1e-5)


def test_iha_export_of_a_missing_run_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "iha export: error" in capsys.readouterr().err
