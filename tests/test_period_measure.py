"""Measuring a period alone: the series the cap rule judges, the rolling mean's carry-over across
periods, and the observation's peak and clean peak."""

from __future__ import annotations

import math

import pytest

from batchsizer.core.cap_rule import CapRule, judged
from batchsizer.core.period_measure import PeriodMeasure, settled_peak, settled_readings, settled_window_peak
from batchsizer.core.period_timer import PeriodTimer, SensorTiming, Window
from batchsizer.core.reading_filter import CheckedReadings
from batchsizer.core.telemetry import PowerSample, empty_window, summarize
from batchsizer.core.types import Setting

S = PowerSample


def _period(start: float, items: int = 8) -> PeriodTimer:
    timer = PeriodTimer(Window(10), start)
    timer.count(items)
    return timer


def _observe(measure: PeriodMeasure, samples: list[PowerSample], start: float, end: float):
    reading = CheckedReadings(summarize(samples, start, end), samples, [], fresh=len(samples))
    series = measure.judged(samples, end)
    obs = measure.observe(
        3, _period(start), end, reading, series, Setting(4), period_cap_w=150.0, next_cap_w=120.0, size_limit=None
    )
    return obs, series


def test_under_peak_the_series_is_the_readings_and_the_peak_theirs() -> None:
    samples = [S(0.0, 100.0), S(0.1, 180.0), S(0.2, 120.0)]
    obs, series = _observe(PeriodMeasure(timing=SensorTiming(0.1, 0.0)), samples, 0.0, 0.3)
    assert series == samples and obs.peak_w == 180.0
    assert (obs.period, obs.cap_w, obs.period_cap_w, obs.items, obs.batches) == (3, 120.0, 150.0, 8, 1)
    assert obs.update_period_s == 0.1 and obs.cap_rule_window_s == 0.0
    # the clean peak skips the first sensor update (0.1 s): the readings after 0.1 s
    assert obs.clean_peak_w == 120.0


def test_under_avg_the_rolling_mean_reaches_into_the_period_before() -> None:
    rule = CapRule(0.2)
    measure = PeriodMeasure(rule)
    first = [S(round(0.05 * k, 6), 200.0) for k in range(10)]  # 0 .. 0.45 s at 200 W
    measure.judged(first, 0.5)
    second = [S(round(0.5 + 0.05 * k, 6), 100.0) for k in range(10)]  # then 100 W
    series = measure.judged(second, 1.0)
    whole = {s.t: s.watts for s in judged([*first, *second], 1.0, rule)}
    assert [s.watts for s in series] == pytest.approx([whole[s.t] for s in series])  # as if one long period
    assert max(s.watts for s in series if s.t > 0.5) > 100.0  # the mean still holds some of the 200 W before
    fresh = PeriodMeasure(rule).judged(second, 1.0)
    assert fresh[0].watts == pytest.approx(100.0)  # without the history it would not


def test_under_avg_the_peak_is_the_highest_mean_inside_the_period() -> None:
    rule = CapRule(0.1)
    samples = [S(0.0, 100.0), S(0.05, 300.0), S(0.1, 100.0), S(0.15, 100.0), S(0.2, 100.0)]
    obs, series = _observe(PeriodMeasure(rule), samples, 0.0, 0.25)
    assert obs.peak_w == max(s.watts for s in series if s.t > 0.0) < 300.0
    assert obs.mean_w == summarize(samples, 0.0, 0.25).mean_w


def test_no_clean_peak_without_a_valid_window() -> None:
    measure = PeriodMeasure()
    reading = CheckedReadings(empty_window(0.0, 1.0), [], [])
    obs = measure.observe(0, _period(0.0), 1.0, reading, [], Setting(1), period_cap_w=1.0, next_cap_w=1.0, size_limit=4)
    assert math.isnan(obs.clean_peak_w) and not obs.valid and obs.size_limit == 4


def test_settled_peak_is_over_after_and_up_to_end() -> None:
    samples = [S(0.1, 5.0), S(0.2, 7.0), S(0.3, 6.0)]
    assert settled_peak(samples, 0.1, 0.3) == 7.0 and settled_peak(samples, 0.2, 0.3) == 6.0
    assert math.isnan(settled_peak(samples, 0.3, 0.3))


def test_settled_mean_weights_each_reading_by_how_long_it_held() -> None:
    samples = [S(0.0, 0.0), S(0.1, 100.0), S(0.4, 200.0)]
    # after 0.0: 100 W held 0.3 s, 200 W held 0.1 s (to the end, 0.5 s)
    assert settled_readings(samples, 0.0, 0.5).mean_w == pytest.approx(125.0)
    assert math.isnan(settled_readings(samples, 0.4, 0.5).mean_w)


def test_the_window_bound_is_the_mean_for_short_batches_and_the_peak_for_long_ones() -> None:
    # readings that alternate 50 W and 250 W: mean 150, highest 250
    samples = [S(round(0.01 * k, 6), 50.0 if k % 2 else 250.0) for k in range(1, 101)]
    assert settled_window_peak(samples, 0.0, 1.0, 0.0, 1.0) == pytest.approx(150.0, abs=2)
    # a 0.1 s batch in a 1 s window: at most a tenth of the excess on top of the mean
    assert settled_window_peak(samples, 0.0, 1.0, 0.1, 1.0) == pytest.approx(160.0, abs=2)
    # a batch as long as the window, or longer: its peak
    assert settled_window_peak(samples, 0.0, 1.0, 1.0, 1.0) == 250.0
    assert settled_window_peak(samples, 0.0, 1.0, 3.0, 1.0) == 250.0
    assert math.isnan(settled_window_peak(samples, 1.0, 1.0, 0.1, 1.0))


def test_under_avg_a_clean_figure_needs_no_wait_for_the_rule_window() -> None:
    # 0.3 s of readings under a 1 s rule: the period's setting is known once the sensor has settled
    timing = SensorTiming(0.05, 0.0)
    samples = [S(round(0.05 * k, 6), 100.0) for k in range(7)]
    obs, _ = _observe(PeriodMeasure(CapRule(1.0), timing), samples, 0.0, 0.3)
    assert obs.clean_peak_w == pytest.approx(100.0)
    obs_peak, _ = _observe(PeriodMeasure(timing=timing), samples, 0.0, 0.3)
    assert obs_peak.clean_peak_w == pytest.approx(100.0)
