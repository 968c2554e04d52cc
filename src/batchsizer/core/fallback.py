"""A safe-fallback wrapper around any controller: it decides only on clean readings at its own setting.

A controller is a pure policy that trusts what it is shown. :class:`SafeFallback` shows it a period
only when the period's readings are usable and were measured at the setting the controller chose.
On bad readings it holds the current setting while that is known (from a clean peak) to be under
the cap, for at most ``fallback_after - 1`` periods in a row; otherwise it falls back to the smallest
setting known to be under the cap. Control goes back to the controller on the first window with a
reading of its own (not only the one held from before the fault); a window measured at the
fall-back setting hands back the controller's own setting without showing it the window.
"""

from __future__ import annotations

from collections.abc import Callable

from batchsizer.core.controller import Controller
from batchsizer.core.fault_log import FaultLog
from batchsizer.core.reading_filter import CheckedReadings
from batchsizer.core.types import Decision, Observation, Setting


def setting_order(setting: Setting) -> tuple[int, int]:
    """Smaller first: by batch size, then clock (no clock first)."""
    return (setting.batch_size, setting.clock_mhz if setting.clock_mhz is not None else 0)


class SafeFallback:
    """Wraps ``controller``: hold, fall back and recover around bad readings (counted in ``log``)."""

    def __init__(self, controller: Controller, fallback_after: int = 3, log: FaultLog | None = None) -> None:
        self.controller = controller
        self.fallback_after = fallback_after
        self.log = log if log is not None else FaultLog()
        self._known: dict[Setting, float] = {}  # last clean peak seen at each setting
        self._floor: Setting | None = None  # the smallest setting the controller started or went to
        self._controller_setting: Setting | None = None
        self._bad_run = 0
        self._episode_kinds: set[str] = set()

    @property
    def bad_run(self) -> int:
        """Bad periods in a row so far (0: the controller is in charge)."""
        return self._bad_run

    def initial(self) -> Setting:
        """The controller's initial setting, remembered as the one it believes is applied."""
        setting = self.controller.initial()
        self._controller_setting = setting
        self._floor = setting
        return setting

    def decide(
        self,
        obs: Observation,
        reading: CheckedReadings,
        as_run: Callable[[Setting], Setting] | None = None,
    ) -> Decision:
        """The next setting: the controller's on a clean window at its own setting, else hold or fall back.

        ``as_run``: what the loop makes of a setting the controller asks for (no larger than the batch
        that fits in memory, without a clock the device refused); a window measured at that is at the
        controller's own setting, not at a fall-back."""
        if self._controller_setting is None:
            self._controller_setting = obs.setting
        if reading.usable and (reading.fresh or not self._bad_run):  # recovery needs a reading of its own
            return self._controlled(obs, as_run)
        if not reading.faults and not self._bad_run:
            return Decision(obs.setting, "no-reading")  # too short a window to have a reading; not a fault
        self._bad_run += 1
        self._episode_kinds.update(f.kind for f in reading.faults)
        faults = {"faults": [f.kind for f in reading.faults]}
        peak = self._known.get(obs.setting)
        if peak is not None and peak <= obs.cap_w and self._bad_run < self.fallback_after:
            self.log.count("held")
            return Decision(obs.setting, "hold-bad-reading", faults)
        self.log.count("fell_back")
        return Decision(self.safe_setting(obs.cap_w), "fallback-bad-reading", faults)

    def _controlled(self, obs: Observation, as_run: Callable[[Setting], Setting] | None) -> Decision:
        """A usable window: remember its peak, end a bad run, and let the controller decide if it is its own."""
        assert self._controller_setting is not None
        self._known[obs.setting] = obs.peak_w
        if self._bad_run:
            kinds = ", ".join(sorted(self._episode_kinds)) or "no readings"
            self.log.event(
                "telemetry-recovered",
                f"power readings are good again after {self._bad_run} bad period(s) ({kinds}); "
                "the controller is back in charge",
                periods=self._bad_run,
            )
            self._bad_run = 0
            self._episode_kinds.clear()
        own = as_run(self._controller_setting) if as_run is not None else self._controller_setting
        if obs.setting != own:
            # measured at the fallback: the controller must not take it for its own setting
            return Decision(self._controller_setting, "recovered", {"measured_at": obs.setting.batch_size})
        decision = self.controller.decide(obs)
        self._controller_setting = decision.setting
        if self._floor is None or setting_order(decision.setting) < setting_order(self._floor):
            self._floor = decision.setting
        return decision

    def safe_setting(self, cap_w: float) -> Setting:
        """The smallest setting seen with a clean peak under ``cap_w``; the smallest seen if none was."""
        under = [s for s, p in self._known.items() if p <= cap_w]
        if under:
            return min(under, key=setting_order)
        seen = list(self._known)
        if self._floor is not None:
            seen.append(self._floor)
        return min(seen, key=setting_order) if seen else Setting(1)
