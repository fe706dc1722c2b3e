"""Seed statistics against published t tables, numerical integration, hand computation,
brute-force enumeration (exact McNemar) and Monte Carlo (power)."""

import math
import statistics
from itertools import product

import numpy as np
import pytest

from iha.reproduce.stats import (
    discordant,
    mcnemar_exact,
    mcnemar_power,
    mean_ci,
    paired_difference_ci,
    paired_t_power,
    paired_t_test,
    t_central_mass,
    t_quantile,
)

# Two-sided 95% critical values of Student's t from standard published tables.
T_TABLE_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 30: 2.042}


@pytest.mark.parametrize("df,expected", sorted(T_TABLE_95.items()))
def test_t_quantile_matches_published_table(df, expected):
    assert t_quantile(0.95, df) == pytest.approx(expected, abs=6e-4)


def _t_mass_by_simpson(t: float, df: int, intervals: int = 20_000) -> float:
    """2 * integral_0^t of the t density, composite Simpson rule (independent of the series)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x):
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    h = t / intervals
    total = density(0.0) + density(t)
    for i in range(1, intervals):
        total += (4 if i % 2 else 2) * density(i * h)
    return 2 * total * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 12])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5, 6.0])
def test_t_central_mass_matches_numerical_integration(df, t):
    assert t_central_mass(t, df) == pytest.approx(_t_mass_by_simpson(t, df), abs=1e-9)


def test_mean_ci_matches_hand_computation():
    # values 1..5: mean 3, sample variance 2.5, t_{0.975, 4} = 2.776445 (table)
    iv = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert iv.mean == 3.0
    assert iv.half_width == pytest.approx(2.776445 * math.sqrt(2.5 / 5), abs=1e-5)
    assert iv.n == 5
    assert iv.low == pytest.approx(3.0 - iv.half_width)


def test_paired_difference_is_the_interval_of_per_seed_differences():
    a, b = [0.81, 0.90, 0.86], [0.70, 0.88, 0.80]
    diffs = [0.11, 0.02, 0.06]
    iv = paired_difference_ci(a, b)
    assert iv.mean == pytest.approx(statistics.mean(diffs))
    assert iv.half_width == pytest.approx(4.302653 * statistics.stdev(diffs) / math.sqrt(3), 1e-5)
    assert iv.excludes_zero() == (iv.low > 0)


def test_one_value_has_no_interval_and_never_excludes_zero():
    iv = mean_ci([0.7])
    assert iv.mean == 0.7 and math.isnan(iv.half_width)
    assert not iv.excludes_zero()
    assert iv.format(2, 100.0) == "70.00"


def test_bad_inputs_raise_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="values"):
        mean_ci([])
    with pytest.raises(ValueError, match="confidence"):
        t_quantile(1.5, 3)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError, match="pair"):
        paired_difference_ci([1.0], [1.0, 2.0])


# ------------------------------------------------------------ tests of differences and power


def _mcnemar_brute_force(only_a: int, only_b: int) -> float:
    """Enumerate all 2^n sign patterns of the discordant pairs: P(outcome at least as
    unbalanced as the observed one) under fair coins."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    observed = abs(only_a - only_b)
    extreme = sum(1 for signs in product((0, 1), repeat=n) if abs(2 * sum(signs) - n) >= observed)
    return extreme / 2**n


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (1, 0), (3, 0), (8, 0), (9, 0), (4, 1),
                                           (5, 5), (2, 7), (6, 3), (0, 12)])  # fmt: skip
def test_mcnemar_exact_matches_brute_force_enumeration(only_a, only_b):
    assert mcnemar_exact(only_a, only_b) == pytest.approx(_mcnemar_brute_force(only_a, only_b))


def test_mcnemar_smallest_p_with_three_pairs_is_a_quarter():
    assert mcnemar_exact(3, 0) == 0.25  # why 3 seeds can never be significant


def test_discordant_counts_only_common_keys():
    a = {0: True, 1: True, 2: False, 3: True}
    b = {0: False, 1: True, 2: True, 9: False}
    assert discordant(a, b) == (1, 1, 3)


def test_paired_t_test_matches_hand_computation_and_integrated_density():
    a, b = [0.98, 0.97, 0.98, 0.99], [0.94, 0.96, 0.93, 0.95]
    d = [x - y for x, y in zip(a, b)]
    sd = statistics.stdev(d)
    t = statistics.mean(d) / (sd / math.sqrt(len(d)))
    res = paired_t_test(a, b)
    assert res.t == pytest.approx(t) and res.df == 3
    assert res.p == pytest.approx(1 - _t_mass_by_simpson(t, 3), abs=1e-6)


def test_paired_t_test_needs_two_pairs():
    with pytest.raises(ValueError, match="a and b"):
        paired_t_test([1.0], [0.0])


def test_paired_t_power_matches_monte_carlo():
    rng = np.random.default_rng(0)
    n, effect, sd, reps = 6, 1.0, 1.2, 40_000
    d = rng.normal(effect, sd, size=(reps, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    crit = 2.570582  # two-sided 5% at df 5 (published table)
    simulated = float((np.abs(t) > crit).mean())
    assert paired_t_power(effect, sd, n) == pytest.approx(simulated, abs=0.01)
    assert paired_t_power(0.0, 1.0, 8) == pytest.approx(0.05, abs=2e-3)  # size under H0


def test_mcnemar_power_matches_monte_carlo():
    rng = np.random.default_rng(1)
    n, pa, pb, reps = 12, 0.4, 0.05, 20_000
    draws = rng.multinomial(n, [pa, pb, 1 - pa - pb], size=reps)
    simulated = float(np.mean([mcnemar_exact(int(x), int(y)) < 0.05 for x, y, _ in draws]))
    assert mcnemar_power(pa, pb, n) == pytest.approx(simulated, abs=0.015)


def test_interval_p_is_the_paired_t_tests_p():
    a, b = [0.985, 0.973, 0.982], [0.944, 0.956, 0.935]
    assert paired_difference_ci(a, b).p == pytest.approx(paired_t_test(a, b).p)
    assert paired_difference_ci(a, b).format_p() == f"p = {paired_t_test(a, b).p:.3f}"
    assert mean_ci([1.0]).format_p() == "no test"
