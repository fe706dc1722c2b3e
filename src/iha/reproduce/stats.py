"""Seed statistics: mean with a Student-t confidence interval, paired differences.

The t quantile is computed exactly for integer degrees of freedom from the closed-form CDF of
Student's t (Abramowitz and Stegun 26.7.3/26.7.4, a finite series in theta = atan(t/sqrt(df))),
inverted by bisection, so no scipy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from iha.validate import check_int, check_number


def t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (integer >= 1) degrees of freedom, t >= 0."""
    check_int("df", df, 1)
    check_number("t", t, 0)
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        # sin(theta) * (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2))
        term, total = 1.0, 1.0
        for j in range(2, df, 2):
            term *= c2 * (j - 1) / j
            total += term
        return s * total
    mass = 2.0 * theta / math.pi
    if df == 1:
        return mass
    # + 2/pi sin cos (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ... up to c^(df-3))
    term, total = 1.0, 1.0
    for j in range(3, df - 1, 2):
        term *= c2 * (j - 1) / j
        total += term
    return mass + 2.0 / math.pi * s * math.cos(theta) * total


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| <= t) = ``confidence`` (two-sided critical value, e.g. 12.706 at df=1)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    lo, hi = 0.0, 1.0
    while t_central_mass(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_central_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """``mean +- half_width`` over ``n`` values (half_width is nan when n < 2)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        """True when the whole interval is on one side of 0 (never for n < 2)."""
        return not math.isnan(self.half_width) and (self.low > 0.0 or self.high < 0.0)

    def format(self, digits: int = 4, scale: float = 1.0) -> str:
        """``"0.8123 ± 0.0100"`` (or just the mean for n < 2), values multiplied by ``scale``."""
        if math.isnan(self.mean):
            return "-"
        mean = f"{self.mean * scale:.{digits}f}"
        if math.isnan(self.half_width):
            return mean
        return f"{mean} ± {self.half_width * scale:.{digits}f}"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and t-based confidence half-width ``t_{df=n-1} * s / sqrt(n)`` (s: sample std).

    Args:
        values: one number per seed; non-empty.
        confidence: two-sided level, default 0.95.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("values must be non-empty")
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, n)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return Interval(mean, t_quantile(confidence, n - 1) * math.sqrt(var / n), n)


def paired_difference_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> Interval:
    """Interval of the mean of ``a[i] - b[i]`` (runs paired by seed: same data, same order)."""
    if len(a) != len(b):
        raise ValueError(f"a and b must pair up: got {len(a)} and {len(b)} values")
    return mean_ci([x - y for x, y in zip(a, b)], confidence)
