"""Evaluation arithmetic that once had no guard: bootstrap order statistics, the MATH numeric
tolerance, and the RULER prompt budget that leaves room for BOS."""

from __future__ import annotations

import math
import random

import pytest

from iha.eval.metrics import bootstrap_ci
from iha.eval.ruler import generate_sample


def test_bootstrap_bounds_are_the_exact_order_statistics():
    source = random.Random(0)
    scores = [source.random() for _ in range(11)]
    n, confidence = 30, 0.5
    est = bootstrap_ci(scores, confidence=confidence, n_resamples=n, seed=3)
    rng = random.Random(3)  # the documented resampling, redone here
    means = sorted(sum(rng.choices(scores, k=len(scores))) / len(scores) for _ in range(n))
    assert len(set(means)) == n  # distinct: each order statistic is unambiguous
    # 25% in each tail of 30 means: 7 means lie strictly below the lower bound, 7 above the upper
    assert sum(m < est.low for m in means) == 7 and sum(m > est.high for m in means) == 7
    assert est.low == means[7] and est.high == means[22]
    assert est.value == pytest.approx(sum(scores) / len(scores))


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("1/3", "0.3333", False),  # a near miss is wrong
        ("1/3", "0.33333333", False),  # 3e-9 off: outside the 1e-9 tolerance
        ("1/3", "0.3333333333333", True),  # 3e-14 off: a printed float of 1/3
        ("1/2", "0.5", True),
        ("\\frac{2}{4}", "0.5", True),
        ("\\sqrt{2}", "1.41421356", False),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("10^{-6}", "0", False),  # small but non-zero
    ],
)
def test_math_numeric_equivalence_is_tight(a, b, same):
    pytest.importorskip("sympy")
    from iha.eval.math import is_equiv

    assert is_equiv(a, b) is same


class OneTokenPerWord:
    """Each space-separated word is one token, so every haystack unit costs exactly one."""

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split(" ")]


@pytest.mark.parametrize("length", [300, 301, 417])
@pytest.mark.parametrize("to_generate", [0, 32])
def test_ruler_prompts_fill_the_budget_exactly_leaving_one_token_for_bos(length, to_generate):
    words = [f"w{i}." for i in range(50)]
    sample, _ = generate_sample(
        "niah_multikey_1", OneTokenPerWord(), length, tokens_to_generate=to_generate,
        sentences=words,
    )  # fmt: skip
    assert sample.n_tokens == length - to_generate - 1
    assert math.isfinite(sample.n_tokens)
