"""The end-of-job summary, and the violation accounting it needs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from batchsizer.core.cap_rule import PEAK, CapJudge, CapRule
from batchsizer.core.telemetry import PowerSample, PowerWindow


@dataclass
class Summary:
    """What a job did, as shown at the end and written with ``--json``."""

    items: int = 0
    batches: int = 0
    periods: int = 0
    duration_s: float = 0.0
    energy_j: float = 0.0
    over_cap_s: float = 0.0
    violations: int = 0
    longest_violation_s: float = 0.0
    worst_overshoot_w: float = 0.0
    #: energy drawn above the cap (J): the integral of how far the judged power was over it
    energy_over_cap_j: float = 0.0
    #: the cap rule the figures above were judged by ("peak" or "avg:SECONDS")
    cap_rule: str = "peak"
    interrupted: bool = False
    #: why the job stopped before its end: "interrupted", "SIGINT", "SIGTERM", "cap-not-met"; None if it finished
    stop_reason: str | None = None
    #: set when even the lowest setting drew more than the cap: periods, cap_w, peak_w, excess_w, batch_size
    cap_not_met: dict[str, Any] | None = None
    #: the same figures by the device's true power, where it knows it (the simulator); None elsewhere
    true_power: dict[str, float] | None = None
    #: False when no period had a power reading (a device without a meter, run uncapped): then the
    #: energy and over-cap figures are not zeros but unknown, and are shown and written so
    power_measured: bool = True
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Items per second over the job (0 for a job that took no time)."""
        return self.items / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def avg_batch_size(self) -> float:
        """Items per batch over the job (0 when no batch ran)."""
        return self.items / self.batches if self.batches else 0.0

    @property
    def energy_per_item_j(self) -> float:
        """Joules per item; NaN when no item was processed."""
        return self.energy_j / self.items if self.items else math.nan

    @property
    def over_cap_fraction(self) -> float:
        """The share of the job's time spent over the cap, 0 to 1."""
        return self.over_cap_s / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields plus the derived figures, for ``--json``; power figures are None when no power was measured."""
        d = asdict(self)
        d.update(
            throughput=self.throughput,
            avg_batch_size=self.avg_batch_size,
            energy_per_item_j=self.energy_per_item_j,
            over_cap_fraction=self.over_cap_fraction,
        )
        if not self.power_measured:  # unknown, not zero
            for key in UNMEASURED_KEYS:
                d[key] = None
        return d


#: the summary's figures that need power readings
UNMEASURED_KEYS = (
    "energy_j",
    "energy_per_item_j",
    "over_cap_s",
    "over_cap_fraction",
    "violations",
    "longest_violation_s",
    "worst_overshoot_w",
    "energy_over_cap_j",
)


class PowerAccounting:
    """Energy and violations over a whole job by the sensor's readings, judged by the cap rule. (The
    simulator's true power is accounted beside it by :class:`batchsizer.core.reference_power.ReferencePowerAccount`,
    an observer the simulated device attaches.)"""

    def __init__(self, rule: CapRule = PEAK) -> None:
        self.rule = rule
        self.sensor = CapJudge()
        self.energy_j = 0.0
        self.measured_periods = 0

    def add(
        self, window: PowerWindow, series: list[PowerSample], start: float, end: float, cap_at: Callable[[float], float]
    ) -> None:
        """One period's judged sensor series (see :func:`batchsizer.core.cap_rule.judged`), against the cap in force."""
        self.sensor.feed(series, start, end, cap_at)
        if window.valid:
            self.energy_j += window.energy_j
            self.measured_periods += 1

    def fill(self, summary: Summary) -> None:
        """Write the sensor's energy, violations and cap rule into ``summary``."""
        summary.power_measured = self.measured_periods > 0
        summary.cap_rule = str(self.rule)
        summary.energy_j = self.energy_j
        summary.over_cap_s = self.sensor.over_s
        summary.violations = self.sensor.count
        summary.longest_violation_s = self.sensor.longest_s
        summary.worst_overshoot_w = self.sensor.worst_overshoot_w
        summary.energy_over_cap_j = self.sensor.excess_j
