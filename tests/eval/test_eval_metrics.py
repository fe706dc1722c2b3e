import itertools
import math
import statistics
from fractions import Fraction

import pytest

from iha.eval.metrics import (
    bootstrap_ci,
    maj_at_k,
    maj_at_k_per_problem,
    majority_vote,
    normal_ci,
    pass_at_1,
    pass_at_k,
)


@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_pass_at_k_matches_brute_force_subset_enumeration(n):
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_matches_exact_binomials_for_large_n():
    for n, c, k in [(200, 5, 100), (500, 1, 10), (1000, 37, 64), (16, 3, 16)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)


@pytest.mark.parametrize(
    "bad",
    [
        dict(n=0, c=0, k=1),
        dict(n=4, c=5, k=1),
        dict(n=4, c=1, k=5),
        dict(n=4, c=-1, k=1),
        dict(n=4, c=1, k=0),
    ],
)
def test_pass_at_k_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        pass_at_k(**bad)


def test_majority_vote_rules():
    assert majority_vote(["3", "4", "4", None, None, None]) == "4"  # None never wins
    assert majority_vote(["b", "a", "a", "b"]) == "b"  # tie: first seen
    assert majority_vote(["a", "b", "b", "a", "c"]) == "a"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert majority_vote([None, "7"]) == "7"


def test_pass_at_1_is_mean_over_problems_of_sample_accuracy():
    correct = [[True, False, False, False], [True, True, True, True], [False] * 4]
    est = pass_at_1(correct)
    assert est.value == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert est.low <= est.value <= est.high
    assert est.n == 3


def test_maj_at_k_uses_first_k_samples_and_custom_equivalence():
    answers = [["1", "2", "2", "1", "1"], [None, None, "5"], ["x", None, None]]
    refs = ["1", "5", "y"]
    assert maj_at_k_per_problem(answers, refs, k=3) == [0.0, 1.0, 0.0]
    assert maj_at_k_per_problem(answers[:1], refs[:1], k=5) == [1.0]
    lower = maj_at_k_per_problem(
        answers, ["1", "5", "X"], k=1, is_correct=lambda a, r: a.upper() == r
    )
    assert lower == [1.0, 0.0, 1.0]  # "x".upper() == "X"; k=1 on problem 2 votes None
    assert maj_at_k(answers[:2], refs[:2], k=3).value == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k="):
        maj_at_k_per_problem(answers, refs, k=4)
    with pytest.raises(ValueError, match="differ"):
        maj_at_k_per_problem(answers, refs[:2])


def test_bootstrap_ci_is_seeded_contains_mean_and_degenerates_on_constants():
    scores = [1.0] * 30 + [0.0] * 70
    a = bootstrap_ci(scores, seed=3)
    b = bootstrap_ci(scores, seed=3)
    assert a == b
    assert a.low < 0.3 < a.high
    const = bootstrap_ci([1.0] * 10)
    assert (const.low, const.value, const.high) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_agrees_with_normal_theory_on_many_problems():
    # 400 Bernoulli(0.3) problems: the 95% interval half-width is ~1.96*sqrt(.21/400) = 0.0449
    scores = [1.0] * 120 + [0.0] * 280
    est = bootstrap_ci(scores, n_resamples=2000, seed=0)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 400)
    assert est.low == pytest.approx(0.3 - half, abs=0.01)
    assert est.high == pytest.approx(0.3 + half, abs=0.01)


def test_normal_ci_matches_stdlib_reference():
    scores = [0.0, 0.5, 1.0, 1.0, 0.25, 0.75]
    est = normal_ci(scores, confidence=0.9)
    z = statistics.NormalDist().inv_cdf(0.95)
    half = z * statistics.stdev(scores) / math.sqrt(len(scores))
    assert est.low == pytest.approx(max(0.0, statistics.mean(scores) - half), abs=1e-9)
    assert est.high == pytest.approx(min(1.0, statistics.mean(scores) + half), abs=1e-9)


def test_ci_rejects_bad_arguments():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.5)
    with pytest.raises(ValueError, match="scores"):
        normal_ci([])


def test_estimate_format():
    est = bootstrap_ci([1.0, 0.0], seed=0)
    assert est.format().startswith("50.0 [")
