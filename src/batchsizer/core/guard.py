"""Guards between the sensor and the controller: bad power readings and a cap that cannot be met.

A controller is a pure policy that trusts what it is shown, so everything it is shown is checked
here first. Each control period's readings go through :meth:`TelemetryGuard.read`, which drops
impossible samples (zero, negative, NaN, absurd spikes) and flags windows that carry no real
information (the meter raised, no readings at all, no fresh reading for several sensor periods, a
frozen value). :meth:`TelemetryGuard.decide` then calls the controller only with a clean window
measured at the controller's own setting; otherwise it holds the current setting when that is known
to be under the cap, or falls back to the smallest setting known to be under it, and hands back
control when good readings return. Each fault kind is reported once (as an event) and counted.

:class:`CapWatch` notices when the controller keeps its setting although the window's peak is over
the cap, i.e. its lowest setting still draws too much.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchsizer.core.controller import Controller
from batchsizer.core.telemetry import PowerMeter, PowerSample, PowerWindow, empty_window, summarize
from batchsizer.core.types import Decision, Observation, Setting
from batchsizer.errors import TelemetryError

#: fault kinds, in the order they are checked; the last two only drop samples
FAULT_KINDS: tuple[str, ...] = (
    "telemetry_error",
    "no_reading",
    "sampler_dead",
    "stale_reading",
    "zero_reading",
    "spike",
)

#: a board draws far less than this; used when the device does not say its own limit
DEFAULT_MAX_PLAUSIBLE_W = 1500.0


@dataclass(frozen=True, slots=True)
class Fault:
    """One thing wrong with a period's readings."""

    kind: str
    message: str
    #: samples dropped because of it (zero_reading, spike); 0 for faults that void the window
    dropped: int = 0


@dataclass(slots=True)
class CheckedReadings:
    """A period's readings after checking: the cleaned window and what was wrong."""

    window: PowerWindow
    samples: list[PowerSample]
    faults: list[Fault] = field(default_factory=list)
    #: clean readings taken inside the window (not the one held from before it)
    fresh: int = 0

    @property
    def usable(self) -> bool:
        return self.window.valid


def board_limit_w(device: Any) -> float | None:
    """The device's maximum board power if it tells it (attribute or describe() key), else None."""
    for owner in (device, getattr(device, "gpu", None)):
        for name in ("max_power_w", "power_limit_max_w", "board_limit_w", "tdp_w"):
            value = getattr(owner, name, None)
            if isinstance(value, (int, float)) and value > 0:
                return float(value)
    try:
        info = device.describe()
    except Exception:  # describe() is informational; a failure must not stop the guard
        return None
    for name in ("max_power_w", "power_limit_max_w", "board_limit_w", "tdp_w", "max_power_limit_w"):
        value = info.get(name) if isinstance(info, dict) else None
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


class TelemetryGuard:
    """Checks each period's readings and keeps the controller away from bad ones.

    ``max_plausible_w``: readings above it are spikes (default: twice the board limit when the
    device tells it, else 1500 W). ``dead_after_periods``: a window longer than this many sensor
    update periods with no fresh reading means the sampler stopped. A window whose fresh readings
    (at least ``stale_min_samples``) all repeat the previous window's value exactly, although the
    setting changed in between, or for ``stale_after_s`` seconds, is a frozen sensor.
    ``fallback_after``: after this many bad periods in a row the guard falls back to the safe
    setting even when the current one was known to be under the cap.
    """

    def __init__(
        self,
        max_plausible_w: float | None = None,
        *,
        dead_after_periods: float = 5.0,
        stale_min_samples: int = 3,
        stale_after_s: float = 300.0,
        fallback_after: int = 3,
        min_frozen_s: float = 0.0,
    ) -> None:
        self.max_plausible_w = max_plausible_w if max_plausible_w is not None else DEFAULT_MAX_PLAUSIBLE_W
        self.dead_after_periods = dead_after_periods
        self.stale_min_samples = stale_min_samples
        self.stale_after_s = stale_after_s
        #: a reading unchanged across a change of setting is called frozen only once it has lasted
        #: this long: several sensor updates (a slow sensor legitimately repeats within one update)
        self.min_frozen_s = min_frozen_s
        self.fallback_after = fallback_after
        self.counts: dict[str, int] = {}
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self._warned: set[str] = set()
        self._known: dict[Setting, float] = {}  # last clean peak seen at each setting
        self._floor: Setting | None = None  # the smallest setting the controller started or went to
        self._controller_setting: Setting | None = None
        self._bad_run = 0
        self._episode_kinds: set[str] = set()
        self._last_value: float | None = None
        self._last_setting: Setting | None = None
        self._frozen_value: float | None = None
        self._frozen_since: float | None = None
        self._stale = False

    @classmethod
    def for_device(cls, device: Any, **options: Any) -> TelemetryGuard:
        limit = board_limit_w(device)
        update_s = getattr(getattr(device, "meter", None), "update_period_s", None)
        if isinstance(update_s, (int, float)) and math.isfinite(update_s) and update_s > 0:
            options.setdefault("min_frozen_s", 3.0 * update_s)
        return cls(2.0 * limit if limit is not None else None, **options)

    # -- reading -------------------------------------------------------------------------------

    def read(self, meter: PowerMeter, start: float, end: float, setting: Setting | None = None) -> CheckedReadings:
        """The period's readings from ``meter``, cleaned, with the faults found."""
        try:
            raw = list(meter.samples(start, end))
        except TelemetryError as exc:
            failed = Fault("telemetry_error", f"the power meter failed: {exc}")
            return CheckedReadings(empty_window(start, end), [], [failed])
        period = max(float(getattr(meter, "update_period_s", 0.0) or 0.0), 1e-6)
        fresh_raw = [s for s in raw if s.t > start]
        if not raw:
            if end - start > self.dead_after_periods * period:
                return CheckedReadings(
                    empty_window(start, end),
                    [],
                    [Fault("no_reading", f"the meter returned no power reading for {end - start:.2f} s")],
                )
            return CheckedReadings(empty_window(start, end), [], [])  # too short for the sensor to have updated
        if not fresh_raw and end - start > self.dead_after_periods * period:
            last = raw[-1].t
            return CheckedReadings(
                empty_window(start, end),
                [],
                [
                    Fault(
                        "sampler_dead",
                        f"no new power reading for {end - last:.2f} s (the sensor updates every {period:.3f} s); "
                        "the sampler seems to have stopped",
                    )
                ],
            )
        faults: list[Fault] = []
        clean: list[PowerSample] = []
        zeros: list[float] = []
        spikes: list[float] = []
        for s in raw:
            bad_zero = not math.isfinite(s.watts) or s.watts <= 0.0
            bad_spike = not bad_zero and s.watts > self.max_plausible_w
            if s.t > start:  # the held sample before the window was judged with the previous one
                if bad_zero:
                    zeros.append(s.watts)
                elif bad_spike:
                    spikes.append(s.watts)
            if not (bad_zero or bad_spike):
                clean.append(s)
        if zeros:
            faults.append(
                Fault(
                    "zero_reading",
                    f"{len(zeros)} of {len(fresh_raw)} power readings were {zeros[0]:g} W (dropped)",
                    dropped=len(zeros),
                )
            )
        if spikes:
            faults.append(
                Fault(
                    "spike",
                    f"{len(spikes)} power reading(s) of up to {max(spikes):.0f} W, above the plausible "
                    f"{self.max_plausible_w:.0f} W (dropped)",
                    dropped=len(spikes),
                )
            )
        window = summarize(clean, start, end)
        if window.valid:
            try:
                counter = meter.energy_j(start, end)
            except TelemetryError:
                counter = None
            if counter is not None:
                window = PowerWindow(window.start, window.end, window.peak_w, window.mean_w, counter, window.samples)
        was_stale, frozen_value = self._stale, self._frozen_value
        stale = self._check_stale(clean, start, end, setting)
        if stale is not None:
            return CheckedReadings(empty_window(start, end), [], [*faults, stale])
        if was_stale:
            # the sensor thawed inside this window: its leading frozen readings are still not real
            first_new = next((i for i, s in enumerate(clean) if s.t > start and s.watts != frozen_value), len(clean))
            clean = clean[first_new:]
            window = summarize(clean, start, end)
        return CheckedReadings(window, clean, faults, fresh=sum(1 for s in clean if s.t > start))

    def _check_stale(self, clean: list[PowerSample], start: float, end: float, setting: Setting | None) -> Fault | None:
        fresh = [s.watts for s in clean if s.t > start]
        if not fresh:
            return None
        frozen = len(fresh) >= self.stale_min_samples and all(w == fresh[0] for w in fresh)
        value = fresh[0]
        fault = None
        if frozen and self._last_value == value:
            if self._frozen_since is None or self._frozen_value != value:
                self._frozen_value, self._frozen_since = value, start
            changed = setting is not None and self._last_setting is not None and setting != self._last_setting
            lasted = end - self._frozen_since
            if self._stale or (changed and lasted >= self.min_frozen_s) or lasted >= self.stale_after_s:
                self._stale = True
                fault = Fault(
                    "stale_reading",
                    f"the power reading has been exactly {value:g} W for {end - self._frozen_since:.1f} s "
                    "although the load changed; the sensor looks frozen",
                )
        else:
            self._stale = False
            self._frozen_value, self._frozen_since = (value, start) if frozen else (None, None)
        self._last_value = fresh[-1]
        self._last_setting = setting
        return fault

    # -- deciding ------------------------------------------------------------------------------

    def start(self, controller: Controller) -> Setting:
        """The controller's initial setting, remembered as the one it believes is applied."""
        setting = controller.initial()
        self._controller_setting = setting
        self._floor = setting
        return setting

    def decide(
        self,
        controller: Controller,
        obs: Observation,
        reading: CheckedReadings,
        as_run: Callable[[Setting], Setting] | None = None,
    ) -> Decision:
        """The next setting: the controller's on a clean window at its own setting, else hold or fall back.

        ``as_run``: what the loop makes of a setting the controller asks for (no larger than the batch
        that fits in memory, without a clock the device refused); a window measured at that is at the
        controller's own setting, not at a fall-back."""
        for f in reading.faults:
            self._note(f)
        if self._controller_setting is None:
            self._controller_setting = obs.setting
        if reading.usable and (reading.fresh or not self._bad_run):  # recovery needs a reading of its own
            self._known[obs.setting] = obs.peak_w
            if self._bad_run:
                kinds = ", ".join(sorted(self._episode_kinds)) or "no readings"
                self._event(
                    "telemetry-recovered",
                    f"power readings are good again after {self._bad_run} bad period(s) ({kinds}); "
                    "the controller is back in charge",
                    periods=self._bad_run,
                )
                self._bad_run = 0
                self._episode_kinds.clear()
            own = as_run(self._controller_setting) if as_run is not None else self._controller_setting
            if obs.setting != own:
                # measured at the guard's fallback: the controller must not take it for its own setting
                return Decision(self._controller_setting, "recovered", {"measured_at": obs.setting.batch_size})
            decision = controller.decide(obs)
            self._controller_setting = decision.setting
            if self._floor is None or _order(decision.setting) < _order(self._floor):
                self._floor = decision.setting
            return decision
        if not reading.faults and not self._bad_run:
            return Decision(obs.setting, "no-reading")  # too short a window to have a reading; not a fault
        self._bad_run += 1
        self._episode_kinds.update(f.kind for f in reading.faults)
        peak = self._known.get(obs.setting)
        if peak is not None and peak <= obs.cap_w and self._bad_run < self.fallback_after:
            self._count("held")
            return Decision(obs.setting, "hold-bad-reading", {"faults": [f.kind for f in reading.faults]})
        safe = self.safe_setting(obs.cap_w)
        self._count("fell_back")
        return Decision(safe, "fallback-bad-reading", {"faults": [f.kind for f in reading.faults]})

    def safe_setting(self, cap_w: float) -> Setting:
        """The smallest setting seen with a clean peak under ``cap_w``; the smallest seen if none was."""
        under = [s for s, p in self._known.items() if p <= cap_w]
        if under:
            return min(under, key=_order)
        seen = list(self._known)
        if self._floor is not None:
            seen.append(self._floor)
        return min(seen, key=_order) if seen else Setting(1)

    # -- reporting -----------------------------------------------------------------------------

    def _note(self, fault: Fault) -> None:
        self._count(fault.kind)
        if fault.dropped:
            self._count("dropped_samples", fault.dropped)
        if fault.kind not in self._warned:
            self._warned.add(fault.kind)
            self._event("telemetry", f"{fault.message}; the controller is not shown these readings", fault=fault.kind)

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def _event(self, kind: str, message: str, **fields: Any) -> None:
        self.events.append((kind, message, fields))

    def pop_events(self) -> list[tuple[str, str, dict[str, Any]]]:
        events, self.events = self.events, []
        return events

    def note_lines(self) -> list[str]:
        """One line for the summary when anything was wrong with the readings."""
        parts = [f"{self.counts[k]} {k.replace('_', ' ')}" for k in FAULT_KINDS if self.counts.get(k)]
        if not parts:
            return []
        acts = [f"{self.counts[k]} {k.replace('_', ' ')}" for k in ("held", "fell_back") if self.counts.get(k)]
        tail = f"; periods {', '.join(acts)}" if acts else ""
        return [f"telemetry faults (periods): {', '.join(parts)}{tail}"]


def _order(setting: Setting) -> tuple[int, int]:
    return (setting.batch_size, setting.clock_mhz if setting.clock_mhz is not None else 0)


class CapWatch:
    """Notices a cap that cannot be met: the controller stays put while the peak is over the cap.

    That happens only at the controller's lowest setting (Algorithm 1's "no further reduction",
    the lowest clock for DVFS, a static setting). ``confirm`` periods in a row make it count, so
    one noisy period does not.
    """

    def __init__(self, confirm: int = 2) -> None:
        self.confirm = confirm
        self.periods = 0
        self.worst_excess_w = 0.0
        self.worst: dict[str, Any] | None = None
        self._run = 0
        self.confirmed = False

    def observe(self, obs: Observation, decision: Decision) -> str | None:
        """Feed one decided period; returns a warning the first time the cap is confirmed unmet."""
        if not (obs.valid and obs.peak_w > obs.cap_w and decision.setting == obs.setting):
            self._run = 0
            return None
        self._run += 1
        if self._run < self.confirm:
            return None
        self.periods += 1
        excess = obs.peak_w - obs.cap_w
        if excess >= self.worst_excess_w:
            self.worst_excess_w = excess
            self.worst = {
                "cap_w": obs.cap_w,
                "peak_w": obs.peak_w,
                "excess_w": excess,
                "batch_size": obs.setting.batch_size,
                "clock_mhz": obs.setting.clock_mhz,
            }
        if self.confirmed:
            return None
        self.confirmed = True
        clock = f" at {obs.setting.clock_mhz} MHz" if obs.setting.clock_mhz else ""
        return (
            f"the cap of {obs.cap_w:g} W cannot be met: even batch size {obs.setting.batch_size}{clock} draws "
            f"{obs.peak_w:.0f} W (+{excess:.0f} W); running at this lowest setting"
        )

    def result(self) -> dict[str, Any] | None:
        if not self.periods or self.worst is None:
            return None
        return {"periods": self.periods, **self.worst}

    def note(self) -> str | None:
        r = self.result()
        if r is None:
            return None
        return (
            f"cap NOT met in {r['periods']} period(s): at batch size {r['batch_size']} the peak reached "
            f"{r['peak_w']:.0f} W against a {r['cap_w']:g} W cap (+{r['excess_w']:.0f} W)"
        )
