"""Fault injection: every kind of bad telemetry is caught before the controller sees it.

Run with ``pytest -s`` to see the table of faults tried and handled.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import Counter

import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.caps import CapSchedule, ConstantCap
from batchsizer.core.controller import Controller
from batchsizer.core.guard import CapWatch, TelemetryGuard
from batchsizer.core.loop import ControlLoop, LoopObserver, Window
from batchsizer.core.telemetry import PowerMeter, PowerSample, summarize
from batchsizer.core.types import Decision, Observation, Setting
from batchsizer.policies import make_controller
from batchsizer.sim import make_sim_device
from batchsizer.testing.faults import FaultyMeter, Injection
from batchsizer.testing.scripted import ScriptedDevice

GUARD_KIND = {
    "error": "telemetry_error",
    "zero": "zero_reading",
    "stale": "stale_reading",
    "dead": "sampler_dead",
    "spike": "spike",
}


class Spy(Controller):
    """Passes through to a real controller and keeps every observation it was shown."""

    def __init__(self, inner: Controller) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen: list[Observation] = []

    def initial(self) -> Setting:
        return self.inner.initial()

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        return self.inner.decide(obs)


class Events(LoopObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []
        self.periods: list = []

    def on_event(self, kind: str, message: str, **fields) -> None:
        self.events.append((kind, message, fields))

    def on_period(self, record) -> None:
        self.periods.append(record)


def scripted() -> ScriptedDevice:
    # distinct power at every size, constant within a batch: the true peak of any window is known exactly
    return ScriptedDevice(lambda b, c: 0.004 + 0.0012 * b, lambda b, c: 60.0 + 24.0 * b**0.5)


def run_with(injection: Injection, caps, controller_name: str = "batchsizer", items: int = 12_000):
    device = scripted()
    truth = device.meter
    device.meter = FaultyMeter(truth, [injection])
    spy = Spy(make_controller(controller_name))
    ev = Events()
    summary = ControlLoop(device, spy, caps, Window(10), [ev]).run(DynamicBatchStream(range(items)))
    return summary, spy, ev, truth


def check_handled(kind: str, injection: Injection, summary, spy: Spy, ev: Events, truth) -> None:
    guard_kind = GUARD_KIND[kind]
    # the controller never saw a reading that differs from the truth (a frozen sensor's first window
    # still equals the truth: nothing had changed yet)
    for obs in spy.seen:
        true = summarize(truth.samples(obs.start, obs.end), obs.start, obs.end)
        assert math.isclose(obs.peak_w, true.peak_w), (kind, obs, true)
    if kind == "dead" and not any(
        injection.start <= r.observation.start and r.observation.end <= injection.end for r in ev.periods
    ):
        return  # a gap shorter than a window leaves real readings on both sides: nothing to catch
    # detected, warned once, counted
    warnings = [e for e in ev.events if e[0] == "telemetry" and e[2].get("fault") == guard_kind]
    assert len(warnings) == 1, (kind, ev.events)
    assert summary.counts.get(guard_kind, 0) >= 1
    assert any(guard_kind.replace("_", " ") in n for n in summary.notes)
    # recovered: the controller decides again after the fault ended
    assert any(o.start >= injection.end for o in spy.seen), kind
    if kind != "spike":  # a spike voids nothing, the rest void periods and end in a recovery
        assert any(e[0] == "telemetry-recovered" for e in ev.events), kind
        # while readings were bad the loop held a setting known under the cap or fell back to a safe one
        for rec in ev.periods:
            if rec.decision.reason == "hold-bad-reading":
                assert rec.decision.setting == rec.observation.setting
            if rec.decision.reason == "fallback-bad-reading":
                assert rec.decision.setting.batch_size <= rec.observation.setting.batch_size


TRIED: Counter[str] = Counter()
HANDLED: Counter[str] = Counter()


@pytest.mark.parametrize("kind", list(GUARD_KIND))
def test_each_fault_kind_is_handled_at_random_times(kind: str) -> None:
    rng = random.Random(zlib.crc32(kind.encode()))
    for _ in range(8):
        start = rng.uniform(0.5, 6.0)
        length = rng.uniform(0.6, 3.0) if kind != "spike" else 0.001
        inj = Injection(kind, start, start + length, watts=rng.choice([3_000.0, 10_000.0, 1e6]))
        # a frozen sensor shows only once the load moves: the cap drops while it is frozen
        caps = CapSchedule.parse(f"0:180,{start + length / 2:.3f}:140") if kind == "stale" else ConstantCap(180)
        TRIED[kind] += 1
        summary, spy, ev, truth = run_with(
            inj, caps, rng.choice(["batchsizer", "aimd"]) if kind != "stale" else "batchsizer"
        )
        check_handled(kind, inj, summary, spy, ev, truth)
        HANDLED[kind] += 1


def test_report_faults_tried_and_handled() -> None:
    # runs after the parametrized tests in file order; prints the table asked for
    print("\nfault-injection: kind          tried  handled")
    for kind in GUARD_KIND:
        print(f"fault-injection: {kind:<12} {TRIED[kind]:6d} {HANDLED[kind]:8d}")
    if sum(TRIED.values()):
        assert TRIED == HANDLED


def test_fallback_goes_to_smallest_setting_known_under_the_new_cap() -> None:
    # the sampler dies, then the cap drops below what the current size draws: the guard must not
    # hold the current size (156 W > 140 W) but fall back to the smallest one seen under 140 W
    inj = Injection("dead", 2.0, 5.0)
    summary, spy, ev, _ = run_with(inj, CapSchedule.parse("0:180,3:140"))
    after_drop = [r for r in ev.periods if r.observation.end > 3.0 and r.decision.reason.endswith("bad-reading")]
    assert after_drop
    assert all(r.decision.setting.batch_size == 1 for r in after_drop if r.decision.reason == "fallback-bad-reading")
    held_over = [
        r for r in after_drop if r.decision.reason == "hold-bad-reading" and r.observation.setting.batch_size == 16
    ]
    assert not held_over
    assert summary.counts["fell_back"] >= 1


def test_stale_by_duration_when_the_load_never_changes() -> None:
    device = scripted()
    device.meter = FaultyMeter(device.meter, [Injection("stale", 2.0, 6.0)])
    ev = Events()
    guard = TelemetryGuard(stale_after_s=1.0)
    summary = ControlLoop(device, make_controller("static"), ConstantCap(200), Window(10), [ev], guard=guard).run(
        DynamicBatchStream(range(6000))
    )
    assert summary.counts.get("stale_reading", 0) >= 1


def test_no_false_alarm_on_clean_readings() -> None:
    for name in ("batchsizer", "aimd", "static"):
        device = scripted()
        ev = Events()
        summary = ControlLoop(
            device, make_controller(name), CapSchedule.parse("0:180,3:140,6:250"), Window(10), [ev]
        ).run(DynamicBatchStream(range(12_000)))
        assert not [e for e in ev.events if e[0].startswith("telemetry")], (name, ev.events)
        assert not any(k in summary.counts for k in GUARD_KIND.values())


def test_nvml_error_from_the_simulator_meter() -> None:
    device = make_sim_device("p40", "res101", "caltech", seed=1)
    device.meter = FaultyMeter(device.meter, [Injection("error", 2.0, 6.0), Injection("spike", 9.0)])
    ev = Events()
    summary = ControlLoop(device, make_controller("batchsizer"), ConstantCap(200), Window(10), [ev]).run(
        DynamicBatchStream(range(4000))
    )
    kinds = {e[2].get("fault") for e in ev.events if e[0] == "telemetry"}
    assert kinds == {"telemetry_error", "spike"}
    assert summary.counts["telemetry_error"] >= 1
    assert TelemetryGuard.for_device(device).max_plausible_w == 2 * device.gpu.board_limit_w


def test_cap_that_cannot_be_met_is_reported_and_strict_stops() -> None:
    summary = ControlLoop(scripted(), make_controller("batchsizer"), ConstantCap(70), Window(10)).run(
        DynamicBatchStream(range(2000))
    )
    assert summary.items == 2000
    assert summary.cap_not_met is not None
    assert summary.cap_not_met["batch_size"] == 1
    assert summary.cap_not_met["excess_w"] == pytest.approx(84.0 - 70.0)
    assert any("cap NOT met" in n for n in summary.notes)
    strict = ControlLoop(scripted(), make_controller("batchsizer"), ConstantCap(70), Window(10), strict=True).run(
        DynamicBatchStream(range(2000))
    )
    assert strict.stop_reason == "cap-not-met"
    assert strict.items < 2000


def test_cap_watch_ignores_a_single_period() -> None:
    watch = CapWatch(confirm=2)
    obs = Observation(0, 0.0, 1.0, 100.0, 120.0, 110.0, 10, 10, Setting(1))
    assert watch.observe(obs, Decision(Setting(1), "at-bottom")) is None
    assert watch.observe(obs, Decision(Setting(2), "up")) is None  # moved: no
    assert watch.observe(obs, Decision(Setting(1), "at-bottom")) is None
    assert watch.observe(obs, Decision(Setting(1), "at-bottom")) is not None


class _SlowSensor(PowerMeter):
    """Polled every 50 ms; publishes a new value once a second (like a 1 s-averaging NVML sensor),
    or never again after ``freeze_at``."""

    update_period_s = 1.0

    def __init__(self, freeze_at: float = math.inf) -> None:
        self.freeze_at = freeze_at

    def samples(self, start: float, end: float) -> list[PowerSample]:
        t0 = math.floor(start / 0.05) * 0.05
        out = []
        for k in range(int((end - t0) / 0.05) + 1):
            t = t0 + k * 0.05
            published = math.floor(min(t, self.freeze_at))
            out.append(PowerSample(t, 150.0 + 7.0 * (published % 5)))
        return out


@pytest.mark.parametrize("freeze_at", [math.inf, 4.0])
def test_a_slow_sensor_repeating_itself_is_not_called_frozen(freeze_at: float) -> None:
    """Periods of 0.3 s with the setting changing each time: a sensor that updates once a second
    repeats its value across periods, which is not a fault; one that truly stops is caught after a
    few of its update periods."""

    class Device:
        meter = _SlowSensor(freeze_at)

    guard = TelemetryGuard.for_device(Device())
    assert guard.min_frozen_s == pytest.approx(3.0)
    stale_at = None
    for i in range(40):
        start, end = 0.3 * i, 0.3 * (i + 1)
        reading = guard.read(Device.meter, start, end, Setting(8 if i % 2 else 16))
        if any(f.kind == "stale_reading" for f in reading.faults) and stale_at is None:
            stale_at = end
    if math.isinf(freeze_at):
        assert stale_at is None
    else:
        assert stale_at is not None and freeze_at + 3.0 <= stale_at <= freeze_at + 4.5
