"""Early stopping on a validation metric with a patience counted in evaluations (epochs)."""

from __future__ import annotations

import math

from iha.reproduce.convergence import classify
from iha.validate import check_choice, check_int, check_number

STOP_MODES = ("min", "max")


class EarlyStopping:
    """Track the best value of a validation metric and say when to stop.

    After each evaluation call :meth:`update`; it returns True when the value is a new best
    (better than the best so far by more than ``min_delta``). ``should_stop`` becomes True once
    ``patience`` consecutive evaluations have brought no new best. Non-finite values (a diverged
    run) never count as an improvement.

    Args:
        patience: evaluations without improvement before stopping, >= 1.
        mode: "min" (loss) or "max" (accuracy).
        min_delta: the smallest change that counts as an improvement, >= 0.
        window: None (patience alone) or K >= 3: stopping also needs the convergence rule
            (:func:`iha.reproduce.convergence.classify`, mode "min" only) to call the run
            "converged" over its last K values: no significant downward slope (so no stop
            before K evaluations). A noisy loss still falling overall is not stopped by a few
            bad evaluations.
    """

    def __init__(
        self, patience: int, mode: str = "min", min_delta: float = 0.0, window: int | None = None
    ) -> None:
        check_int("patience", patience, 1)
        check_choice("mode", mode, STOP_MODES)
        check_number("min_delta", min_delta, 0)
        check_int("window", window, 3, allow_none=True)
        if window is not None and mode != "min":
            raise ValueError(f"window={window!r} needs mode='min' (a loss), got mode={mode!r}")
        self.patience, self.mode, self.min_delta = patience, mode, float(min_delta)
        self.window = window
        self.values: list[float] = []
        self.best: float | None = None
        self.best_index: int | None = None  # 0-based index of the evaluation that gave `best`
        self.n_updates = 0
        self.bad_updates = 0

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float) -> bool:
        """Record one evaluation; True when it is a new best."""
        improved = self._improves(float(value))
        self.values.append(float(value))
        if improved:
            self.best, self.best_index, self.bad_updates = float(value), self.n_updates, 0
        else:
            self.bad_updates += 1
        self.n_updates += 1
        return improved

    @property
    def should_stop(self) -> bool:
        if self.bad_updates < self.patience:
            return False
        if self.window is None:
            return True
        return classify(self.values, window=self.window).status in ("converged", "diverged")
