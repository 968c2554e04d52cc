"""``batchsizer``: the paper's Algorithm 1, binary search over a set of batch sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.policies.band_search import BandSearch
from batchsizer.policies.base import (
    DEFAULT_BATCH_SIZES,
    Controller,
    Decision,
    Observation,
    Setting,
    check_alpha,
    check_sizes,
)


class Algorithm1(Controller):
    """Hold while the window's peak power is in [alpha*cap, cap]; bisect up below, down above.

    Faithful to the pseudo-code: starts at the ``initial`` size (the first by default), ceil on
    the way up, floor on the way down, resets the search range when the cap is violated at the
    range's floor, and keeps re-adjusting as the cap or the load changes. See
    :class:`~batchsizer.policies.band_search.BandSearch` for the one addition (``mirror_reset``).
    A period without a valid power reading leaves the size unchanged.
    """

    name = "batchsizer"

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
        start = self.sizes[0] if initial is None else initial
        if start not in self.sizes:
            raise ConfigError("initial batch size", f"must be one of {list(self.sizes)}, got {start}")
        self.clock_mhz = clock_mhz
        self.search = BandSearch(
            len(self.sizes), alpha=self.alpha, current=self.sizes.index(start) + 1, mirror_reset=mirror_reset
        )

    def _setting(self) -> Setting:
        return Setting(self.sizes[self.search.current - 1], self.clock_mhz)

    def initial(self) -> Setting:
        return self._setting()

    def decide(self, obs: Observation) -> Decision:
        if not obs.valid:
            return Decision(self._setting(), "no-reading", self.search.state())
        reason = self.search.step(obs.peak_w, obs.cap_w)
        return Decision(self._setting(), reason, self.search.state())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sizes": list(self.sizes), "alpha": self.alpha}
