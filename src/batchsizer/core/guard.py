"""The telemetry guard between the sensor and the controller: filtered readings, then a safe fallback.

:class:`TelemetryGuard` joins the two parts the loop needs each period: :meth:`read` is
:class:`~batchsizer.core.reading_filter.ReadingFilter` (drops impossible samples, flags windows with
no real information), :meth:`decide` is :class:`~batchsizer.core.fallback.SafeFallback` around the
loop's controller (the controller sees only clean windows at its own setting; else hold or fall
back, and recover on good readings). Each fault kind is reported once (as an event) and counted in
one :class:`~batchsizer.core.fault_log.FaultLog`. :class:`CapWatch` (a cap that cannot be met) and
the reading types are re-exported here for the code that imported them from this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from batchsizer.core.cap_watch import CapWatch
from batchsizer.core.controller import Controller
from batchsizer.core.fallback import SafeFallback
from batchsizer.core.fault_log import FaultLog
from batchsizer.core.reading_filter import (
    DEFAULT_MAX_PLAUSIBLE_W,
    FAULT_KINDS,
    CheckedReadings,
    Fault,
    ReadingFilter,
    board_limit_w,
)
from batchsizer.core.telemetry import PowerMeter
from batchsizer.core.types import Decision, Observation, Setting

__all__ = [
    "DEFAULT_MAX_PLAUSIBLE_W",
    "FAULT_KINDS",
    "CapWatch",
    "CheckedReadings",
    "Fault",
    "TelemetryGuard",
    "board_limit_w",
]


class TelemetryGuard:
    """Checks each period's readings and keeps the controller away from bad ones.

    ``max_plausible_w``, ``dead_after_periods``, ``stale_min_samples``, ``stale_after_s`` and
    ``min_frozen_s`` are the :class:`ReadingFilter`'s (default plausible limit: twice the board limit
    when the device tells it, see :meth:`for_device`, else 1500 W); ``fallback_after`` the
    :class:`SafeFallback`'s: after this many bad periods in a row it falls back even from a setting
    known to be under the cap.
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
        self.filter = ReadingFilter(
            max_plausible_w,
            dead_after_periods=dead_after_periods,
            stale_min_samples=stale_min_samples,
            stale_after_s=stale_after_s,
            min_frozen_s=min_frozen_s,
        )
        self.fallback_after = fallback_after
        self.log = FaultLog()
        self._fallback: SafeFallback | None = None

    @classmethod
    def for_device(cls, device: Any, **options: Any) -> TelemetryGuard:
        """A guard sized to ``device``: spikes above twice its board limit, frozen after 3 sensor updates."""
        limit = board_limit_w(device)
        update_s = getattr(getattr(device, "meter", None), "update_period_s", None)
        if isinstance(update_s, (int, float)) and math.isfinite(update_s) and update_s > 0:
            options.setdefault("min_frozen_s", 3.0 * update_s)
        return cls(2.0 * limit if limit is not None else None, **options)

    @property
    def max_plausible_w(self) -> float:
        """Readings above this are spikes (also for the loop's early stop)."""
        return self.filter.max_plausible_w

    @property
    def min_frozen_s(self) -> float:
        """A value repeated across a change of setting is frozen only once it has lasted this long."""
        return self.filter.min_frozen_s

    @property
    def counts(self) -> dict[str, int]:
        """The fault log's counts by kind (faults, dropped samples, holds, fallbacks), live."""
        return self.log.counts

    def read(self, meter: PowerMeter, start: float, end: float, setting: Setting | None = None) -> CheckedReadings:
        """The period's readings from ``meter``, cleaned, with the faults found."""
        return self.filter.read(meter, start, end, setting)

    def _wrapping(self, controller: Controller) -> SafeFallback:
        if self._fallback is None:
            self._fallback = SafeFallback(controller, self.fallback_after, self.log)
        self._fallback.controller = controller
        return self._fallback

    def start(self, controller: Controller) -> Setting:
        """The controller's initial setting, remembered as the one it believes is applied."""
        return self._wrapping(controller).initial()

    def decide(
        self,
        controller: Controller,
        obs: Observation,
        reading: CheckedReadings,
        as_run: Callable[[Setting], Setting] | None = None,
    ) -> Decision:
        """Note the period's faults, then :meth:`SafeFallback.decide` around ``controller``."""
        for f in reading.faults:
            self.log.note(f)
        return self._wrapping(controller).decide(obs, reading, as_run)

    def safe_setting(self, cap_w: float) -> Setting:
        """The smallest setting seen with a clean peak under ``cap_w``; the smallest seen if none was."""
        return self._fallback.safe_setting(cap_w) if self._fallback is not None else Setting(1)

    def pop_events(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The (kind, message, fields) events noted since the last call, for the loop to pass on."""
        return self.log.pop_events()

    def note_lines(self) -> list[str]:
        """One line for the summary when anything was wrong with the readings."""
        return self.log.note_lines()
