"""Hugging Face export of iha checkpoints and the lm-evaluation-harness bridge (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iha.tokenizers import ByteTokenizer, HFTokenizer
from iha.train.trainer import load_trained_model

from .conftest import greedy_reference

pytest.importorskip("transformers", reason="the HF export needs transformers (iha[eval])")
pytest.importorskip("tokenizers", reason="the HF byte tokenizer needs tokenizers (iha[eval])")

from iha.eval.hf_export import export_hf, hf_byte_tokenizer  # noqa: E402

TOK = ByteTokenizer()
TEXTS = [
    "hello world",
    "  two  spaces\n\tand tabs ",
    "Grüße, ½ ✓ 日本語",
    "a<|eos|>b<|bos|>",
    "\x00\x7f",
]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "3+3?"},
]


def test_hf_byte_tokenizer_is_the_byte_tokenizer(tmp_path):
    hf_byte_tokenizer().save_pretrained(tmp_path)
    tok = HFTokenizer.from_pretrained(str(tmp_path))  # through a save / load round trip
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 257, 258)
    assert tok.vocab_size == TOK.vocab_size and tok.uses_bos
    for text in TEXTS:
        ids = TOK.encode(text)
        assert tok.encode(text) == ids
        assert tok.decode(ids) == TOK.decode(ids)
        assert tok.decode(ids, skip_special_tokens=False) == TOK.decode(ids, False)
        assert tok.hf(text).input_ids == [256, *ids]  # add_special_tokens prepends bos
    for n in (2, 3, 4):
        for gen in (False, True):
            text = tok.apply_chat_template(MESSAGES[:n], add_generation_prompt=gen)
            assert text == TOK.apply_chat_template(MESSAGES[:n], add_generation_prompt=gen)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    return export_hf(tiny_run, tmp_path_factory.mktemp("hf") / "model")


def _ids() -> torch.Tensor:
    return torch.tensor([TOK.encode("Question: what is 1 plus 2?", add_bos=True)])  # (1, N)


def test_exported_model_gives_the_checkpoint_logits(tiny_run, exported):
    from transformers import AutoModelForCausalLM

    import iha.hf  # noqa: F401

    model, _, _ = load_trained_model(tiny_run)
    hf = AutoModelForCausalLM.from_pretrained(exported).eval()
    assert type(hf).__name__ == "IHAForCausalLM"
    assert (hf.config.bos_token_id, hf.config.eos_token_id) == (256, 257)
    with torch.no_grad():
        torch.testing.assert_close(hf(_ids()).logits, model(_ids()), rtol=0, atol=0)
    meta = json.loads((exported / "iha_export.json").read_text())
    assert meta["tokenizer"] == "byte" and "step_" in meta["checkpoint"]


def test_exported_dir_loads_with_trust_remote_code_without_importing_iha(
    tiny_run, exported, tmp_path
):
    # a fresh interpreter, as the plain `lm_eval --model hf ... trust_remote_code=True` runs
    code = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"path = {str(exported)!r}\n"
        "tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)\n"
        "m = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()\n"
        "ids = tok(sys.argv[1], return_tensors='pt').input_ids\n"
        "with torch.no_grad():\n"
        "    logits = m(ids).logits[0, -1]\n"
        "print(json.dumps({'cls': type(m).__module__, 'ids': ids[0].tolist(),\n"
        "                  'logits': logits.tolist()}))\n"
    )
    text = "Question: what is 1 plus 2?"
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),  # where transformers copies the shims
        "OMP_NUM_THREADS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, text],
        capture_output=True,
        text=True,
        timeout=600,  # a fresh interpreter importing transformers; slow on a loaded machine
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cls"] == "iha.hf.modeling"
    assert got["ids"] == _ids()[0].tolist()
    model, _, _ = load_trained_model(tiny_run)
    with torch.no_grad():
        expected = model(_ids())[0, -1]
    torch.testing.assert_close(torch.tensor(got["logits"]), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- lm_eval

DOCS = [
    {"question": "Is the sky blue?", "choices": ["yes", "no"], "label": 0, "answer": "yes"},
    {"question": "2 + 2 =", "choices": ["3", "4", "5"], "label": 1, "answer": "4"},
    {"question": "Cats say", "choices": ["woof", "meow", "moo"], "label": 1, "answer": "meow"},
]
CHOICE_TASK = """task: iha_tiny_choice
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
    aggregation: mean
    higher_is_better: true
"""
GEN_TASK = """task: iha_tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def _loglikelihood(model, context: str, continuation: str) -> float:
    """log p(continuation | BOS + context), float64, one full forward."""
    ctx = [TOK.bos_token_id, *TOK.encode(context)]
    cont = TOK.encode(continuation)
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont]))[0].double()  # (N, V)
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


def test_lm_eval_bridge_on_iha_run_matches_direct_computation(tiny_run, tmp_path, monkeypatch):
    for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1")):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'iha[eval]')")
    pytest.importorskip(
        "lm_eval.models.huggingface", reason="lm-eval's hf extra is not installed (lm-eval[hf])"
    )
    import lm_eval.tasks

    from iha.eval import lm_eval_bridge

    class LocalTasksOnly(lm_eval.tasks.TaskManager):
        """Skips indexing lm_eval's ~14k built-in task files (tens of seconds on 2 cores)."""

        def __init__(self, *args, **kwargs):
            kwargs["include_defaults"] = False
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tasks / "choice.yaml").write_text(CHOICE_TASK.format(data=json.dumps(str(data))))
    (tasks / "gen.yaml").write_text(GEN_TASK.format(data=json.dumps(str(data))))
    out = tmp_path / "out"
    rc = lm_eval_bridge.main(
        [
            "--model", "iha",
            "--model_args", f"pretrained={tiny_run},add_bos_token=True,max_length=128",
            "--tasks", "iha_tiny_choice", "iha_tiny_gen",
            "--include_path", str(tasks),
            "--device", "cpu", "--batch_size", "2",
            "--output_path", str(out), "--log_samples",
        ]
    )  # fmt: skip
    assert rc == 0
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    choice = [json.loads(x) for x in next(out.rglob("samples_iha_tiny_choice_*.jsonl")).open()]
    gen = [json.loads(x) for x in next(out.rglob("samples_iha_tiny_gen_*.jsonl")).open()]

    model, _, _ = load_trained_model(tiny_run)
    correct = []
    for row in sorted(choice, key=lambda r: r["doc_id"]):
        doc = DOCS[row["doc_id"]]
        got = [float(r[0]) for r in row["filtered_resps"]]
        expected = [_loglikelihood(model, doc["question"], " " + c) for c in doc["choices"]]
        assert got == pytest.approx(expected, abs=1e-4)
        correct.append(max(range(len(expected)), key=expected.__getitem__) == doc["label"])
    assert results["iha_tiny_choice"]["acc,none"] == pytest.approx(sum(correct) / len(DOCS))

    hf_tok = hf_byte_tokenizer()
    for row in gen:
        prompt = [TOK.bos_token_id, *TOK.encode(DOCS[row["doc_id"]]["question"])]
        new = greedy_reference(model, prompt, 6, TOK.eos_token_id)
        assert row["filtered_resps"] == [hf_tok.decode(new).split("\n")[0]]


def test_lm_eval_bridge_without_lm_eval_names_the_extra(monkeypatch, capsys):
    from iha.eval import lm_eval_bridge

    monkeypatch.setattr(lm_eval_bridge, "_registered", None)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    monkeypatch.setitem(sys.modules, "lm_eval.api.registry", None)
    assert lm_eval_bridge.main(["--tasks", "x"]) == 2
    assert "pip install 'iha[eval]'" in capsys.readouterr().err
