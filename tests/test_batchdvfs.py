"""batchdvfs, the authors' released successor, against decisions worked out by hand from their code.

Positions are 0-based indices into the sizes 1..255 (size = position + 1), as ``minBS``, ``maxBS``
and ``BestBS`` in the released code. Up: ``minBS = BestBS`` (or, at ``maxBS``, ``minBS = maxBS`` and
``maxBS`` back to the top), then ceil; down: ``maxBS = BestBS``, floor; at ``minBS``: ``maxBS = minBS``,
``minBS = 0``, floor. Pinned at the largest size under the band: clock one level up; at the
smallest over the cap: one level down.
"""

from __future__ import annotations

import math

import pytest

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.caps import ConstantCap
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.types import DeviceKnobs, Observation, Setting
from batchsizer.errors import ConfigError
from batchsizer.policies import DEFAULT_BATCH_SIZES, make_controller
from batchsizer.policies.batchdvfs import BATCHDVFS_SIZES, BatchDvfs
from batchsizer.testing.scripted import ScriptedDevice

LEVELS = (544, 632, 734, 835, 949, 1063, 1189, 1303, 1430, 1531)
CAP = 100.0  # band [80, 100]


class Clock:
    """Hands out consecutive observations of ``dt`` seconds each."""

    def __init__(self, dt: float = 3.0) -> None:
        self.t, self.dt = 0.0, dt

    def obs(self, setting: Setting, peak: float, samples: int = 5, cap: float = CAP) -> Observation:
        start, self.t = self.t, self.t + self.dt
        return Observation(0, start, self.t, cap, peak, peak * 0.7, setting.batch_size, 1, setting, samples)


def run(ctrl: BatchDvfs, peaks: list[float], dt: float = 3.0) -> list[tuple[int, int | None, str, int, int]]:
    """Each row: (size run, clock run, reason, min, max) per decision period of ``dt`` seconds."""
    clock, rows = Clock(dt), []
    setting = ctrl.initial()
    for peak in peaks:
        d = ctrl.decide(clock.obs(setting, peak))
        rows.append((setting.batch_size, setting.clock_mhz, d.reason, d.state["min"], d.state["max"]))
        setting = d.setting
    return rows


def test_starts_at_size_one_and_the_middle_clock_level() -> None:
    ctrl = BatchDvfs(clock_levels_mhz=LEVELS)
    assert ctrl.sizes == tuple(range(1, 256))
    assert ctrl.initial() == Setting(1, 1063)  # the released code's initialDVFS = 5
    assert BatchDvfs().initial() == Setting(1, None)  # no clocks: the size search alone


def test_binary_search_over_every_size_as_released() -> None:
    # under, under, over, in band, then the band holds
    rows = run(BatchDvfs(clock_levels_mhz=LEVELS), [50, 60, 120, 90, 95])
    assert rows == [
        (1, 1063, "up", 0, 254),  # min=0, ceil((0+254)/2)=127 -> 128
        (128, 1063, "up", 127, 254),  # min=127, ceil(381/2)=191 -> 192
        (192, 1063, "down", 127, 191),  # max=191, floor(318/2)=159 -> 160
        (160, 1063, "hold", 127, 191),
        (160, 1063, "hold", 127, 191),
    ]


def test_reset_when_over_the_cap_at_the_floor_of_the_range() -> None:
    # up twice (min=127, at 192), then over every time: max follows down to the floor of the range,
    # 192 160 144 136 132 130 129 128; at 128 (position 127 == min) the range restarts: max=127, min=0 -> 64
    ctrl = BatchDvfs()
    rows = run(ctrl, [50, 50] + [120] * 8)
    assert [r[0] for r in rows] == [1, 128, 192, 160, 144, 136, 132, 130, 129, 128]
    assert rows[2][2:] == ("down", 127, 191)
    assert rows[-1][2:] == ("down-reset", 0, 127)
    assert ctrl.initial().batch_size == 64


def test_under_the_band_at_the_ceiling_of_the_range_reopens_it() -> None:
    # 1 -> 128 -> 192 (over: max=191) -> 160; under from there: min follows up, 176 184 188 190 191 192;
    # at 192 (position 191 == max) still under: min=191 and max back to the top, ceil(445/2)=223 -> 224
    ctrl = BatchDvfs()
    rows = run(ctrl, [50, 50, 120] + [50] * 7)
    assert [r[0] for r in rows] == [1, 128, 192, 160, 176, 184, 188, 190, 191, 192]
    assert rows[-2][2:] == ("up", 190, 191)
    assert rows[-1][2:] == ("up", 191, 254)
    assert ctrl.initial().batch_size == 224


def test_pinned_at_the_largest_size_it_steps_the_clock_up_one_level_per_decision() -> None:
    ctrl = BatchDvfs(clock_levels_mhz=LEVELS)
    rows = run(ctrl, [10.0] * 14)
    sizes = [r[0] for r in rows]
    assert sizes[:8] == [1, 128, 192, 224, 240, 248, 252, 254] and sizes[8] == 255
    ups = [r for r in rows if r[2] == "clock-up"]
    assert [r[1] for r in ups] == [1063, 1189, 1303, 1430]  # one level each decision, at size 255
    assert all(r[0] == 255 for r in ups)
    assert rows[-1][1:3] == (1531, "at-top")  # the top level: nothing more to do


def test_pinned_at_the_smallest_size_it_steps_the_clock_down_to_the_lowest() -> None:
    rows = run(BatchDvfs(clock_levels_mhz=LEVELS), [150.0] * 7)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (1, 1063, "clock-down"),
        (1, 949, "clock-down"),
        (1, 835, "clock-down"),
        (1, 734, "clock-down"),
        (1, 632, "clock-down"),
        (1, 544, "at-bottom"),
        (1, 544, "at-bottom"),
    ]


def test_without_clocks_the_ends_change_nothing() -> None:
    assert [r[2] for r in run(BatchDvfs(), [150.0, 150.0])] == ["at-bottom", "at-bottom"]
    ctrl = BatchDvfs(sizes=(1, 2))
    assert [r[:3] for r in run(ctrl, [10.0, 10.0, 10.0])] == [(1, None, "up"), (2, None, "at-top"), (2, None, "at-top")]


def test_decides_every_three_seconds_on_the_highest_reading_since_the_last_decision() -> None:
    ctrl = BatchDvfs(clock_levels_mhz=LEVELS)
    clock = Clock(dt=0.5)
    s = ctrl.initial()
    reasons = []
    # five periods of 0.5 s: no decision yet (each asks for a one-batch period)
    for peak in (50, 120, 60, 60, 60):
        d = ctrl.decide(clock.obs(s, peak))
        assert d.setting == s and d.window_batches == 1
        reasons.append(d.reason)
    assert reasons == ["wait"] * 5
    d = ctrl.decide(clock.obs(s, 60))  # 3.0 s since the start: decides on max(50, 120, 60...) = 120 > cap
    assert (d.reason, d.setting) == ("clock-down", Setting(1, 949))
    assert d.state["peak_w"] == 120
    # the readings were cleared: the next 3 s read 60 (under the band) -> up
    for _ in range(5):
        assert ctrl.decide(clock.obs(d.setting, 60)).reason == "wait"
    assert ctrl.decide(clock.obs(d.setting, 60)).reason == "up"


def test_a_period_with_only_the_held_reading_does_not_count_it_again() -> None:
    ctrl = BatchDvfs()
    clock = Clock(dt=1.0)
    s = ctrl.initial()
    for _ in range(3):
        d = ctrl.decide(clock.obs(s, 50))
    assert d.reason == "up"
    # the first period after the decision has no reading of its own (samples=1: the held 120 W from before)
    held = ctrl.decide(clock.obs(d.setting, 120, samples=1))
    assert held.reason == "wait"
    ctrl.decide(clock.obs(d.setting, 90))
    assert ctrl.decide(clock.obs(d.setting, 90)).reason == "hold"  # 90 is in the band: the held 120 is not counted


def test_no_reading_holds() -> None:
    ctrl = BatchDvfs()
    d = ctrl.decide(Clock().obs(ctrl.initial(), math.nan, samples=0))
    assert (d.reason, d.setting) == ("no-reading", Setting(1))


def test_registered_with_the_released_sizes_unless_the_user_gives_some() -> None:
    knobs = DeviceKnobs(LEVELS, LEVELS[-1])
    ctrl = make_controller("batchdvfs", knobs)
    assert isinstance(ctrl, BatchDvfs) and ctrl.sizes == BATCHDVFS_SIZES and ctrl.levels == LEVELS
    # sizes given are respected, the paper's included (the CLI passes none when --sizes is not given)
    assert make_controller("batchdvfs", knobs, sizes=None).sizes == BATCHDVFS_SIZES
    assert make_controller("batchdvfs", knobs, sizes=DEFAULT_BATCH_SIZES).sizes == DEFAULT_BATCH_SIZES
    assert make_controller("batchdvfs", knobs, sizes=(1, 16, 256)).sizes == (1, 16, 256)
    assert make_controller("batchdvfs", DeviceKnobs()).levels == ()


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"alpha": 1.5}, "alpha"), ({"decision_s": 0}, "decision period"), ({"initial_clock_mhz": 700}, "initial clock"),
     ({"initial": 300}, "initial batch size"), ({"sizes": (4, 2)}, "batch sizes")],
)  # fmt: skip
def test_bad_options_are_refused(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        BatchDvfs(clock_levels_mhz=LEVELS, **kw)
    assert err.value.field == field


class Decisions(LoopObserver):
    def __init__(self) -> None:
        self.rows: list[tuple[float, str, int, int | None]] = []

    def on_period(self, record: PeriodRecord) -> None:
        d = record.decision
        self.rows.append((record.observation.end, d.reason, d.setting.batch_size, d.setting.clock_mhz))


def test_in_the_loop_it_decides_at_the_first_batch_after_three_seconds_and_finds_the_band() -> None:
    # power rises with size and clock; under a 100 W cap the band [80, 100] holds sizes 60..99 at 1063 MHz
    def time_fn(n: int, mhz: int | None) -> float:
        return 0.004 + 0.0004 * n * 1531 / (mhz or 1531)

    def power_fn(n: int, mhz: int | None) -> float:
        return 40.0 + 0.6 * n * (mhz or 1531) / 1063

    dev = ScriptedDevice(time_fn, power_fn, idle_w=40.0, prep_s=0.002, clock_levels_mhz=LEVELS)
    rec = Decisions()
    ctrl = make_controller("batchdvfs", dev.knobs)
    ControlLoop(dev, ctrl, ConstantCap(CAP), Window(batches=10), [rec]).run(DynamicBatchStream(range(40_000)))
    decided = [r for r in rec.rows if r[1] != "wait"]
    times = [0.0] + [r[0] for r in decided]
    gaps = [b - a for a, b in zip(times, times[1:])]
    longest_batch = time_fn(255, 544) + 0.002
    assert decided and all(3.0 <= g < 3.0 + longest_batch for g in gaps)
    assert decided[-1][1] == "hold" and 80 <= power_fn(decided[-1][2], decided[-1][3]) <= CAP
