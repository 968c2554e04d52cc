"""What ``adaptive`` knows of the plant: readings per setting, and from them, anywhere in the
(batch size, knob level) grid, a point prediction of power and time and an upper bound on power.

The bound is what makes exploration safe. From each measured setting it extends the highest recent
reading (plus ``Z_SIGMAS`` of its noise) to any other setting by growth exponents: power at a
larger batch size ``b'`` is at most ``P * (b'/b) ** up`` and at a smaller one at most
``P * (b/b') ** down``; at a higher knob level ``k'`` at most ``P * (k'/k) ** KNOB[kind].bound``
and at a lower one no higher. The bound at a setting is the least of these over all measured
settings. ``up`` starts at 1 (the work in flight at most doubles when the batch doubles, so its
dynamic power at most doubles, and idle power does not grow) and ``down`` at 0 (a smaller batch
draws no more); both are then learned from the readings, stretched by ``SLOPE_SAFETY``, so power
that falls with batch size or has a hump is bounded from what was measured, not assumed away. A
learned ``up`` holds only as far again above the largest size measured as the measured sizes span
(:class:`SizeGrowth`); beyond, the steeper of it and the prior: where idle power dominates small
sizes, a curve that is flat there can climb steeply further up.

Point predictions interpolate between measured sizes in log(size) and extrapolate with the
steepest local slope (power) or a least-squares time per item (time); across knob levels they use
exponents learned where two levels share a size, or the knob's prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: standard deviations of a setting's peak readings its bound adds above the highest of them
Z_SIGMAS = 2.0
#: learned growth exponents are stretched by this before they bound settings not measured
SLOPE_SAFETY = 1.25
#: power grows at most in proportion to the batch size before a slope is learned
SIZE_EXPONENT_PRIOR = 1.0
#: time per batch grows as size**this from a single measured size (between a fixed per-batch cost, 0,
#: and a pure per-item cost, 1)
TIME_EXPONENT_PRIOR = 0.5
#: a setting's peak is the highest of its last this-many clean readings
KEEP = 32
#: the margin's noise is this quantile of how far new readings rose above a setting's known peak
NOISE_QUANTILE = 0.8
RISES_KEPT = 64
#: rises are kept apart by how many periods the setting had been read for: 1, 2, ... this or more
RISE_BUCKETS = 4
#: periods of readings after which a setting's own peak is believed even where it is below a smaller size's
CONFIRM_PERIODS = 3
#: two sizes count for a slope only this far apart (ratio), so noise between neighbours is not a slope
SLOPE_MIN_RATIO = 1.25


@dataclass(frozen=True, slots=True)
class SizeGrowth:
    """How steeply power may change with batch size at one level, in log-log.

    Up from a measured size by ``d = log(b'/b)``, log power rises by at most ``up * d`` while ``d`` is
    within ``reach`` (as far again as the sizes the slope was learned from span), and beyond that at
    the steeper of ``up`` and the prior: a shape learned over a few sizes says nothing of sizes far
    above them (where idle power dominates small sizes, power that looks flat there climbs steeply
    later: an S-shaped curve). Down, by at most ``down * |d|``."""

    up: float
    down: float
    reach: float = math.inf

    def rise(self, d: np.ndarray) -> np.ndarray:
        """The most log power rises from a measured size to one ``d`` (log ratio, >= 0) above it."""
        near = np.minimum(d, self.reach)
        return self.up * near + max(self.up, SIZE_EXPONENT_PRIOR) * (d - near)


PRIOR_GROWTH = SizeGrowth(SIZE_EXPONENT_PRIOR, 0.0)


@dataclass(frozen=True, slots=True)
class KnobPrior:
    """How power and time move with a knob level before any reading at a second level says."""

    #: power at a higher level is at most ``P * (k'/k) ** bound`` (a safe upper bound, always used)
    bound: float
    #: the dynamic part of power scales as ``(k'/k) ** power`` until readings at two levels tell
    power: float
    #: the batch time scales as ``(k/k') ** time`` until readings at two levels tell: optimistic both
    #: ways (no time lost a level down, ``time_down``; the most a level can gain up, ``time_up``), so
    #: that where another level may pay, one safe probe there is tried and the learned exponents take
    #: over, whichever level the controller stands at
    time_down: float = 0.0
    time_up: float = 1.0


#: power grows with a knob level no faster than its cube (f * V(f)^2, V at most proportional to f)
KNOB_MAX_POWER_EXPONENT = 3.0
#: clocks: dynamic power ~ f * V(f)^2 (at most f^3), compute time at most ~ 1/f;
#: power limits: power follows the limit
KNOB_PRIORS: dict[str, KnobPrior] = {
    "clock": KnobPrior(bound=3.0, power=3.0),
    "limit": KnobPrior(bound=1.0, power=1.0),
}


@dataclass
class RelativeSpread:
    """The root mean square of relative deviations of repeated readings from a setting's average."""

    sum2: float = 0.0
    n: int = 0

    def add(self, value: float, reference: float) -> None:
        """One reading ``value`` of a setting whose average is ``reference``."""
        rel = value / reference - 1
        self.sum2 += rel * rel
        self.n += 1

    @property
    def sd(self) -> float:
        """The relative standard deviation (0 before any reading)."""
        return math.sqrt(self.sum2 / self.n) if self.n else 0.0


@dataclass
class SettingStats:
    """The readings of one (size, level)."""

    peaks: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    #: a lower bound on its power (W) from a reading over the cap that mixed it with the setting before
    at_least_w: float = 0.0

    @property
    def peak_w(self) -> float:
        """The highest recent clean reading, and no less than what a mixed reading proved."""
        return max([*self.peaks[-KEEP:], self.at_least_w]) if self.peaks or self.at_least_w else math.nan

    @property
    def measured(self) -> bool:
        """Whether the setting has a clean reading of its own (a lower bound alone is not one)."""
        return bool(self.peaks)

    @property
    def batch_s(self) -> float:
        """Mean time per batch (s) over the newest KEEP periods; NaN before any."""
        return float(np.mean(self.times[-KEEP:])) if self.times else math.nan

    @property
    def mean_w(self) -> float:
        """Mean power (W) over the newest KEEP periods; NaN before any."""
        return float(np.mean(self.means[-KEEP:])) if self.means else math.nan


class SafeModel:
    """Readings per (size, level) and the bound and predictions built on them. Levels are numbers
    ordered by the power they allow (clock MHz, power limit W); a device without a knob has one level."""

    def __init__(self, sizes: Sequence[int], levels: Sequence[float], kind: str | None) -> None:
        self.sizes = np.asarray(sizes, dtype=float)
        self.levels = tuple(levels)
        self.prior = KNOB_PRIORS.get(kind or "", KnobPrior(1.0, 1.0))
        self.stats: dict[tuple[int, float], SettingStats] = {}
        #: how far a new peak reading at a setting rises above the highest recent one there (W), the
        #: NOISE_QUANTILE of the recent rises: the surprise the bound's margin must cover. Readings that
        #: fall short (a sparse sensor missing a spike) are no noise the cap needs a margin for, and the
        #: rare large rise that corrects such a miss is kept out of the margin by the quantile.
        self.noise_w = 0.0
        #: the rises seen after a setting had 1, 2, ... RISE_BUCKETS (or more) periods of readings
        self._rises: list[list[float]] = [[] for _ in range(RISE_BUCKETS)]
        #: relative spreads of the time per batch and of a period's mean power at one setting
        self._time_spread = RelativeSpread()
        self._mean_spread = RelativeSpread()
        #: the lowest mean power seen: an estimate of the idle floor, for the knob's point prediction
        self.floor_w = math.inf

    # -- learning ----------------------------------------------------------------------------------

    def add(
        self, size: int, level: float, peak_w: float | None, batch_s: float, mean_w: float, noise: bool = True
    ) -> None:
        """One period at (size, level): its clean peak (None when the period had none) and timing.
        ``noise=False`` keeps a reading suspected of a load change out of the noise estimates."""
        st = self.stats.setdefault((size, level), SettingStats())
        if not noise:
            st.peaks.append(peak_w) if peak_w is not None and math.isfinite(peak_w) else None
            st.times.append(batch_s) if math.isfinite(batch_s) and batch_s > 0 else None
            st.means.append(mean_w) if math.isfinite(mean_w) and mean_w > 0 else None
            return
        if peak_w is not None and math.isfinite(peak_w):
            if st.peaks:
                # the surprise against what was believed of it (a first reading that missed the
                # peaks is believed no lower than its smaller neighbours', so correcting it is no surprise)
                believed = self.peaks().get((size, level), st.peak_w)
                bucket = self._rises[min(len(st.peaks), RISE_BUCKETS) - 1]
                bucket.append(max(peak_w - believed, 0.0))
                del bucket[:-RISES_KEPT]
                self.noise_w = self.noise_after(RISE_BUCKETS)
            st.peaks.append(peak_w)
        if math.isfinite(batch_s) and batch_s > 0:
            if st.times:
                self._time_spread.add(batch_s, st.batch_s)
            st.times.append(batch_s)
        if math.isfinite(mean_w) and mean_w > 0:
            if st.means:
                self._mean_spread.add(mean_w, st.mean_w)
            st.means.append(mean_w)
            self.floor_w = min(self.floor_w, mean_w)

    @property
    def time_noise(self) -> float:
        """Relative standard deviation of the time per batch at one setting."""
        return self._time_spread.sd

    @property
    def mean_noise(self) -> float:
        """Relative standard deviation of a period's mean power at one setting."""
        return self._mean_spread.sd

    def noise_after(self, periods: int) -> float:
        """How far (W) the next reading of a setting measured for ``periods`` periods may rise above
        what is believed of it: the NOISE_QUANTILE of the rises seen at that count. A sensor that sees
        part of the time shows large rises after one period and small ones after several; where a count
        has no rises yet, the nearest smaller count that has them (0 with none at all)."""
        for n in range(min(max(periods, 1), RISE_BUCKETS), 0, -1):
            if self._rises[n - 1]:
                return float(np.quantile(self._rises[n - 1], NOISE_QUANTILE))
        return 0.0

    def margin_w(self, size: int, level: float) -> float:
        """What the bound adds above a measured setting's believed peak: Z_SIGMAS times its noise."""
        st = self.stats.get((size, level))
        return Z_SIGMAS * self.noise_after(len(st.peaks) if st else 1)

    def add_lower_bound(self, size: int, level: float, watts: float) -> None:
        """The setting drew at least ``watts`` (a reading mixed with a setting before it that was under
        the cap): its believed peak is never below that."""
        st = self.stats.setdefault((size, level), SettingStats())
        st.at_least_w = max(st.at_least_w, watts)

    def forget_except(self, size: int, level: float) -> None:
        """The load changed: keep only the newest reading of the setting that saw it."""
        st = self.stats.get((size, level))
        fresh = SettingStats(st.peaks[-1:], st.times[-1:], st.means[-1:]) if st else SettingStats()
        self.stats = {(size, level): fresh}
        self.floor_w = fresh.mean_w if fresh.means else math.inf

    def residual(self, size: int, level: float, mean_w: float, batch_s: float) -> float | None:
        """How many deviations a period's mean power or time per batch is from what was known at this
        setting, the larger one with its sign (None when too little is known). Both average the whole
        period, so a sparse sensor missing a spike does not look like a change of load."""
        st = self.stats.get((size, level))
        if st is None or not st.means or not st.times or self._mean_spread.n < 3:
            return None
        zm = (mean_w / st.mean_w - 1) / max(self.mean_noise, 0.005)
        zt = (batch_s / st.batch_s - 1) / max(self.time_noise, 0.005)
        return zm if abs(zm) >= abs(zt) else zt

    # -- what was measured -------------------------------------------------------------------------

    def peaks(self) -> dict[tuple[int, float], float]:
        """The peak to believe at each measured setting: its own highest reading once it has
        CONFIRM_PERIODS of them; before that, no lower than what is believed of the next smaller size
        measured at its level. A first reading below a smaller size's is most often a sensor that missed
        the batches' peaks (one that sees part of the time); power that really falls with size is
        believed once confirmed, and a confirmed size is then what the sizes above it are held to."""
        out: dict[tuple[int, float], float] = {}
        for level in self.levels:
            run = -math.inf
            for b, st in sorted((b, st) for (b, k), st in self.stats.items() if k == level and (st.measured or st.at_least_w > 0)):
                own = st.peak_w
                value = own if len(st.peaks) >= CONFIRM_PERIODS else max(own, run)
                out[(b, level)] = value
                run = value
        return out

    def measured(self) -> list[tuple[int, float, SettingStats]]:
        """(size, level, stats) of every setting with a reading or a lower bound."""
        return [(b, k, st) for (b, k), st in self.stats.items() if st.measured or st.at_least_w > 0]

    def exponents(self, level: float) -> SizeGrowth:
        """How power may change with batch size at ``level``: from pairs of sizes measured at that level;
        where there are none, the steepest learned at a higher level (the dynamic part scales with the
        level and the idle floor does not, so total power rises no more steeply in log-log at a lower
        level); the prior where none is learned."""
        own = self.own_exponents(level)
        if own is not None:
            return own
        higher = [e for k in self.levels if k > level and (e := self.own_exponents(k)) is not None]
        if higher:
            return SizeGrowth(max(e.up for e in higher), max(e.down for e in higher), min(e.reach for e in higher))
        return PRIOR_GROWTH

    def own_exponents(self, level: float) -> SizeGrowth | None:
        """How power changed with batch size between the sizes measured at ``level``: the steepest
        log-log rise and fall over pairs at least SLOPE_MIN_RATIO apart (a fall within the noise does
        not count), times SLOPE_SAFETY, and the span they were learned over; None where no such pair
        is measured there."""
        ups: list[float] = []
        downs: list[float] = []
        believed = self.peaks()
        pts = sorted((b, believed[(b, k)]) for (b, k), st in self.stats.items() if k == level and st.measured)
        for i, (b0, p0) in enumerate(pts):
            j = next((j for j in range(i + 1, len(pts)) if pts[j][0] >= SLOPE_MIN_RATIO * b0), None)
            if j is None:
                continue
            b1, p1 = pts[j]
            if p0 <= 0 or p1 <= 0:
                continue
            slope = (math.log(p1) - math.log(p0)) / (math.log(b1) - math.log(b0))
            noise = math.log1p(2 * self.noise_w / min(p0, p1)) / (math.log(b1) - math.log(b0))
            (ups if slope >= 0 else downs).append(abs(slope))
            if slope < 0 and abs(slope) <= noise:
                downs.pop()  # a fall within the noise is no evidence of power falling
        if not ups and not downs:
            return None
        up = SLOPE_SAFETY * max(ups) if ups else SIZE_EXPONENT_PRIOR
        down = SLOPE_SAFETY * max(downs) if downs else 0.0
        return SizeGrowth(min(up, 2.0), min(down, 2.0), math.log(pts[-1][0] / pts[0][0]))

    def bound_w(self, level_of: np.ndarray, size_of: np.ndarray) -> np.ndarray:
        """Upper bound on power at each candidate (arrays of equal shape); +inf where nothing is measured.
        A measured setting's extension that another measured setting contradicts (it reads above what
        the extension allows there) bounds nothing: its growth assumptions failed on the plant."""
        sources = self._bound_sources()
        if sources is None:
            return np.full(size_of.shape, np.inf)
        v_i, size_rise, level_rise = sources
        return np.exp(np.min(v_i + (size_rise(size_of) + level_rise(level_of)), axis=-1))

    def bound_grid(self, levels: Sequence[float], sizes: Sequence[int]) -> np.ndarray:
        """:meth:`bound_w` over every (level, size) pair, shape (levels, sizes), the same values: the
        rise in size and the rise in level are each worked out once, not once per pair (a measured
        table of 16,384 sizes at 7 limits is 115,000 candidates)."""
        level_of, size_of = np.asarray(levels, float), np.asarray(sizes, float)
        sources = self._bound_sources()
        if sources is None:
            return np.full((len(level_of), len(size_of)), np.inf)
        v_i, size_rise, level_rise = sources
        by_size, by_level = size_rise(size_of), level_rise(level_of)
        return np.exp(np.stack([np.min(v_i + (by_size + lv), axis=-1) for lv in by_level]))

    def _bound_sources(self):  # noqa: ANN202 - closures over the sources
        """(log bound at each measured source, its rise in size, its rise in level), the contradicted
        sources' bounds at +inf; None when nothing is measured."""
        pts = self.measured()
        if not pts:
            return None
        b_i = np.array([b for b, _, _ in pts], dtype=float)
        k_i = np.array([k for _, k, _ in pts], dtype=float)
        believed = self.peaks()
        seen = np.log(np.array([believed[(b, k)] for b, k, _ in pts]))
        v_i = np.log(np.array([believed[(b, k)] + self.margin_w(b, k) for b, k, _ in pts]))
        size_rise, level_rise = self._extensions(b_i, k_i)
        contradicted = (seen[:, None] > v_i + (size_rise(b_i) + level_rise(k_i))).any(axis=0)
        return np.where(contradicted, np.inf, v_i), size_rise, level_rise

    def _extensions(self, b_i: np.ndarray, k_i: np.ndarray):  # noqa: ANN202 - closures over the sources
        """Two functions giving, per measured source, how far log power may rise from that source to a
        candidate: one of the candidates' sizes, one of their levels (each of shape: the argument's shape
        + (sources,)); a candidate's rise is their sum."""
        exps = {k: self.exponents(k) for k in set(k_i.tolist())}

        def size_rise(size_of: np.ndarray) -> np.ndarray:
            db = np.log(size_of)[..., None] - np.log(b_i)
            rise = np.empty(db.shape)
            for k, growth_k in exps.items():
                at = k_i == k
                up, d = db[..., at] >= 0, db[..., at]
                rise[..., at] = np.where(up, growth_k.rise(np.maximum(d, 0.0)), -growth_k.down * d)
            return rise

        def level_rise(level_of: np.ndarray) -> np.ndarray:
            dk = np.log(level_of)[..., None] - np.log(k_i)
            return np.where(dk > 0, self.prior.bound * dk, 0.0)

        return size_rise, level_rise

    # -- point predictions ---------------------------------------------------------------------------

    def _level_table(self, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        believed = self.peaks()
        rows = sorted((b, believed[(b, k)], st.batch_s) for (b, k), st in self.stats.items() if k == level and st.measured)
        rows = [r for r in rows if math.isfinite(r[2])]
        return tuple(np.array(col, dtype=float) for col in zip(*rows)) if rows else (np.array([]),) * 3  # type: ignore[return-value]

    def predict(self, level: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(power W, seconds per batch) at every size at a measured ``level``; None if none measured there."""
        b, p, t = self._level_table(level)
        if b.size == 0:
            return None
        x, xs = np.log(b), np.log(self.sizes)
        power = np.interp(xs, x, p)
        time = np.interp(self.sizes, b, t)
        if b.size >= 2:
            above = xs > x[-1]
            # power is piecewise linear in log size between the sizes measured, and past them it carries
            # on along the line from the largest size through the largest one a distinguishable step
            # below it (sizes closer than that give a slope made of noise); falling power included, down
            # to the lowest mean read. The bound, not this, is the safety
            far = b <= b[-1] / SLOPE_MIN_RATIO
            j = int(np.flatnonzero(far)[-1]) if far.any() else 0
            slope = (p[-1] - p[j]) / max(x[-1] - x[j], 1e-9)
            floor = self.floor_w if math.isfinite(self.floor_w) else 0.0
            power[above] = np.maximum(p[-1] + slope * (xs[above] - x[-1]), min(floor, float(p.min())))
            # time per batch: linear in the size, at the cost per item fitted over every size measured
            per_item = max(float(np.polyfit(b, t, 1)[0]), 0.0) if b.size >= 3 else max((t[-1] - t[-2]) / (b[-1] - b[-2]), 0.0)
            time[above] = t[-1] + per_item * (self.sizes[above] - b[-1])
        else:
            time = t[0] * (self.sizes / b[0]) ** TIME_EXPONENT_PRIOR
            above = xs > x[0]
            power[above] = p[0] * (self.sizes[above] / b[0]) ** SIZE_EXPONENT_PRIOR
        return power, time

    def _span(self, level: float) -> float:
        """How wide (in log size) the sizes measured at ``level`` reach; -1 where none is measured."""
        b = self._level_table(level)[0]
        return float(np.log(b[-1] / b[0])) if b.size else -1.0

    def predict_level(self, level: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Power and time at every size at ``level``. Within the sizes measured there, its own curve;
        outside them, the shape of the level measured the widest (the curves' shape is shared across
        levels; a level scales it), carried over by the knob's exponents (learned from every reading
        at another level) and put through this level's own nearest reading: its dynamic part scaled to
        it, or, where the carried curve has none at that size (the reading the floor was taken from),
        shifted to it (a level's own prior, power in proportion to the size idle included, would
        predict hundreds of watts from one reading at batch 1)."""
        spans = {k: self._span(k) for k in self.levels}
        ref = max(self.levels, key=lambda k: (spans[k], k))
        if spans[ref] < 0:
            return None
        power, time = self.predict(ref)  # type: ignore[misc]
        if ref == level:
            return power, time
        power, time = self._carry(ref, power, time, level)
        own = self.predict(level)
        if own is None:
            return power, time
        b = self._level_table(level)[0]
        lo, hi = int(np.searchsorted(self.sizes, b[0])), int(np.searchsorted(self.sizes, b[-1]))
        floor = self._floor(power)
        out_p, out_t = own[0].copy(), own[1].copy()
        for edge, part in ((lo, slice(0, lo)), (hi, slice(hi + 1, None))):
            if power[edge] - floor > 1e-6:
                out_p[part] = floor + (power[part] - floor) * max(own[0][edge] - floor, 0.0) / (power[edge] - floor)
            else:  # the carried curve has no dynamic part at that size to scale: shift it through the reading
                out_p[part] = power[part] + (own[0][edge] - power[edge])
            out_t[part] = time[part] * own[1][edge] / time[edge]
        return out_p, out_t

    def predicted_best(
        self, caps_w: Sequence[float], max_size: float = math.inf
    ) -> list[tuple[float, int, float, float, float]]:
        """(cap W, size, level, items/s, power W) of the fastest setting of at most ``max_size`` (what
        the device's memory holds) whose predicted power plus the margin of a setting not yet measured
        fits under each cap; a cap nothing fits under is left out. Advice for a budget allocator about
        caps the controller has not run at, not a safety bound."""
        margin = self.margin_w(-1, -1.0)
        rows = []
        for level in self.levels:
            got = self.predict_level(level)
            if got is None:
                continue
            for size, power, time in zip(self.sizes, *got):
                if size <= max_size and math.isfinite(power) and math.isfinite(time) and time > 0:
                    rows.append((float(power) + margin, size / float(time), int(size), level))
        out = []
        for cap in caps_w:
            ok = [(speed, -power, size, level) for power, speed, size, level in rows if power <= cap]
            if ok:
                speed, neg_power, size, level = max(ok)
                out.append((float(cap), size, level, speed, -neg_power))
        return out

    def _floor(self, power: np.ndarray) -> float:
        floor = self.floor_w if math.isfinite(self.floor_w) else 0.0
        return min(floor, float(power.min()))

    def _carry(self, near: float, power: np.ndarray, time: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        kp, learned_kt = self.knob_exponents(near, power, time)
        ratio = level / near
        kt = learned_kt if learned_kt is not None else self.prior.time_up if ratio > 1 else self.prior.time_down
        floor = self._floor(power)
        return floor + (power - floor) * ratio**kp, time * ratio ** (-kt)

    def knob_exponents(self, near: float, power: np.ndarray, time: np.ndarray) -> tuple[float, float | None]:
        """(power, time) exponents of the knob: from every reading at another level than ``near``
        against ``near``'s curve (``power``, ``time``) at that size; the knob's power prior where there
        is none, and None for the time (whose prior depends on the direction)."""
        kp, kt = [], []
        floor = self._floor(power)
        for (b, k), st in self.stats.items():
            if k == near or not st.measured or not math.isfinite(st.batch_s):
                continue
            i = int(np.searchsorted(self.sizes, b))
            lr = math.log(k / near)
            if st.peak_w - floor > 1 and power[i] - floor > 1:
                kp.append(math.log((st.peak_w - floor) / (power[i] - floor)) / lr)
            if st.batch_s > 0 and time[i] > 0:
                kt.append(-math.log(st.batch_s / time[i]) / lr)
        # physical limits: power does not fall as the level rises; a batch takes no less than
        # in inverse proportion to the clock (or limit) and no longer than at a lower one
        p = min(max(float(np.median(kp)), 0.0), KNOB_MAX_POWER_EXPONENT) if kp else self.prior.power
        t = min(max(float(np.median(kt)), 0.0), 1.0) if kt else None
        return p, t
