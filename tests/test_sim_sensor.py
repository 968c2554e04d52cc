"""The simulated NVML sensor: update period, averaging window, energy counter, determinism, memory."""

from __future__ import annotations

import pytest

from batchsizer.sim.gpus import GPUS, HOPPER_AVERAGE, HOPPER_INSTANT, SensorSpec, sensor_for
from batchsizer.sim.sensor import NvmlSensor, PowerTrace, TrueMeter, hashed_normal


def _pulse_trace(width: float, at: float = 1.0, idle: float = 50.0, high: float = 250.0) -> PowerTrace:
    tr = PowerTrace(0.0, idle)
    tr.append(at, high)
    tr.append(at + width, idle)
    return tr


@pytest.mark.parametrize(("gpu", "period"), [("p40", 0.020), ("v100", 0.020), ("a100", 0.100), ("h100", 0.100)])
def test_update_period_per_family(gpu, period):
    s = NvmlSensor(PowerTrace(0.0, 60.0), GPUS[gpu].sensor, seed=3)
    ts = [x.t for x in s.samples(0.0, 2.0)]
    gaps = {round(b - a, 9) for a, b in zip(ts, ts[1:])}
    assert gaps == {period}
    assert len(ts) in (int(2.0 / period), int(2.0 / period) + 1)


@pytest.mark.parametrize(
    ("spec", "width", "expect_max"),
    [
        (GPUS["p40"].sensor, 0.005, 150.0),  # 5 ms of 250 W in a 10 ms window: at most half seen
        (GPUS["a100"].sensor, 0.0125, 150.0),  # half of the 25 ms window
        (HOPPER_AVERAGE, 0.100, 70.0),  # a 1 s average sees a tenth of a 100 ms pulse
        (HOPPER_INSTANT, 0.0125, 150.0),
    ],
)
def test_averaging_window_smears_short_pulses(spec, width, expect_max):
    tr = _pulse_trace(width, high=250.0 if spec.window_s < 1 else 250.0)
    s = NvmlSensor(tr, SensorSpec(spec.update_period_s, spec.window_s, noise_w=0.0, gain=1.0), seed=1)
    peak = max(x.watts for x in s.samples(0.0, 3.0))
    if spec.window_s >= 1.0:
        assert peak == pytest.approx(50 + 200 * width / 1.0, abs=1.0)
    else:
        assert peak <= expect_max + 0.01


def test_long_pulse_is_seen_in_full_and_step_appears_within_one_period():
    for gpu in ("p40", "a100"):
        spec = GPUS[gpu].sensor
        s = NvmlSensor(_pulse_trace(1.0), SensorSpec(spec.update_period_s, spec.window_s, noise_w=0.0), seed=5)
        readings = s.samples(0.0, 3.0)
        assert max(x.watts for x in readings) == pytest.approx(250.0)
        first_high = min(x.t for x in readings if x.watts > 150)
        assert 1.0 < first_high <= 1.0 + spec.window_s / 2 + spec.update_period_s


def test_energy_counter_only_from_volta_on():
    tr = _pulse_trace(1.0)
    assert NvmlSensor(tr, GPUS["p40"].sensor).energy_j(0.0, 3.0) is None
    e = NvmlSensor(tr, GPUS["v100"].sensor).energy_j(0.0, 3.0)
    assert e == pytest.approx(50 * 3 + 200, rel=0.02)
    assert TrueMeter(tr).energy_j(0.0, 3.0) == pytest.approx(350.0)


def test_readings_are_deterministic_per_seed_and_noisy():
    tr = PowerTrace(0.0, 100.0)
    a = NvmlSensor(tr, GPUS["p40"].sensor, seed=7).samples(0.0, 1.0)
    b = NvmlSensor(tr, GPUS["p40"].sensor, seed=7).samples(0.0, 1.0)
    c = NvmlSensor(tr, GPUS["p40"].sensor, seed=8).samples(0.0, 1.0)
    assert a == b and [x.watts for x in a] != [x.watts for x in c]
    assert 0.2 < max(x.watts for x in a) - 100 < 5
    vals = [hashed_normal(1, k) for k in range(4000)]
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    assert abs(mean) < 0.06 and 0.9 < var < 1.1


def test_trace_memory_is_bounded_and_recent_windows_exact():
    tr = PowerTrace(0.0, 50.0, keep=1000)
    for i in range(1, 10_001):
        tr.append(i * 0.01, 50.0 + (i % 2) * 100)
    assert len(tr.times) <= 2000
    assert tr.mean(99.0, 100.0) == pytest.approx(100.0, abs=0.5)
    segs = TrueMeter(tr).samples(99.0, 99.05)
    assert segs[0].t <= 99.0 and len(segs) == 6


def test_h100_default_is_the_instant_field_and_average_is_selectable():
    h100 = GPUS["h100"]
    assert sensor_for(h100, None) is HOPPER_INSTANT and sensor_for(h100, "average") is HOPPER_AVERAGE
    assert sensor_for(GPUS["p40"], "average") is GPUS["p40"].sensor
    assert HOPPER_AVERAGE.window_s == 1.0 and HOPPER_AVERAGE.update_period_s == 0.1
