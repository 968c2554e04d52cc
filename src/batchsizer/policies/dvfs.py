"""``dvfs``: the paper's baseline, the same band search over GPU clock levels at a fixed batch size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchsizer.core.batching import check_batch_size
from batchsizer.errors import ConfigError
from batchsizer.policies.band_search import BandSearch, BandSearchController, start_position
from batchsizer.policies.base import Setting, check_alpha, check_sizes


class DvfsSearch(BandSearchController):
    """Pseudo binary search over ascending clock levels (MHz), batch size fixed (16 in the paper).

    Starts at the lowest level unless told otherwise, as BatchSizer starts at the smallest size.
    """

    name = "dvfs"
    accepts = frozenset({"batch_size", "alpha"})
    moves_clock = True

    def __init__(
        self,
        clock_levels_mhz: Sequence[int],
        batch_size: int = 16,
        alpha: float = 0.8,
        initial_mhz: int | None = None,
    ) -> None:
        if not clock_levels_mhz:
            raise ConfigError("controller", "dvfs needs a device with settable clock levels")
        self.levels = check_sizes(clock_levels_mhz, "clock levels")
        self.batch_size = check_batch_size(batch_size)
        self.alpha = check_alpha(alpha)
        current = start_position(self.levels, initial_mhz, "initial clock", " MHz")
        self.search = BandSearch(len(self.levels), alpha=self.alpha, current=current)

    def _setting(self) -> Setting:
        return Setting(self.batch_size, self.levels[self.search.current - 1])

    def describe(self) -> dict[str, Any]:
        """The clock levels searched and the fixed batch size."""
        return {"name": self.name, "levels_mhz": list(self.levels), "batch_size": self.batch_size}
