"""``batchdvfs``: the authors' own successor to BatchSizer (TPDS 2022, ``nabavinejad/BatchDVFS``), as released.

The same band search as Algorithm 1 (hold while the peak is in [alpha*cap, cap], bisect up below
the band, down above the cap), over every batch size 1..255, starting at 1, with two differences
from the paper's pseudo-code, both as in the released code:

* When the search is pinned at the smallest size and the peak is still over the cap, it steps the
  GPU clock one level down; pinned at the largest size and still under the band, one level up.
  The clock starts at the middle level (the code's ``initialDVFS = 5`` of the P40's ten levels).
  Without clocks (a device that offers none) it is the size search alone.
* It decides every ``decision_s`` seconds (3 s) of the job's clock on the highest reading since its
  last decision, not every N batches. The code checks the time between batches; so does this
  controller: it asks the loop for one-batch periods and decides at the first batch boundary at
  least ``decision_s`` after the last decision, on the max of those periods' peaks.

Positions are 0-based indices into the size list, as in the released code (``minBS``, ``maxBS``,
``BestBS``). Readings held over from before a decision are not counted again: a one-batch period
with no reading of its own (fewer than two samples, the held one only) adds nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from batchsizer.errors import ConfigError, describe_values
from batchsizer.policies.base import Controller, Decision, Observation, Setting, check_alpha, check_sizes

#: the released code's sizes: every whole number 1..255
BATCHDVFS_SIZES: tuple[int, ...] = tuple(range(1, 256))
#: seconds between decisions in the released code
DECISION_S = 3.0


class BatchDvfs(Controller):
    """Binary search over sizes with a clock step at the ends; decisions every ``decision_s`` on the max reading."""

    name = "batchdvfs"
    accepts = frozenset({"sizes", "alpha", "initial", "clock_mhz"})
    moves_clock = True
    can_drop_clocks = True

    def __init__(
        self,
        sizes: Sequence[int] = BATCHDVFS_SIZES,
        clock_levels_mhz: Sequence[int] = (),
        alpha: float = 0.8,
        decision_s: float = DECISION_S,
        initial_clock_mhz: int | None = None,
        initial: int | None = None,
    ) -> None:
        self.sizes = check_sizes(sizes)
        self.levels = check_sizes(clock_levels_mhz, "clock levels") if clock_levels_mhz else ()
        self.alpha = check_alpha(alpha)
        if not (isinstance(decision_s, (int, float)) and math.isfinite(decision_s) and decision_s > 0):
            raise ConfigError("decision period", f"must be a positive number of seconds, got {decision_s!r}")
        self.decision_s = float(decision_s)
        if initial_clock_mhz is not None and initial_clock_mhz not in self.levels:
            raise ConfigError("initial clock", f"must be one of {describe_values(self.levels)} MHz, got {initial_clock_mhz}")
        self.clock_pos = (
            self.levels.index(initial_clock_mhz) if initial_clock_mhz is not None else len(self.levels) // 2
        )
        self.top = len(self.sizes) - 1
        if initial is not None and initial not in self.sizes:
            raise ConfigError(
                "initial batch size", f"must be one of the sizes {self.sizes[0]}..{self.sizes[-1]}, got {initial}"
            )
        self.min_pos, self.max_pos = 0, self.top
        self.current = 0 if initial is None else self.sizes.index(initial)
        self._since: float | None = None  # when the last decision was made (the job's start before the first)
        self._peak = -math.inf  # the highest reading since then

    def _setting(self) -> Setting:
        clock = self.levels[self.clock_pos] if self.levels else None
        return Setting(self.sizes[self.current], clock)

    def initial(self) -> Setting:
        """The starting size (the smallest unless ``initial``) at the middle clock level, if any."""
        return self._setting()

    def drop_clocks(self) -> None:
        """Forget the clock levels: the device refused a clock, so search the batch size alone."""
        self.levels = ()

    def _state(self) -> dict[str, Any]:
        return {"min": self.min_pos, "max": self.max_pos, "current": self.current, "clock_pos": self.clock_pos}

    def decide(self, obs: Observation) -> Decision:
        """Wait (one-batch periods) until ``decision_s`` has passed, then step on the highest reading since."""
        first = self._since is None
        if first:
            self._since = obs.start
        if obs.valid and (obs.samples >= 2 or first):
            self._peak = max(self._peak, obs.peak_w)
        assert self._since is not None
        if obs.end - self._since < self.decision_s:
            return Decision(self._setting(), "wait", self._state(), window_batches=1)
        peak, self._peak, self._since = self._peak, -math.inf, obs.end
        if not math.isfinite(peak):  # no reading since the last decision: do not move on no data
            return Decision(self._setting(), "no-reading", self._state(), window_batches=1)
        reason = self.step(peak, obs.cap_w)
        return Decision(self._setting(), reason, {**self._state(), "peak_w": peak}, window_batches=1)

    def step(self, peak_w: float, cap_w: float) -> str:
        """One decision of the released code on the highest reading ``peak_w``; returns what it did."""
        if self.alpha * cap_w <= peak_w <= cap_w:
            return "hold"
        if peak_w < self.alpha * cap_w:
            if self.current == self.top:  # "Max BS, no further improvement": one clock level up
                if self.levels and self.clock_pos < len(self.levels) - 1:
                    self.clock_pos += 1
                    return "clock-up"
                return "at-top"
            if self.current == self.max_pos:
                self.min_pos, self.max_pos = self.max_pos, self.top
            else:
                self.min_pos = self.current
            self.current = math.ceil((self.min_pos + self.max_pos) / 2)
            return "up"
        if self.current == 0:  # "Min BS, No Possible Solution": one clock level down
            if self.levels and self.clock_pos > 0:
                self.clock_pos -= 1
                return "clock-down"
            return "at-bottom"
        if self.current == self.min_pos:  # stuck: restart the range below
            self.max_pos, self.min_pos = self.min_pos, 0
            self.current = math.floor((self.min_pos + self.max_pos) / 2)
            return "down-reset"
        self.max_pos = self.current
        self.current = math.floor((self.min_pos + self.max_pos) / 2)
        return "down"

    def describe(self) -> dict[str, Any]:
        """The size range, clock levels, alpha and decision period."""
        return {
            "name": self.name,
            "sizes": [self.sizes[0], self.sizes[-1]] if self.sizes == BATCHDVFS_SIZES else list(self.sizes),
            "levels_mhz": list(self.levels),
            "alpha": self.alpha,
            "decision_s": self.decision_s,
        }
