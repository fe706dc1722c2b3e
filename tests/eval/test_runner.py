import json
import re
from pathlib import Path

import pytest
import torch

from iha.eval import ruler, runner
from iha.eval.gsm8k import load_gsm8k
from iha.eval.math import load_math500
from iha.eval.runner import (
    ModelGenerator,
    SamplingParams,
    generate_all,
    run_ruler_eval,
    run_sampled_eval,
    write_results,
)
from iha.tokenizers import ByteTokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
TOK = ByteTokenizer()


class ScriptedGenerator:
    """Answers by looking the question up in the decoded prompt; records every call."""

    def __init__(self, script):
        self.script = script  # question substring -> list of completions (cycled)
        self.calls = []
        self.counts = {}

    def __call__(self, prompts, params):
        self.calls.append((len(prompts), params))
        out = []
        for p in prompts:
            text = TOK.decode(p)
            last = text.rsplit("Question:", 1)[-1] if "Question:" in text else text
            key = next(k for k in self.script if k in last)
            i = self.counts.get(key, 0)
            self.counts[key] = i + 1
            out.append(TOK.encode(self.script[key][i % len(self.script[key])]))
        return out


def _gsm():
    return load_gsm8k(FIXTURES / "gsm8k_tiny.jsonl")


def test_sampled_eval_metrics_match_hand_computation():
    script = {
        "farmer": ["#### 240", "#### 240", "#### 1", "I think 2"],  # 2/4 right, majority right
        "ticket": ["The answer is $13.50.", "#### 3", "#### 4", "#### 3"],  # 1/4, majority 3
        "library": ["no idea"] * 4,  # 0/4, no answer at all
    }
    res = run_sampled_eval(
        "gsm8k", _gsm(), ScriptedGenerator(script), TOK, n_samples=4, batch_size=3
    )
    assert res.metrics["pass@1"]["value"] == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    assert res.metrics["maj@4"]["value"] == pytest.approx(1 / 3)
    assert res.metrics["pass@4"]["value"] == pytest.approx(2 / 3)
    p0, p1, p2 = res.problems
    assert p0["answers"] == ["240", "240", "1", "2"] and p0["majority_correct"]
    assert p1["correct"] == [True, False, False, False] and p1["majority"] == "3"
    assert p2["majority"] is None and not p2["majority_correct"]
    for m in res.metrics.values():
        assert m["low"] <= m["value"] <= m["high"]


def test_perfect_and_wrong_generators():
    gsm = _gsm()
    perfect = {"farmer": ["#### 240"], "ticket": ["#### 13.5"], "library": ["#### 850"]}
    res = run_sampled_eval("gsm8k", gsm, ScriptedGenerator(perfect), TOK, n_samples=2)
    assert res.metrics["pass@1"]["value"] == 1.0 and res.metrics["maj@2"]["value"] == 1.0
    wrong = {"farmer": ["#### 1"], "ticket": ["#### 2"], "library": ["#### 3"]}
    res = run_sampled_eval("gsm8k", gsm, ScriptedGenerator(wrong), TOK, n_samples=2)
    assert res.metrics["pass@1"]["value"] == 0.0 and res.metrics["maj@2"]["value"] == 0.0


def test_math500_uses_boxed_answers_and_equivalence():
    probs = load_math500(FIXTURES / "math500_tiny.jsonl")
    script = {
        "2 + 3": ["so \\boxed{14}"],
        "frac{10}{4}": ["\\boxed{2.5}"],  # equivalent to \frac{5}{2}
        "vertex": ["\\boxed{(1,4)}"],  # wrong
    }
    res = run_sampled_eval("math500", probs, ScriptedGenerator(script), TOK, n_samples=1)
    assert [p["correct"] for p in res.problems] == [[True], [True], [False]]


def test_fewshot_completions_are_cut_at_the_next_question():
    # a base model runs on into a new "Question:"; only the text before it is scored
    script = {"farmer": ["The answer is 7.\n\nQuestion: next? The answer is 240"]}
    gen = ScriptedGenerator(script)
    res = run_sampled_eval("gsm8k", _gsm()[:1], gen, TOK, n_samples=1, prompt_style="fewshot")
    assert res.problems[0]["answers"] == ["7"]
    assert res.problems[0]["completions"] == ["The answer is 7."]


def test_prompts_are_built_in_the_requested_style():
    seen = []

    def spy(prompts, params):
        seen.extend(TOK.decode(p, skip_special_tokens=False) for p in prompts)
        return [[] for _ in prompts]

    gsm = _gsm()[:1]
    run_sampled_eval("gsm8k", gsm, spy, TOK, n_samples=1, prompt_style="chat")
    run_sampled_eval("gsm8k", gsm, spy, TOK, n_samples=1, prompt_style="fewshot")
    assert seen[0].startswith("<|bos|><|user|>\n" + gsm[0].question)
    assert seen[0].endswith("<|assistant|>\n")
    assert seen[1].startswith("<|bos|>Question: ") and seen[1].endswith("\nAnswer:")
    assert seen[1].count("####") == 5


def test_sampling_settings_reach_the_generator_and_batches_are_seeded():
    gen = ScriptedGenerator({"farmer": ["#### 240"], "ticket": ["x"], "library": ["y"]})
    params = SamplingParams(max_new_tokens=7, temperature=0.6, top_p=0.9, seed=5)
    run_sampled_eval("gsm8k", _gsm(), gen, TOK, n_samples=4, params=params, batch_size=5)
    assert [n for n, _ in gen.calls] == [5, 5, 2]
    seeds = [p.seed for _, p in gen.calls]
    assert len(set(seeds)) == 3
    assert all(p.max_new_tokens == 7 and p.top_p == 0.9 for _, p in gen.calls)
    assert all(TOK.eos_token_id in p.stop_token_ids for _, p in gen.calls)
    gen2 = ScriptedGenerator({"farmer": ["#### 240"], "ticket": ["x"], "library": ["y"]})
    run_sampled_eval("gsm8k", _gsm(), gen2, TOK, n_samples=4, params=params, batch_size=5)
    assert [p.seed for _, p in gen2.calls] == seeds  # reproducible


def test_bad_settings_raise():
    gen = ScriptedGenerator({"": ["1"]})
    with pytest.raises(ValueError, match="temperature=0"):
        run_sampled_eval(
            "gsm8k", _gsm(), gen, TOK, n_samples=2, params=SamplingParams(temperature=0.0)
        )
    with pytest.raises(ValueError, match="benchmark"):
        run_sampled_eval("mbpp", _gsm(), gen, TOK)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_all(gen, [[1]], SamplingParams(), batch_size=0)


def test_model_generator_left_pads_and_cuts_at_stop_tokens():
    captured = {}

    def fake_generate(model, input_ids, attention_mask=None, **kw):
        captured.update(ids=input_ids, mask=attention_mask, **kw)
        return torch.tensor([[5, 6, 99, 7], [8, 99, 99, 99]])  # (B, new)

    gen = ModelGenerator(model=None, pad_token_id=0, generate_fn=fake_generate)
    out = gen([[1, 2, 3], [4]], SamplingParams(temperature=0.0, stop_token_ids=(99,), seed=3))
    assert out == [[5, 6], [8]]
    assert captured["ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert captured["mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert captured["temperature"] == 0.0 and captured["stop_token_ids"] == [99]
    assert captured["seed"] == 3


def _needle_reader(prompts, params):
    """Reads the queried key's needle out of the prompt: a perfect retriever."""
    out = []
    for p in prompts:
        text = TOK.decode(p)
        query = re.search(r"special magic \w+ for (\S+) mentioned", text).group(1)
        value = re.search(rf"for {re.escape(query)} is: (\S+?)\.(?:\s|$)", text).group(1)
        out.append(TOK.encode(f" {value}."))
    return out


def test_ruler_runner_scores_perfect_and_wrong_retrievers(tmp_path):
    samples = [
        s
        for task in ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3")
        for s in ruler.generate_samples(
            task, TOK, lengths=[1024, 2048], num_samples=2, tokens_to_generate=16
        )
    ]
    res = run_ruler_eval(samples, _needle_reader, TOK, max_new_tokens=16, batch_size=4)
    assert all(v == 1.0 for by in res.scores.values() for v in by.values())
    assert set(res.scores) == {"niah_multikey_1", "niah_multikey_2", "niah_multikey_3"}
    assert set(res.scores["niah_multikey_2"]) == {
        1024,
        2048,
    }
    bad = run_ruler_eval(samples, lambda ps, params: [[] for _ in ps], TOK, max_new_tokens=16)
    assert all(v == 0.0 for by in bad.scores.values() for v in by.values())
    paths = write_results(tmp_path, "ruler", res)
    summary = json.loads(paths["json"].read_text())
    assert summary["scores"]["niah_multikey_1"] == {"1024": 1.0, "2048": 1.0}
    assert "| niah_multikey_3 | 100.0 | 100.0 | 100.0 |" in paths["markdown"].read_text()
    assert len(paths["samples"].read_text().splitlines()) == len(samples)


def test_ruler_runner_on_the_whole_suite_uses_each_tasks_budget():
    """An oracle that knows every answer scores 100 on all 13 tasks; each sample is generated
    with its task's own RULER budget, and the suite average is in the summary."""
    from iha.eval.ruler_qa import load_qa_data

    qa = {
        "qa_1": load_qa_data("qa_1", FIXTURES / "squad_v2_tiny.json"),
        "qa_2": load_qa_data("qa_2", FIXTURES / "hotpotqa_tiny.json"),
    }
    samples = [
        s
        for task in ruler.TASKS
        for s in ruler.generate_samples(
            task, TOK, lengths=[3072], num_samples=1, qa_data=qa.get(task)
        )
    ]
    answers = {s.input: " " + ", ".join(s.outputs) for s in samples}
    budgets = {}

    def oracle(prompts, params):
        out = []
        for p in prompts:
            text = TOK.decode(p[1:])  # after BOS
            budgets[text] = params.max_new_tokens
            out.append(TOK.encode(answers[text]))
        return out

    res = run_ruler_eval(samples, oracle, TOK, batch_size=3)
    assert res.scores == {t: {3072: 1.0} for t in ruler.TASKS}
    expected = {"vt": 30, "cwe": 120, "fwe": 50, "qa_1": 32, "qa_2": 32}
    for s in samples:
        assert budgets[s.input] == expected.get(s.task, 128)
    summary = res.summary()
    assert summary["average"] == {"by_length": {"3072": 1.0}, "overall": 1.0}
    assert res.markdown().splitlines()[-1] == "| **average** | 100.0 | 100.0 |"


# ---------------------------------------------------------------- real HF model, end to end


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=TOK.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=TOK.bos_token_id,
        eos_token_id=TOK.eos_token_id,
        pad_token_id=TOK.pad_token_id,
    )
    model = transformers.LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(path)
    return path


def test_hf_generator_greedy_matches_manual_greedy_on_left_padded_batch(tiny_llama_dir):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    gen = runner.HFGenerator(model, TOK.pad_token_id)
    prompts = [TOK.encode("Hello there", add_bos=True), TOK.encode("Hi", add_bos=True)]
    out = gen(prompts, SamplingParams(max_new_tokens=5, temperature=0.0, seed=None))
    for p, got in zip(prompts, out):
        ids = list(p)
        for _ in range(5):  # reference: unpadded full forward, argmax, one token at a time
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
        assert got == ids[len(p) :]


def test_iha_eval_cli_end_to_end_on_tiny_hf_model(tiny_llama_dir, tmp_path, capsys):
    from iha.cli import main

    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "gsm8k",
            str(tiny_llama_dir),
            "--tokenizer",
            "byte",
            "--data",
            str(FIXTURES / "gsm8k_tiny.jsonl"),
            "--limit",
            "2",
            "--n-samples",
            "2",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "3",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "gsm8k.json").read_text())
    assert summary["settings"]["n_problems"] == 2 and summary["settings"]["n_samples"] == 2
    assert set(summary["metrics"]) == {"pass@1", "maj@2", "pass@2"}
    assert summary["model"].startswith("hf:")
    assert "| pass@1 |" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "gsm8k.samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["completions"]) == 2 for r in rows)

    rc = main(
        [
            "eval",
            "ruler",
            str(tiny_llama_dir),
            "--tokenizer",
            "byte",
            "--lengths",
            "1024",
            "--tasks",
            "niah_multikey_2",
            "--limit",
            "1",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "ruler.json").read_text())
    assert list(summary["scores"]) == ["niah_multikey_2"]
    assert 0.0 <= summary["scores"]["niah_multikey_2"]["1024"] <= 1.0


def test_iha_eval_cli_reports_bad_input(tmp_path, capsys):
    from iha.cli import main

    rc = main(
        [
            "eval",
            "gsm8k",
            str(tmp_path / "missing-model"),
            "--tokenizer",
            "byte",
            "--data",
            str(FIXTURES / "gsm8k_tiny.jsonl"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_model_generator_with_iha_decoder_lm_matches_manual_greedy():
    try:  # runs once the model package is complete
        from iha.models import DecoderLM, ModelConfig, generate  # noqa: F401
    except ImportError as e:
        pytest.skip(f"iha.models not available yet: {e}")
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=TOK.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        attention_variant="iha_global",
    )
    model = DecoderLM(cfg).eval()
    gen = ModelGenerator(model, pad_token_id=TOK.pad_token_id)
    prompts = [TOK.encode("abc", add_bos=True), TOK.encode("a", add_bos=True)]
    out = gen(prompts, SamplingParams(max_new_tokens=4, temperature=0.0, seed=None))
    for p, got in zip(prompts, out):
        ids = list(p)
        for _ in range(4):  # reference: unpadded full forward, argmax, one token at a time
            with torch.no_grad():
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        assert got == ids[len(p) :]
