"""Measuring a control period: from its checked readings to the :class:`Observation` a controller sees.

Under the cap rule ``avg:S`` a period is judged by the rolling mean of the readings, which reaches
back ``S`` seconds into the periods before it: :class:`PeriodMeasure` keeps those readings.
Under ``peak`` the series judged is the readings themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from batchsizer.core.cap_rule import PEAK, CapRule, judged
from batchsizer.core.period_timer import UNKNOWN_TIMING, PeriodTimer, SensorTiming
from batchsizer.core.reading_filter import CheckedReadings
from batchsizer.core.telemetry import PowerSample
from batchsizer.core.types import Observation, Setting


def settled_peak(samples: Sequence[PowerSample], after: float, end: float) -> float:
    """The highest reading published in (after, end]; NaN when there is none."""
    return max((s.watts for s in samples if after < s.t <= end), default=math.nan)


class PeriodMeasure:
    """Judges each period's readings by the cap rule and makes its observation."""

    def __init__(self, rule: CapRule = PEAK, timing: SensorTiming = UNKNOWN_TIMING) -> None:
        self.rule = rule
        self.timing = timing
        #: clean readings of the last ``rule.window_s`` seconds before the period, for the rolling mean
        self._history: list[PowerSample] = []

    def judged(self, samples: list[PowerSample], now: float) -> list[PowerSample]:
        """The series the cap rule constrains over a period ending at ``now`` with clean ``samples``
        (each period once, in order: it keeps what the next period's rolling mean needs)."""
        rule = self.rule
        if rule.is_peak:
            return list(samples)
        series = judged([*self._history, *samples], now, rule)
        keep_from = now - rule.window_s
        joined = [*self._history, *(s for s in samples if not self._history or s.t > self._history[-1].t)]
        first = max((i for i, s in enumerate(joined) if s.t <= keep_from), default=0)
        self._history = joined[first:]
        return series

    def observe(
        self,
        index: int,
        period: PeriodTimer,
        now: float,
        reading: CheckedReadings,
        series: list[PowerSample],
        setting: Setting,
        *,
        period_cap_w: float,
        next_cap_w: float,
        size_limit: int | None,
    ) -> Observation:
        """The period that ran from ``period.start`` to ``now`` at ``setting``, as the controller sees it."""
        pw, rule = reading.window, self.rule
        in_period = [s.watts for s in series if s.t > period.start]
        peak = pw.peak_w if rule.is_peak or not in_period else max(in_period)
        # a reading counts for this period's setting only once all it averages (the sensor's window
        # and delay, one update of phase, the rule's window) lies inside the period
        clean_after = period.start + (self.timing.check_every or 0.0) + self.timing.window_s + rule.window_s
        return Observation(
            period=index,
            start=period.start,
            end=now,
            cap_w=next_cap_w,
            peak_w=peak,
            mean_w=pw.mean_w,
            items=period.items,
            batches=period.batches,
            setting=setting,
            samples=pw.samples,
            update_period_s=self.timing.update_period_s,
            stopped_on_violation=period.stopped,
            period_cap_w=period_cap_w,
            clean_peak_w=settled_peak(series, clean_after, now) if pw.valid else math.nan,
            sensor_window_s=self.timing.window_s,
            cap_rule_window_s=rule.window_s,
            size_limit=size_limit,
        )
