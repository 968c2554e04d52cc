"""``static``: a fixed batch size and clock, for sweeps, baselines and the oracle."""

from __future__ import annotations

from typing import Any

from batchsizer.core.batching import check_batch_size
from batchsizer.policies.base import Controller, Decision, Observation, Setting


class Static(Controller):
    """One setting (batch size, and clock or power limit if given) for the whole job, whatever is measured."""

    name = "static"
    accepts = frozenset({"batch_size", "clock_mhz"})

    def __init__(self, batch_size: int = 16, clock_mhz: int | None = None, power_limit_w: float | None = None) -> None:
        self.setting = Setting(check_batch_size(batch_size), clock_mhz, power_limit_w)

    def initial(self) -> Setting:
        """The fixed setting."""
        return self.setting

    def decide(self, obs: Observation) -> Decision:
        """The fixed setting again, with reason ``static``."""
        return Decision(self.setting, "static")

    def describe(self) -> dict[str, Any]:
        """The name, batch size and clock, and the power limit when one is set."""
        d: dict[str, Any] = {"name": self.name, "batch_size": self.setting.batch_size}
        d["clock_mhz"] = self.setting.clock_mhz
        if self.setting.power_limit_w is not None:
            d["power_limit_w"] = self.setting.power_limit_w
        return d
