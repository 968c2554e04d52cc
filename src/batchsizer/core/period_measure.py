"""Measuring a control period: from its checked readings to the :class:`Observation` a controller sees.

Under the cap rule ``avg:S`` a period is judged by the rolling mean of the readings, which reaches
back ``S`` seconds into the periods before it: :class:`PeriodMeasure` keeps those readings.
Under ``peak`` the series judged is the readings themselves.

What a period tells of its setting alone (``Observation.clean_peak_w``) comes from the readings
that average only that setting: under ``peak`` their highest; under ``avg:S`` a bound on the
highest S-second mean of the setting held, from their mean and highest, which a period knows as soon
as the sensor has settled: it need not outlast the rule's window, so probing a setting costs no more
under ``avg:S`` than under ``peak``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from batchsizer.core.cap_rule import PEAK, CapRule, judged
from batchsizer.core.period_timer import UNKNOWN_TIMING, PeriodTimer, SensorTiming
from batchsizer.core.reading_filter import CheckedReadings
from batchsizer.core.telemetry import PowerSample, PowerWindow, summarize
from batchsizer.core.types import Observation, Setting


def settled_peak(samples: Sequence[PowerSample], after: float, end: float) -> float:
    """The highest reading published in (after, end]; NaN when there is none."""
    return max((s.watts for s in samples if after < s.t <= end), default=math.nan)


def settled_readings(samples: Sequence[PowerSample], after: float, end: float) -> PowerWindow:
    """Peak and time-weighted mean of the readings published in (after, end], each held until the next
    (the last until ``end``): ``summarize`` of those readings alone; NaN where there is none."""
    return summarize([s for s in samples if after < s.t <= end], after, end)


def settled_window_peak(samples: Sequence[PowerSample], after: float, end: float, batch_s: float, window_s: float) -> float:
    """A bound on the highest ``window_s`` rolling mean of the setting held alone, from its readings in
    (after, end]: the mean of those readings plus ``min(1, P / window_s)`` of the highest one's excess
    over it, ``P`` the batch time (a window holds whole batches at the mean and at most one batch's
    worth more at the peak), so that batches longer than the window are judged by their peak.

    It assumes readings that follow the batches' cycle. A sensor that averages a short window once per
    longer update (the A100's and H100's 25 ms every 100 ms) reads the batch at scattered phases: the
    rolling mean of its held readings then scatters around the mean by more than the added term."""
    window = settled_readings(samples, after, end)
    mean, peak = window.mean_w, window.peak_w
    if not (math.isfinite(mean) and math.isfinite(peak)):
        return math.nan
    return mean + min(1.0, batch_s / window_s) * max(peak - mean, 0.0)


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
        # and delay, one update of phase) lies inside the period
        clean_after = period.start + (self.timing.check_every or 0.0) + self.timing.window_s
        if rule.is_peak:
            clean = settled_peak(series, clean_after, now)
        else:
            clean = settled_window_peak(
                reading.samples, clean_after, now, (now - period.start) / max(period.batches, 1), rule.window_s
            )
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
            clean_peak_w=clean if pw.valid else math.nan,
            sensor_window_s=self.timing.window_s,
            cap_rule_window_s=rule.window_s,
            size_limit=size_limit,
        )
