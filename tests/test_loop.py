"""Telemetry arithmetic on hand-made samples, and the control loop on a scripted device."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.cap_rule import CapJudge
from batchsizer.core.caps import CapSchedule, ConstantCap
from batchsizer.core.controller import Controller
from batchsizer.core.guard import TelemetryGuard
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.telemetry import PowerSample, SampleBuffer, summarize
from batchsizer.core.types import Decision, Observation, Setting
from batchsizer.errors import ConfigError, PermissionDeniedError
from batchsizer.io.recorder import JobRecorder
from batchsizer.io.records import RecordWriter, read_records
from batchsizer.policies import make_controller
from batchsizer.policies.algorithm1 import Algorithm1
from batchsizer.policies.static import Static
from batchsizer.testing.faults import FaultyMeter, Injection
from batchsizer.testing.scripted import ScriptedDevice, ScriptedMeter

S = PowerSample
TRACE = [S(0.0, 50), S(1.0, 150), S(2.0, 100), S(3.0, 200), S(4.0, 50)]


def test_summarize_hand_computed() -> None:
    w = summarize(TRACE, 0.0, 5.0)
    assert (w.peak_w, w.samples) == (200, 5)
    assert w.mean_w == pytest.approx((50 + 150 + 100 + 200 + 50) / 5)
    assert w.energy_j == pytest.approx(550.0)
    # a window starting mid-sample: the held 150 W covers [1.5, 2.0), 100 W [2, 2.5)
    w = summarize(TRACE, 1.5, 2.5)
    assert w.mean_w == pytest.approx(125.0) and w.energy_j == pytest.approx(125.0)
    assert w.peak_w == 100  # the peak counts only readings taken in the window
    # a window with no reading of its own falls back to the held one
    w = summarize(TRACE, 3.2, 3.8)
    assert (w.peak_w, w.mean_w) == (200, 200)
    assert w.energy_j == pytest.approx(120.0)
    assert not summarize([], 0, 1).valid
    assert not summarize([S(5.0, 80)], 0.0, 1.0).valid  # the only reading is after the window


def test_cap_judge_spans_and_excess() -> None:
    t = CapJudge()
    t.feed(TRACE, 0.0, 5.0, lambda _t: 120)
    assert (t.count, t.over_s, t.longest_s, t.worst_overshoot_w) == (2, 2.0, 1.0, 80)
    # a violation that continues across two windows counts once, with its whole length
    t = CapJudge()
    t.feed(TRACE[:3], 0.0, 1.5, lambda _t: 90)
    t.feed(TRACE[1:], 1.5, 5.0, lambda _t: 90)
    assert (t.count, t.over_s, t.longest_s, t.worst_overshoot_w) == (1, 3.0, 3.0, 110)


def test_sample_buffer_and_scripted_meter() -> None:
    b = SampleBuffer()
    for s in TRACE:
        b.append(s.t, s.watts)
    assert b.between(1.5, 3.0) == [S(1.0, 150), S(2.0, 100), S(3.0, 200)]
    assert b.last() == S(4.0, 50)
    with pytest.raises(ValueError, match="older"):
        b.append(3.5, 1)
    m = ScriptedMeter(update_period_s=0.25, fn=lambda t: 100 + 100 * (t >= 0.5))
    w = m.window(0.0, 1.0)
    assert (w.peak_w, w.mean_w, w.samples) == (200, 150, 5)


def _device(prep_s: float = 0.0, power: float = 100.0) -> ScriptedDevice:
    return ScriptedDevice(time_fn=lambda b, c: 0.1, power_fn=lambda b, c: power, prep_s=prep_s, idle_w=50.0)


class Keep(LoopObserver):
    def __init__(self) -> None:
        self.periods: list[PeriodRecord] = []
        self.events: list[tuple[str, str]] = []
        self.batches = 0
        self.ended = None

    def on_batch(self, index, batch, outcome, setting) -> None:
        self.batches += 1

    def on_period(self, record: PeriodRecord) -> None:
        self.periods.append(record)

    def on_event(self, kind: str, message: str, **fields) -> None:
        self.events.append((kind, message))

    def on_end(self, summary) -> None:
        self.ended = summary


def test_summary_numbers_by_hand() -> None:
    # 25 batches of 4: each 0.05 s idle at 50 W then 0.1 s at 100 W, under a 90 W cap
    keep = Keep()
    s = ControlLoop(_device(prep_s=0.05), Static(4), ConstantCap(90), Window(10), [keep]).run(
        DynamicBatchStream(range(100))
    )
    assert (s.items, s.batches, s.periods) == (100, 25, 2)
    assert s.duration_s == pytest.approx(3.75)
    assert s.throughput == pytest.approx(100 / 3.75)
    assert s.avg_batch_size == 4
    assert s.energy_j == pytest.approx(25 * (0.05 * 50 + 0.1 * 100), rel=0.02)
    assert s.energy_per_item_j == pytest.approx(s.energy_j / 100)
    assert s.violations == 25
    assert s.over_cap_s == pytest.approx(2.5, rel=0.02)
    assert s.longest_violation_s == pytest.approx(0.1, abs=0.006)
    assert s.worst_overshoot_w == 10
    assert s.over_cap_fraction == pytest.approx(2.5 / 3.75, rel=0.02)
    assert keep.ended is s and keep.batches == 25
    d = s.to_dict()
    assert d["throughput"] == s.throughput and d["items"] == 100


def test_period_boundaries_batches_seconds_and_whichever_first() -> None:
    for window, expected in [
        # the last, partial period (the job's tail) is reported too, with no decision ("end")
        (Window(batches=10), [10, 10, 5]),
        (Window(batches=None, seconds=0.25), [3] * 8 + [1]),  # 0.1 s batches: closes at 0.3 s
        (Window(batches=2, seconds=0.25), [2] * 12 + [1]),
    ]:
        keep = Keep()
        ControlLoop(_device(), Static(1), ConstantCap(200), window, [keep]).run(DynamicBatchStream(range(25)))
        assert [p.observation.batches for p in keep.periods] == expected, window
        ends = [p.observation.end for p in keep.periods]
        starts = [p.observation.start for p in keep.periods]
        assert starts[1:] == ends[:-1]  # periods tile the job


def test_empty_window_is_rejected() -> None:
    for kw in ({"batches": None}, {"batches": 0}, {"batches": -1}, {"seconds": 0.0}, {"seconds": -2.0}):
        with pytest.raises(ConfigError, match="^window: "):
            Window(**kw)


def test_cap_change_closes_the_period_and_is_announced() -> None:
    caps = CapSchedule([(0, 200.0), (1.05, 150.0)])
    keep = Keep()
    ControlLoop(_device(), Static(1), caps, Window(10), [keep]).run(DynamicBatchStream(range(40)))
    assert [p.observation.batches for p in keep.periods] == [10, 1, 10, 10, 9]  # 9: the tail, not decided on
    assert [p.observation.cap_w for p in keep.periods] == [200, 150, 150, 150, 150]
    assert keep.events == [("cap", "cap changed from 200 W to 150 W")]
    keep = Keep()
    ControlLoop(_device(), Static(1), caps, Window(10), [keep], react_to_cap_change=False).run(
        DynamicBatchStream(range(40))
    )
    assert [p.observation.batches for p in keep.periods] == [10, 10, 10, 10][: len(keep.periods)]


def test_controller_decision_applies_to_the_next_period() -> None:
    peak = {1: 70, 2: 80, 4: 95, 8: 115, 16: 140, 32: 170, 64: 205, 128: 235, 256: 250}
    dev = ScriptedDevice(time_fn=lambda b, c: 0.01 + 0.001 * b, power_fn=lambda b, c: float(peak.get(b, 60)))
    keep = Keep()
    ControlLoop(dev, Algorithm1(), ConstantCap(180), Window(10), [keep]).run(DynamicBatchStream(range(5000)))
    sizes = [p.observation.setting.batch_size for p in keep.periods]
    assert sizes[:5] == [1, 16, 64, 32, 32]  # the Fig. 4 trace of test_algorithm1, through the loop
    for prev, cur in zip(keep.periods, keep.periods[1:]):
        assert cur.observation.setting == prev.decision.setting


def test_stop_event_interrupts_between_batches() -> None:
    stop = threading.Event()

    class Stopper(LoopObserver):
        def on_batch(self, index, batch, outcome, setting) -> None:
            if index == 6:
                stop.set()

    stream = DynamicBatchStream(range(1000), prefetch=2)
    s = ControlLoop(_device(), Static(3), ConstantCap(200), Window(5), [Stopper()], stop_event=stop).run(stream)
    assert s.interrupted and s.batches == 7 and s.items == 21
    assert s.duration_s == pytest.approx(0.7)


def test_observer_exception_stops_the_prefetch_thread() -> None:
    before = threading.active_count()

    class Boom(LoopObserver):
        def on_batch(self, index, batch, outcome, setting) -> None:
            if index == 3:
                raise RuntimeError("observer failed")

    with pytest.raises(RuntimeError, match="observer failed"):
        ControlLoop(_device(), Static(2), ConstantCap(200), Window(5), [Boom()]).run(
            DynamicBatchStream(range(10**6), prefetch=2)
        )
    for _ in range(200):
        if threading.active_count() == before:
            break
        threading.Event().wait(0.01)
    assert threading.active_count() == before


def test_job_recorder_writes_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "job.jsonl"
    caps = CapSchedule([(0, 200.0), (1.05, 90.0)])
    s = ControlLoop(_device(), Static(2), caps, Window(5), [JobRecorder(RecordWriter(path), extra={"x": 1})]).run(
        DynamicBatchStream(range(60))
    )
    r = read_records(path)
    assert r["job"][0]["x"] == 1 and r["job"][0]["controller"]["name"] == "static"
    assert [b["first"] for b in r["batch"]] == list(range(0, 60, 2))
    assert all(b["latency_s"] == pytest.approx(0.1) for b in r["batch"])
    assert len(r["period"]) == s.periods + 1  # and the job's tail, which ends where the last batch does
    assert r["period"][-1]["reason"] == "end" and r["period"][-1]["end"] == r["batch"][-1]["end"]
    assert r["power"][-1]["t"] > r["period"][-2]["end"]  # the tail's power samples too
    ts = [p["t"] for p in r["power"]]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert r["event"][0]["kind"] == "cap" and r["event"][0]["new"] == 90
    assert r["summary"][0]["items"] == 60
    assert math.isclose(r["summary"][0]["duration_s"], 3.0)


class Probe(Controller):
    """Starts at ``first`` and then asks for ``then`` every period, with the early stop on."""

    name = "probe"

    def __init__(self, first: int, then: int) -> None:
        self.first, self.then = first, then

    def initial(self) -> Setting:
        return Setting(self.first)

    def decide(self, obs: Observation) -> Decision:
        return Decision(Setting(self.then), "probe", stop_on_violation=True)


def _stopped(device: ScriptedDevice, cap: float, items: int = 400) -> list[bool]:
    keep = Keep()
    ControlLoop(device, Probe(4, 4), ConstantCap(cap), Window(10), [keep]).run(DynamicBatchStream(range(items)))
    return [p.observation.stopped_on_violation for p in keep.periods]


def test_early_stop_ignores_a_reading_the_guard_calls_implausible() -> None:
    """A 10 kW glitch (above the guard's plausible limit) must not end a probe; a real reading over
    the cap at the same moments does."""
    times = (0.331, 0.572, 0.813)

    def device(watts: float) -> ScriptedDevice:
        dev = ScriptedDevice(lambda b, c: 0.01, lambda b, c: 100.0)  # 100 W under a 150 W cap
        dev.meter = FaultyMeter(dev.meter, [Injection("spike", t, watts=watts) for t in times])
        return dev

    glitch = device(10_000.0)
    assert not any(_stopped(glitch, 150.0))
    assert TelemetryGuard.for_device(glitch).max_plausible_w < 10_000.0
    assert sum(_stopped(device(300.0), 150.0)) == len(times)


def test_early_stop_skips_the_sensor_update_that_still_shows_the_previous_setting() -> None:
    """The sensor publishes every 10 ms what the board drew 6 ms before: the first reading after a
    change from a setting over the cap (batch 8, 200 W) to one under it (batch 1) still shows 200 W,
    and must not end the new setting's probe. A setting truly over the cap is still stopped."""

    def device(power_at_1: float) -> ScriptedDevice:
        dev = ScriptedDevice(
            lambda b, c: 0.0107 if b == 8 else 0.002, lambda b, c: 200.0 if b == 8 else power_at_1, update_period_s=0.01
        )
        dev.meter = ScriptedMeter(0.01, fn=lambda t: dev._true_power(t - 0.006))
        return dev

    for power_at_1, stopped in ((100.0, False), (160.0, True)):
        keep = Keep()
        ControlLoop(device(power_at_1), Probe(8, 1), ConstantCap(150), Window(None, 0.1), [keep]).run(
            DynamicBatchStream(range(80 + 50))
        )
        first, probe = keep.periods[0].observation, keep.periods[1].observation
        assert first.setting == Setting(8) and first.end == pytest.approx(0.107)  # between two sensor updates
        assert probe.setting == Setting(1) and probe.stopped_on_violation is stopped, power_at_1


def test_a_reading_exactly_at_the_cap_is_no_violation_and_stops_no_probe() -> None:
    keep = Keep()
    dev = ScriptedDevice(lambda b, c: 0.01, lambda b, c: 150.0, idle_w=150.0)
    s = ControlLoop(dev, Probe(4, 4), ConstantCap(150), Window(10), [keep]).run(DynamicBatchStream(range(400)))
    assert len(keep.periods) == 10 and not any(p.observation.stopped_on_violation for p in keep.periods)
    assert s.violations == 0 and s.over_cap_s == 0
    assert s.cap_not_met is None


@pytest.mark.parametrize("name", ["adaptive", "batchdvfs"])
def test_a_controller_goes_on_deciding_after_the_device_refuses_its_clock(name: str) -> None:
    """A card that will not take a clock (no root): the controller goes on with the batch size alone,
    and the periods it runs are its own (the guard does not take them for a fall-back of its own and
    keep them from the controller), so it still moves and answers a cap drop."""

    class NoRoot(ScriptedDevice):
        def set_clock(self, mhz: int | None) -> None:
            if mhz is not None:
                raise PermissionDeniedError("changing the clock needs root")

    dev = NoRoot(lambda b, c: 0.01 + 0.001 * b, lambda b, c: 60.0 + b, clock_levels_mhz=(900, 1200, 1500))
    keep = Keep()
    caps = CapSchedule([(0.0, 1000.0), (1.0, 80.0)])
    s = ControlLoop(dev, make_controller(name, dev.knobs), caps, Window(5), [keep]).run(DynamicBatchStream(range(3000)))
    assert [k for k, _ in keep.events].count("clocks-refused") == 1
    assert [p.decision.reason for p in keep.periods].count("recovered") == 0
    sizes = [p.observation.setting.batch_size for p in keep.periods]
    assert max(sizes) > 20  # it moved while the cap allowed
    if name == "adaptive":  # (batchdvfs decides every 3 s, as released: it is still searching at the end)
        assert 60.0 + keep.periods[-1].observation.setting.batch_size <= 80.0  # and came under the new cap
    assert all(p.observation.setting.clock_mhz is None for p in keep.periods)
    assert any("only the batch size moved" in n for n in s.notes)
