"""``adaptive``: learn power and speed against batch size while running, jump to the best feasible size.

Algorithm 1 bisects blindly between sizes; this controller keeps every period's reading in a
:class:`~batchsizer.policies.plant_model.PlantModel` and each period picks the setting with the
highest predicted throughput whose predicted peak stays under ``cap - margin``:

* the margin adapts to the measured noise of the peak readings (``noise_sigmas`` times it), never
  under ``margin_frac`` of the cap;
* sizes may be fine-grained (a geometric grid of about 8% steps by default, not only powers of two);
* it never climbs to a size the affine time model says is no faster (online saturation detection);
* over the cap (also right after a cap drop, since the loop closes a period when the cap changes)
  it goes at once to the fastest size already *seen* under the new target, so the violation lasts
  one period; on a cap rise it jumps straight to the best size the model allows;
* jumps to sizes never run are bounded (``max_jump`` times the largest size seen), as the model is
  only an extrapolation there;
* where the device has settable clocks and even the smallest size is over the cap it lowers the
  clock one level at a time (batch size alone cannot go lower), and with ``explore_clocks`` it
  tries the next lower clock where a larger batch might fit, keeping it only if it is faster.
  Those lower-clock settings are predicted from the top clock's curve extended as a straight line
  in log(size) fitted to its upper sizes (``clock_extrapolation="log"``; the secant of the two
  largest sizes, used for the climb itself, is mostly noise a few sizes apart and rises far too
  steeply to see the large batches a lower clock allows), with the per-image time from a
  least-squares line through every size seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.policies.band_search import start_position
from batchsizer.policies.base import Controller, Decision, Observation, Setting, check_sizes
from batchsizer.policies.plant_model import PlantModel

#: when to ask the loop to end a period at its first reading over the cap (see Adaptive.watch)
STOP_MODES: tuple[str, ...] = ("probe", "always", "off")


def fine_sizes(max_size: int = 256, step: float = 1.08, min_size: int = 1) -> tuple[int, ...]:
    """Sizes from ``min_size`` to ``max_size`` about ``step`` apart (all powers of two included)."""
    out = {min_size, max_size}
    x = float(min_size)
    while x < max_size:
        out.add(int(round(x)))
        x *= step
    p = 1
    while p <= max_size:
        if p >= min_size:
            out.add(p)
        p *= 2
    return tuple(sorted(s for s in out if min_size <= s <= max_size))


class Adaptive(Controller):
    """Model-based search over batch size (and clock where the device has one) under a power cap."""

    name = "adaptive"
    can_drop_clocks = True

    def __init__(
        self,
        sizes: Sequence[int] | None = None,
        clock_levels_mhz: Sequence[int] = (),
        initial: int | None = None,
        margin_frac: float = 0.02,
        noise_sigmas: float = 1.5,
        max_jump: float = 8.0,
        first_jump: float = 4.0,
        gain_eps: float = 0.0025,
        explore_clocks: bool = True,
        clock_exp_prior: float = 2.0,
        probe_updates: int = 8,
        probe_min_batches: int = 2,
        clock_extrapolation: str = "log",
        borrow_shape: bool = True,
        stop_on_violation: str = "always",
        settled_after_backoff: bool = True,
        drop_low_readings: bool = True,
    ) -> None:
        self.sizes = check_sizes(sizes if sizes is not None else fine_sizes())
        if not 0 <= margin_frac < 0.5:
            raise ConfigError("margin", f"must be a fraction of the cap between 0 and 0.5, got {margin_frac}")
        if max_jump <= 1 or first_jump <= 1:
            raise ConfigError("max jump", "must be more than 1 (a factor on the largest size seen)")
        self.clocks: tuple[int, ...] = tuple(sorted(clock_levels_mhz))
        self.clock: int | None = self.clocks[-1] if self.clocks else None
        self.size = self.sizes[start_position(self.sizes, initial, "initial batch size") - 1]
        self.margin_frac = margin_frac
        self.noise_sigmas = noise_sigmas
        self.max_jump = max_jump
        self.first_jump = first_jump
        self.gain_eps = gain_eps
        self.explore_clocks = explore_clocks and len(self.clocks) > 1
        self.model = PlantModel()
        self.model.borrow_shape = borrow_shape
        self.model.drop_low = drop_low_readings
        self._given_up: set[int] = set()
        #: exponent of dynamic power on the clock, learned (see _learn_clock_exp); 1 before any
        #: lower clock was tried (as if the voltage did not fall with the clock, which errs high)
        self.clock_exp_prior = clock_exp_prior
        self.clock_exp = self.clock_exp_prior
        self._clock_fits: list[float] = []
        self._last_cap = math.nan
        if probe_updates < 1 or probe_min_batches < 1:
            raise ConfigError("probe window", "needs at least one sensor update and one batch")
        #: a setting run fewer than twice is probed in a short period covering this many sensor updates
        self.probe_updates = probe_updates
        self.probe_min_batches = probe_min_batches
        self._update_s: float | None = None
        if clock_extrapolation not in ("log", "secant"):
            raise ConfigError("clock extrapolation", f"must be log or secant, got {clock_extrapolation!r}")
        self.clock_extrapolation = clock_extrapolation
        if stop_on_violation not in STOP_MODES:
            raise ConfigError("stop on violation", f"must be one of {', '.join(STOP_MODES)}, got {stop_on_violation!r}")
        self.stop_on_violation = stop_on_violation
        #: after backing off from a reading over the cap, judge the next period by its readings after
        #: the first sensor update (Observation.settled_peak_w): the first may still show the old setting
        self.settled_after_backoff = settled_after_backoff
        self._backing_off = False

    def drop_clocks(self) -> None:
        """The device refused to set a clock (no permission, or a GPU without clock control): go on
        with the batch size alone at the card's own clock, learning its power curve afresh."""
        self.clocks = ()
        self.clock = None
        self.explore_clocks = False
        drop_low = self.model.drop_low
        borrow = self.model.borrow_shape
        self.model = PlantModel()
        self.model.borrow_shape, self.model.drop_low = borrow, drop_low
        self._clock_fits.clear()
        self.clock_exp = self.clock_exp_prior
        self._given_up.clear()

    # -- helpers ---------------------------------------------------------------------------------

    def _setting(self) -> Setting:
        return Setting(self.size, self.clock)

    def initial(self) -> Setting:
        return self._setting()

    def margin_w(self, cap_w: float) -> float:
        return max(self.margin_frac * cap_w, self.noise_sigmas * self.model.noise_w)

    def _reach(self, clock: int | None) -> int:
        """The largest size the model may be trusted to extrapolate to at ``clock``."""
        seen = self.model.observed(clock)
        if not seen:
            return self.sizes[0]
        # short leaps from one or two points, or while the curve bends upward (convex: the secant
        # then errs low, as on the Zeus traces at small sizes)
        factor = self.first_jump if len(seen) <= 2 or self.model.convex(clock) else self.max_jump
        return int(seen[-1] * factor)

    def _clock_below(self, clock: int | None) -> int | None:
        if clock is None or clock not in self.clocks:
            return None
        i = self.clocks.index(clock)
        return self.clocks[i - 1] if i > 0 else None

    def _candidates(self, target_w: float, seen_only: bool) -> list[tuple[int | None, int, float, bool]]:
        """(clock, size, predicted items/s, seen) for every setting predicted under ``target_w``."""
        out: list[tuple[int | None, int, float, bool]] = []
        explored = [c for c in self.model.points if self.model.observed(c)]
        for c in explored:
            seen = set(self.model.observed(c))
            reach = self._reach(c)
            for s in self.sizes:
                if s > reach or (seen_only and s not in seen):
                    continue
                peak = self.model.peak(c, s)
                speed = self.model.throughput(c, s)
                if peak is not None and speed is not None and peak <= target_w:
                    out.append((c, s, speed, s in seen))
        if seen_only and self.explore_clocks:
            # over the cap: besides the settings seen under it, the sizes seen at a lower clock,
            # dynamic power scaled down as (f'/f)^k: a size the job already ran, only slower
            floor = self.model.floor_w
            for c in explored:
                if c is None:
                    continue
                for s in self.model.observed(c):
                    peak, t = self.model.peak(c, s), self.model.batch_time(c, s)
                    if peak is None or t is None:
                        continue
                    for down in self.clocks:
                        if down >= c or self.model.observed(down):
                            continue
                        if floor + (peak - floor) * (down / c) ** self.clock_exp <= target_w:
                            duty = self.model.duty(c, s)
                            out.append((down, s, s / (t * ((1 - duty) + duty * c / down)), False))
                            # the lowest clock that fits: after a reading over the cap, the most room
                            # (taking the highest instead was measured: +0.2% speed, worst A100 run 2.2% -> 4.9% over)
                            break
            return out
        if seen_only or not self.explore_clocks:
            return out
        # clocks below the best clock seen, never tried: predicted from it. Dynamic power scales as
        # (f'/f)^k, k learned from the lower clocks tried (1 before any: as if the voltage did not
        # fall, which errs high); time stretches by f/f' for the share of it the GPU computes.
        seen_ok = [x for x in out if x[3]]
        if not seen_ok:
            return out
        up, best_size = max(seen_ok, key=lambda x: x[2])[:2]
        if up is None:
            return out
        nxt = [s for s in self.sizes if s > best_size]
        nxt_peak = self.model.peak(up, nxt[0]) if nxt else None
        if nxt_peak is not None and nxt_peak <= target_w:
            return out  # not held back by power at this clock: a lower clock cannot help
        floor = self.model.floor_w
        reach = self._reach(up)
        lowest_ok = max(self._given_up, default=0)  # a clock tried and left: none at or below it
        for down in self.clocks:
            if down >= up or down <= lowest_ok or self.model.observed(down):
                continue
            scale = (down / up) ** self.clock_exp
            for s in self.sizes:
                if s > reach:
                    continue
                peak, t = self._peak_beyond(up, s), self._time_beyond(up, s)
                if peak is None or t is None or floor + (peak - floor) * scale > target_w:
                    continue
                duty = self.model.duty(up, s)
                out.append((down, s, s / (t * ((1 - duty) + duty * up / down)), False))
        return out

    def _peak_beyond(self, clock: int | None, size: int) -> float | None:
        """Peak power at ``clock`` for a lower clock's prediction. Above the largest size seen, with
        ``clock_extrapolation == "log"``, a straight line in log(size) fitted to the upper sizes seen
        (the curve bends over, as the paper's Fig. 1; the secant of the two largest sizes, a few
        sizes apart, mostly measures noise and rises far too steeply to find the larger sizes a
        lower clock allows); a reading at the lower clock checks it before anything larger is tried."""
        seen = self.model.observed(clock)
        if self.clock_extrapolation != "log" or not seen or size <= seen[-1] or len(seen) < 3:
            return self.model.peak(clock, size)
        table = self.model.points[clock]
        top = seen[-1]
        upper = [x for x in seen if x * 4 >= top] or seen[-2:]
        if len(upper) < 2:
            upper = seen[-2:]
        env, run = [], -math.inf
        for x in seen:
            run = max(run, table[x].peak_w)
            if x in upper:
                env.append((math.log(x), run))
        mx = sum(x for x, _ in env) / len(env)
        my = sum(y for _, y in env) / len(env)
        sxx = sum((x - mx) ** 2 for x, _ in env)
        slope = max(sum((x - mx) * (y - my) for x, y in env) / sxx, 0.0) if sxx > 0 else 0.0
        return env[-1][1] + slope * (math.log(size) - math.log(top))

    def _time_beyond(self, clock: int | None, size: int) -> float | None:
        """Time per batch at ``clock`` for a lower clock's prediction: above the largest size seen,
        the per-image slope of a least-squares line through every size seen (neighbours a few
        sizes apart differ by less than the noise of a short probe)."""
        seen = self.model.observed(clock)
        if self.clock_extrapolation != "log" or not seen or size <= seen[-1]:
            return self.model.batch_time(clock, size)
        fit = self.model.time_fit(clock)
        if fit is None:
            return None  # one size seen: no slope to extrapolate with (a flat guess would promise any speed)
        _, per_item = fit
        top = seen[-1]
        t_top = self.model.batch_time(clock, top)
        return None if t_top is None else t_top + per_item * (size - top)

    def _learn_clock_exp(self, clock: int | None, size: int, peak_w: float) -> None:
        """Fit the exponent of dynamic power on the clock from a lower clock's reading (the lowest fit wins)."""
        if clock is None or not self.clocks:
            return
        ref = self.clocks[-1]
        seen = self.model.observed(ref)
        if clock >= ref or not seen or not seen[0] <= size <= seen[-1]:
            return
        p_ref = self.model.peak(ref, size)
        floor = self.model.floor_w
        if p_ref is None or p_ref - floor < 5.0 or peak_w - floor < 1.0:
            return
        k = math.log((peak_w - floor) / (p_ref - floor)) / math.log(clock / ref)
        self._clock_fits.append(min(max(k, 0.5), 3.0))
        self.clock_exp = min(self._clock_fits)

    def _choose(self, target_w: float, seen_only: bool, current: Setting) -> tuple[int | None, int] | None:
        cands = self._candidates(target_w, seen_only)
        if not cands:
            return None
        best = max(cands, key=lambda x: (x[2], -x[1]))
        seen = [x for x in cands if x[3]]
        if seen:
            best_seen = max(seen, key=lambda x: (x[2], -x[1]))
            # stay put when the current setting is as good as the best seen, within the noise
            here = [x for x in seen if (x[0], x[1]) == (current.clock_mhz, current.batch_size)]
            tol = max(self.gain_eps, 2 * self.model.time_noise)
            if here and here[0][2] >= best_seen[2] * (1 - tol):
                best_seen = here[0]
            # an untried setting must promise a clear gain over the best one seen (saturation)
            if best[3] or best[2] < best_seen[2] * (1 + self.gain_eps):
                best = best_seen
        return best[0], best[1]

    # -- the policy -------------------------------------------------------------------------------

    def decide(self, obs: Observation) -> Decision:
        u = obs.update_period_s
        if u is not None and math.isfinite(u) and u > 0:
            self._update_s = u
        if self._backing_off and self.settled_after_backoff and math.isfinite(obs.settled_peak_w):
            obs = replace(obs, peak_w=obs.settled_peak_w)
        decision = self._decide(obs)
        self._backing_off = obs.valid and obs.peak_w > obs.cap_w
        decision.window_batches = self.probe_window(decision.setting)
        decision.stop_on_violation = self.watch(obs, decision.setting)
        return decision

    def watch(self, obs: Observation, setting: Setting) -> bool:
        """Whether to ask the loop to end the next period at its first reading over the cap
        (``Decision.stop_on_violation``): with ``"probe"``, for a setting not yet run twice; with
        ``"always"``, for any; ``"off"``, never. Not after a period over the cap (nor one without a
        reading): the sensor's first readings of the next period may still show the old setting's
        power (its window and delay), and would cut short, and blame, the setting backed off to."""
        if self.stop_on_violation == "off" or not obs.valid:
            return False
        if self.stop_on_violation == "always":
            return True
        p = self.model.points.get(setting.clock_mhz, {}).get(setting.batch_size)
        return p is None or p.n < 2

    def probe_window(self, setting: Setting) -> int | None:
        """A short period for a setting not yet run twice: enough batches to span ``probe_updates``
        sensor updates (a reading needs time to show a new setting's peak), at least
        ``probe_min_batches``. None (the loop's own window) for a setting already known, or when the
        sensor's update period or the batch time is not known."""
        if self._update_s is None:
            return None
        p = self.model.points.get(setting.clock_mhz, {}).get(setting.batch_size)
        if p is not None and p.n >= 2:
            return None
        t = self.model.batch_time(setting.clock_mhz, setting.batch_size)
        if t is None:
            ref = self.model._reference(setting.clock_mhz) if self.model.points else None
            t = self.model.batch_time(ref, setting.batch_size) if ref is not None else None
        if t is None or t <= 0:
            return None
        return max(self.probe_min_batches, math.ceil(self.probe_updates * self._update_s / t))

    def _decide(self, obs: Observation) -> Decision:
        if not obs.valid or obs.batches == 0:
            return Decision(self._setting(), "no-reading", self._state(obs.cap_w))
        clock = obs.setting.clock_mhz
        size = obs.setting.batch_size
        changed = self.model.add(clock, size, obs.peak_w, obs.mean_w, obs.duration_s / obs.batches, obs.period)
        if changed:
            self._clock_fits.clear()
            self.clock_exp = self.clock_exp_prior
        else:
            self._learn_clock_exp(clock, size, obs.peak_w)
        if changed:
            self._given_up.clear()
        if obs.cap_w != self._last_cap:
            self._given_up.clear()
            self._last_cap = obs.cap_w
        target = obs.cap_w - self.margin_w(obs.cap_w)
        over = obs.peak_w > obs.cap_w
        reason = "load-changed" if changed else ("over-cap" if over else "model")
        choice = self._choose(target, seen_only=over, current=obs.setting)
        if choice is None and over:
            choice = self._scale_down(clock, size, obs.peak_w, target)
        if choice is None:
            down = self._clock_below(clock)
            if down is not None:
                self.clock, self.size = down, self.sizes[0]
                return Decision(self._setting(), "clock-down", self._state(obs.cap_w))
            self.clock, self.size = clock, self.sizes[0]
            return Decision(self._setting(), "at-bottom", self._state(obs.cap_w))
        new_clock, new_size = choice
        if not over and clock is not None and new_clock is not None and new_clock > clock:
            self._given_up.add(clock)  # coming back up from a tried lower clock: it did not pay
        if reason == "model":
            if (new_clock, new_size) == (clock, size):
                reason = "hold"
            elif new_clock != clock:
                reason = "clock-probe" if not self.model.observed(new_clock) else "clock"
            else:
                reason = "up" if new_size > size else "down"
        self.clock, self.size = new_clock, new_size
        return Decision(self._setting(), reason, self._state(obs.cap_w))

    def _scale_down(
        self, clock: int | None, size: int, peak_w: float, target_w: float
    ) -> tuple[int | None, int] | None:
        """Over the cap with no setting seen under it: shrink in proportion to the dynamic power."""
        smaller = [s for s in self.sizes if s < size]
        if not smaller:
            return None
        floor = min(self.model.floor_w, 0.9 * target_w)
        ratio = (target_w - floor) / max(peak_w - floor, 1e-9)
        ratio = min(max(ratio, 0.25), 0.5)
        want = max(1, math.floor(size * ratio))
        fits = [s for s in smaller if s <= want]
        return clock, (fits[-1] if fits else smaller[0])

    def _state(self, cap_w: float) -> dict[str, Any]:
        return {
            "margin_w": round(self.margin_w(cap_w), 2),
            "noise_w": round(self.model.noise_w, 2),
            "seen": len(self.model.observed(self.clock)),
            "changes": self.model.changes,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sizes": [self.sizes[0], self.sizes[-1], len(self.sizes)],
            "margin_frac": self.margin_frac,
            "noise_sigmas": self.noise_sigmas,
            "max_jump": self.max_jump,
            "explore_clocks": self.explore_clocks,
            "stop_on_violation": self.stop_on_violation,
        }
