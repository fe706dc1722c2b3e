"""Seed statistics against published t tables, numerical integration and hand computation."""

import math
import statistics

import pytest

from iha.reproduce.stats import mean_ci, paired_difference_ci, t_central_mass, t_quantile

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
