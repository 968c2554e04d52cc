"""The end-of-job summary, and the violation accounting it needs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from batchsizer.telemetry import PowerMeter, PowerSample, PowerWindow, measure


class ViolationTracker:
    """Time spent with the reading above the cap, as separate violations (contiguous spans)."""

    def __init__(self) -> None:
        self.over_s = 0.0
        self.count = 0
        self.longest_s = 0.0
        self.worst_overshoot_w = 0.0
        self._open_start: float | None = None
        self._open_end: float | None = None

    def feed(self, samples: list[PowerSample], start: float, end: float, cap_w: float) -> None:
        """Account the held readings over [start, end] against ``cap_w``; spans may continue."""
        for i, s in enumerate(samples):
            a = max(s.t, start)
            b = min(samples[i + 1].t if i + 1 < len(samples) else end, end)
            if b <= a:
                continue
            if s.watts > cap_w:
                self.worst_overshoot_w = max(self.worst_overshoot_w, s.watts - cap_w)
                self.over_s += b - a
                if self._open_start is not None and self._open_end is not None and a - self._open_end <= 1e-9:
                    self._open_end = b
                else:
                    self._close()
                    self._open_start, self._open_end = a, b
                    self.count += 1
                self.longest_s = max(self.longest_s, self._open_end - self._open_start)
            else:
                self._close()

    def _close(self) -> None:
        self._open_start = self._open_end = None


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
    interrupted: bool = False
    #: why the job stopped before its end: "interrupted", "SIGINT", "SIGTERM", "cap-not-met"; None if it finished
    stop_reason: str | None = None
    #: set when even the lowest setting drew more than the cap: periods, cap_w, peak_w, excess_w, batch_size
    cap_not_met: dict[str, Any] | None = None
    true_power: dict[str, float] | None = None
    #: False when no period had a power reading (a device without a meter, run uncapped): then the
    #: energy and over-cap figures are not zeros but unknown, and are shown and written so
    power_measured: bool = True
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.items / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def avg_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    @property
    def energy_per_item_j(self) -> float:
        return self.energy_j / self.items if self.items else math.nan

    @property
    def over_cap_fraction(self) -> float:
        return self.over_cap_s / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
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
)


class PowerAccounting:
    """Energy and violations over a whole job: by the sensor, and by the true power where the
    device knows it (the simulator), so a report can say what the sensor missed."""

    def __init__(self, reference_meter: PowerMeter | None) -> None:
        self.reference = reference_meter
        self.sensor = ViolationTracker()
        self.true = ViolationTracker()
        self.energy_j = 0.0
        self.true_energy_j = 0.0
        self.measured_periods = 0

    def add(self, window: PowerWindow, samples: list[PowerSample], start: float, end: float, cap_w: float) -> None:
        """One period's sensor readings, judged against the cap in force during it."""
        self.sensor.feed(samples, start, end, cap_w)
        if window.valid:
            self.energy_j += window.energy_j
            self.measured_periods += 1
        if self.reference is not None:
            true_window, true_samples = measure(self.reference, start, end)
            self.true.feed(true_samples, start, end, cap_w)
            if true_window.valid:
                self.true_energy_j += true_window.energy_j

    def fill(self, summary: Summary) -> None:
        summary.power_measured = self.measured_periods > 0
        summary.energy_j = self.energy_j
        summary.over_cap_s = self.sensor.over_s
        summary.violations = self.sensor.count
        summary.longest_violation_s = self.sensor.longest_s
        summary.worst_overshoot_w = self.sensor.worst_overshoot_w
        if self.reference is not None:
            summary.true_power = {
                "energy_j": self.true_energy_j,
                "over_cap_s": self.true.over_s,
                "violations": self.true.count,
                "longest_violation_s": self.true.longest_s,
                "worst_overshoot_w": self.true.worst_overshoot_w,
            }
