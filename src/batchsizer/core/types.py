"""The types the loop, the devices and the controllers share: a setting, what one period measured, a
controller's decision, the knobs a device offers and a predicted frontier point.

They live in the core so that devices need not import the controllers (and controllers need not
import any device)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    """The knobs a controller turns: batch size always, a GPU clock or board power limit where the device has one."""

    batch_size: int
    clock_mhz: int | None = None
    #: the board's own power limit (W) for devices that offer it as a knob (measured tables with rows
    #: at several limits); None leaves the device's default
    power_limit_w: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One control period as the loop measured it."""

    period: int
    start: float
    end: float
    #: the cap for the next period, which the controller decides for
    cap_w: float
    #: the highest value of the readings in the period by the cap rule in force: the highest reading
    #: (peak rule) or the highest rolling mean (avg rule)
    peak_w: float
    mean_w: float
    items: int
    batches: int
    setting: Setting
    samples: int = 1
    #: how often the power sensor publishes a new reading (s), when the meter says; None if unknown
    update_period_s: float | None = None
    #: the loop ended this period early on a reading over the cap (the controller asked for it)
    stopped_on_violation: bool = False
    #: the cap in force during the period (``cap_w`` is the one for the next period); NaN if not told
    period_cap_w: float = math.nan
    #: this period's setting alone, by the cap rule, from the readings that average only it (published
    #: after the sensor's window, delay and one update had passed since the period began): under peak
    #: the highest of them; under avg:S a bound on the highest S-second mean of the setting held, from
    #: their mean and highest (``period_measure.settled_window_peak``). NaN when there was none
    clean_peak_w: float = math.nan
    #: how far back one reading looks (the sensor's averaging window and delay, s); 0 if unknown
    sensor_window_s: float = 0.0
    #: the cap rule's averaging window (s); 0 under the peak rule
    cap_rule_window_s: float = 0.0
    #: the largest batch the device's memory has been found to hold (a larger one ran in halves); None: no limit seen
    size_limit: int | None = None
    #: the longest a batch may take (s) for the source's latency bound (a server's SLO); a setting whose
    #: batches take longer gets none but its smallest batches. None: no bound (a batch job)
    batch_time_limit_s: float | None = None
    #: the largest size the source's latency bound lets run at this period's setting (a server's limit,
    #: from the service times it measured there); None: no bound
    latency_size_limit: int | None = None

    @property
    def duration_s(self) -> float:
        """The period's length in seconds of device time."""
        return self.end - self.start

    @property
    def throughput(self) -> float:
        """Items per second over the period."""
        return self.items / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def valid(self) -> bool:
        """False when the period has no usable power reading (a controller must not act on it)."""
        return self.samples > 0 and math.isfinite(self.peak_w) and math.isfinite(self.mean_w)


@dataclass(frozen=True, slots=True)
class DeviceKnobs:
    """What the device lets a controller set, so policies stay device-agnostic."""

    clock_levels_mhz: tuple[int, ...] = ()
    default_clock_mhz: int | None = None
    #: why a device with clocks offers none to controllers (read-only, no permission); None otherwise
    clocks_withheld: str | None = None
    #: board power limits (W, ascending) a controller may set, where the device offers that knob
    power_limits_w: tuple[float, ...] = ()
    default_power_limit_w: float | None = None
    #: the (smallest, largest) batch size the device can run as measured, where it has such a range
    #: (a measured table); None: any. Controllers choose their default sizes inside it.
    size_range: tuple[int, int] | None = None

    def default_sizes(self, sizes: Sequence[int]) -> tuple[int, ...]:
        """A controller's default size list kept inside the device's range: its sizes that fall in it,
        and the range's ends (so a coarse list still reaches both)."""
        if self.size_range is None:
            return tuple(sizes)
        lo, hi = self.size_range
        inside = {s for s in sizes if lo <= s <= hi} | {lo, hi}
        return tuple(sorted(inside))

    @property
    def has_clocks(self) -> bool:
        """Whether a controller may set the SM clock (some clock levels are offered)."""
        return len(self.clock_levels_mhz) > 0

    @property
    def has_power_limits(self) -> bool:
        """Whether a controller may set the board power limit (some limits are offered)."""
        return len(self.power_limits_w) > 0


@dataclass
class Decision:
    """A controller's answer: the next setting and a note on why, for the records."""

    setting: Setting
    reason: str
    state: dict[str, Any] = field(default_factory=dict)
    #: a shorter next period (in batches) the controller asks for while it searches; the loop ends
    #: the period at whichever comes first, this or its own window. None keeps the loop's window.
    window_batches: int | None = None
    #: end the next period at once, after the batch during which a sensor reading first goes over
    #: the cap, so the controller can back off after one batch instead of a whole window (for probes
    #: of settings it does not know yet). False (the default, Algorithm 1): the period runs its window.
    stop_on_violation: bool = False
    #: the loop's window does not end the next period before it has lasted this long (s): long
    #: enough for readings that average only the new setting (a 1 s averaging sensor, a rolling-mean
    #: cap rule). A cap change or a stop on violation still ends it. None: no minimum.
    min_period_s: float | None = None


@dataclass(frozen=True, slots=True)
class FrontierPoint:
    """What a controller predicts it can do under one cap: its best setting there, that setting's
    throughput (items/s, with a standard deviation) and power (W, by the cap rule in force)."""

    cap_w: float
    setting: Setting
    throughput: float
    throughput_sd: float
    power_w: float
