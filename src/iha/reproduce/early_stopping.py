"""Early stopping on a validation metric with a patience counted in evaluations (epochs)."""

from __future__ import annotations

import math

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
    """

    def __init__(self, patience: int, mode: str = "min", min_delta: float = 0.0) -> None:
        check_int("patience", patience, 1)
        check_choice("mode", mode, STOP_MODES)
        check_number("min_delta", min_delta, 0)
        self.patience, self.mode, self.min_delta = patience, mode, float(min_delta)
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
        if improved:
            self.best, self.best_index, self.bad_updates = float(value), self.n_updates, 0
        else:
            self.bad_updates += 1
        self.n_updates += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_updates >= self.patience
