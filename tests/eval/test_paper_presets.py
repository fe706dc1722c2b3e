"""The paper's table presets on scripted generators (values known by construction) and through
``iha eval`` on a real tiny checkpoint."""

import json
from pathlib import Path

import pytest

from iha.eval import paper
from iha.tokenizers import ByteTokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
TOK = ByteTokenizer()
DATA = {
    "gsm8k": FIXTURES / "gsm8k_tiny.jsonl",
    "math500": FIXTURES / "math500_tiny.jsonl",
    "mbpp": FIXTURES / "mbpp_tiny.jsonl",
    "humaneval": FIXTURES / "humaneval_tiny.jsonl",
}
PRODUCT = "def list_product(nums):\n    r = 1\n    for n in nums:\n        r *= n\n    return r\n"


class Scripted:
    """Completions per problem (a marker in the last 400 characters of the prompt) and per
    decoding (greedy or sampled), cycled in order."""

    def __init__(self, script):
        self.script, self.counts = script, {}

    def __call__(self, prompts, params):
        out = []
        for p in prompts:
            tail = TOK.decode(p)[-400:]
            mode = "greedy" if params.temperature == 0 else "sampled"
            key = next(k for k in self.script if k[0] in tail and k[1] == mode)
            i = self.counts.get(key, 0)
            self.counts[key] = i + 1
            out.append(TOK.encode(self.script[key][i % len(self.script[key])]))
        return out


def test_pretrained_preset_row():
    script = {
        ("farmer", "greedy"): ["#### 240"],
        ("ticket", "greedy"): ["#### 3"],
        ("farmer", "sampled"): ["#### 240", "#### 1", "#### 240", "#### 2", "#### 3"],
        ("ticket", "sampled"): ["#### 13.5", "#### 13.5", "#### 3", "#### 13.5", "#### 4"],
        ("2 + 3", "greedy"): ["So $\\boxed{14}$."],
        ("frac{10}{4}", "greedy"): ["$\\boxed{3}$"],
        ("product of all", "greedy"): [PRODUCT + "[DONE]"],
        ("reverse the order", "greedy"): ["def reverse_words(s):\n    return s\n[DONE]"],
        ("element-wise sums", "greedy"): ["    return [x + y for x, y in zip(xs, ys)]\n"],
        ("Count the vowels", "greedy"): ["    return sum(c in 'aeiou' for c in text.lower())\n"],
    }
    res = paper.run_preset("pretrained", Scripted(script), TOK, DATA, label="IHA", limit=2)
    assert res.row() == {
        "GSM8K EM": 0.5,
        "GSM8K Maj@5": 1.0,
        "MATH-500 EM": 0.5,
        "MBPP P@1": 0.5,
        "HumanEval P@1": 1.0,
    }
    lines = res.markdown().splitlines()
    assert lines[0] == (
        "| Model | GSM8K EM | GSM8K Maj@5 | MATH-500 EM | MBPP P@1 | HumanEval P@1 |"
    )
    assert lines[2] == "| IHA | 50.00 | 100.00 | 50.00 | 50.0 | 100.0 |"
    assert res.results["gsm8k-maj5"].settings["n_samples"] == 5
    assert res.results["gsm8k-maj5"].settings["temperature"] == 0.6
    assert res.results["mbpp-greedy"].settings["prompt_style"] == "fewshot"


def test_sft_preset_row_from_16_samples():
    script = {
        ("farmer", "sampled"): ["#### 240"] * 4 + ["#### 1", "#### 2", "#### 3", "#### 4"] * 3,
        ("2 + 3", "sampled"): ["$\\boxed{14}$"] * 10 + ["$\\boxed{15}$"] * 6,
        ("product of all", "sampled"): ["```python\n" + PRODUCT + "```"] * 2 + ["no code"] * 14,
    }
    res = paper.run_preset("sft", Scripted(script), TOK, DATA, label="Global", limit=1)
    row = res.row()
    assert row["GSM8K P@1"] == pytest.approx(0.25) and row["GSM8K Maj@16"] == 1.0
    assert row["MATH-500 P@1"] == pytest.approx(0.625) and row["MATH-500 Maj@16"] == 1.0
    assert row["MBPP P@1"] == pytest.approx(0.125)
    assert row["MBPP P@10"] == pytest.approx(1 - 1001 / 8008)  # 1 - C(14,10) / C(16,10)
    assert (
        res.markdown().splitlines()[2] == "| Global | 25.0 | 100.0 | 62.5 | 100.0 | 12.5 | 87.5 |"
    )
    assert {r.settings["prompt_style"] for r in res.results.values()} == {"chat"}


def test_format_table_several_models_and_bad_preset():
    rows = {"IHA": {"MBPP P@1": 0.155, "MBPP P@10": 0.416}, "Global": {"MBPP P@1": 0.147}}
    lines = paper.format_table("sft", rows).splitlines()
    assert lines[2] == "| IHA | - | - | - | - | 15.5 | 41.6 |"
    assert lines[3] == "| Global | - | - | - | - | 14.7 | - |"
    with pytest.raises(ValueError, match="preset"):
        paper.format_table("rlhf", rows)
    with pytest.raises(ValueError, match="preset"):
        paper.runs("rlhf")


def test_iha_eval_paper_pretrained_on_a_tiny_checkpoint(tiny_run, tmp_path, capsys):
    from iha.cli import main

    out = tmp_path / "out"
    args = ["eval", "paper-pretrained", str(tiny_run), "--limit", "1", "--max-new-tokens", "2"]
    for name, path in DATA.items():
        args += [f"--{name}", str(path)]
    rc = main([*args, "--label", "tiny", "--out", str(out), "--device", "cpu", "--timeout", "5"])
    assert rc == 0
    table = (out / "paper-pretrained.md").read_text().splitlines()
    assert table[0].startswith("| Model | GSM8K EM | GSM8K Maj@5 |") and table[2].startswith(
        "| tiny |"
    )
    summary = json.loads((out / "paper-pretrained.json").read_text())
    runs = {n: json.loads((out / f"{n}.json").read_text()) for n in summary["runs"]}
    assert set(runs) == {
        "gsm8k-greedy", "gsm8k-maj5", "math500-greedy", "mbpp-greedy", "humaneval-greedy"
    }  # fmt: skip
    assert summary["row"]["GSM8K Maj@5"] == runs["gsm8k-maj5"]["metrics"]["maj@5"]["value"]
    assert summary["row"]["HumanEval P@1"] == runs["humaneval-greedy"]["metrics"]["pass@1"]["value"]
    assert runs["humaneval-greedy"]["settings"]["n_samples"] == 1
    assert "| tiny |" in capsys.readouterr().out
