"""The reading filter alone, on hand-pushed readings: what it drops and which windows it voids."""

from __future__ import annotations

import math

import pytest

from batchsizer.core.reading_filter import DEFAULT_MAX_PLAUSIBLE_W, ReadingFilter, board_limit_w, plausible
from batchsizer.core.telemetry import PowerMeter, PowerSample
from batchsizer.core.types import Setting
from batchsizer.errors import TelemetryError
from batchsizer.testing.scripted import ScriptedMeter


def _meter(values: list[tuple[float, float]], update_s: float = 0.1) -> ScriptedMeter:
    meter = ScriptedMeter(update_s)
    for t, w in values:
        meter.push(t, w)
    return meter


def test_plausible_is_finite_above_zero_and_at_most_the_limit() -> None:
    assert plausible(100.0, 1500.0) and plausible(1500.0, 1500.0)
    for w in (0.0, -5.0, math.nan, math.inf, 1500.01):
        assert not plausible(w, 1500.0), w


def test_zeros_and_spikes_inside_the_window_are_dropped_and_counted() -> None:
    meter = _meter([(0.0, 0.0), (0.1, 100.0), (0.2, 0.0), (0.3, math.nan), (0.4, 5000.0), (0.5, 120.0)])
    reading = ReadingFilter().read(meter, 0.05, 0.6, Setting(4))
    assert [s.watts for s in reading.samples] == [100.0, 120.0]
    assert {f.kind: f.dropped for f in reading.faults} == {"zero_reading": 2, "spike": 1}
    assert reading.window.peak_w == 120.0 and reading.fresh == 2 and reading.usable
    # the zero at 0.0 was held from before the window: judged with the previous one, not counted here


def test_a_window_without_real_information_is_voided() -> None:
    f = ReadingFilter(dead_after_periods=5.0)
    empty = ScriptedMeter(0.1)
    assert [x.kind for x in f.read(empty, 0.0, 0.4).faults] == []  # too short to have a reading
    assert [x.kind for x in f.read(empty, 0.0, 0.6).faults] == ["no_reading"]
    held = _meter([(0.0, 100.0)])
    dead = ReadingFilter().read(held, 1.0, 1.6)
    assert [x.kind for x in dead.faults] == ["sampler_dead"] and not dead.usable

    class Failing(PowerMeter):
        def samples(self, start: float, end: float) -> list[PowerSample]:
            raise TelemetryError("NVML_ERROR_GPU_IS_LOST")

    failed = ReadingFilter().read(Failing(), 0.0, 1.0)
    assert [x.kind for x in failed.faults] == ["telemetry_error"] and not failed.usable


def test_the_meters_energy_counter_replaces_the_integral() -> None:
    class Counter(ScriptedMeter):
        def energy_j(self, start: float, end: float) -> float | None:
            return 42.0

    meter = Counter(0.1)
    for k in range(10):
        meter.push(0.1 * k, 100.0)
    assert ReadingFilter().read(meter, 0.0, 1.0).window.energy_j == 42.0
    assert ReadingFilter().read(_meter([(0.1 * k, 100.0) for k in range(10)]), 0.0, 1.0).window.energy_j == (
        pytest.approx(100.0)
    )


def test_a_value_repeated_across_a_change_of_setting_is_frozen_after_min_frozen_s() -> None:
    meter = _meter([(round(0.1 * k, 6), 150.0) for k in range(40)])
    f = ReadingFilter(min_frozen_s=2.5)
    kinds = [
        [x.kind for x in f.read(meter, a, a + 1.0, Setting(4 if i % 2 else 8)).faults]
        for i, a in enumerate((0.0, 1.0, 2.0))
    ]
    assert kinds == [[], [], ["stale_reading"]]  # frozen since 0 s: 2 s is not yet 2.5 s, 3 s is
    same = ReadingFilter(min_frozen_s=0.0)
    assert [[x.kind for x in same.read(meter, a, a + 1.0, Setting(8)).faults] for a in (0.0, 1.0, 2.0)] == [[], [], []]


def test_board_limit_from_an_attribute_its_gpu_or_describe() -> None:
    class A:
        max_power_w = 300

    class G:
        gpu = A()

    class D:
        def describe(self) -> dict:
            return {"max_power_limit_w": 250.0}

    class Bad:
        def describe(self) -> dict:
            raise RuntimeError

    assert board_limit_w(A()) == 300.0 and board_limit_w(G()) == 300.0 and board_limit_w(D()) == 250.0
    assert board_limit_w(Bad()) is None
    assert ReadingFilter().max_plausible_w == DEFAULT_MAX_PLAUSIBLE_W
