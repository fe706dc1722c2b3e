import operator
import re
import sys
from pathlib import Path

import pytest

from iha.eval import gsm8k
from iha.eval.gsm8k import (
    extract_answer,
    fewshot_prompt,
    is_correct,
    load_gsm8k,
    normalize_number,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12", "12"),
        ("1,234", "1234"),  # commas
        ("$18", "18"),  # currency signs
        ("€7.25", "7.25"),
        ("£3", "3"),
        ("18.", "18"),  # trailing period
        ("3.50", "3.5"),  # trailing zeros
        ("12.0", "12"),
        ("12.000", "12"),
        ("-4", "-4"),
        ("-0.0", "0"),
        (".5", "0.5"),
        ("$1,000.10", "1000.1"),
        ("50%", "50"),
        ("abc", None),
        ("", None),
        ("1e5", None),
    ],
)
def test_normalize_number_rules(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # after "####" wins over everything else
        ("He has 3 apples and 4 pears.\n#### 7", "7"),
        ("So 5 + 5 = 10. The answer is 10.\n#### 1,000", "1000"),
        ("#### $12.50\nQuestion: next one has 99", "12.5"),
        ("####\n8 then #### 9", "9"),  # the first #### followed by a number on its line
        # else after "the answer is" (last occurrence, case-insensitive)
        ("First 2 + 2 = 4, so The answer is 4. Then 17 more.", "4"),
        ("the answer is 3. No wait, the answer is $5.00.", "5"),
        ("The answer is unclear, maybe 6 or 8", "6"),
        # else inside the last \boxed{}
        ("We get \\boxed{42}. Checking with 2 more steps.", "42"),
        # else the last number
        ("There were 3 cats, then 12.0 cats.", "12"),
        ("It costs $3.50.", "3.5"),
        ("Totals: 1,500 and then -20", "-20"),
        # None when there is no number at all
        ("I do not know.", None),
        ("#### none", None),
        ("", None),
    ],
)
def test_extract_answer_rules(text, expected):
    assert extract_answer(text) == expected


def test_is_correct_compares_numbers():
    assert is_correct("3.5", "3.50")
    assert is_correct("12", "12.0")
    assert not is_correct("12", "13")
    assert not is_correct(None, "1")


def test_load_gsm8k_local_jsonl_fixture_and_limit():
    problems = load_gsm8k(FIXTURES / "gsm8k_tiny.jsonl")
    assert [p.answer for p in problems] == ["240", "13.5", "850"]
    assert problems[0].question.startswith("A farmer has 7 cows")
    assert len(load_gsm8k(FIXTURES / "gsm8k_tiny.jsonl", limit=2)) == 2
    with pytest.raises(ValueError, match="limit"):
        load_gsm8k(FIXTURES / "gsm8k_tiny.jsonl", limit=0)


def test_load_gsm8k_bad_local_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="missing field"):
        load_gsm8k(bad)
    with pytest.raises(ValueError, match="not a file"):
        load_gsm8k(tmp_path / "nope.jsonl")


def test_load_gsm8k_without_datasets_names_offline_alternative(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(RuntimeError, match="--data"):
        load_gsm8k()


def test_fewshot_exemplars_are_self_consistent_and_prompt_format():
    for question, solution in gsm8k.FEWSHOT_EXEMPLARS:
        final = extract_answer(solution)
        assert final is not None and question.endswith("?")
        assert solution.rstrip().endswith(f"#### {final}")
    prompt = fewshot_prompt("How many legs do 3 dogs have?")
    assert prompt.count("Question:") == 6 and prompt.count("####") == 5
    assert prompt.endswith("Question: How many legs do 3 dogs have?\nAnswer:")
    assert fewshot_prompt("Q?", n_shots=0) == "Question: Q?\nAnswer:"
    with pytest.raises(ValueError, match="n_shots"):
        fewshot_prompt("Q?", n_shots=6)


def test_fewshot_exemplar_arithmetic_is_right():
    # every "a op b = c" in the exemplars holds (checked with Python arithmetic)
    ops = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
    n_checked = 0
    for _, solution in gsm8k.FEWSHOT_EXEMPLARS:
        for a, op, b, c in re.findall(r"(\d+) ([-+*/]) (\d+) = \$?(\d+)", solution):
            assert ops[op](int(a), int(b)) == int(c), (a, op, b, c)
            n_checked += 1
    assert n_checked >= 10


def test_chat_messages_single_user_turn():
    msgs = gsm8k.chat_messages("What is 2 + 2?")
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    assert "\\boxed{}" in msgs[0]["content"]
