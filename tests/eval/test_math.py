import time
from pathlib import Path

import pytest

from iha.eval import math as m
from iha.eval.math import extract_boxed, extract_math_answer, is_equiv, load_math500

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{14}.", "14"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{x^{2} + {y}}", "x^{2} + {y}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),  # the last box
        ("\\fbox{7}", "7"),
        ("\\boxed 5$ done", "5"),  # brace-less form
        ("\\boxed{3} and an unclosed \\boxed{4", "3"),  # unbalanced last box: earlier one
        ("no box here", None),
        ("\\boxed{", None),
        ("\\boxedx{1}", None),  # not the \boxed command
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_math_answer_falls_back_to_final_answer_phrase():
    assert extract_math_answer("The final answer is $\\frac{3}{4}$. I hope") == "\\frac{3}{4}"
    assert extract_math_answer("blah \\boxed{2} The final answer is $3$") == "2"
    assert extract_math_answer("nothing") is None


@pytest.mark.parametrize(
    "a, b",
    [
        ("1 + 2", "1+2"),  # spaces
        ("\\left( 1, 2 \\right)", "(1,2)"),  # \left / \right
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),  # \dfrac -> \frac
        ("\\tfrac{3}{4}", "\\frac34"),  # \tfrac -> \frac, \frac34 -> \frac{3}{4}
        ("\\frac12", "\\frac{1}{2}"),
        ("\\frac1{72}", "\\frac{1}{72}"),
        ("50\\%", "50"),  # \%
        ("30^\\circ", "30"),  # degrees
        ("30^{\\circ}", "30"),
        ("\\$42", "42"),  # dollars
        ("10\\text{ inches}", "10"),  # units in \text{}
        ("5 \\mbox{cm}", "5"),
        ("\\text{(C)}", "(C)"),  # a lone \text{} is unwrapped
        ("x = 3", "3"),  # "x = " prefix
        ("k=\\frac{1}{3}", "\\frac{1}{3}"),
        ("y = 2x + 3", "2x+3"),
        (".5", "0.5"),  # leading "0." fixes
        ("\\frac{.3}{2}", "\\frac{0.3}{2}"),
        ("0.5", "\\frac{1}{2}"),
        ("3/4", "\\frac{3}{4}"),  # integer a/b
        ("\\sqrt3", "\\sqrt{3}"),
        ("\\!2", "2"),
        ("7.", "7"),  # trailing period
        ("1,000", "1000"),  # thousands separator
    ],
)
def test_normalisation_rules_make_equivalent(a, b):
    assert m.normalize_answer(a) == m.normalize_answer(b)
    assert is_equiv(a, b, use_sympy=False)


@pytest.mark.parametrize(
    "a, b",
    [
        ("2", "3"),
        ("\\frac{1}{2}", "\\frac{1}{3}"),
        ("(1,2)", "(2,1)"),
        ("x+1", "x-1"),
        ("\\text{(A)}", "\\text{(B)}"),
        ("x + y = 3", "3"),  # a left side longer than two characters is not a prefix
    ],
)
def test_different_answers_are_not_equivalent(a, b):
    assert not is_equiv(a, b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("2\\sqrt{2}", "\\sqrt{8}"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\frac{\\pi}{2}", "\\frac{2\\pi}{4}"),
        ("\\sqrt[3]{8}", "2"),
        ("(1, 2)", "(1, 2.0)"),
        ("1.5", "\\frac{3}{2}"),
        ("2 \\cdot 3", "6"),
        ("ab", "ba"),
    ],
)
def test_sympy_equivalence(a, b):
    pytest.importorskip("sympy")
    assert not is_equiv(a, b, use_sympy=False)
    assert is_equiv(a, b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("-\\infty", "\\infty"),
        ("x+1", "x+2"),
        ("(1,2)", "(1,2,3)"),
        ("\\sqrt{2}", "1.414"),
    ],
)
def test_sympy_rejects_non_equivalent(a, b):
    pytest.importorskip("sympy")
    assert not is_equiv(a, b)


@pytest.mark.parametrize(
    "a",
    [
        "9^{9^{9^{9}}}",  # tower of powers
        "10^{100000}",
        "2^{x^{x^{x}}}",
        "1" * 500,  # too long
        "x.subs(x, 1)",  # attribute access never reaches the parser
        "lambda x: 1",
        "(1).real",
    ],
)
def test_pathological_inputs_return_quickly_and_false(a):
    pytest.importorskip("sympy")
    t0 = time.perf_counter()
    assert not is_equiv(a, "1")
    assert time.perf_counter() - t0 < 3.0


def test_none_is_never_equivalent():
    assert not is_equiv(None, "1")
    assert not is_equiv("1", None)
    assert not is_equiv(None, None)


def test_load_math500_local_fixture_extracts_missing_answers():
    problems = load_math500(FIXTURES / "math500_tiny.jsonl")
    assert [p.answer for p in problems] == ["14", "\\frac{5}{2}", "(1, 3)"]
    assert problems[2].subject == "Algebra" and problems[2].level == 2
    assert len(load_math500(FIXTURES / "math500_tiny.jsonl", limit=1)) == 1


def test_load_math500_rejects_records_without_answer(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p", "solution": "no box"}\n')
    with pytest.raises(ValueError, match="answer"):
        load_math500(bad)


def test_fewshot_prompt_and_exemplars():
    for q, sol, ans in m.FEWSHOT_EXEMPLARS:
        assert q and sol and ans
    prompt = m.fewshot_prompt("What is $1+1$?")
    assert prompt.count("Problem:") == 6
    assert extract_boxed(prompt) == m.FEWSHOT_EXEMPLARS[-1][2]
    assert prompt.endswith("Problem:\nWhat is $1+1$?\n\nSolution:")
    with pytest.raises(ValueError, match="n_shots"):
        m.fewshot_prompt("x", n_shots=-1)


def test_sympy_time_limit_keeps_an_outer_alarm():
    import signal

    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timers on this platform")
    pytest.importorskip("sympy")
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert is_equiv("2\\sqrt{2}", "\\sqrt{8}")
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 20.0 < remaining <= 30.0  # the outer alarm is still pending
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired


def test_time_limit_interrupts_a_long_computation():
    import signal

    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timers on this platform")
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError), m._time_limit(0.2):
        while time.perf_counter() - t0 < 5.0:
            pass
    assert time.perf_counter() - t0 < 1.0
