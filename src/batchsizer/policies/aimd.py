"""``aimd``: Clipper-style additive increase, multiplicative decrease of the batch size, on power.

As the authors' released baseline: +``step`` per decision while the peak is under the cap,
times ``(1 - decrease)`` when it is over.
"""

from __future__ import annotations

import math
from typing import Any

from batchsizer.core.batching import check_batch_size
from batchsizer.errors import ConfigError
from batchsizer.policies.base import Controller, Decision, Observation, Setting


class Aimd(Controller):
    """Additive increase (+``step``, up to ``max_batch_size``) under the cap, multiplicative decrease over it."""

    name = "aimd"
    accepts = frozenset({"sizes", "initial"})

    def __init__(self, initial: int = 1, step: int = 4, decrease: float = 0.1, max_batch_size: int = 256) -> None:
        self.size = check_batch_size(initial, "initial batch size")
        self.step = check_batch_size(step, "aimd step")
        if not 0 < decrease < 1:
            raise ConfigError("aimd decrease", f"must be between 0 and 1, got {decrease}")
        self.decrease = decrease
        self.max_batch_size = check_batch_size(max_batch_size, "max batch size")

    def initial(self) -> Setting:
        """The ``initial`` batch size, at the device's own clock."""
        return Setting(self.size)

    def decide(self, obs: Observation) -> Decision:
        """Cut the size by ``decrease`` if the peak was over the cap, else add ``step``; hold without a reading."""
        if not obs.valid:
            return Decision(Setting(self.size), "no-reading")
        if obs.peak_w > obs.cap_w:
            self.size = max(1, math.floor(self.size * (1 - self.decrease)))
            reason = "decrease"
        else:
            self.size = min(self.max_batch_size, self.size + self.step)
            reason = "increase"
        return Decision(Setting(self.size), reason, {"size": self.size})

    def describe(self) -> dict[str, Any]:
        """The step and the decrease factor."""
        return {"name": self.name, "step": self.step, "decrease": self.decrease}
