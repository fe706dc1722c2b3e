"""``iha eval`` on real ``iha train`` checkpoints; SFT through the training engine."""

from __future__ import annotations

import json
import math
from itertools import cycle, islice
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from iha.cli import main
from iha.eval import gsm8k, ruler, runner
from iha.eval.data import read_jsonl
from iha.tokenizers import ByteTokenizer
from iha.train.trainer import Trainer, load_trained_model

from .conftest import FIXTURES, QUIET, greedy_reference, model_overrides, set_args

TOK = ByteTokenizer()
BOS, EOS = TOK.bos_token_id, TOK.eos_token_id


def _eval(capsys, *args: str) -> int:
    """``iha eval ARGS --device cpu``; checks the warning that the prompts exceed the tiny
    model's 32-token training context."""
    rc = main(["eval", *args, "--device", "cpu"])
    err = capsys.readouterr().err
    assert "iha eval: warning: prompts need up to" in err and "trained on 32" in err
    return rc


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_iha_eval_gsm8k_greedy_on_iha_checkpoint_equals_manual_greedy(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _eval(
        capsys,
        "gsm8k", str(tiny_run), "--data", str(FIXTURES / "gsm8k_tiny.jsonl"),
        "--limit", "2", "--temperature", "0", "--max-new-tokens", "4", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    model, _, found = load_trained_model(tiny_run)
    summary = json.loads((out / "gsm8k.json").read_text())
    assert summary["model"] == f"iha:{found}"
    assert summary["settings"]["n_samples"] == 1 and summary["settings"]["temperature"] == 0.0
    rows = _jsonl(out / "gsm8k.samples.jsonl")
    problems = gsm8k.load_gsm8k(FIXTURES / "gsm8k_tiny.jsonl", limit=2)
    assert len(rows) == 2
    for row, problem in zip(rows, problems):
        # the chat prompt written out by hand: BOS, the user turn, the assistant header
        user = f"{problem.question}\n{gsm8k.CHAT_INSTRUCTION}"
        prompt = [BOS, *f"<|user|>\n{user}\n<|assistant|>\n".encode()]
        text = TOK.decode(greedy_reference(model, prompt, 4, EOS))
        for stop in gsm8k.STOP_STRINGS:
            text = text.split(stop)[0]
        assert row["completions"] == [text]
        assert row["reference"] == problem.answer
        assert row["answers"] == [gsm8k.extract_answer(text)]
    assert summary["metrics"]["pass@1"]["value"] == sum(r["correct"][0] for r in rows) / 2


def test_iha_eval_math500_sampled_writes_consistent_results(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _eval(
        capsys,
        "math500", str(tiny_run), "--data", str(FIXTURES / "math500_tiny.jsonl"),
        "--n-samples", "3", "--temperature", "0.6", "--max-new-tokens", "4",
        "--batch-size", "4", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "math500.json").read_text())
    rows = _jsonl(out / "math500.samples.jsonl")
    fixture = read_jsonl(FIXTURES / "math500_tiny.jsonl")
    # the third record has no answer field: its reference is the solution's last \\boxed{}
    assert [r["reference"] for r in rows] == ["14", "\\frac{5}{2}", "(1, 3)"]
    assert len(fixture) == 3
    assert all(len(r["completions"]) == 3 for r in rows)
    assert set(summary["metrics"]) == {"pass@1", "maj@3", "pass@3"}
    flat = [c for r in rows for c in r["correct"]]
    assert summary["metrics"]["pass@1"]["value"] == pytest.approx(sum(flat) / len(flat))
    assert "| pass@1 |" in (out / "math500.md").read_text()


def test_iha_eval_ruler_on_iha_checkpoint_equals_manual_greedy(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _eval(
        capsys,
        "ruler", str(tiny_run), "--lengths", "512", "--tasks", "niah_multikey_3",
        "--limit", "1", "--max-new-tokens", "4", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "ruler.json").read_text())
    assert set(summary["scores"]) == {"niah_multikey_3"}
    preds = _jsonl(out / "ruler.samples.jsonl")
    assert [p["length"] for p in preds] == [512]
    model, _, _ = load_trained_model(tiny_run)
    sample = ruler.generate_samples(
        "niah_multikey_3", TOK, lengths=[512], num_samples=1, tokens_to_generate=4
    )[0]
    assert preds[0]["outputs"] == sample.outputs
    expected = TOK.decode(greedy_reference(model, [BOS, *TOK.encode(sample.input)], 4, EOS))
    assert preds[0]["prediction"] == expected
    score = summary["scores"]["niah_multikey_3"]["512"]
    assert score == ruler.string_match_all(expected, sample.outputs)


def test_model_generator_on_trained_checkpoint_batches_like_single_prompts(tiny_run):
    model, _, _ = load_trained_model(tiny_run)
    gen = runner.ModelGenerator(model, TOK.pad_token_id)
    assert gen.context_length == 32
    prompts = [TOK.encode("Question: what is 3 plus 4?", add_bos=True), [BOS, *b"Answer"]]
    out = gen(prompts, runner.SamplingParams(max_new_tokens=5, temperature=0.0, seed=None))
    assert out == [greedy_reference(model, p, 5, None) for p in prompts]


# ---------------------------------------------------------------- SFT through the engine


def _hand_encoded(record: dict) -> tuple[list[int], list[bool]]:
    """A fixture record rendered by hand with the documented byte chat template: every message
    is ``<|role|>\\n`` + content + (``\\n``, or ``<|eos|>`` for the assistant); the loss mask is
    True on the assistant's content and its eos only."""
    if "conversations" in record:
        turns = [(t["from"], t["value"]) for t in record["conversations"]]
        if record.get("system"):
            turns.insert(0, ("system", record["system"]))
    else:
        turns = [(m["role"], m["content"]) for m in record["messages"]]
    ids, mask = [BOS], [False]
    for role, content in turns:
        header = list(f"<|{role}|>\n".encode())
        body = list(content.encode())
        ids += header
        mask += [False] * len(header)
        if role == "assistant":
            ids += [*body, EOS]
            mask += [True] * (len(body) + 1)
        else:
            ids += [*body, ord("\n")]
            mask += [False] * (len(body) + 1)
    return ids, mask


def test_sft_config_trains_on_assistant_tokens_only_then_evaluates(
    tiny_run, tmp_path, monkeypatch, capsys
):
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = []
    original = Trainer.train_step

    def spy(self, batch):
        with torch.no_grad():  # reference: mean cross entropy over the mask, float64
            logp = F.log_softmax(self.model(batch.inputs).double(), dim=-1)  # (B, N, V)
            picked = logp.gather(-1, batch.targets[..., None])[..., 0]  # (B, N)
            # (the engine reports 0 for a batch without assistant tokens)
            reference = float(-picked[batch.loss_mask].sum()) / max(int(batch.loss_mask.sum()), 1)
        loss, norm = original(self, batch)
        seen.append((batch.inputs, batch.targets, batch.loss_mask, reference))
        assert loss == pytest.approx(reference, rel=1e-5)
        return loss, norm

    monkeypatch.setattr(Trainer, "train_step", spy)
    sft_dir = tmp_path / "sft"
    data = FIXTURES / "openthoughts_tiny.jsonl"
    settings = {
        **model_overrides(tiny_run),
        "data.path": json.dumps(str(data)),
        "data.tokenizer": '"byte"',
        "data.seq_len": 32,
        "data.shuffle": "false",
        "train.init_from": json.dumps(str(tiny_run)),
        "train.max_steps": 4,
        "train.batch_size": 2,
        "train.micro_batch_size": 1,  # two micro-batches: the mask mean spans both
        "distributed.strategy": '"ddp"',
        **QUIET,
    }
    rc = main(["train", "sft-openthoughts", "--run-dir", str(sft_dir), *set_args(settings)])
    assert rc == 0
    assert len(seen) == 4

    # the engine's stream: documents in file order, epoch after epoch, cut into windows of
    # seq_len + 1 tokens that overlap by one (targets are the inputs shifted by one)
    docs = [_hand_encoded(r) for r in read_jsonl(data)]
    seq_len, n_seq = 32, 8
    stream = list(islice(cycle([(t, m) for ids, mask in docs for t, m in zip(ids, mask)]),
                         n_seq * seq_len + 1))  # fmt: skip
    rows = [(inputs[r], targets[r], mask[r]) for inputs, targets, mask, _ in seen for r in range(2)]
    for s, (inputs, targets, mask) in enumerate(rows):
        window = stream[s * seq_len : (s + 1) * seq_len + 1]
        assert inputs.tolist() == [t for t, _ in window[:-1]]
        assert targets.tolist() == [t for t, _ in window[1:]]
        assert mask.tolist() == [m for _, m in window[1:]]
    masks = torch.stack([mask for _, _, mask in rows])
    assert masks.any() and not masks.all()
    assert all(math.isfinite(ref) for *_, ref in seen)

    out = tmp_path / "out"
    rc = _eval(
        capsys,
        "gsm8k", str(sft_dir), "--data", str(FIXTURES / "gsm8k_tiny.jsonl"), "--limit", "2",
        "--n-samples", "2", "--max-new-tokens", "6", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "gsm8k.json").read_text())
    assert summary["model"].startswith(f"iha:{sft_dir}")
    assert summary["settings"]["n_problems"] == 2 and set(summary["metrics"]) == {
        "pass@1",
        "maj@2",
        "pass@2",
    }


def test_iha_eval_mbpp_and_humaneval_on_iha_checkpoint(tiny_run, tmp_path, capsys):
    from iha.eval import humaneval, mbpp
    from iha.eval.code import run_program

    out = tmp_path / "out"
    model, _, _ = load_trained_model(tiny_run)
    for bench, data, module in (
        ("mbpp", "mbpp_tiny.jsonl", mbpp),
        ("humaneval", "humaneval_tiny.jsonl", humaneval),
    ):
        rc = _eval(
            capsys,
            bench, str(tiny_run), "--data", str(FIXTURES / data), "--limit", "1",
            "--temperature", "0", "--max-new-tokens", "3", "--timeout", "5", "--out", str(out),
        )  # fmt: skip
        assert rc == 0
        summary = json.loads((out / f"{bench}.json").read_text())
        assert set(summary["metrics"]) == {"pass@1"}  # greedy: one sample, no pass@10
        (row,) = _jsonl(out / f"{bench}.samples.jsonl")
        problem = (mbpp.load_mbpp if bench == "mbpp" else humaneval.load_humaneval)(
            FIXTURES / data, limit=1
        )[0]
        prompt = mbpp.fewshot_prompt(problem) if bench == "mbpp" else problem.prompt
        expected = TOK.decode(greedy_reference(model, [BOS, *TOK.encode(prompt)], 3, EOS))
        cut = expected.split("[DONE]")[0] if bench == "mbpp" else humaneval.cut_completion(expected)
        assert row["completions"] == [cut]
        passed = run_program(module.program(problem, cut), timeout=5)
        assert row["correct"] == [passed]
        assert summary["metrics"]["pass@1"]["value"] == float(passed)


def test_iha_eval_ruler_qa_from_local_file_and_bad_task(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _eval(
        capsys,
        "ruler", str(tiny_run), "--lengths", "1024", "--tasks", "qa_1", "vt",
        "--squad", str(FIXTURES / "squad_v2_tiny.json"), "--limit", "1",
        "--max-new-tokens", "2", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "ruler.json").read_text())
    assert list(summary["scores"]) == ["qa_1", "vt"]
    preds = _jsonl(out / "ruler.samples.jsonl")
    assert preds[0]["outputs"] == ["1871"]  # the fixture's first answerable question
    assert set(summary["average"]) == {"by_length", "overall"}
    rc = main(["eval", "ruler", str(tiny_run), "--tasks", "niah_single_9", "--device", "cpu"])
    assert rc == 2
    assert "niah_single_9" in capsys.readouterr().err
