"""Sampling metrics: pass@k, majority vote, Pass@1, Maj@k, and confidence intervals.

Conventions (the paper's, section 5): each problem gets n samples (16 at temperature 0.6).
Pass@1 is the mean accuracy over all samples of all problems, Maj@k is the accuracy of the
majority answer of the first k samples of each problem. Confidence intervals are percentile
bootstrap intervals over problems (problems are the unit of resampling; the samples of a problem
move together), seeded so that a report is reproducible; :func:`normal_ci` gives the normal
approximation for comparison.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TypeVar

from iha.validate import check_int

A = TypeVar("A", bound=Hashable)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator: 1 - C(n-c, k) / C(n, k).

    Probability that at least one of k samples drawn without replacement from n samples, c of
    them correct, is correct. Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms
    the huge binomials.
    """
    check_int("n", n, 1)
    check_int("c", c, None)
    check_int("k", k, None)
    if not 0 <= c <= n:
        raise ValueError(f"c={c} must be in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, n={n}]")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority_vote(answers: Sequence[A | None]) -> A | None:
    """Most frequent non-None answer; ties go to the answer seen first; all None gives None."""
    counts: dict[A, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1  # dicts keep first-seen order
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a, c in counts.items() if c == best)


def pass_at_1_per_problem(correct: Sequence[Sequence[bool]]) -> list[float]:
    """Per-problem accuracy over its samples: ``correct[i][j]`` is sample j of problem i."""
    if not correct:
        raise ValueError("correct must hold at least one problem")
    out = []
    for i, row in enumerate(correct):
        if len(row) == 0:
            raise ValueError(f"correct[{i}] has no samples")
        out.append(sum(bool(x) for x in row) / len(row))
    return out


def maj_at_k_per_problem(
    answers: Sequence[Sequence[A | None]],
    references: Sequence[object],
    k: int | None = None,
    is_correct: Callable[[A, object], bool] | None = None,
) -> list[float]:
    """Per-problem 0/1: is the majority answer of the first k samples correct?

    ``answers[i]`` holds the extracted answers (None when none) of problem i's samples,
    ``references[i]`` its reference; ``is_correct(answer, reference)`` defaults to ``==``.
    ``k=None`` uses all samples. A problem with fewer than k samples raises ValueError.
    """
    if len(answers) != len(references):
        raise ValueError(
            f"answers ({len(answers)} problems) and references ({len(references)}) differ in length"
        )
    if not answers:
        raise ValueError("answers must hold at least one problem")
    eq = is_correct if is_correct is not None else (lambda a, r: a == r)
    out = []
    for i, (row, ref) in enumerate(zip(answers, references)):
        kk = len(row) if k is None else k
        if kk < 1 or kk > len(row):
            raise ValueError(f"k={k} must be in [1, {len(row)}] (samples of problem {i})")
        vote = majority_vote(list(row[:kk]))
        out.append(float(vote is not None and bool(eq(vote, ref))))
    return out


@dataclass(frozen=True)
class Estimate:
    """A mean with a confidence interval: ``value`` in [``low``, ``high``] at ``confidence``."""

    value: float
    low: float
    high: float
    confidence: float
    n: int
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "n": self.n,
            "method": self.method,
        }

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``"34.3 [31.0, 37.5]"`` (percent by default)."""
        v, lo, hi = (x * scale for x in (self.value, self.low, self.high))
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _check_scores(scores: Sequence[float], confidence: float) -> list[float]:
    if len(scores) == 0:
        raise ValueError("scores must hold at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    return [float(s) for s in scores]


def bootstrap_ci(
    scores: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Mean of per-problem ``scores`` with a percentile bootstrap interval over problems.

    Draws ``n_resamples`` resamples of the problems with replacement (``random.Random(seed)``),
    and returns the (1-confidence)/2 and (1+confidence)/2 empirical quantiles of their means.
    """
    xs = _check_scores(scores, confidence)
    check_int("n_resamples", n_resamples, 1)
    rng = random.Random(seed)
    m = len(xs)
    means = sorted(sum(rng.choices(xs, k=m)) / m for _ in range(n_resamples))
    alpha = (1.0 - confidence) / 2.0
    lo_idx = min(n_resamples - 1, max(0, math.floor(alpha * n_resamples)))
    hi_idx = min(n_resamples - 1, max(0, math.ceil((1.0 - alpha) * n_resamples) - 1))
    mean = sum(xs) / m
    return Estimate(mean, means[lo_idx], means[hi_idx], confidence, m, "bootstrap")


def normal_ci(scores: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean with the normal-approximation interval mean +- z * s / sqrt(m), clipped to [0, 1]
    when every score lies in [0, 1] (s is the sample standard deviation, m the problem count)."""
    xs = _check_scores(scores, confidence)
    m = len(xs)
    mean = sum(xs) / m
    var = sum((x - mean) ** 2 for x in xs) / (m - 1) if m > 1 else 0.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half = z * math.sqrt(var / m)
    lo, hi = mean - half, mean + half
    if all(0.0 <= x <= 1.0 for x in xs):
        lo, hi = max(0.0, lo), min(1.0, hi)
    return Estimate(mean, lo, hi, confidence, m, "normal")


def pass_at_1(
    correct: Sequence[Sequence[bool]], confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """Pass@1: mean accuracy over samples (per problem, then over problems), bootstrap CI."""
    return bootstrap_ci(pass_at_1_per_problem(correct), confidence=confidence, seed=seed)


def maj_at_k(
    answers: Sequence[Sequence[A | None]],
    references: Sequence[object],
    k: int | None = None,
    is_correct: Callable[[A, object], bool] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Maj@k: accuracy of the majority answer of the first k samples, bootstrap CI."""
    per = maj_at_k_per_problem(answers, references, k=k, is_correct=is_correct)
    return bootstrap_ci(per, confidence=confidence, seed=seed)
