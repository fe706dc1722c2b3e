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
    """``mean +- half_width`` over ``n`` values (half_width is nan when n < 2).

    ``p``: two-sided p-value of the one-sample t-test of mean = 0 (for a paired difference:
    the paired t-test); nan when n < 2.
    """

    mean: float
    half_width: float
    n: int
    p: float = math.nan

    def format_p(self) -> str:
        """``"p = 0.063"`` (paired t), or ``"no test"`` with fewer than 2 values."""
        if math.isnan(self.p):
            return "no test"
        return f"p = {self.p:.3f}" if self.p >= 0.001 else f"p = {self.p:.1e}"

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
    se = math.sqrt(var / n)
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = t_two_sided_p(mean / se, n - 1)
    return Interval(mean, t_quantile(confidence, n - 1) * se, n, p)


def paired_difference_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> Interval:
    """Interval of the mean of ``a[i] - b[i]`` (runs paired by seed: same data, same order)."""
    if len(a) != len(b):
        raise ValueError(f"a and b must pair up: got {len(a)} and {len(b)} values")
    return mean_ci([x - y for x, y in zip(a, b)], confidence)


# ------------------------------------------------------------------------------------- tests
def t_two_sided_p(t: float, df: int) -> float:
    """Two-sided p-value P(|T| >= |t|) of Student's t with ``df`` degrees of freedom."""
    return max(0.0, 1.0 - t_central_mass(abs(float(t)), df))


@dataclass(frozen=True)
class PairedT:
    """Paired t-test of ``a - b``: mean difference, its 95% interval, t, df, two-sided p."""

    diff: Interval
    t: float
    df: int
    p: float


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> PairedT:
    """Paired t-test of the mean of ``a[i] - b[i]`` against 0 (at least 2 pairs).

    An exactly constant non-zero difference gives t = +-inf and p = 0; all-zero gives p = 1.
    """
    diff = paired_difference_ci(a, b)
    n = diff.n
    if n < 2:
        raise ValueError(f"a and b: a paired t-test needs at least 2 pairs, got {n}")
    ds = [float(x) - float(y) for x, y in zip(a, b)]
    sd = math.sqrt(sum((d - diff.mean) ** 2 for d in ds) / (n - 1))
    if sd == 0.0:
        t = 0.0 if diff.mean == 0.0 else math.copysign(math.inf, diff.mean)
    else:
        t = diff.mean / (sd / math.sqrt(n))
    return PairedT(diff, t, n - 1, t_two_sided_p(t, n - 1))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs.

    Args:
        only_a: pairs where only the first arm succeeded (e.g. solved), >= 0.
        only_b: pairs where only the second arm succeeded, >= 0.

    Under H0 each discordant pair is a fair coin: p = min(1, 2 * P(Bin(n, 1/2) <= min)).
    """
    check_int("only_a", only_a, 0)
    check_int("only_b", only_b, 0)
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def discordant(a: dict, b: dict) -> tuple[int, int, int]:
    """(only a, only b, pairs) over the keys both dicts hold; values are truthy for success."""
    keys = sorted(set(a) & set(b))
    only_a = sum(1 for k in keys if a[k] and not b[k])
    only_b = sum(1 for k in keys if b[k] and not a[k])
    return only_a, only_b, len(keys)


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs when the
    differences are normal with mean ``effect`` and standard deviation ``sd``.

    Computed as E_V[P(|Z + delta| > t_c sqrt(V / df))], V ~ chi^2(df), delta = effect sqrt(n)/sd,
    the expectation by the midpoint rule on a fine grid of V (the noncentral t's definition).
    """
    check_int("n", n, 2)
    if sd <= 0:
        raise ValueError(f"sd={sd!r} must be > 0")
    df = n - 1
    tc = t_quantile(1.0 - alpha, df)
    delta = abs(effect) * math.sqrt(n) / sd
    hi = df + 40.0 * math.sqrt(2.0 * df) + 40.0
    steps = 4000
    h = hi / steps
    log_norm = -(df / 2.0) * math.log(2.0) - math.lgamma(df / 2.0)
    total = 0.0
    for i in range(steps):
        v = (i + 0.5) * h
        dens = math.exp(log_norm + (df / 2.0 - 1.0) * math.log(v) - v / 2.0)
        c = tc * math.sqrt(v / df)
        total += dens * (normal_cdf(delta - c) + normal_cdf(-delta - c)) * h
    return min(1.0, total)


def mcnemar_power(p_only_a: float, p_only_b: float, n: int, alpha: float = 0.05) -> float:
    """Power of the exact McNemar test with ``n`` pairs when a pair is "only a" with probability
    ``p_only_a`` and "only b" with ``p_only_b`` (exact sum over the trinomial outcomes)."""
    check_int("n", n, 1)
    if not (0 <= p_only_a and 0 <= p_only_b and p_only_a + p_only_b <= 1):
        raise ValueError("p_only_a and p_only_b must be >= 0 with a sum <= 1")
    p_same = 1.0 - p_only_a - p_only_b
    power = 0.0
    for x in range(n + 1):
        for y in range(n + 1 - x):
            if mcnemar_exact(x, y) < alpha:
                power += (math.comb(n, x) * math.comb(n - x, y) * p_only_a**x * p_only_b**y
                          * p_same ** (n - x - y))  # fmt: skip
    return power
