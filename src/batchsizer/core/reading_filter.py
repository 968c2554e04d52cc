"""Filtering a control period's power readings before anything judges them.

:meth:`ReadingFilter.read` drops impossible samples (zero, negative, NaN, absurd spikes) and flags
windows that carry no real information: the meter raised, no readings at all, no fresh reading for
several sensor periods, a frozen value. It only reports (:class:`CheckedReadings` with its
:class:`Fault`\\ s); what to do about a bad window is :mod:`batchsizer.core.fallback`'s job.
:func:`plausible` is the one test of a single reading, shared with the loop's early stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from batchsizer.core.telemetry import PowerMeter, PowerSample, PowerWindow, empty_window, summarize
from batchsizer.core.types import Setting
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
        """Whether any clean reading is left to judge the period by."""
        return self.window.valid


def plausible(watts: float, max_plausible_w: float) -> bool:
    """Whether one reading can be real: finite, above zero, not above ``max_plausible_w``."""
    return math.isfinite(watts) and 0.0 < watts <= max_plausible_w


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


class ReadingFilter:
    """Checks each period's readings; remembers across periods what a frozen sensor needs.

    ``max_plausible_w``: readings above it are spikes. ``dead_after_periods``: a window longer than
    this many sensor update periods with no fresh reading means the sampler stopped. A window whose
    fresh readings (at least ``stale_min_samples``) all repeat the previous window's value exactly,
    although the setting changed in between (once that has lasted ``min_frozen_s``), or for
    ``stale_after_s`` seconds, is a frozen sensor; once it thaws, its leading frozen readings are dropped.
    """

    def __init__(
        self,
        max_plausible_w: float | None = None,
        *,
        dead_after_periods: float = 5.0,
        stale_min_samples: int = 3,
        stale_after_s: float = 300.0,
        min_frozen_s: float = 0.0,
    ) -> None:
        self.max_plausible_w = max_plausible_w if max_plausible_w is not None else DEFAULT_MAX_PLAUSIBLE_W
        self.dead_after_periods = dead_after_periods
        self.stale_min_samples = stale_min_samples
        self.stale_after_s = stale_after_s
        #: a reading unchanged across a change of setting is called frozen only once it has lasted
        #: this long: several sensor updates (a slow sensor legitimately repeats within one update)
        self.min_frozen_s = min_frozen_s
        self._last_value: float | None = None
        self._last_setting: Setting | None = None
        self._frozen_value: float | None = None
        self._frozen_since: float | None = None
        self._stale = False

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
        faults, clean = self._drop_implausible(raw, start, len(fresh_raw))
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

    def _drop_implausible(
        self, raw: list[PowerSample], start: float, fresh: int
    ) -> tuple[list[Fault], list[PowerSample]]:
        """The plausible readings, and a fault per kind dropped among those taken inside the window
        (the held sample before it was judged with the previous window)."""
        clean: list[PowerSample] = []
        zeros: list[float] = []
        spikes: list[float] = []
        for s in raw:
            if plausible(s.watts, self.max_plausible_w):
                clean.append(s)
            elif s.t > start:
                (spikes if math.isfinite(s.watts) and s.watts > 0.0 else zeros).append(s.watts)
        faults: list[Fault] = []
        if zeros:
            faults.append(
                Fault(
                    "zero_reading",
                    f"{len(zeros)} of {fresh} power readings were {zeros[0]:g} W (dropped)",
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
        return faults, clean

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
