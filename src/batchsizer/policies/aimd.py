"""``aimd``: Clipper-style additive increase, multiplicative decrease of the batch size, on power.

As the authors' released baseline: +``step`` per decision while the peak is under the cap,
times ``(1 - decrease)`` when it is over. Given a size list, the additive target moves as before and
the batch run is the largest listed size at or below it (the smallest listed, below them all).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from batchsizer.core.batching import check_batch_size
from batchsizer.errors import ConfigError
from batchsizer.policies.band_search import start_position
from batchsizer.policies.base import Controller, Decision, Observation, Setting, check_sizes


class Aimd(Controller):
    """Additive increase (+``step``, up to ``max_batch_size``) under the cap, multiplicative decrease over it."""

    name = "aimd"
    accepts = frozenset({"sizes", "initial"})

    def __init__(
        self,
        initial: int | None = None,
        step: int = 4,
        decrease: float = 0.1,
        max_batch_size: int = 256,
        sizes: Sequence[int] | None = None,
    ) -> None:
        self.sizes = check_sizes(sizes) if sizes is not None else None
        if self.sizes is not None:
            self.target = self.sizes[start_position(self.sizes, initial, "initial batch size") - 1]
            self.max_batch_size = self.sizes[-1]
        else:
            self.target = check_batch_size(1 if initial is None else initial, "initial batch size")
            self.max_batch_size = check_batch_size(max_batch_size, "max batch size")
        self.step = check_batch_size(step, "aimd step")
        if not 0 < decrease < 1:
            raise ConfigError("aimd decrease", f"must be between 0 and 1, got {decrease}")
        self.decrease = decrease

    @property
    def size(self) -> int:
        """The batch size run: the target, or with a size list the largest listed size at or below it."""
        if self.sizes is None:
            return self.target
        return self.sizes[max(bisect.bisect_right(self.sizes, self.target) - 1, 0)]

    def initial(self) -> Setting:
        """The ``initial`` batch size, at the device's own clock."""
        return Setting(self.size)

    def decide(self, obs: Observation) -> Decision:
        """Cut the target by ``decrease`` if the peak was over the cap, else add ``step``; hold without a reading."""
        if not obs.valid:
            return Decision(Setting(self.size), "no-reading")
        lowest = self.sizes[0] if self.sizes is not None else 1
        if obs.peak_w > obs.cap_w:
            # from the size run, not the target: with a coarse list the target may sit far above it
            self.target = max(lowest, math.floor(self.size * (1 - self.decrease)))
            reason = "decrease"
        else:
            self.target = min(self.max_batch_size, self.target + self.step)
            reason = "increase"
        return Decision(Setting(self.size), reason, {"size": self.size, "target": self.target})

    def describe(self) -> dict[str, Any]:
        """The step and the decrease factor."""
        out: dict[str, Any] = {"name": self.name, "step": self.step, "decrease": self.decrease}
        if self.sizes is not None:
            out["sizes"] = list(self.sizes)
        return out
