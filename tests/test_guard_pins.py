"""The telemetry guard's hold, fall-back and recovery rules, and its frozen-sensor thaw, on scripted
observations: each test fails if the rule it names is changed (see issue 12's list of changes that
passed the suite before these tests)."""

from __future__ import annotations

import math

from batchsizer.core.controller import Controller
from batchsizer.core.guard import CapWatch, CheckedReadings, Fault, TelemetryGuard
from batchsizer.core.telemetry import PowerWindow, empty_window
from batchsizer.core.types import Decision, Observation, Setting
from batchsizer.testing.scripted import ScriptedMeter

#: what each scripted setting draws (W); a period's peak is that
PEAK_W = {1: 84.0, 4: 108.0, 16: 156.0}


class Scripted(Controller):
    """Starts at ``start`` and asks for the settings in ``plan`` in turn (then keeps the last);
    keeps every observation it is shown."""

    name = "scripted"

    def __init__(self, start: Setting, plan: list[Setting]) -> None:
        self.start, self.plan = start, list(plan)
        self.seen: list[Observation] = []

    def initial(self) -> Setting:
        return self.start

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        nxt = self.plan.pop(0) if self.plan else obs.setting
        return Decision(nxt, "scripted")


class Periods:
    """Feeds a guard one period at a time, good or bad, at the setting it last decided."""

    def __init__(self, guard: TelemetryGuard, controller: Controller) -> None:
        self.guard, self.controller = guard, controller
        self.setting = guard.start(controller)
        self.n = 0

    def _obs(self, cap_w: float, peak_w: float) -> Observation:
        t = float(self.n)
        return Observation(self.n, t, t + 1.0, cap_w, peak_w, peak_w, 10, 10, self.setting, samples=20)

    def good(self, cap_w: float, peak_w: float | None = None, fresh: int = 20) -> Decision:
        peak = PEAK_W[self.setting.batch_size] if peak_w is None else peak_w
        t = float(self.n)
        reading = CheckedReadings(PowerWindow(t, t + 1.0, peak, peak, peak, 20), [], [], fresh=fresh)
        return self._step(self._obs(cap_w, peak), reading)

    def bad(self, cap_w: float) -> Decision:
        t = float(self.n)
        fault = Fault("sampler_dead", "no new power reading")
        return self._step(self._obs(cap_w, math.nan), CheckedReadings(empty_window(t, t + 1.0), [], [fault]))

    def _step(self, obs: Observation, reading: CheckedReadings) -> Decision:
        decision = self.guard.decide(self.controller, obs, reading)
        self.setting = decision.setting
        self.n += 1
        return decision


def test_a_setting_known_over_the_new_cap_is_not_held() -> None:
    """Bad readings after the cap dropped below what the current setting is known to draw: fall back
    at once, even though the guard would otherwise hold for ``fallback_after`` periods."""
    p = Periods(TelemetryGuard(fallback_after=3), Scripted(Setting(1), [Setting(16)]))
    p.good(180.0)  # 84 W at 1, then the controller asks for 16
    p.good(180.0)  # 156 W at 16: known, under 180
    assert p.bad(180.0).reason == "hold-bad-reading"  # known under the cap: held
    d = p.bad(140.0)  # the cap drops below 156 W
    assert d.reason == "fallback-bad-reading" and d.setting == Setting(1)


def test_a_known_peak_exactly_at_the_cap_is_held() -> None:
    p = Periods(TelemetryGuard(fallback_after=3), Scripted(Setting(16), []))
    p.good(180.0)
    d = p.bad(156.0)  # known 156 W, cap 156 W: at the cap is under it
    assert d.reason == "hold-bad-reading" and d.setting == Setting(16)


def test_falls_back_in_the_period_that_reaches_fallback_after() -> None:
    for after in (1, 2, 3):
        p = Periods(TelemetryGuard(fallback_after=after), Scripted(Setting(1), [Setting(16)]))
        p.good(180.0)
        p.good(180.0)
        reasons = [p.bad(180.0).reason for _ in range(after + 1)]
        assert reasons == ["hold-bad-reading"] * (after - 1) + ["fallback-bad-reading"] * 2, after
        assert p.setting == Setting(1)
        assert p.guard.counts.get("held", 0) == after - 1 and p.guard.counts["fell_back"] == 2


def test_no_recovery_without_a_reading_taken_after_the_fault() -> None:
    """A window that holds only the reading from before it (valid, but nothing fresh) does not end a
    bad run; the first window with a fresh reading does."""
    ctrl = Scripted(Setting(4), [])
    p = Periods(TelemetryGuard(fallback_after=5), ctrl)
    p.good(180.0)
    p.bad(180.0)
    shown = len(ctrl.seen)
    d = p.good(180.0, fresh=0)
    assert d.reason == "hold-bad-reading" and len(ctrl.seen) == shown
    assert not [e for e in p.guard.pop_events() if e[0] == "telemetry-recovered"]
    d = p.good(180.0, fresh=3)
    assert d.reason == "scripted" and len(ctrl.seen) == shown + 1
    recovered = [e for e in p.guard.pop_events() if e[0] == "telemetry-recovered"]
    assert len(recovered) == 1 and recovered[0][2]["periods"] == 2


def test_a_held_only_window_is_what_read_gives_when_the_sensor_has_not_updated() -> None:
    """The reading ``fresh=0`` above stands for: the window is short and its only sample is older."""
    meter = ScriptedMeter(update_period_s=0.02)
    meter.push(0.0, 100.0)
    reading = TelemetryGuard().read(meter, 1.0, 1.05, Setting(4))
    assert reading.usable and reading.fresh == 0 and not reading.faults


def test_a_reading_at_the_fallback_setting_is_not_shown_to_the_controller() -> None:
    """After a fall-back the guard, not the controller, chose the setting: the first clean period
    (measured at the fall-back setting) hands back the controller's own setting, unseen by it; the
    controller decides again on a period at its own setting."""
    ctrl = Scripted(Setting(1), [Setting(16)])
    p = Periods(TelemetryGuard(fallback_after=1), ctrl)
    p.good(180.0)
    p.good(180.0)
    assert len(ctrl.seen) == 2
    assert p.bad(180.0).setting == Setting(1)  # fell back
    d = p.good(180.0)  # clean, at 1
    assert d.reason == "recovered" and d.setting == Setting(16) and d.state == {"measured_at": 1}
    assert len(ctrl.seen) == 2  # the controller never saw the period at 1
    d = p.good(180.0)  # clean, at 16: the controller's again
    assert d.reason == "scripted" and [o.setting for o in ctrl.seen] == [Setting(1), Setting(16), Setting(16)]


def test_safe_setting_counts_a_peak_exactly_at_the_cap_as_under() -> None:
    # power falling with the size: 1 draws more than 8; at a cap equal to 8's peak, 8 is the safe one
    p = Periods(TelemetryGuard(), Scripted(Setting(1), [Setting(8)]))
    p.good(180.0, peak_w=130.0)
    p.good(180.0, peak_w=100.0)
    assert p.guard.safe_setting(100.0) == Setting(8)
    assert p.guard.safe_setting(99.0) == Setting(1)  # none under: the smallest seen


def test_frozen_readings_before_a_thaw_are_dropped() -> None:
    """A sensor frozen at 200 W (caught as stale) starts publishing the real 150 W inside a window:
    that window's frozen readings are not real and are dropped, so its peak is 150 W."""
    meter = ScriptedMeter(update_period_s=0.02)
    for k in range(60):  # 0.00 .. 1.18 s
        t = round(0.02 * k, 6)
        meter.push(t, 200.0 if t < 1.05 else 150.0)
    guard = TelemetryGuard()
    kinds = []
    for i, (start, end) in enumerate([(0.0, 0.3), (0.3, 0.6), (0.6, 0.9)]):
        kinds.append([f.kind for f in guard.read(meter, start, end, Setting(4 if i % 2 else 16)).faults])
    assert kinds == [[], ["stale_reading"], ["stale_reading"]]
    thawed = guard.read(meter, 0.9, 1.2, Setting(16))
    assert not thawed.faults and thawed.usable
    assert {s.watts for s in thawed.samples} == {150.0}
    assert thawed.window.peak_w == 150.0 and thawed.window.mean_w == 150.0
    assert thawed.fresh == 7  # 1.06 .. 1.18


def test_cap_watch_does_not_count_a_peak_exactly_at_the_cap() -> None:
    watch = CapWatch(confirm=1)
    at = Observation(0, 0.0, 1.0, 100.0, 100.0, 90.0, 10, 10, Setting(1))
    assert watch.observe(at, Decision(Setting(1), "at-bottom")) is None and watch.result() is None
    above = Observation(1, 1.0, 2.0, 100.0, 100.5, 90.0, 10, 10, Setting(1))
    assert watch.observe(above, Decision(Setting(1), "at-bottom")) is not None
