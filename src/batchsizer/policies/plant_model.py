"""What the adaptive controller has learned about the plant: peak power and speed per setting.

Learned online from the control periods only (no offline profile). Per GPU clock it keeps, for
every batch size that was run, a peak-power estimate that rises at once and falls slowly (safety
first) and the time per batch. Sizes not yet run are predicted from their observed neighbours:

* peak power between two observed sizes: interpolated linearly in log(size), which for a rising
  curve is above the straight chord, so it errs on the safe side; power need not be monotone,
  the observed points are kept as they are (the Zeus traces have curves that peak and fall);
* peak power above the largest observed size: the secant through the two largest points extended
  (for a concave curve, as the paper's Fig. 1 is, that line lies above the curve), never flatter
  than ``min_slope_frac`` of the average slope from zero;
* time per batch: affine in the size (a fixed cost per batch plus a cost per item), fitted to the
  neighbours, so throughput saturates where the fixed cost stops mattering: that is the online
  saturation detection the paper left for future work.

The noise of the peak readings is estimated from repeated periods at one setting and sets the
controller's margin. A reading far from what the model expects at a setting it knows well means
the load changed (new input, thermal drift): the model then forgets everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Point:
    """What was seen at one (clock, size)."""

    peak_w: float
    batch_s: float
    n: int
    last_period: int
    mean_w: float = math.nan


class PlantModel:
    def __init__(self, min_slope_frac: float = 0.25, change_sigmas: float = 5.0, change_frac: float = 0.06) -> None:
        self.points: dict[int | None, dict[int, Point]] = {}
        self.min_slope_frac = min_slope_frac
        self.change_sigmas = change_sigmas
        self.change_frac = change_frac
        #: typical deviation of a period's peak reading from the setting's estimate (W)
        self.noise_w = 0.0
        #: typical relative deviation of the time per batch
        self.time_noise = 0.0
        self._noise_n = 0
        self.floor_w = math.inf  # lowest mean power seen, a rough idea of the idle floor
        self.changes = 0
        self._suspect: tuple[tuple[int | None, int], float] | None = None

    def table(self, clock: int | None) -> dict[int, Point]:
        return self.points.setdefault(clock, {})

    # -- learning -------------------------------------------------------------------------------

    def add(self, clock: int | None, size: int, peak_w: float, mean_w: float, batch_s: float, period: int) -> bool:
        """Record a period; returns True when the reading says the load changed."""
        self.floor_w = min(self.floor_w, mean_w)
        table = self.table(clock)
        p = table.get(size)
        if p is None:
            table[size] = Point(peak_w, batch_s, 1, period, mean_w)
            return False
        dev = peak_w - p.peak_w
        tdev = (batch_s - p.batch_s) / p.batch_s if p.batch_s > 0 else 0.0
        limit = max(self.change_sigmas * self.noise_w, self.change_frac * max(p.peak_w, 1.0))
        if p.n >= 2 and (abs(dev) > limit or abs(tdev) > max(self.change_sigmas * self.time_noise, 0.15)):
            # twice in a row, the same way: the load changed (once may be a noise spike)
            if self._suspect is not None and self._suspect[0] == (clock, size) and self._suspect[1] * dev > 0:
                self._suspect = None
                self.changes += 1
                self.forget_except(clock, size)
                table[size] = Point(peak_w, batch_s, 1, period, mean_w)
                return True
            self._suspect = ((clock, size), dev)
            if dev > 0:
                p.peak_w = peak_w  # safety: a higher reading counts at once
            return False
        self._suspect = None
        w = 0.25 if self._noise_n > 4 else 1.0 / (self._noise_n + 1)
        self.noise_w = (1 - w) * self.noise_w + w * abs(dev)
        self.time_noise = (1 - w) * self.time_noise + w * abs(tdev)
        self._noise_n += 1
        # rise at once to a higher reading, come down slowly: a spike seen once may come back
        p.peak_w = peak_w if peak_w > p.peak_w else 0.75 * p.peak_w + 0.25 * peak_w
        p.batch_s = 0.5 * p.batch_s + 0.5 * batch_s
        p.mean_w = 0.5 * p.mean_w + 0.5 * mean_w
        p.n += 1
        p.last_period = period
        return False

    def forget_except(self, clock: int | None, size: int) -> None:
        keep = self.points.get(clock, {}).get(size)
        self.points = {clock: {size: keep}} if keep is not None else {}

    # -- predicting -----------------------------------------------------------------------------

    def peak(self, clock: int | None, size: int) -> float | None:
        """Predicted peak power at ``size`` (W), erring high; None when nothing is known."""
        table = self.points.get(clock)
        if not table:
            return None
        if size in table:
            return table[size].peak_w
        sizes = sorted(table)
        below = [s for s in sizes if s < size]
        above = [s for s in sizes if s > size]
        if below and above:
            a, c = below[-1], above[0]
            w = (math.log(size) - math.log(a)) / (math.log(c) - math.log(a))
            pa, pc = table[a].peak_w, table[c].peak_w
            return max(pa, pc) if pc < pa else pa + w * (pc - pa)
        if above:  # below every observed size: assume no higher than the smallest one seen
            return min(table[s].peak_w for s in above[:2])
        top = sizes[-1]
        p_top = table[top].peak_w
        avg_slope = p_top / top
        slope = self.min_slope_frac * avg_slope
        if len(sizes) >= 2:
            prev = sizes[-2]
            secant = (p_top - table[prev].peak_w) / (top - prev)
            slope = max(slope, secant)
        return p_top + slope * (size - top)

    def batch_time(self, clock: int | None, size: int) -> float | None:
        """Predicted seconds per batch at ``size``; None when nothing is known."""
        table = self.points.get(clock)
        if not table:
            return None
        if size in table:
            return table[size].batch_s
        sizes = sorted(table)
        if len(sizes) == 1:
            s = sizes[0]
            # one point: optimistic, all of the time is a fixed per-batch cost (speed grows with size)
            return table[s].batch_s
        below = [s for s in sizes if s < size]
        above = [s for s in sizes if s > size]
        if below and above:
            a, c = below[-1], above[0]
        elif above:
            a, c = above[0], above[1]
        else:
            a, c = sizes[-2], sizes[-1]
        ta, tc = table[a].batch_s, table[c].batch_s
        per_item = max((tc - ta) / (c - a), 0.0)
        return max(ta + per_item * (size - a), 1e-9)

    def duty(self, clock: int | None, size: int) -> float:
        """Share of a batch's time the GPU computes, from mean vs peak power at the nearest size seen.

        Power sits near the floor while the host prepares a batch and near the peak while the GPU
        computes, so ``(mean - floor) / (peak - floor)`` is the computing share; it says how much of
        the time a lower clock would stretch.
        """
        table = self.points.get(clock)
        if not table:
            return 1.0
        near = min(table, key=lambda s: abs(math.log(s) - math.log(size)))
        p = table[near]
        span = p.peak_w - self.floor_w
        if not math.isfinite(p.mean_w) or span <= 1e-6:
            return 1.0
        return min(max((p.mean_w - self.floor_w) / span, 0.0), 1.0)

    def throughput(self, clock: int | None, size: int) -> float | None:
        t = self.batch_time(clock, size)
        return None if t is None else size / t

    def observed(self, clock: int | None) -> list[int]:
        return sorted(self.points.get(clock, {}))
