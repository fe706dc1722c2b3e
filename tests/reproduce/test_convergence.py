"""The convergence rule against an independent float64 least-squares fit and numerical
integration of Student's t density, and its verdicts on hand-made loss curves."""

import math

import numpy as np
import pytest

from iha.reproduce.convergence import classify, slope_test, window_for
from iha.reproduce.early_stopping import EarlyStopping


def _reference(ys, xs):
    """Slope by numpy lstsq in float64, its t, and P(T < t) by integrating the t density."""
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, rss, *_ = np.linalg.lstsq(design, y, rcond=None)
    df = len(y) - 2
    resid = y - design @ coef
    se = math.sqrt(float(resid @ resid) / df / float(((x - x.mean()) ** 2).sum()))
    t = coef[1] / se
    grid = np.linspace(-60.0, t, 400_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    dens = np.exp(log_c - (df + 1) / 2 * np.log1p(grid**2 / df))
    return coef[1], t, float(np.trapezoid(dens, grid))


@pytest.mark.parametrize("seed", range(6))
def test_slope_t_and_p_match_float64_lstsq_and_integrated_t(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 12))
    xs = np.sort(rng.choice(np.arange(1, 200), n, replace=False)).astype(float)
    ys = 1.3 - rng.normal(0.0, 0.002, 1)[0] * xs + rng.normal(0.0, 0.05, n)
    got = slope_test(ys.tolist(), xs.tolist())
    slope, t, p = _reference(ys, xs)
    assert got.slope == pytest.approx(slope, rel=1e-9, abs=1e-12)
    assert got.t == pytest.approx(t, rel=1e-7)
    assert got.p_decreasing == pytest.approx(p, abs=2e-5)


def test_statuses_on_hand_made_curves():
    falling = [2.0 - 0.1 * i + 0.01 * (-1) ** i for i in range(10)]
    flat = [1.0 + 0.01 * (-1) ** i for i in range(10)]
    rising = [1.0 + 0.05 * i for i in range(10)]
    assert classify(falling).status == "improving"
    assert classify(flat).status == "converged"
    assert classify(rising).status == "converged"  # overfitting: not falling
    assert classify(flat, at_chance=True).status == "plateau"
    assert classify(falling, solved=True).status == "solved"
    assert classify(falling[:2]).status == "too_short"
    assert classify([*flat[:-1], math.nan]).status == "diverged"
    assert classify(flat).test.n == 5  # half of 10 evaluations


def test_slow_steady_decline_is_still_improving():
    """A plateau that still creeps down (an MQAR run before its drop) is not converged."""
    creeping = [1.2923, 1.2891, 1.2839, 1.2818, 1.2790]
    assert classify(creeping, window=5).status == "improving"


def test_window_for():
    assert [window_for(n) for n in (0, 4, 6, 10, 11, 20, 21, 100)] == [3, 3, 3, 5, 5, 10, 10, 10]


def test_exact_line_decides_by_sign():
    assert slope_test([3.0, 2.0, 1.0]).p_decreasing == 0.0
    assert slope_test([1.0, 2.0, 3.0]).p_decreasing == 1.0


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: slope_test([1.0, 2.0]), "values"),
        (lambda: slope_test([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]), "positions"),
        (lambda: slope_test([1.0, math.inf, 3.0]), "values"),
        (lambda: classify([1.0] * 5, window=2), "window"),
        (lambda: classify([1.0] * 5, alpha=1.5), "alpha"),
        (lambda: classify([1.0] * 5, positions=[1, 2]), "positions"),
    ],
)
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_early_stopping_with_the_rule_waits_while_the_loss_still_falls():
    """Noisy but falling: patience alone stops at the first two bad epochs, the rule does not."""
    losses = [2.0, 1.8, 1.6, 1.4, 1.45, 1.5, 1.2, 1.0, 0.8, 0.85, 0.9] + [0.85, 0.9] * 6
    plain, rule = EarlyStopping(2), EarlyStopping(2, window=10)
    stop_plain = stop_rule = None
    for i, v in enumerate(losses):
        plain.update(v)
        rule.update(v)
        if stop_plain is None and plain.should_stop:
            stop_plain = i
        if stop_rule is None and rule.should_stop:
            stop_rule = i
    assert stop_plain == 5
    assert stop_rule is not None and stop_rule > 12  # only once the tail has flattened


def test_early_stopping_window_needs_min_mode():
    with pytest.raises(ValueError, match="window"):
        EarlyStopping(2, mode="max", window=5)
    with pytest.raises(ValueError, match="window"):
        EarlyStopping(2, window=2)
