"""One model path for every command (iha.hf.loading.load_any).

A run fine-tuned from a converted Hugging Face model (``model.factory =
"iha.hf.convert:sft_model_factory"``) and a native ``iha train`` run work with ``iha generate``,
``iha eval``, ``iha export`` and ``AutoModelForCausalLM.from_pretrained(RUN_DIR)``; a plain
Hugging Face directory works with the same commands. References are independent of the loader:
the checkpoint read by ``iha.train.trainer.load_trained_model`` and decoded greedily by full
forwards of the unpadded sequence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="iha.hf needs transformers")
pytest.importorskip("tokenizers", reason="the HF byte tokenizer needs tokenizers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import iha.hf  # noqa: E402,F401  registers the Auto classes
from iha.cli import main  # noqa: E402
from iha.hf import convert  # noqa: E402
from iha.hf.loading import RUN_MODEL_TYPE, load_any  # noqa: E402
from iha.train.trainer import load_trained_model  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
QUIET = {"device": "cpu"}
BYTE_VOCAB = 260  # the byte tokenizer's 259 ids, rounded up
IDS = torch.tensor([[256, 49, 43, 49, 61, 50, 10]])  # <|bos|>1+1=2\n


def _toml(raw: dict) -> str:
    from iha.train.config import dump_toml

    return dump_toml(raw)


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory) -> Path:
    """A tiny Llama converted with P = 2 (symmetry broken), saved as a HF directory."""
    cfg = transformers.LlamaConfig(
        vocab_size=BYTE_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    convert(model, num_pseudo_heads=2, init_noise=1e-2, generator=torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("converted") / "model"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory, converted_dir) -> Path:
    """``iha train CONFIG`` fine-tuning the converted model (3 steps, byte tokenizer)."""
    root = tmp_path_factory.mktemp("factory_run")
    with open(root / "sft.jsonl", "w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": f"{i}+{i}=", "response": f"{2 * i}"}) + "\n")
    raw = {
        "run_dir": str(root / "run"),
        "model": {"factory": "iha.hf.convert:sft_model_factory", "hf_path": str(converted_dir)},
        "data": {
            "source": "jsonl",
            "path": str(root / "sft.jsonl"),
            "prompt_field": "prompt",
            "response_field": "response",
            "tokenizer": "byte",
            "seq_len": 16,
            "val_fraction": 0.1,
        },
        "optim": {"lr": 1e-2, "warmup_steps": 0},
        "train": {"max_steps": 3, "batch_size": 2, "device": "cpu", "val_batches": 1},
        "logging": {"progress": "none", "tensorboard": "off", "plots": False},
    }
    (root / "sft.toml").write_text(_toml(raw), encoding="utf-8")
    assert main(["train", str(root / "sft.toml")]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def native_run(tmp_path_factory) -> Path:
    """``iha train cpu-text`` on a tiny IHA model (3 steps, byte tokenizer)."""
    root = tmp_path_factory.mktemp("native_run")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(f"{i} plus {i} is {2 * i}." for i in range(60)), encoding="utf-8")
    settings = {
        "model.hidden_size": 16,
        "model.num_hidden_layers": 2,
        "model.num_attention_heads": 2,
        "model.max_position_embeddings": 32,
        "data.path": json.dumps(str(corpus)),
        "data.seq_len": 32,
        "train.max_steps": 3,
        "train.batch_size": 2,
        "train.val_batches": 1,
        "train.device": '"cpu"',
        "train.precision": '"fp32"',
        "logging.progress": '"none"',
        "logging.tensorboard": '"off"',
        "logging.plots": "false",
    }
    args = [x for k, v in settings.items() for x in ("--set", f"{k}={v}")]
    assert main(["train", "cpu-text", "--run-dir", str(root / "run"), *args]) == 0
    return root / "run"


def reference_logits(run: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits of the run's checkpoint as ``iha train`` builds it (its factory's module)."""
    model, _, _ = load_trained_model(run)
    with torch.no_grad():
        return model(ids)


def greedy_by_full_forwards(run: Path, ids: list[int], steps: int, eos: int) -> list[int]:
    model, _, _ = load_trained_model(run)
    ids, new = list(ids), []
    for _ in range(steps):
        with torch.no_grad():
            token = int(model(torch.tensor([ids]))[0, -1].argmax())
        new.append(token)
        if token == eos:
            break
        ids.append(token)
    return new


# ---------------------------------------------------------------------------------------------
# a run fine-tuned from a converted model


def test_factory_run_trained_and_moved_away_from_the_converted_weights(factory_run, converted_dir):
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(converted_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(start(input_ids=IDS).logits, reference_logits(factory_run, IDS))


def test_load_any_gives_the_transformers_model_of_a_factory_run(factory_run):
    loaded = load_any(factory_run)
    assert loaded.kind == "hf"
    assert type(loaded.model).__name__ == "IHALlamaForCausalLM"
    assert loaded.description.startswith("hf-run:")
    with torch.no_grad():
        got = loaded.model(input_ids=IDS).logits
    torch.testing.assert_close(got, reference_logits(factory_run, IDS), rtol=0, atol=0)


def test_iha_generate_on_a_factory_run_decodes_greedily(factory_run, capsys):
    prompt = "3+3="
    rc = main(["generate", str(factory_run), "--prompt", prompt, "--temperature", "0",
               "--max-new-tokens", "6"])  # fmt: skip
    assert rc == 0
    from iha.tokenizers import ByteTokenizer

    tok = ByteTokenizer()
    new = greedy_by_full_forwards(factory_run, tok.encode(prompt), 6, tok.eos_token_id)
    assert capsys.readouterr().out == prompt + tok.decode(new) + "\n"


@pytest.mark.parametrize(
    "bench, data",
    [("gsm8k", "gsm8k_tiny.jsonl"), ("math500", "math500_tiny.jsonl"),
     ("humaneval", "humaneval_tiny.jsonl"), ("mbpp", "mbpp_tiny.jsonl")],  # fmt: skip
)
def test_every_iha_eval_task_runs_a_factory_run(factory_run, tmp_path, bench, data, capsys):
    rc = main(["eval", bench, str(factory_run), "--data", str(FIXTURES / data), "--limit", "1",
               "--temperature", "0", "--max-new-tokens", "4", "--k", "1", "--timeout", "5",
               "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    result = json.loads((tmp_path / f"{bench}.json").read_text())
    assert result["model"].startswith("hf-run:")


def test_iha_eval_ruler_runs_a_factory_run(factory_run, tmp_path, capsys):
    rc = main(["eval", "ruler", str(factory_run), "--lengths", "400", "--limit", "1", "--tasks",
               "niah_single_1", "--max-new-tokens", "4", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err


def test_iha_eval_takes_a_plain_hugging_face_directory(converted_dir, tmp_path, capsys):
    rc = main(["eval", "gsm8k", str(converted_dir), "--tokenizer", "byte", "--data",
               str(FIXTURES / "gsm8k_tiny.jsonl"), "--limit", "1", "--temperature", "0",
               "--max-new-tokens", "4", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "gsm8k.json").read_text())["model"] == f"hf:{converted_dir}"


def test_iha_export_of_a_factory_run_loads_without_remote_code(factory_run, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "hf"
    assert main(["export", str(factory_run), str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "iha_llama"
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        got = model(input_ids=IDS).logits
    torch.testing.assert_close(got, reference_logits(factory_run, IDS), rtol=0, atol=0)
    assert (out / "tokenizer.json").is_file()


def test_from_pretrained_loads_a_factory_run_directory(factory_run):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(factory_run)
    assert type(model).__name__ == "IHALlamaForCausalLM" and not model.training
    with torch.no_grad():
        got = model(input_ids=IDS).logits
    torch.testing.assert_close(got, reference_logits(factory_run, IDS), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# a native run


def test_run_config_json_names_its_model_type_and_the_run_still_reads_it(native_run):
    from iha.cli._common import read_raw_config
    from iha.train import trainer
    from iha.train.config import config_from_dict

    saved = json.loads((native_run / "config.json").read_text())
    assert saved["model_type"] == RUN_MODEL_TYPE == trainer.RUN_MODEL_TYPE
    raw, run_dir = read_raw_config(str(native_run))
    assert "model_type" not in raw and run_dir == str(native_run)
    assert config_from_dict(raw).model == saved["model"]


def test_from_pretrained_loads_a_native_run_directory(native_run):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(native_run, dtype=torch.float64)
    assert type(model).__name__ == "IHAForCausalLM"
    assert model.dtype == torch.float64
    ids = IDS[:, :5]
    with torch.no_grad():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, reference_logits(native_run, ids).double(), rtol=0, atol=1e-5)


def test_iha_generate_on_a_native_run_is_unchanged(native_run, capsys):
    from iha.tokenizers import ByteTokenizer

    prompt = "7 plus 7 is"
    rc = main(["generate", str(native_run), "--prompt", prompt, "--temperature", "0",
               "--max-new-tokens", "5"])  # fmt: skip
    assert rc == 0
    tok = ByteTokenizer()
    new = greedy_by_full_forwards(native_run, tok.encode(prompt), 5, tok.eos_token_id)
    assert capsys.readouterr().out == prompt + tok.decode(new) + "\n"


# ---------------------------------------------------------------------------------------------
# guards


def test_load_any_rejects_a_missing_path_and_a_run_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_any(str(tmp_path / "nothing"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model_type": RUN_MODEL_TYPE, "model": {}}))
    with pytest.raises(FileNotFoundError, match="without a checkpoint"):
        load_any(run)
