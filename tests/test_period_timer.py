"""The period timer alone, on hand-made readings: when a period ends (window, the controller's
request, a cap change) and its early stop on a plausible reading over the cap."""

from __future__ import annotations

import math

import pytest

from batchsizer.core.cap_rule import CapRule
from batchsizer.core.period_timer import PeriodTimer, SensorTiming, Window
from batchsizer.core.telemetry import PowerMeter, PowerSample
from batchsizer.core.types import Decision, Setting
from batchsizer.errors import ConfigError, TelemetryError
from batchsizer.testing.scripted import ScriptedMeter

#: a sensor publishing every 10 ms, each reading averaging the last 5 ms
TIMING = SensorTiming(update_period_s=0.01, window_s=0.005)


def _meter(watts_at) -> ScriptedMeter:
    meter = ScriptedMeter(0.01)
    for k in range(200):
        t = round(0.01 * k, 6)
        meter.push(t, watts_at(t))
    return meter


def _watching(start: float = 0.0, was_over: bool = False, **kw) -> PeriodTimer:
    timer = PeriodTimer(Window(1000), start, timing=TIMING, **kw)
    timer.arm(Decision(Setting(4), "probe", stop_on_violation=True), was_over=was_over)
    return timer


def _stop_time(timer: PeriodTimer, meter: PowerMeter, cap: float, until: float = 1.0) -> float | None:
    """Feed batches of 3 ms to ``timer``; the end of the first one after which the period stops."""
    now = timer.start
    while now < until:
        now = round(now + 0.003, 6)
        timer.count(1)
        timer.watch_for_violation(meter, now, cap)
        if timer.ends(now, cap_changed=False):
            return now
    return None


def test_window_batches_seconds_and_whichever_first() -> None:
    assert Window(3).closes(3, 0.0) and not Window(3).closes(2, 99.0)
    assert Window(None, 1.0).closes(1, 1.0) and not Window(None, 1.0).closes(10**6, 0.99)
    both = Window(5, 1.0)
    assert both.closes(5, 0.1) and both.closes(1, 1.5) and not both.closes(4, 0.9)
    for bad in (dict(batches=None), dict(batches=0), dict(batches=True), dict(seconds=-1.0), dict(seconds=math.inf)):
        with pytest.raises(ConfigError):
            Window(**bad)


def test_the_window_the_controllers_request_and_its_minimum_length() -> None:
    timer = PeriodTimer(Window(10), 0.0)
    timer.arm(Decision(Setting(4), "short", window_batches=2, min_period_s=0.5), was_over=False)
    timer.count(4)
    timer.count(4)
    assert not timer.ends(0.4, False)  # asked for 2 batches, but not before 0.5 s
    assert timer.ends(0.5, False)
    assert (timer.items, timer.batches) == (8, 2)
    timer.restart(0.5)
    assert (timer.start, timer.items, timer.batches) == (0.5, 0, 0)
    timer.arm(Decision(Setting(4), "default"), was_over=False)
    for _ in range(9):
        timer.count(1)
    assert not timer.ends(0.6, False)
    timer.count(1)
    assert timer.ends(0.6, False)  # the window's 10 batches


def test_a_cap_change_ends_the_period_only_when_the_loop_reacts_to_it() -> None:
    assert PeriodTimer(Window(10), 0.0).ends(0.1, cap_changed=True)
    assert not PeriodTimer(Window(10), 0.0, react_to_cap_change=False).ends(0.1, cap_changed=True)
    assert not PeriodTimer(Window(10), 0.0).ends(0.1, cap_changed=False)


def test_early_stop_at_the_first_reading_over_the_cap_after_the_first_update() -> None:
    meter = _meter(lambda t: 160.0 if t >= 0.3 else 100.0)
    assert _stop_time(_watching(), meter, 150.0) == pytest.approx(0.3, abs=0.0031)
    assert _stop_time(_watching(), meter, 170.0) is None  # never over


def test_no_early_stop_unless_the_decision_asked_for_it() -> None:
    meter = _meter(lambda t: 300.0)
    timer = PeriodTimer(Window(1000), 0.0, timing=TIMING)
    assert _stop_time(timer, meter, 150.0) is None
    # nor on a meter that does not say how often it updates
    blind = PeriodTimer(Window(1000), 0.0)
    blind.arm(Decision(Setting(4), "probe", stop_on_violation=True), was_over=False)
    assert not blind.watch and _stop_time(blind, meter, 150.0) is None


def test_a_reading_exactly_at_the_cap_does_not_stop_a_probe() -> None:
    meter = _meter(lambda t: 150.0)
    assert _stop_time(_watching(), meter, 150.0) is None
    assert _stop_time(_watching(), meter, 149.99) is not None


def test_an_implausible_reading_does_not_stop_a_probe() -> None:
    """A 10 kW glitch is above the plausible limit: the reading filter drops it, the timer ignores it."""
    glitch = _meter(lambda t: 10_000.0 if abs(t - 0.3) < 1e-9 else 100.0)
    assert _stop_time(_watching(max_plausible_w=1500.0), glitch, 150.0) is None
    assert _stop_time(_watching(max_plausible_w=20_000.0), glitch, 150.0) == pytest.approx(0.3, abs=0.0031)
    zero_nan = _meter(lambda t: math.nan if t >= 0.3 else 100.0)
    assert _stop_time(_watching(), zero_nan, 150.0) is None


def test_the_first_sensor_update_of_a_period_may_still_show_the_previous_setting() -> None:
    """A period starting at 0.5 s: the reading at 0.51 s still averages the setting before (over the
    cap), the reading at 0.52 s is this period's own."""
    meter = _meter(lambda t: 200.0 if t <= 0.51 + 1e-9 else 100.0)
    assert _stop_time(_watching(0.5), meter, 150.0) is None
    # without the skip that reading would stop it: a reading over the cap one update later does
    later = _meter(lambda t: 200.0 if 0.519 < t < 0.521 else 100.0)
    assert _stop_time(_watching(0.5), later, 150.0) is not None


def test_after_a_period_over_the_cap_the_settle_covers_the_sensor_and_rule_windows() -> None:
    """Backing off from a setting over the cap: readings that still average it (the sensor's window,
    the rule's rolling mean) are not this setting's."""
    rule = CapRule(0.05)
    meter = _meter(lambda t: 200.0 if t < 0.5 else 100.0)
    # the 50 ms rolling mean stays over 150 W for 25 ms after the change: not this period's
    assert _stop_time(_watching(0.5, cap_rule=rule, was_over=True), meter, 150.0) is None
    # after a period under the cap, a mixed reading over the cap is this setting's
    assert _stop_time(_watching(0.5, cap_rule=rule, was_over=False), meter, 150.0) is not None


def test_a_failing_meter_does_not_stop_a_probe() -> None:
    class Broken(PowerMeter):
        update_period_s = 0.01

        def samples(self, start: float, end: float) -> list[PowerSample]:
            raise TelemetryError("NVML error")

    assert _stop_time(_watching(), Broken(), 150.0) is None


def test_sensor_timing_from_a_meter() -> None:
    class M:
        update_period_s = 0.02
        window_s = 0.01

    t = SensorTiming.of(M())
    assert (t.update_period_s, t.window_s, t.check_every) == (0.02, 0.01, 0.02)
    assert SensorTiming.of(object()) == SensorTiming()
    assert SensorTiming(math.nan).check_every is None and SensorTiming(-1.0).check_every is None
