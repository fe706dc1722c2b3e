"""A directory written by a converted model loads as the converted model everywhere: the Auto
classes (as the lm-eval bridge and ``lm_eval --model hf`` call them), a fresh process with
``trust_remote_code``, and ``load_converted``; loaders that would drop the mixing weights fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_convert import left_padded_batch, logits, make_model  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import iha.hf  # noqa: E402,F401  registers the converted model types
from iha.cli import main as cli_main  # noqa: E402
from iha.eval.lm_eval_bridge import resolve_pretrained  # noqa: E402
from iha.hf.convert import convert, converted_layers, load_converted  # noqa: E402
from iha.hf.converted import IHALlamaForCausalLM, IHAQwen2ForCausalLM  # noqa: E402


def _saved(tmp_path, kind="llama3", **kwargs):
    model = convert(make_model(kind), init_noise=0.1, **kwargs).eval()  # mixing off its init
    out = tmp_path / f"converted-{kind}"
    model.save_pretrained(out)
    return model, out


def _assert_same_model(loaded, model):
    want, got = model.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    ids, mask = left_padded_batch()
    assert torch.equal(logits(loaded.eval(), ids, mask), logits(model, ids, mask))


@pytest.mark.parametrize(
    "kind,kwargs,cls",
    [
        ("llama3", dict(num_pseudo_heads=2, mode="paper"), IHALlamaForCausalLM),
        ("qwen2", dict(num_pseudo_heads=2, layers=[1], collapse="per_head"), IHAQwen2ForCausalLM),
    ],
)
def test_auto_model_loads_the_converted_model_with_lm_eval_hf_arguments(tmp_path, kind, kwargs,
                                                                         cls):
    model, path = _saved(tmp_path, kind, **kwargs)
    saved = json.loads((path / "config.json").read_text())
    assert saved["model_type"] == f"iha_{kind.removesuffix('3')}"
    assert saved["auto_map"]["AutoModelForCausalLM"] == f"iha_converted.{cls.__name__}"
    assert (path / "iha_converted.py").is_file()
    # what lm_eval's HFLM does (config first, then the model), here after `import iha.hf` as in
    # `iha lm-eval --model iha` / `--model hf`
    config = AutoConfig.from_pretrained(str(path), revision="main", trust_remote_code=False)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(path), revision="main", dtype=torch.float32, trust_remote_code=False, config=config
    )
    assert type(loaded) is cls and list(converted_layers(loaded)) == list(converted_layers(model))
    _assert_same_model(loaded, model)
    assert resolve_pretrained(str(path)) == str(path)  # the bridge hands it to HFLM unchanged
    _assert_same_model(load_converted(path), model)


def _fresh_process(path, tmp_path) -> subprocess.CompletedProcess:
    """Load ``path`` in an interpreter that never imports iha (as the plain lm_eval command):
    first without ``trust_remote_code`` (recording the error), then with it."""
    ids, _ = left_padded_batch()
    code = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"path = {str(path)!r}\n"
        "try:\n"
        "    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)\n"
        "    refused = None\n"
        "except Exception as e:\n"
        "    refused = f'{type(e).__name__}: {e}'\n"
        "m = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True,\n"
        "                                         dtype=torch.float32).eval()\n"
        f"ids = torch.tensor({ids[1:].tolist()})\n"
        "with torch.no_grad():\n"
        "    out = m(input_ids=ids, use_cache=False).logits[0, -1]\n"
        "print(json.dumps({'cls': type(m).__module__ + '.' + type(m).__name__,\n"
        "                  'refused': refused, 'logits': out.tolist()}))\n"
    )
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),  # where transformers copies the shim
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,  # importing torch and transformers takes minutes on a loaded 2-core machine
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )


def test_fresh_process_loads_it_with_trust_remote_code_and_refuses_without(tmp_path):
    model, path = _saved(tmp_path, "llama3", num_pseudo_heads=2, layers=[0])
    proc = _fresh_process(path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # without trust_remote_code and without iha, transformers cannot build it: a loud error,
    # never the original architecture with the mixing weights dropped
    assert got["refused"] is not None and "trust_remote_code" in got["refused"]
    assert got["cls"] == "iha.hf.converted.IHALlamaForCausalLM"
    ids, _ = left_padded_batch()
    with torch.no_grad():
        expected = model(input_ids=ids[1:], use_cache=False).logits[0, -1]
    torch.testing.assert_close(torch.tensor(got["logits"]), expected, rtol=1e-5, atol=1e-5)


def test_missing_mixing_weights_raise_instead_of_running_uninitialised(tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = _saved(tmp_path, "llama", num_pseudo_heads=2)
    weights = load_file(path / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.endswith("self_attn.collapse")}
    save_file(kept, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="mixing parameters"):
        AutoModelForCausalLM.from_pretrained(path)
    with pytest.raises(ValueError, match="mixing parameters"):
        load_converted(path)


def test_older_directory_without_the_converted_model_type_still_loads_and_resaves(tmp_path):
    model, path = _saved(tmp_path, "mistral", num_pseudo_heads=3, mode="paper")
    config_file = path / "config.json"
    older = json.loads(config_file.read_text())
    older.update(model_type="mistral", architectures=["MistralForCausalLM"])
    older.pop("auto_map")
    config_file.write_text(json.dumps(older))
    (path / "iha_converted.py").unlink()
    loaded = load_converted(path)
    _assert_same_model(loaded, model)
    loaded.save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["model_type"] == (
        "iha_mistral"
    )
    _assert_same_model(AutoModelForCausalLM.from_pretrained(tmp_path / "resaved"), model)


def test_cli_convert_output_loads_through_auto_model(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_model("qwen2").save_pretrained(src)
    assert cli_main(["convert", str(src), str(dst), "--num-pseudo-heads", "2"]) == 0
    loaded = AutoModelForCausalLM.from_pretrained(dst)
    assert type(loaded) is IHAQwen2ForCausalLM and len(converted_layers(loaded)) == 2
    # converting the loaded model's other layers again is refused (each layer once)
    with pytest.raises(ValueError, match="already converted"):
        convert(loaded, num_pseudo_heads=2, layers=[0])


CHOICE_TASK = """task: iha_converted_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""
DOCS = [
    {"question": "Is the sky blue?", "choices": ["yes", "no"], "label": 0},
    {"question": "2 + 2 =", "choices": ["3", "4", "5"], "label": 1},
]


def test_lm_eval_hf_model_scores_the_converted_model(tmp_path, monkeypatch):
    """``python -m iha.eval.lm_eval_bridge --model hf`` (lm_eval's own HFLM) on a converted
    directory: its log-likelihoods are the converted model's, not the original architecture's."""
    for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1")):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'iha[eval]')")
    pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval[hf] is not installed")
    import lm_eval.tasks
    from test_convert import COMMON, _randomize

    from iha.eval import lm_eval_bridge
    from iha.eval.hf_export import hf_byte_tokenizer

    class LocalTasksOnly(lm_eval.tasks.TaskManager):
        def __init__(self, *args, **kwargs):
            kwargs["include_defaults"] = False  # skip indexing lm_eval's built-in tasks
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)
    original = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**COMMON,
                                                                         "vocab_size": 259}))
    _randomize(original, 0)
    model = convert(original, num_pseudo_heads=2, mode="paper", init_noise=0.1).eval()
    path = tmp_path / "converted"
    model.save_pretrained(path)
    tokenizer = hf_byte_tokenizer()
    tokenizer.save_pretrained(path)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tasks / "choice.yaml").write_text(
        CHOICE_TASK.format(data=json.dumps(str(tasks / "docs.jsonl")))
    )
    out = tmp_path / "out"
    rc = lm_eval_bridge.main([
        "--model", "hf", "--model_args", f"pretrained={path},add_bos_token=True,max_length=64",
        "--tasks", "iha_converted_choice", "--include_path", str(tasks), "--device", "cpu",
        "--batch_size", "2", "--output_path", str(out), "--log_samples",
    ])  # fmt: skip
    assert rc == 0
    rows = [json.loads(x) for x in next(out.rglob("samples_iha_converted_choice_*.jsonl")).open()]
    for row in rows:
        doc = DOCS[row["doc_id"]]
        got = [float(r[0]) for r in row["filtered_resps"]]
        expected = []
        for choice in doc["choices"]:
            context = [tokenizer.bos_token_id, *tokenizer.encode(doc["question"],
                                                                 add_special_tokens=False)]
            continuation = tokenizer.encode(" " + choice, add_special_tokens=False)
            with torch.no_grad():
                logits = model(torch.tensor([context + continuation])).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            expected.append(float(sum(logp[len(context) - 1 + i, t]
                                      for i, t in enumerate(continuation))))
        assert got == pytest.approx(expected, abs=1e-4)
