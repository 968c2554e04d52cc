"""Accounting a job by a device's reference meter (the simulator's true power), as a loop observer.

The loop measures and decides by the sensor only; a device that also knows the true power (the
simulator) attaches a :class:`ReferencePowerAccount` to every job run on it
(:meth:`batchsizer.core.device.Device.loop_observers`), which judges each period's true power by the
same cap rule and against the same cap, and writes ``Summary.true_power`` at the end: what the
sensor missed. The loop itself never reads the reference meter.
"""

from __future__ import annotations

from collections.abc import Callable

from batchsizer.core.cap_rule import PEAK, CapJudge, CapRule, judged
from batchsizer.core.observer import LoopObserver, PeriodRecord
from batchsizer.core.summary import Summary
from batchsizer.core.telemetry import PowerMeter, measure


class ReferencePowerAccount(LoopObserver):
    """Energy and violations of a job by ``meter`` (true power), judged by ``rule``."""

    def __init__(self, meter: PowerMeter, rule: CapRule = PEAK) -> None:
        self.meter = meter
        self.rule = rule
        self.judge = CapJudge()
        self.energy_j = 0.0

    def add(self, start: float, end: float, cap_at: Callable[[float], float]) -> None:
        """The period from ``start`` to ``end`` (device time) under the cap ``cap_at(t)``."""
        window, _ = measure(self.meter, start, end)
        samples = self.meter.samples(start - self.rule.window_s, end)
        self.judge.feed(judged(samples, end, self.rule), start, end, cap_at)
        if window.valid:
            self.energy_j += window.energy_j

    def on_period(self, record: PeriodRecord) -> None:
        """Account the period's true power against the cap that was in force over it."""
        o = record.observation
        self.add(o.start, o.end, record.cap_function())

    def on_end(self, summary: Summary) -> None:
        """Put the true-power energy and violations into ``summary.true_power``."""
        summary.true_power = {
            "energy_j": self.energy_j,
            "over_cap_s": self.judge.over_s,
            "violations": self.judge.count,
            "longest_violation_s": self.judge.longest_s,
            "worst_overshoot_w": self.judge.worst_overshoot_w,
            "energy_over_cap_j": self.judge.excess_j,
        }
