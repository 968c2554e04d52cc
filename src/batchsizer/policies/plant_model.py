"""What the adaptive controller has learned about the plant: peak power and speed per setting.

Learned online from the control periods only (no offline profile). Per GPU clock it keeps, for
every batch size that was run, a peak-power estimate that rises at once and falls slowly (safety
first) and the time per batch. Sizes not yet run are predicted from their observed neighbours:

* peak power between two observed sizes: interpolated linearly in log(size), which for a rising
  curve is above the straight chord, so it errs on the safe side; power need not be monotone,
  the observed points are kept as they are (the Zeus traces have curves that peak and fall);
* peak power below the smallest size seen at a clock: no higher than that size read, and where
  another clock has a curve, that curve's shape through it (so a clock seen at one size only can
  still step down a little when a reading there comes out just over the target);
* peak power above the largest observed size: the secant through the two largest points extended
  (for a concave curve, as the paper's Fig. 1 is, that line lies above the curve), never flatter
  than ``min_slope_frac`` of the average slope from zero;
* on a sensor that sees only part of the time, a size whose peak sits far below its neighbours'
  (aliasing: it saw only host time) is left out when other sizes are predicted;
* time per batch: affine in the size (a fixed cost per batch plus a cost per item), fitted to the
  neighbours, so throughput saturates where the fixed cost stops mattering: that is the online
  saturation detection the paper left for future work.

The noise of the peak readings is estimated from repeated periods at one setting and sets the
controller's margin. A reading far from what the model expects at a setting it knows well means
the load changed (new input, thermal drift): the model then forgets everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Point:
    """What was seen at one (clock, size)."""

    peak_w: float
    batch_s: float
    n: int
    last_period: int
    mean_w: float = math.nan
    recent: list[float] = field(default_factory=list)


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
        self._suspect: tuple[tuple[int | None, int], bool] | None = None
        self.mean_noise = 0.0
        #: how many recent peak readings a setting's peak is the highest of
        self.keep = 4
        #: weight of the secant in log(size) against the (safer) secant in size above the largest size seen
        self.blend = 0.0
        #: set once two readings at one setting differ by more than ``sparse_frac`` of its power above
        #: the floor: a sensor that sees only part of the time (A100/H100 instant field) and misses spikes
        self.sparse = False
        self.sparse_frac = 0.3
        #: below the smallest size seen at a clock, borrow another clock's curve shape
        self.borrow_shape = True
        #: on a sparse sensor, leave out of the predictions a size whose peak sits far below its neighbours'
        self.drop_low = True

    def table(self, clock: int | None) -> dict[int, Point]:
        return self.points.setdefault(clock, {})

    # -- learning -------------------------------------------------------------------------------

    def add(self, clock: int | None, size: int, peak_w: float, mean_w: float, batch_s: float, period: int) -> bool:
        """Record a period; returns True when the reading says the load changed."""
        self.floor_w = min(self.floor_w, mean_w)
        table = self.table(clock)
        p = table.get(size)
        if p is None:
            # a first reading below what smaller sizes drew is held up to their level until more
            # readings confirm it: it may be real (non-monotone power) or a sensor that missed the
            # spikes (GA100 sees a quarter of the time); the first is safe to learn a little later
            below = [t.peak_w for s, t in table.items() if s < size]
            first = max(peak_w, *below) if below else peak_w
            table[size] = Point(first, batch_s, 1, period, mean_w, [first])
            return False
        dev = peak_w - p.peak_w
        span = max(max(p.peak_w, peak_w) - self.floor_w, 1e-9)
        if abs(dev) > self.sparse_frac * span:
            self.sparse = True
        mdev = (mean_w - p.mean_w) / p.mean_w if p.mean_w > 0 else 0.0
        tdev = (batch_s - p.batch_s) / p.batch_s if p.batch_s > 0 else 0.0
        # a changed load shows in the mean power or the time per batch, both averages over the whole
        # period; the peak alone is not trusted for it (a sparse sensor misses spikes now and then)
        # power counts only when it rose: readings that fell are as likely a sparse sensor missing
        # the spikes as a lighter load, and a lighter load is safe to learn slowly
        hotter = mdev > max(self.change_sigmas * self.mean_noise, self.change_frac) and dev > 0
        moved = hotter or abs(tdev) > max(self.change_sigmas * self.time_noise, 0.15)
        if p.n >= 2 and moved:
            sign = True if hotter else tdev > 0
            # twice in a row, the same way: the load changed (once may be a noise spike)
            if self._suspect is not None and self._suspect[0] == (clock, size) and self._suspect[1] == sign:
                self._suspect = None
                self.changes += 1
                self.forget_except(clock, size)
                table[size] = Point(peak_w, batch_s, 1, period, mean_w, [peak_w])
                return True
            self._suspect = ((clock, size), sign)
            if dev > 0:
                p.recent.append(peak_w)  # safety: a higher reading counts at once
                p.peak_w = max(p.recent[-self.keep :])
            return False
        self._suspect = None
        w = 0.25 if self._noise_n > 4 else 1.0 / (self._noise_n + 1)
        if dev > 0:  # a reading above what was known: that is the noise a margin must cover
            # (one outlier must not blow the margin up: it moves the estimate by a quarter at most,
            # and by no more than a tenth of the reading)
            self.noise_w = 0.75 * self.noise_w + 0.25 * min(dev, 0.1 * peak_w)
        self.mean_noise = (1 - w) * self.mean_noise + w * abs(mdev)
        self.time_noise = (1 - w) * self.time_noise + w * abs(tdev)
        self._noise_n += 1
        # the peak is the highest of the last few readings: a reading below it is most often the
        # sensor missing a spike (GA100 sees a quarter of the time), not the power falling
        p.recent = [*p.recent[-(self.keep - 1) :], peak_w]
        p.peak_w = max(p.recent)
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
            own = table[size].peak_w
            if not self.sparse or table[size].n >= self.keep or len(table) < 2:
                return own
            # a sparse sensor and few readings here: they may all have missed the spikes, so no lower
            # than what the sizes around it say
            others = {s: p for s, p in table.items() if s != size}
            return max(own, self._peak_from(others, clock, size))
        return self._peak_from(table, clock, size)

    def _credible(self, table: dict[int, Point]) -> dict[int, Point]:
        """The sizes to predict from: on a sparse sensor, not one whose peak sits far below its neighbours'.

        A sensor that sees a fraction of the time can alias with the batch and see only host time at
        one size, again and again (A100 job 11: batch 47 read 57 W, true 254 W, between sizes that
        read 150 and 203 W); interpolating through that reading promises the sizes above it fit.
        A size counts as far below when its peak is under the halfway point between the smaller
        neighbour's and what the neighbours interpolate to, while the neighbours differ by more than
        a tenth of the larger one's power above the floor (a flat stretch is not evidence).
        """
        if not (self.sparse and self.drop_low) or len(table) < 3 or not math.isfinite(self.floor_w):
            return table
        sizes = sorted(table)
        env, top_w = {}, -math.inf
        for s in sizes:
            top_w = max(top_w, table[s].peak_w)
            env[s] = top_w
        drop = set()
        for a, s, c in zip(sizes, sizes[1:], sizes[2:]):
            ea, ec = env[a], max(env[a], table[c].peak_w)
            if ec - ea <= 0.1 * (ec - self.floor_w):
                continue
            w = (math.log(s) - math.log(a)) / (math.log(c) - math.log(a))
            if table[s].peak_w < ea + 0.5 * w * (ec - ea):
                drop.add(s)
        return {s: p for s, p in table.items() if s not in drop} if drop else table

    def _peak_from(self, table: dict[int, Point], clock: int | None, size: int, borrow: bool = True) -> float:
        table = self._credible(table)
        sizes = sorted(table)
        # unmeasured sizes are predicted from the running maximum of the measured peaks: a reading
        # lower than a smaller size's may be real (Zeus has such curves) or a spike the sensor
        # missed, and only the first is safe to extrapolate from
        env: dict[int, float] = {}
        top_w = -math.inf
        for s in sizes:
            top_w = max(top_w, table[s].peak_w)
            env[s] = top_w
        below = [s for s in sizes if s < size]
        above = [s for s in sizes if s > size]
        if below and above:
            a, c = below[-1], above[0]
            w = (math.log(size) - math.log(a)) / (math.log(c) - math.log(a))
            return env[a] + w * (env[c] - env[a])
        if above:  # below every observed size: assume no higher than the smallest one seen
            own = min(table[s].peak_w for s in above[:2])
            ref = self._reference(clock) if self.borrow_shape and borrow else None
            if ref is None:
                return own
            # the shape of another clock's curve through the smallest size seen here: with one size
            # seen at a clock, a reading a little over the target must be able to step down a little
            s0 = above[0]
            rt = self.points[ref]
            p_ref, p_ref0 = self._peak_from(rt, ref, size, False), self._peak_from(rt, ref, s0, False)
            f = self.floor_w
            if p_ref0 - f <= 1e-6 or not math.isfinite(f):
                return own
            return min(own, f + (table[s0].peak_w - f) * max(p_ref - f, 0.0) / (p_ref0 - f))
        top = sizes[-1]
        p_top = env[top]
        slope = self.min_slope_frac * p_top / top
        if len(sizes) < 2:
            return p_top + slope * (size - top)
        prev = sizes[-2]
        secant = (p_top - env[prev]) / (top - prev)
        if len(sizes) >= 3 and env[prev] >= p_top - 1e-9:
            # flat at the top: a reading that missed the spikes, or a real plateau; either way the
            # slope before it is the safer guess
            pp = sizes[-3]
            secant = max(secant, (env[prev] - env[pp]) / (prev - pp))
        linear = p_top + max(slope, secant) * (size - top)
        if self.convex(clock):
            # bending upward: the secant errs low, count its rise half again
            linear += 0.5 * (linear - p_top)
        if self.blend <= 0:
            return linear
        # the secant in log(size) bends the other way: the truth lies between the two extensions
        per_log = max((p_top - env[prev]) / (math.log(top) - math.log(prev)), 0.0)
        in_log = p_top + per_log * (math.log(size) - math.log(top))
        return self.blend * in_log + (1 - self.blend) * linear

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
            ref = self._reference(clock)
            if ref is not None:
                # one point at this clock: the shape of another clock's curve, through this point
                t_ref_s, t_ref = self.batch_time(ref, s), self.batch_time(ref, size)
                if t_ref_s and t_ref:
                    return table[s].batch_s * t_ref / t_ref_s
            # nothing else known: optimistic, all of the time a fixed per-batch cost (speed grows)
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

    def time_fit(self, clock: int | None) -> tuple[float, float] | None:
        """(seconds per batch, seconds per item): least squares over every size seen at ``clock``,
        each weighted by its readings; None with fewer than two sizes. Both kept at 0 or more."""
        table = self.points.get(clock, {})
        if len(table) < 2:
            return None
        w = [float(p.n) for p in table.values()]
        xs = [float(s) for s in table]
        ys = [p.batch_s for p in table.values()]
        sw = sum(w)
        mx = sum(wi * x for wi, x in zip(w, xs)) / sw
        my = sum(wi * y for wi, y in zip(w, ys)) / sw
        sxx = sum(wi * (x - mx) ** 2 for wi, x in zip(w, xs))
        if sxx <= 0:
            return None
        b = max(sum(wi * (x - mx) * (y - my) for wi, x, y in zip(w, xs, ys)) / sxx, 0.0)
        return max(my - b * mx, 0.0), b

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

    def convex(self, clock: int | None) -> bool:
        """Whether the peak power's last three sizes seen bend upward (the secant then errs low)."""
        table = self.points.get(clock, {})
        sizes = sorted(table)[-3:]
        if len(sizes) < 3:
            return False
        a, b, c = sizes
        pa, pb, pc = (table[x].peak_w for x in sizes)
        return (pc - pb) / (c - b) > (pb - pa) / (b - a) * 1.05

    def _reference(self, clock: int | None) -> int | None:
        """Another clock with at least two sizes seen (the most), whose curve shapes can be borrowed."""
        best = None
        for c, t in self.points.items():
            if c != clock and len(t) >= 2 and (best is None or len(t) > len(self.points[best])):
                best = c
        return best

    def throughput(self, clock: int | None, size: int) -> float | None:
        t = self.batch_time(clock, size)
        return None if t is None else size / t

    def observed(self, clock: int | None) -> list[int]:
        return sorted(self.points.get(clock, {}))
