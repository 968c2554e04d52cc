"""``batchsizer``: the paper's Algorithm 1, binary search over a set of batch sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchsizer.policies.band_search import BandSearch, BandSearchController, start_position
from batchsizer.policies.base import (
    DEFAULT_BATCH_SIZES,
    Setting,
    check_alpha,
    check_sizes,
)


class Algorithm1(BandSearchController):
    """Hold while the window's peak power is in [alpha*cap, cap]; bisect up below, down above.

    Faithful to the pseudo-code: starts at the ``initial`` size (the first by default), ceil on
    the way up, floor on the way down, resets the search range when the cap is violated at the
    range's floor, and keeps re-adjusting as the cap or the load changes. See
    :class:`~batchsizer.policies.band_search.BandSearch` for the one addition (``mirror_reset``).
    A period without a valid power reading leaves the size unchanged.
    """

    name = "batchsizer"
    accepts = frozenset({"sizes", "alpha", "initial", "clock_mhz"})

    def __init__(
        self,
        sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
        alpha: float = 0.8,
        initial: int | None = None,
        clock_mhz: int | None = None,
        mirror_reset: bool = True,
    ) -> None:
        self.sizes = check_sizes(sizes)
        self.alpha = check_alpha(alpha)
        self.clock_mhz = clock_mhz
        current = start_position(self.sizes, initial, "initial batch size")
        self.search = BandSearch(len(self.sizes), alpha=self.alpha, current=current, mirror_reset=mirror_reset)

    def _setting(self) -> Setting:
        return Setting(self.sizes[self.search.current - 1], self.clock_mhz)

    def describe(self) -> dict[str, Any]:
        """The batch sizes searched and alpha."""
        return {"name": self.name, "sizes": list(self.sizes), "alpha": self.alpha}
