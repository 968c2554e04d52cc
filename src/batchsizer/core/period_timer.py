"""Timing a control period: when it ends (window, the controller's request, a cap change) and its
early stop at the first plausible reading over the cap.

:class:`PeriodTimer` counts the batches of the period in progress and says when it ends: after the
:class:`Window` (or the shorter period the last decision asked for, once its minimum length has
passed), at once on a cap change (when the loop reacts to one), or when the last decision asked to
stop on a violation and a new reading, judged by the cap rule, is over the cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from batchsizer.core.cap_rule import PEAK, CapRule, judged
from batchsizer.core.cap_rule import over as over_cap
from batchsizer.core.reading_filter import DEFAULT_MAX_PLAUSIBLE_W, plausible
from batchsizer.core.types import Decision
from batchsizer.errors import ConfigError, TelemetryError


@dataclass(frozen=True)
class Window:
    """A control period: ends after ``batches`` batches or ``seconds`` seconds, whichever first."""

    batches: int | None = 10
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.batches is None and self.seconds is None:
            raise ConfigError("window", "needs a number of batches or of seconds (e.g. 10 batches)")
        if self.batches is not None and (isinstance(self.batches, bool) or self.batches < 1):
            raise ConfigError("window", f"batches must be at least 1, got {self.batches}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError("window", f"seconds must be a positive number, got {self.seconds}")

    def closes(self, batches: int, elapsed_s: float) -> bool:
        """Whether a period that ran ``batches`` batches over ``elapsed_s`` seconds is over."""
        if self.batches is not None and batches >= self.batches:
            return True
        return self.seconds is not None and elapsed_s >= self.seconds


@dataclass(frozen=True, slots=True)
class SensorTiming:
    """What the loop needs to know of its sensor's timing, read from the meter when a job starts."""

    #: how often the sensor publishes a reading (s); None when the meter does not say
    update_period_s: float | None = None
    #: how far back a reading looks (averaging window plus delay, s); 0 if the meter does not say
    window_s: float = 0.0

    @classmethod
    def of(cls, meter: Any) -> SensorTiming:
        """As the meter says now (a real meter measures its sensor's update period when it opens)."""
        value = getattr(meter, "window_s", None)
        window = float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0.0
        return cls(getattr(meter, "update_period_s", None), window)

    @property
    def check_every(self) -> float | None:
        """How often to look for a reading over the cap: once per sensor update (none for a meter without one)."""
        u = self.update_period_s
        if u is None or not math.isfinite(u) or u < 0:
            return None
        return u


#: a meter that says nothing of its timing
UNKNOWN_TIMING = SensorTiming()


class PeriodTimer:
    """The control period in progress, and what the last decision asked of it."""

    def __init__(
        self,
        window: Window,
        start: float,
        *,
        timing: SensorTiming = UNKNOWN_TIMING,
        cap_rule: CapRule = PEAK,
        max_plausible_w: float = DEFAULT_MAX_PLAUSIBLE_W,
        react_to_cap_change: bool = True,
    ) -> None:
        self.window = window
        self.timing = timing
        self.cap_rule = cap_rule
        self.max_plausible_w = max_plausible_w
        self.react_to_cap_change = react_to_cap_change
        self.start = self.checked_to = start
        self.items = self.batches = 0
        #: a shorter period the controller asked for (Decision.window_batches); None: the window
        self.asked_batches: int | None = None
        #: Decision.stop_on_violation: end the period at the first reading over the cap
        self.watch = False
        #: Decision.min_period_s: the window does not end the period before this long
        self.min_s = 0.0
        #: the period before this one read over its cap (by the rule)
        self.after_over = False
        #: a reading over the cap was seen while watching
        self.stopped = False

    def count(self, items: int) -> None:
        """One batch of ``items`` ran in this period."""
        self.items += items
        self.batches += 1

    def watch_for_violation(self, meter: Any, now: float, cap: float) -> None:
        """Decision.stop_on_violation: look at new readings at most once per sensor update."""
        every = self.timing.check_every
        if not self.watch or every is None or now - self.checked_to < every:
            return
        # not the readings of the period's first sensor update: their window may still cover the
        # previous setting (the sensor's averaging window and delay). After a period over the cap, not
        # any reading that still averages it (a 1 s sensor, a rolling-mean rule): those show the setting
        # backed off from, not this one. After one under it, a mixed reading over the cap is this one's.
        settle = every + (self.timing.window_s + self.cap_rule.window_s if self.after_over else 0.0)
        self.stopped = self._reading_over(meter, max(self.checked_to, self.start + settle), now, cap)
        self.checked_to = now

    def _reading_over(self, meter: Any, since: float, now: float, cap_w: float) -> bool:
        """Whether a plausible reading published in (since, now], judged by the cap rule, is over ``cap_w``
        (implausible ones are the reading filter's to drop, never a reason to stop)."""
        if since >= now:
            return False
        try:
            readings = meter.samples(since - self.cap_rule.window_s, now)
        except TelemetryError:
            return False  # the period's own read reports it
        kept = [s for s in readings if plausible(s.watts, self.max_plausible_w)]
        return any(s.t > since and over_cap(s.watts, cap_w) for s in judged(kept, now, self.cap_rule))

    def ends(self, now: float, cap_changed: bool) -> bool:
        """Whether the period ends with the batch that ended at ``now``."""
        asked = self.asked_batches is not None and self.batches >= self.asked_batches
        long_enough = now - self.start >= self.min_s
        return (
            (long_enough and (self.window.closes(self.batches, now - self.start) or asked))
            or self.stopped
            or (cap_changed and self.react_to_cap_change)
        )

    def arm(self, decision: Decision, was_over: bool) -> None:
        """What ``decision`` asks of the next period; ``was_over``: the period it decided on read over its cap."""
        self.asked_batches = decision.window_batches
        self.watch = decision.stop_on_violation and self.timing.check_every is not None
        self.min_s = decision.min_period_s or 0.0
        self.after_over = was_over

    def restart(self, now: float) -> None:
        """The next period starts at ``now``."""
        self.start = self.checked_to = now
        self.items = self.batches = 0
        self.stopped = False
