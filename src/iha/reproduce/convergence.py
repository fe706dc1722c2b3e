"""The one convergence rule of the reproductions: solved, converged, plateau or still improving.

A run's validation losses (one per evaluation, in order) are read as follows:

* ``"diverged"``: a non-finite loss among the last ``window`` evaluations.
* ``"solved"``: the caller says the task's accuracy threshold was reached (``solved=True``).
* ``"too_short"``: fewer than ``window`` evaluations; nothing can be said.
* ``"improving"``: the least-squares slope of the loss over the last ``window`` evaluations is
  significantly negative (one-sided t-test on the slope, ``p < alpha``): still improving when
  the run ended, so its budget was too small to call it converged.
* ``"plateau"``: no significant slope, but the run is at chance level (``at_chance=True``, e.g.
  a recall model stuck on the guessing plateau): it stopped moving without learning, which
  says nothing about where a longer run would end.
* ``"converged"``: no significant downward slope over the last ``window`` evaluations (flat, or
  rising: overfitting) and neither solved nor at chance.

``window`` (K) defaults to :func:`window_for`: half the evaluations, between 3 and 10.
:class:`iha.reproduce.early_stopping.EarlyStopping` stops with the same rule when given a
``window``. The slope's t statistic has ``window - 2`` degrees of freedom; its p-value comes
from :func:`iha.reproduce.stats.t_central_mass` (exact for integer degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from iha.reproduce.stats import t_central_mass
from iha.validate import check_int

STATUSES = ("diverged", "solved", "too_short", "improving", "plateau", "converged")
MAX_WINDOW = 10  # at most this many evaluations are fitted
DEFAULT_ALPHA = 0.05  # one-sided level of the slope test


def window_for(n_evals: int, max_window: int = MAX_WINDOW) -> int:
    """K, the evaluations the slope is fitted over: half the run's evaluations, at least 3 and
    at most ``max_window`` (10 evaluations of a 10-evaluation run would fit its first descent)."""
    check_int("n_evals", n_evals, 0)
    check_int("max_window", max_window, 3)
    return min(max_window, max(3, n_evals // 2))


@dataclass(frozen=True)
class SlopeTest:
    """Least-squares slope of ``values`` on ``positions`` and its one-sided t-test.

    Attributes:
        slope: change of the value per unit of position.
        t: slope / standard error (``-inf`` / ``inf`` / 0 for an exact line).
        p_decreasing: one-sided p-value of "the slope is negative" (small: clearly falling).
        n: number of points.
    """

    slope: float
    t: float
    p_decreasing: float
    n: int


def slope_test(values: Sequence[float], positions: Sequence[float] | None = None) -> SlopeTest:
    """Fit ``values = a + b * positions`` by least squares; test H1: b < 0 with a t-test.

    Args:
        values: at least 3 finite numbers.
        positions: the x of each value (e.g. training steps), distinct; default 0, 1, 2, ...
    """
    ys = [float(v) for v in values]
    n = len(ys)
    if n < 3:
        raise ValueError(f"values: need at least 3 points for a slope test, got {n}")
    if not all(math.isfinite(y) for y in ys):
        raise ValueError("values must be finite")
    xs = [float(x) for x in (range(n) if positions is None else positions)]
    if len(xs) != n:
        raise ValueError(f"positions must have one entry per value: got {len(xs)} for {n}")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0.0:
        raise ValueError("positions must not all be equal")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    rss = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    df = n - 2
    se = math.sqrt(rss / df / sxx)
    scale = max(abs(y) for y in ys) or 1.0
    if se <= 1e-12 * scale:  # an exact line: the sign of the slope decides
        t = -math.inf if slope < 0 else math.inf if slope > 0 else 0.0
    else:
        t = slope / se
    tail = 0.5 * (1.0 - t_central_mass(abs(t), df))  # P(T > |t|)
    p = tail if t < 0 else 1.0 - tail
    return SlopeTest(slope, t, p, n)


@dataclass(frozen=True)
class Verdict:
    """The rule's reading of one run: ``status`` (one of :data:`STATUSES`) and the slope test
    over the last ``window`` evaluations (None when it was not needed or not possible)."""

    status: str
    test: SlopeTest | None

    @property
    def stopped_improving(self) -> bool:
        """True for "converged" and "plateau" (what stops an early-stopping run)."""
        return self.status in ("converged", "plateau")


def classify(
    val_losses: Sequence[float],
    *,
    positions: Sequence[float] | None = None,
    window: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    solved: bool = False,
    at_chance: bool = False,
) -> Verdict:
    """Classify a run from its validation losses (see the module docstring).

    Args:
        val_losses: one validation loss per evaluation, in order.
        positions: the step (or epoch) of each evaluation; default evenly spaced.
        window: the last ``window`` evaluations are tested, >= 3; None: :func:`window_for`.
        alpha: level of the one-sided slope test, in (0, 1).
        solved: the run reached its task's accuracy threshold.
        at_chance: the run's accuracy is at the task's chance level (guessing plateau).
    """
    losses = [float(v) for v in val_losses]
    if window is None:
        window = window_for(len(losses))
    check_int("window", window, 3)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r} must be in (0, 1)")
    xs = None if positions is None else [float(x) for x in positions]
    if xs is not None and len(xs) != len(losses):
        raise ValueError(f"positions must have one entry per loss: {len(xs)} for {len(losses)}")
    tail = losses[-window:]
    if not all(math.isfinite(v) for v in tail):
        return Verdict("diverged", None)
    if solved:
        return Verdict("solved", None)
    if len(losses) < window:
        return Verdict("too_short", None)
    test = slope_test(tail, None if xs is None else xs[-window:])
    if test.p_decreasing < alpha:
        return Verdict("improving", test)
    return Verdict("plateau" if at_chance else "converged", test)
