"""The pseudo binary search of Algorithm 1, over positions 1..N of any ascending set of levels.

BatchSizer searches batch sizes with it and the DVFS baseline searches clock levels with the same
logic. Positions are 1-based as in the paper's pseudo-code so the code reads line by line against it.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from batchsizer.errors import ConfigError, describe_values
from batchsizer.policies.base import Controller, Decision, Observation, Setting


@dataclass
class BandSearch:
    """Hold while alpha*cap <= peak <= cap; search up below the band, down above the cap.

    ``mirror_reset`` adds the upward twin of the pseudo-code's downward reset (lines 14-15):
    when the peak is under the band at ``current == max_pos < n``, the ceiling goes back to
    ``n``. Without it a cap that rises after a violation could never be used, which contradicts
    the paper's "continuous batch size adjustment"; ``mirror_reset=False`` is the bare pseudo-code.

    Line 8 (``minBS = currentBS``) runs at the top as well, so a violation after "no further
    improvement" at ``N`` takes the reset branch (lines 14-16) as the pseudo-code does.
    """

    n: int
    alpha: float = 0.8
    current: int = 1
    mirror_reset: bool = True

    def __post_init__(self) -> None:
        self.min_pos = 1
        self.max_pos = self.n

    def step(self, peak_w: float, cap_w: float) -> str:
        """Apply one decision; returns what happened, for the records."""
        if self.alpha * cap_w <= peak_w <= cap_w:  # line 5: in the band, continue
            return "hold"
        if peak_w < self.alpha * cap_w:  # lines 7-10
            if self.mirror_reset and self.current == self.max_pos < self.n:
                self.max_pos = self.n
            self.min_pos = self.current  # line 8, also at the top: the range closes to [N, N]
            self.current = math.ceil((self.min_pos + self.max_pos) / 2)
            if self.current == self.min_pos:
                # at N: "no further improvement is possible"; below N only without mirror_reset
                return "at-top" if self.current == self.n else "at-ceiling"
            return "up"
        # peak > cap: lines 11-21
        if self.current == 1:
            self.min_pos, self.max_pos = 1, 1
            return "at-bottom"  # further reduction is not possible
        if self.current == self.min_pos:
            self.max_pos = self.current
            self.min_pos = 1
            self.current = math.floor((self.min_pos + self.max_pos) / 2)
            return "down-reset"
        self.max_pos = self.current
        self.current = math.floor((self.min_pos + self.max_pos) / 2)
        return "down"

    def state(self) -> dict[str, int]:
        """The 1-based search range and position, for the decision's records."""
        return {"min": self.min_pos, "max": self.max_pos, "current": self.current}


def start_position(levels: Sequence[int], start: int | None, field: str, unit: str = "") -> int:
    """The 1-based position of ``start`` in ``levels`` (the first level when None)."""
    value = levels[0] if start is None else start
    if value not in levels:
        raise ConfigError(field, f"must be one of {describe_values(levels)}{unit}, got {value}")
    return levels.index(value) + 1


class BandSearchController(Controller):
    """A controller that moves one knob with :class:`BandSearch`; batchsizer and dvfs differ only in the knob."""

    search: BandSearch

    @abstractmethod
    def _setting(self) -> Setting:
        """The setting at the search's current position."""

    def initial(self) -> Setting:
        """The setting at the search's starting position."""
        return self._setting()

    def decide(self, obs: Observation) -> Decision:
        """One band-search step on the period's peak; hold when the period has no usable reading."""
        if not obs.valid:  # no usable reading: do not move on bad data
            return Decision(self._setting(), "no-reading", self.search.state())
        reason = self.search.step(obs.peak_w, obs.cap_w)
        return Decision(self._setting(), reason, self.search.state())
