"""The sum of a fleet's power against its budget, by the cap rule, over lockstep virtual time.

Every worker's readings are a step function (each reading holds until the next). The fleet's power
is their sum, evaluated on a fine grid (5 ms, finer than any simulated sensor's update period).
By the peak rule the sum itself must stay at or under the budget; by ``avg:S`` its trailing
S-second mean (the sum of the workers' S-second means). A worker that is not running (finished,
lost) counts at its idle power; one whose sensor failed counts at its cap (what it is held to).
"""

from __future__ import annotations

from collections import deque

import numpy as np

#: the grid the sum is evaluated on (s)
GRID_S = 0.005


class _Steps:
    """One worker's readings as a step function, with the last value carried across ticks."""

    def __init__(self, initial_w: float) -> None:
        self.t: list[float] = []
        self.w: list[float] = []
        self.last = initial_w

    def add(self, samples: list[tuple[float, float]]) -> None:
        for t, w in samples:
            if not self.t or t > self.t[-1]:
                self.t.append(t)
                self.w.append(w)

    def values(self, grid: np.ndarray) -> np.ndarray:
        if not self.t:
            return np.full(grid.shape, self.last)
        ts = np.asarray(self.t)
        ws = np.asarray(self.w)
        idx = np.searchsorted(ts, grid, side="right") - 1
        out = np.where(idx >= 0, ws[np.clip(idx, 0, None)], self.last)
        self.last = float(ws[-1])
        self.t, self.w = self.t[-1:], self.w[-1:]  # keep the reading that still holds
        return out


class BudgetAccount:
    """Time over the budget, worst overshoot and the sum's extremes, tick by tick."""

    def __init__(self, rule_window_s: float = 0.0) -> None:
        self.window_s = rule_window_s
        self.steps: dict[str, _Steps] = {}
        self.over_s = 0.0
        self.total_s = 0.0
        self.worst_overshoot_w = 0.0
        self.peak_sum_w = 0.0
        self.energy_j = 0.0
        self._history: deque[float] = deque(maxlen=max(1, round(rule_window_s / GRID_S)) if rule_window_s > 0 else 1)
        self.last_mean_w = float("nan")
        self.last_peak_w = float("nan")
        #: each worker's mean over the last tick (they add up to ``last_mean_w``)
        self.last_worker_mean_w: dict[str, float] = {}

    def worker(self, name: str, initial_w: float) -> None:
        """Count worker ``name`` in the sum, at ``initial_w`` W until its first reading; a repeat call is ignored."""
        self.steps.setdefault(name, _Steps(initial_w))

    def tick(
        self,
        start: float,
        end: float,
        budget_w: float,
        samples: dict[str, list[tuple[float, float]]],
        fixed: dict[str, float],
    ) -> float:
        """Account [start, end): ``samples`` of the running workers, ``fixed`` watts for the others; returns seconds over."""
        n = max(1, round((end - start) / GRID_S))
        grid = start + (np.arange(n) + 0.5) * ((end - start) / n)
        total = np.zeros(n)
        self.last_worker_mean_w = {}
        for name, st in self.steps.items():
            if name in fixed:
                st.last = fixed[name]
                st.t, st.w = [], []
                total += fixed[name]
                self.last_worker_mean_w[name] = float(fixed[name])
                continue
            st.add(samples.get(name, []))
            values = st.values(grid)
            total += values
            self.last_worker_mean_w[name] = float(values.mean())
        if self.window_s > 0:  # the trailing mean of the sum over the rule's window
            hist = np.fromiter(self._history, float, len(self._history))
            both = np.concatenate([hist, total])
            cs = np.concatenate([[0.0], np.cumsum(both)])
            k = self._history.maxlen or 1
            idx = np.arange(len(hist), len(both))
            lo = np.maximum(idx + 1 - k, 0)
            judged = (cs[idx + 1] - cs[lo]) / (idx + 1 - lo)
            self._history.extend(total.tolist())
        else:
            judged = total
        dt = (end - start) / n
        over = judged > budget_w + 1e-9
        seconds = float(over.sum()) * dt
        self.over_s += seconds
        self.total_s += end - start
        if over.any():
            self.worst_overshoot_w = max(self.worst_overshoot_w, float((judged - budget_w).max()))
        self.peak_sum_w = max(self.peak_sum_w, float(judged.max()))
        self.energy_j += float(total.sum()) * dt
        self.last_mean_w = float(total.mean())
        self.last_peak_w = float(judged.max())
        return seconds

    @property
    def over_fraction(self) -> float:
        """The share of the accounted time spent over the budget (0 before any tick)."""
        return self.over_s / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        """Totals for the fleet's summary: time over budget (share, s), worst overshoot, peak sum (W), energy (J)."""
        return {
            "over_budget_fraction": self.over_fraction,
            "over_budget_s": self.over_s,
            "worst_overshoot_w": self.worst_overshoot_w,
            "peak_sum_w": self.peak_sum_w,
            "energy_j": self.energy_j,
        }
