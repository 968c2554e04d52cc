"""The safe-fallback wrapper alone, around a scripted controller, on scripted observations: hold,
fall back, recover (tests/test_guard_pins.py pins the same rules through the TelemetryGuard)."""

from __future__ import annotations

import math

from batchsizer.core.controller import Controller
from batchsizer.core.fallback import SafeFallback, setting_order
from batchsizer.core.fault_log import FaultLog
from batchsizer.core.reading_filter import CheckedReadings, Fault
from batchsizer.core.telemetry import PowerWindow, empty_window
from batchsizer.core.types import Decision, Observation, Setting


class Plan(Controller):
    """Asks for the settings of ``plan`` in turn, then keeps the last; keeps what it is shown."""

    name = "plan"

    def __init__(self, start: Setting, plan: list[Setting]) -> None:
        self.start, self.plan, self.seen = start, list(plan), []

    def initial(self) -> Setting:
        return self.start

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs.setting)
        return Decision(self.plan.pop(0) if self.plan else obs.setting, "planned")


class Feed:
    """One scripted period after another at the setting last decided; ``watts``: what each size draws."""

    def __init__(self, fallback: SafeFallback, watts: dict[int, float]) -> None:
        self.fb, self.watts = fallback, watts
        self.setting = fallback.initial()
        self.n = 0

    def period(self, cap_w: float, good: bool = True, fresh: int = 10) -> Decision:
        t = float(self.n)
        peak = self.watts[self.setting.batch_size] if good else math.nan
        obs = Observation(self.n, t, t + 1, cap_w, peak, peak, 8, 8, self.setting, samples=10 if good else 0)
        if good:
            reading = CheckedReadings(PowerWindow(t, t + 1, peak, peak, peak, 10), [], [], fresh=fresh)
        else:
            reading = CheckedReadings(empty_window(t, t + 1), [], [Fault("spike", "bad")])
        decision = self.fb.decide(obs, reading)
        self.setting, self.n = decision.setting, self.n + 1
        return decision


WATTS = {1: 80.0, 8: 120.0, 32: 170.0}


def test_clean_periods_at_its_own_setting_go_to_the_controller() -> None:
    ctrl = Plan(Setting(8), [Setting(32), Setting(8)])
    f = Feed(SafeFallback(ctrl), WATTS)
    assert [f.period(200.0).setting for _ in range(3)] == [Setting(32), Setting(8), Setting(8)]
    assert ctrl.seen == [Setting(8), Setting(32), Setting(8)]


def test_holds_a_setting_known_under_the_cap_then_falls_back_to_the_safest() -> None:
    log = FaultLog()
    ctrl = Plan(Setting(1), [Setting(8), Setting(32)])
    f = Feed(SafeFallback(ctrl, fallback_after=3, log=log), WATTS)
    f.period(200.0)
    f.period(200.0)
    f.period(200.0)  # now at 32, known 170 W
    reasons = [f.period(200.0, good=False).reason for _ in range(4)]
    assert reasons == ["hold-bad-reading", "hold-bad-reading", "fallback-bad-reading", "fallback-bad-reading"]
    assert f.setting == Setting(1) and log.counts == {"held": 2, "fell_back": 2}


def test_falls_back_at_once_when_the_setting_is_not_known_under_the_cap() -> None:
    ctrl = Plan(Setting(1), [Setting(8), Setting(32)])
    f = Feed(SafeFallback(ctrl), WATTS)
    f.period(200.0)
    f.period(200.0)
    d = f.period(200.0, good=False)  # at 32, never measured
    assert d.reason == "fallback-bad-reading" and d.setting == Setting(1)  # the smallest known under the cap
    assert d.state == {"faults": ["spike"]}


def test_the_safe_setting_is_the_smallest_known_under_the_cap() -> None:
    ctrl = Plan(Setting(32), [Setting(8), Setting(1)])
    fb = SafeFallback(ctrl)
    f = Feed(fb, WATTS)
    f.period(200.0)
    f.period(200.0)
    assert fb.safe_setting(150.0) == Setting(8)
    assert fb.safe_setting(200.0) == Setting(8)  # both measured ones under: the smaller (1 is not measured)
    # none under: the smallest seen, counting the smallest the controller asked for (1, never measured)
    assert fb.safe_setting(50.0) == Setting(1)
    assert SafeFallback(Plan(Setting(4), [])).safe_setting(100.0) == Setting(1)  # nothing seen at all


def test_recovers_on_a_fresh_reading_and_hands_back_the_controllers_setting() -> None:
    log = FaultLog()
    ctrl = Plan(Setting(1), [Setting(32)])
    fb = SafeFallback(ctrl, fallback_after=1, log=log)
    f = Feed(fb, WATTS)
    f.period(200.0)  # the controller goes to 32
    assert f.period(200.0, good=False).setting == Setting(1)  # fell back (32 unknown)
    assert f.period(200.0, fresh=0).reason == "fallback-bad-reading"  # no fresh reading: still bad
    assert fb.bad_run == 2 and not log.events
    d = f.period(200.0)  # fresh, but at the fall-back's 1, not the controller's 32
    assert d.reason == "recovered" and d.setting == Setting(32) and ctrl.seen == [Setting(1)]
    assert [(k, fields) for k, _, fields in log.pop_events()] == [("telemetry-recovered", {"periods": 2})]
    assert f.period(200.0).reason == "planned" and ctrl.seen == [Setting(1), Setting(32)]


def test_a_window_too_short_for_a_reading_keeps_the_setting_without_a_fault() -> None:
    ctrl = Plan(Setting(8), [Setting(32)])
    fb = SafeFallback(ctrl)
    obs = Observation(0, 0.0, 0.001, 200.0, math.nan, math.nan, 1, 1, Setting(8), samples=0)
    d = fb.decide(obs, CheckedReadings(empty_window(0.0, 0.001), [], []))
    assert d.reason == "no-reading" and d.setting == Setting(8) and fb.bad_run == 0 and not ctrl.seen


def test_as_run_makes_a_capped_setting_the_controllers_own() -> None:
    """The loop runs the controller's 32 as 16 (memory): a window at 16 is the controller's."""
    ctrl = Plan(Setting(32), [])
    fb = SafeFallback(ctrl)
    fb.initial()
    obs = Observation(0, 0.0, 1.0, 200.0, 150.0, 150.0, 8, 8, Setting(16), samples=10)
    reading = CheckedReadings(PowerWindow(0.0, 1.0, 150.0, 150.0, 150.0, 10), [], [], fresh=10)
    assert fb.decide(obs, reading, as_run=lambda s: Setting(min(s.batch_size, 16))).reason == "planned"
    assert SafeFallback(Plan(Setting(32), [])).decide(obs, reading).reason == "planned"  # no initial: obs's
    fb2 = SafeFallback(Plan(Setting(32), []))
    fb2.initial()
    assert fb2.decide(obs, reading).reason == "recovered"


def test_setting_order_by_size_then_clock() -> None:
    assert sorted([Setting(8, 900), Setting(4), Setting(8), Setting(4, 1500)], key=setting_order) == [
        Setting(4),
        Setting(4, 1500),
        Setting(8),
        Setting(8, 900),
    ]


def test_fault_log_announces_each_kind_once_and_sums_up() -> None:
    log = FaultLog()
    for f in (Fault("spike", "s", dropped=2), Fault("spike", "s", dropped=1), Fault("sampler_dead", "d")):
        log.note(f)
    log.count("held")
    assert log.counts == {"spike": 2, "dropped_samples": 3, "sampler_dead": 1, "held": 1}
    assert [fields["fault"] for _, _, fields in log.pop_events()] == ["spike", "sampler_dead"] and not log.events
    assert log.note_lines() == ["telemetry faults (periods): 1 sampler dead, 2 spike; periods 1 held"]
    assert FaultLog().note_lines() == []


def test_a_setting_known_over_the_cap_is_not_held_one_exactly_at_it_is() -> None:
    for cap_after, reason in ((160.0, "fallback-bad-reading"), (170.0, "hold-bad-reading")):
        f = Feed(SafeFallback(Plan(Setting(1), [Setting(32)]), fallback_after=3), WATTS)
        f.period(200.0)
        f.period(200.0)  # at 32: known 170 W
        assert f.period(200.0, good=False).reason == "hold-bad-reading"
        d = f.period(cap_after, good=False)  # the cap drops to below, or exactly to, 170 W
        assert d.reason == reason and d.setting == (Setting(1) if reason.startswith("fallback") else Setting(32))
        assert f.fb.safe_setting(cap_after) == Setting(1) and f.fb.safe_setting(170.0) == Setting(1)
