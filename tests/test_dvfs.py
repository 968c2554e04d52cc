"""The DVFS baseline: Algorithm 1's band search over the P40's 10 clock levels at batch 16."""

from __future__ import annotations

import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.caps import CapSchedule
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.types import Observation, Setting
from batchsizer.errors import ConfigError
from batchsizer.policies import DeviceKnobs, make_controller
from batchsizer.policies.dvfs import DvfsSearch
from batchsizer.testing.scripted import ScriptedDevice

P40 = (544, 632, 734, 835, 949, 1063, 1189, 1303, 1430, 1531)
# peak power at batch 16 by clock (rises with the clock)
PEAK = dict(zip(P40, (90, 100, 110, 122, 135, 150, 168, 188, 210, 232)))


def step(ctrl: DvfsSearch, clock: int, cap: float):
    d = ctrl.decide(Observation(0, 0.0, 1.0, cap, PEAK[clock], 80.0, 160, 10, Setting(16, clock), 5))
    return d.setting.clock_mhz, d.reason, d.state["min"], d.state["max"], d.setting.batch_size


def test_starts_at_the_lowest_level_with_batch_16() -> None:
    ctrl = make_controller("dvfs", DeviceKnobs(P40, 1531))
    assert ctrl.initial() == Setting(16, 544)


def test_hand_worked_search_and_cap_rise() -> None:
    ctrl = DvfsSearch(P40)
    clock = ctrl.initial().clock_mhz
    trace = []
    for cap in [140.0] * 4 + [220.0] * 3:
        row = step(ctrl, clock, cap)
        trace.append((clock, *row[1:]))
        clock = row[0]
    assert trace == [
        (544, "up", 1, 10, 16),  # 90 < 112: min=1, ceil(11/2)=6 -> 1063
        (1063, "down", 1, 6, 16),  # 150 > 140, 6 != min 1: max=6, floor(7/2)=3 -> 734
        (734, "up", 3, 6, 16),  # 110 < 112: min=3, ceil(9/2)=5 -> 949
        (949, "hold", 3, 6, 16),  # 135 in [112, 140]
        (949, "up", 5, 6, 16),  # cap 220, band [176, 220]: min=5, ceil(11/2)=6 -> 1063
        (1063, "up", 6, 10, 16),  # 6 == max 6 < 10: max=10; min=6, ceil(16/2)=8 -> 1303
        (1303, "hold", 6, 10, 16),  # 188 in band
    ]


def test_only_p40_levels_in_a_loop_and_batch_stays_16() -> None:
    device = ScriptedDevice(
        time_fn=lambda b, c: 0.002 * b * 1531 / c,
        power_fn=lambda b, c: float(PEAK[c]),
        clock_levels_mhz=P40,
        update_period_s=0.005,
    )
    ctrl = make_controller("dvfs", device.knobs)
    seen: list[PeriodRecord] = []

    class Keep(LoopObserver):
        def on_period(self, record: PeriodRecord) -> None:
            seen.append(record)

    caps = CapSchedule([(0, 140.0), (3.0, 220.0), (6.0, 100.0)])
    loop = ControlLoop(device, ctrl, caps, Window(batches=5), [Keep()])
    summary = loop.run(DynamicBatchStream(range(16 * 400)))
    assert summary.items == 16 * 400
    assert {r.observation.setting.batch_size for r in seen} == {16}
    clocks = [c for _, c in device.clock_history]
    assert clocks[0] == 544 and set(clocks) <= set(P40)

    # settled where the hand trace says for each cap: 949 MHz under 140 W, 1303 under 220 W,
    # and under 100 W only 544/632 fit ([80, 100]).
    def clock_at(t: float) -> int:
        return [r.observation.setting.clock_mhz for r in seen if r.observation.end <= t][-1]

    assert clock_at(2.9) == 949
    assert clock_at(5.9) == 1303
    assert clock_at(summary.duration_s) in (544, 632)


def test_needs_clock_levels() -> None:
    with pytest.raises(ConfigError, match="controller: dvfs"):
        make_controller("dvfs", DeviceKnobs())
    with pytest.raises(ConfigError, match="initial clock"):
        DvfsSearch(P40, initial_mhz=600)
    with pytest.raises(ConfigError, match="clock levels"):
        DvfsSearch((1000, 900))


def test_batch_size_option() -> None:
    ctrl = make_controller("dvfs", DeviceKnobs(P40, 1531), batch_size=1)
    assert ctrl.initial() == Setting(1, 544)
