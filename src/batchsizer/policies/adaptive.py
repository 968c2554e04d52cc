"""``adaptive``: safe exploration of (batch size, knob level) against a model learned while running.

One decision rule, every period, on a :class:`~batchsizer.policies.safe_model.SafeModel`:

1. Learn the period's clean reading (one that averages only this setting, by the sensor's window and
   the cap rule; a setting without one yet is held for a period long enough to get one). A reading
   over the cap that mixed this setting with a previous one under the cap proves this one is over it
   (an average over the cap has a part over the cap). A period's mean power or time per batch far
   off what was known at its setting, twice in a row the same way, means the load changed: the model
   keeps only the newest reading.
2. Among the measured settings whose believed peak plus margin is under the cap, the fastest is the
   incumbent. Where none is, go to the setting that read lowest (and, already over the cap, probe the
   next size up where no rise of power with size was measured: power may fall with size).
3. A faster measured setting that would fit once read as often as a well-known one is run again
   (``confirm``). Else explore the fastest setting not yet measured whose *bound* is under the cap
   (safe) if it is predicted at least ``gain_eps`` faster than the incumbent. Else, where the best
   predicted setting is not yet safe, measure a safe setting at its knob level between what is
   measured there and it (an expander), or try it with the loop told to stop at the first reading
   over the cap, at most one distinguishable size step past the sizes measured there (a one-batch
   risk). A coarse size list with no safe step up is tried the same way.
4. Else hold the incumbent.

Probes run short periods (enough sensor updates for a clean reading, more on a sensor that sees part
of the time); every period is at least long enough to hold one. The user's size list is respected; the
clock or power limit is a knob only where the device offers one; a batch the device ran smaller than
asked (memory) bounds the sizes asked for. :meth:`Adaptive.frontier` says what it learned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from batchsizer.errors import ConfigError
from batchsizer.policies.band_search import start_position
from batchsizer.policies.base import Controller, Decision, DeviceKnobs, FrontierPoint, Observation, Setting, check_sizes
from batchsizer.policies.safe_model import RISE_BUCKETS, SLOPE_MIN_RATIO, Z_SIGMAS, SafeModel

#: a setting not yet measured must promise at least this much more throughput than the incumbent
GAIN_EPS = 0.01
#: sensor updates a probe period spans after its readings have settled
PROBE_UPDATES = 3
#: standard deviations of a load change: two residuals past this, the same way, reset the model
CHANGE_SIGMAS = 5.0
#: periods a setting may be held for a clean reading before its mixed readings are taken as they are
MAX_SETTLING = 2
#: every whole size from 1 to this is a candidate unless the user gives a list
DEFAULT_MAX_SIZE = 256


def all_sizes(max_size: int = DEFAULT_MAX_SIZE, min_size: int = 1) -> tuple[int, ...]:
    """Every whole batch size from ``min_size`` to ``max_size``."""
    return tuple(range(min_size, max_size + 1))


def _compact(sizes: tuple[int, ...]) -> list[int] | str:
    """A size list for the records: ``"1..256"`` when it is every whole size in a range."""
    return f"{sizes[0]}..{sizes[-1]}" if sizes == all_sizes(sizes[-1], sizes[0]) else list(sizes)


class Adaptive(Controller):
    """Fastest setting whose power bound stays under the cap, exploring where the model says it pays."""

    name = "adaptive"
    accepts = frozenset({"sizes", "initial"})
    moves_clock = True
    can_drop_clocks = True

    def __init__(
        self,
        sizes: Sequence[int] | None = None,
        knobs: DeviceKnobs | None = None,
        initial: int | None = None,
        gain_eps: float = GAIN_EPS,
    ) -> None:
        self.sizes = check_sizes(sizes if sizes is not None else all_sizes())
        if not 0 <= gain_eps < 1:
            raise ConfigError("gain eps", f"must be a fraction between 0 and 1, got {gain_eps}")
        self.gain_eps = gain_eps
        self._set_knobs(knobs or DeviceKnobs())
        self.size = self.sizes[start_position(self.sizes, initial, "initial batch size") - 1]
        self.level = self.levels[-1]
        self._suspect: int = 0  # sign of the last large residual at the current setting (0: none)
        self._update_s = 0.0
        self._settle_s = 0.0
        self._settling = 0
        self._coverage = 1.0
        self._max_size = self.sizes[-1]
        self._time_limit: float | None = None  # the longest a batch may take (a server's latency bound)
        self._latency_sizes: dict[float, int] = {}  # per knob level, the largest size that bound let run
        #: the last period read over its cap (a mixed reading after it proves nothing of the next setting)
        self._last_over = False
        self.changes = 0

    def _set_knobs(self, knobs: DeviceKnobs) -> None:
        if knobs.has_clocks:
            self.kind: str | None = "clock"
            self.levels: tuple[float, ...] = tuple(float(c) for c in sorted(knobs.clock_levels_mhz))
        elif knobs.has_power_limits:
            self.kind, self.levels = "limit", tuple(float(x) for x in sorted(knobs.power_limits_w))
        else:
            self.kind, self.levels = None, (1.0,)
        self.model = SafeModel(self.sizes, self.levels, self.kind)
        # highest level first, so that among equally fast settings the default clock or limit wins
        grid_b, grid_k = np.meshgrid(np.asarray(self.sizes, float), np.asarray(self.levels[::-1], float))
        self._grid_b, self._grid_k = grid_b.ravel(), grid_k.ravel()
        self._index = {(int(b), float(k)): i for i, (b, k) in enumerate(zip(self._grid_b, self._grid_k))}

    def drop_clocks(self) -> None:
        """The device refused a clock: go on with the batch size alone, learning afresh."""
        self._set_knobs(DeviceKnobs())
        self.level = self.levels[-1]
        self._latency_sizes = {}

    # -- settings ----------------------------------------------------------------------------------

    def _setting(self, size: int | None = None, level: float | None = None) -> Setting:
        b = self.size if size is None else size
        k = self.level if level is None else level
        if self.kind == "clock":
            return Setting(b, clock_mhz=int(k))
        if self.kind == "limit":
            return Setting(b, power_limit_w=k)
        return Setting(b)

    def _level_of(self, s: Setting) -> float:
        if self.kind == "clock" and s.clock_mhz is not None:
            return float(s.clock_mhz)
        if self.kind == "limit" and s.power_limit_w is not None:
            return float(s.power_limit_w)
        return self.levels[-1]

    def initial(self) -> Setting:
        """The starting setting: the initial size at the highest knob level."""
        return self._setting()

    def describe(self) -> dict[str, Any]:
        """The configuration for the job's records: sizes, knob and its levels, the saturation gate."""
        return {
            "name": self.name,
            "sizes": _compact(self.sizes),
            "knob": self.kind,
            "levels": list(self.levels) if self.kind else [],
            "gain_eps": self.gain_eps,
        }

    # -- learning ----------------------------------------------------------------------------------

    def _learn(self, obs: Observation) -> None:
        b, k = obs.setting.batch_size, self._level_of(obs.setting)
        batch_s = obs.duration_s / obs.batches if obs.batches else math.nan
        clean = obs.clean_peak_w if math.isfinite(obs.clean_peak_w) else None
        if clean is None and self._settling >= MAX_SETTLING:
            clean = obs.peak_w  # the sensor never gave a reading of this setting alone: take what it gave
        cap_during = obs.period_cap_w if math.isfinite(obs.period_cap_w) else obs.cap_w
        if clean is not None:
            z = self.model.residual(b, k, obs.mean_w, batch_s)
            if z is not None and abs(z) > CHANGE_SIGMAS:
                sign = 1 if z > 0 else -1
                if self._suspect == sign:
                    self.model.add(b, k, clean, batch_s, obs.mean_w)
                    self.model.forget_except(b, k)
                    self.changes += 1
                    self._suspect = 0
                    return
                self._suspect = sign
                self.model.add(b, k, clean, batch_s, obs.mean_w, noise=False)
                return
            elif z is not None:
                self._suspect = 0
        elif obs.peak_w > cap_during and not self._last_over:
            # mixed with the setting before, which was under the cap: this one is over it
            self.model.add_lower_bound(b, k, obs.peak_w)
        self.model.add(b, k, clean, batch_s, obs.mean_w)

    # -- deciding ----------------------------------------------------------------------------------

    def decide(self, obs: Observation) -> Decision:
        """Learn from the period, then choose the next setting (or stay to get a clean reading)."""
        if not obs.valid or obs.batches == 0:
            return Decision(self._setting(), "no-reading")
        if obs.update_period_s is not None and math.isfinite(obs.update_period_s):
            self._update_s = max(float(obs.update_period_s), 0.0)
        self._settle_s = self._update_s + obs.sensor_window_s
        # a sensor whose window is shorter than its update period sees only part of the time: a period
        # needs more updates before its highest reading is likely to have caught the batches' peak
        if self._update_s > 0 and 0 < obs.sensor_window_s < self._update_s:
            self._coverage = obs.sensor_window_s / self._update_s
        else:
            self._coverage = 1.0
        if obs.size_limit is not None:  # larger batches did not fit in the device's memory
            self._max_size = min(self._max_size, obs.size_limit)
        self._time_limit = obs.batch_time_limit_s
        if obs.latency_size_limit is not None:
            self._latency_sizes[self._level_of(obs.setting)] = obs.latency_size_limit
        self._learn(obs)
        cap_during = obs.period_cap_w if math.isfinite(obs.period_cap_w) else obs.cap_w
        self._last_over = obs.peak_w > cap_during
        here = self.model.stats.get((obs.setting.batch_size, self._level_of(obs.setting)))
        unread = here is None or (not here.measured and here.at_least_w <= 0)
        if unread and obs.peak_w <= obs.cap_w and self._settling < MAX_SETTLING:
            # no reading of this setting alone yet (the period was shorter than the sensor needs) and
            # nothing over the cap: stay, for a period long enough to get one
            self._settling += 1
            return self._decision("settling", True)
        self._settling = 0
        size, level, reason, probe = self._choose(obs.cap_w)
        self.size, self.level = size, level
        return self._decision(reason, probe)

    def _choose(self, cap_w: float) -> tuple[int, float, str, bool]:
        """(size, level, why, whether it is a probe of a setting not yet measured)."""
        m = self.model
        bound = m.bound_grid(self.levels[::-1], self.sizes).ravel()  # the grid's order: levels high to low, then sizes
        power, time = self._predictions()
        speed = self._grid_b / time
        # what is known per setting, filled from the (few) settings measured, not by a pass over the grid
        measured = np.zeros(self._grid_b.shape, bool)
        own = np.full(self._grid_b.shape, np.nan)
        raw = np.full(self._grid_b.shape, np.nan)
        margins = np.full(self._grid_b.shape, np.inf)
        batch_s = np.full(self._grid_b.shape, np.nan)
        for key, value in m.peaks().items():
            i = self._index.get(key)
            if i is None:
                continue
            st = m.stats[key]
            measured[i], own[i], raw[i], margins[i], batch_s[i] = st.measured, value, st.peak_w, m.margin_w(*key), st.batch_s
        # settings that cannot run as chosen count as known not to fit: sizes the device's memory does
        # not hold, and batches the source's latency bound would cut
        cannot = self._cannot_run(measured, batch_s, time)
        own = np.where(cannot, np.inf, own)
        power = np.where(cannot, np.inf, power)
        bound = np.where(cannot, np.inf, bound)
        margin = Z_SIGMAS * m.noise_w
        known_ok = measured & (own + margins <= cap_w)
        if not known_ok.any():
            safe_new = ~measured & (bound <= cap_w) & ~(own > cap_w)
            if safe_new.any():
                i = int(np.argmax(np.where(safe_new, speed, -np.inf)))
                return self._at(i) + ("explore-safe", True)
            # nothing known to fit: the lowest-power setting, by what was measured or else predicted
            # (the smallest size at the lowest level unless readings say power falls with size)
            # by the raw readings: already over the cap, the setting that read lowest is the best bet,
            # and running it again confirms (or not) a reading below what smaller sizes drew
            est = np.where(np.isfinite(raw), raw, power)
            est = np.where(np.isfinite(est), est, 0.0) + 1e-9 * self._grid_b + 1e-12 * self._grid_k
            est = np.where(cannot, np.inf, est)
            i = int(np.argmin(est))
            if measured[i] and raw[i] > cap_w:
                j = self._seek_lowest(i, measured, own, raw, speed, cap_w, margin)
                if j is not None:
                    return self._at(j) + ("probe-falling", True)
            return self._at(i) + ("lowest-power", not measured[i])
        measured_speed = np.where(known_ok, self._grid_b / np.where(known_ok, batch_s, 1.0), -np.inf)
        inc = int(np.argmax(measured_speed))
        best = measured_speed[inc]
        want = (1 + self.gain_eps) * best
        # a measured setting faster than the incumbent that would fit once its readings are as many as a
        # well-known setting's (a sensor that sees part of the time reads a new setting low now and then):
        # run it again, the readings tell
        settled = own + Z_SIGMAS * m.noise_after(RISE_BUCKETS) <= cap_w
        confirm = np.where(measured & ~known_ok & settled & (speed > want), speed, -np.inf)
        if np.isfinite(confirm.max()):
            return self._at(int(np.argmax(confirm))) + ("confirm", True)
        safe_new = ~measured & (bound <= cap_w) & ~(own > cap_w)
        better = np.where(safe_new & (speed > want), speed, -np.inf)
        if np.isfinite(better.max()):
            return self._at(int(np.argmax(better))) + ("explore-safe", True)
        # the best predicted setting that fits by the point prediction but not yet by the bound
        fits = ~measured & ~(own > cap_w) & (power + margin <= cap_w) & (speed > want)
        if fits.any():
            j = int(np.argmax(np.where(fits, speed, -np.inf)))
            level = np.isclose(self._grid_k, self._grid_k[j])
            # an expander: a safe setting at that level between what is measured there and the target,
            # the nearest to the target (one below every measured size there would teach nothing new)
            below = level & measured & (self._grid_b <= self._grid_b[j])
            floor = self._grid_b[below].max() if below.any() else 0.0
            same_level = level & safe_new & (self._grid_b <= self._grid_b[j]) & (self._grid_b > floor)
            if same_level.any():
                return self._at(int(np.argmax(np.where(same_level, self._grid_b, -np.inf)))) + ("expand", True)
            # a one-batch risk, taken only one distinguishable size step past the sizes measured at that
            # level: further, the point prediction is an extrapolation, and the risk lasts the whole batch
            reach = SLOPE_MIN_RATIO * max(floor, self._grid_b[inc])
            risky = np.where(fits & (self._grid_b <= reach) & level, speed, -np.inf)
            if np.isfinite(risky.max()):
                return self._at(int(np.argmax(risky))) + ("explore-risky", True)
        # a coarse size list can leave no safe step up: try the next size with the one-batch risk
        up = np.isclose(self._grid_k, self._grid_k[inc]) & (self._grid_b > self._grid_b[inc])
        if up.any():
            j = int(np.argmin(np.where(up, self._grid_b, np.inf)))
            coarse = self._grid_b[j] > SLOPE_MIN_RATIO * self._grid_b[inc]
            if coarse and not measured[j] and not own[j] > cap_w and bound[j] > cap_w and speed[j] > want:
                return self._at(j) + ("explore-coarse", True)
        return self._at(inc) + ("hold" if self._at(inc) == (self.size, self.level) else "incumbent", False)

    def _cannot_run(self, measured: np.ndarray, batch_s: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Grid settings that cannot run as chosen: larger than the device's memory holds, or (told a
        latency bound) batches slower than it, by their time measured or predicted, or larger than the
        source let run at that level. The smallest size is never ruled out by the bound."""
        cannot = self._grid_b > self._max_size
        if self._time_limit is not None:
            slow = np.where(measured, batch_s, time) > self._time_limit
            for level, largest in self._latency_sizes.items():
                slow |= np.isclose(self._grid_k, level) & (self._grid_b > largest)
            cannot |= slow & (self._grid_b > self.sizes[0])
        return cannot

    def _seek_lowest(
        self, i: int, measured: np.ndarray, own: np.ndarray, raw: np.ndarray, speed: np.ndarray, cap_w: float,
        margin: float,
    ) -> int | None:
        """Over the cap at ``i``, the setting that read lowest: the size to probe next for a lower one at
        its level (a probe cannot make it worse), or None where none is left to try. Above the largest
        size read, only where no rise of power with size was measured: the fall seen so far carried on
        by its raw readings (an optimistic guess costs nothing here), the fastest size where it meets the
        cap, else the next size up. Between sizes read on either side of ``i``, the middle (in log size)
        of the wider gap: a search for the bottom of a dip."""
        level = np.isclose(self._grid_k, self._grid_k[i])
        read = level & np.isfinite(raw)
        free = level & ~measured & ~(own > cap_w)
        b_i = self._grid_b[i]
        below, above = read & (self._grid_b < b_i), read & (self._grid_b > b_i)
        lower = float(self._grid_b[below].max()) if below.any() else None
        upper = float(self._grid_b[above].min()) if above.any() else None
        if upper is None:
            learned = self.model.own_exponents(float(self._grid_k[i]))
            nxt = free & (self._grid_b > b_i)
            if nxt.any() and (learned is None or learned.up <= 0):
                j = int(np.argmin(np.where(nxt, self._grid_b, np.inf)))
                if lower is not None:
                    slope = math.log(raw[i] / raw[self._index[(int(lower), float(self._grid_k[i]))]]) / math.log(b_i / lower)
                    fit = nxt & (raw[i] * (self._grid_b / b_i) ** slope + margin <= cap_w)
                    j = int(np.argmax(np.where(fit, speed, -np.inf))) if fit.any() else j
                return j
        gaps = []
        for lo, hi in ((lower, b_i), (b_i, upper)):
            if lo is None or hi is None:
                continue
            inside = free & (self._grid_b > lo) & (self._grid_b < hi)
            if inside.any():
                gaps.append((math.log(hi / lo), math.sqrt(lo * hi), inside))
        if not gaps:
            return None
        _, middle, inside = max(gaps, key=lambda g: g[0])
        return int(np.argmin(np.where(inside, np.abs(np.log(self._grid_b / middle)), np.inf)))

    def _predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """Point predictions of power and time at every candidate (unmeasured levels carried over)."""
        n = len(self.sizes)
        power = np.full(self._grid_b.shape, np.inf)
        time = np.full(self._grid_b.shape, np.inf)
        for j, level in enumerate(self.levels[::-1]):
            got = self.model.predict_level(level)
            if got is not None:
                power[j * n : (j + 1) * n], time[j * n : (j + 1) * n] = got
        return power, np.maximum(time, 1e-12)

    def _at(self, i: int) -> tuple[int, float]:
        return int(self._grid_b[i]), float(self._grid_k[i])

    def _decision(self, reason: str, probe: bool) -> Decision:
        st = self.model.stats.get((self.size, self.level))
        batch_s = st.batch_s if st is not None and math.isfinite(st.batch_s) else None
        # long enough for a clean reading, and for a probe little more: a few sensor updates after it
        min_s = self._settle_s + math.ceil(PROBE_UPDATES / self._coverage) * self._update_s
        state = {"size": self.size, "level": self.level if self.kind else None, "measured": len(self.model.stats)}
        return Decision(
            self._setting(),
            reason,
            state,
            window_batches=1 if probe or batch_s is None else None,
            stop_on_violation=True,
            min_period_s=min_s if min_s > 0 else None,
        )

    # -- what it learned -----------------------------------------------------------------------------

    def frontier(self, caps_w: Sequence[float], predicted: bool = False) -> list[FrontierPoint]:
        """At each cap, the fastest measured setting whose reading plus noise stays under it; with
        ``predicted``, the fastest setting the plant model predicts fits there (measured or not)."""
        out = []
        m = self.model
        if predicted:
            for cap, b, k, thr, power in m.predicted_best(caps_w, self._max_size):
                out.append(FrontierPoint(cap, self._setting(b, k), thr, thr * m.time_noise, power))
            return out
        believed = m.peaks()
        rows = [(b, k, st) for (b, k), st in m.stats.items() if st.measured and math.isfinite(st.batch_s)]
        for cap in caps_w:
            ok = [(b / st.batch_s, b, k) for b, k, st in rows if believed[(b, k)] + m.margin_w(b, k) <= cap]
            if not ok:
                continue
            thr, b, k = max(ok)
            out.append(FrontierPoint(cap, self._setting(b, k), thr, thr * m.time_noise, believed[(b, k)]))
        return out
