"""Algorithm 1 against traces worked out by hand from the paper's pseudo-code.

Positions are 1-based as in the pseudo-code; with the default set (1, 2, 4, ..., 256) N = 9 and
position p holds size 2**(p-1). Each expected row is (size run in the period, reason, min, max,
next size), derived line by line: up = line 8-9 (minBS = current, ceil), down = lines 19-20
(maxBS = current, floor), down-reset = lines 15-16 (maxBS = current, minBS = 1, floor).
"""

from __future__ import annotations

import math

import pytest

from batchsizer.core.types import Observation, Setting
from batchsizer.errors import ConfigError
from batchsizer.policies import make_controller
from batchsizer.policies.algorithm1 import Algorithm1
from batchsizer.policies.band_search import BandSearch


def obs(size: int, peak: float, cap: float, period: int = 0, samples: int = 5) -> Observation:
    return Observation(period, 0.0, 1.0, cap, peak, peak * 0.7, size * 10, 10, Setting(size), samples)


def drive(ctrl: Algorithm1, peak_of, caps: list[float]) -> list[tuple[int, str, int, int, int]]:
    """Run the controller for len(caps) periods on a plant whose peak is ``peak_of(size)``."""
    rows = []
    size = ctrl.initial().batch_size
    for i, cap in enumerate(caps):
        d = ctrl.decide(obs(size, peak_of(size), cap, i))
        rows.append((size, d.reason, d.state["min"], d.state["max"], d.setting.batch_size))
        size = d.setting.batch_size
    return rows


# Peak power by size: rises with the batch size, as in the paper's Fig. 2.
PEAK = {1: 70, 2: 80, 4: 95, 8: 115, 16: 140, 32: 170, 64: 205, 128: 235, 256: 250}


def test_fig4_climb_overshoot_back_off_settle() -> None:
    # cap 180: band [144, 180]; 32 (170 W) is in it, 64 (205 W) is over, 16 (140 W) is under.
    rows = drive(Algorithm1(), PEAK.__getitem__, [180.0] * 6)
    assert rows == [
        (1, "up", 1, 9, 16),  # min=1, ceil((1+9)/2)=5 -> 16
        (16, "up", 5, 9, 64),  # min=5, ceil((5+9)/2)=7 -> 64
        (64, "down", 5, 7, 32),  # over, 7 != min 5: max=7, floor((5+7)/2)=6 -> 32
        (32, "hold", 5, 7, 32),  # 170 in [144, 180]
        (32, "hold", 5, 7, 32),
        (32, "hold", 5, 7, 32),
    ]


def test_no_size_in_the_band_oscillates_between_neighbours() -> None:
    # cap 200: band [160, 200]; with 32 at 150 W (under) and 64 at 205 W (over) no size is in it.
    peak = {**PEAK, 32: 150.0}
    rows = drive(Algorithm1(), peak.__getitem__, [200.0] * 7)
    assert [r[0] for r in rows] == [1, 16, 64, 32, 64, 32, 64]
    assert rows[2] == (64, "down", 5, 7, 32)
    assert rows[3] == (32, "up", 6, 7, 64)  # min=6, ceil((6+7)/2)=7
    assert rows[4] == (64, "down", 6, 7, 32)  # 7 != min 6: max=7, floor(13/2)=6


def test_cap_drops_then_rises_with_mirror_reset() -> None:
    caps = [180.0] * 4 + [100.0] * 4 + [180.0] * 6
    rows = drive(Algorithm1(), PEAK.__getitem__, caps)
    assert rows[:4] == [
        (1, "up", 1, 9, 16),
        (16, "up", 5, 9, 64),
        (64, "down", 5, 7, 32),
        (32, "hold", 5, 7, 32),
    ]
    # cap 100: band [80, 100]; 4 (95 W) is in it.
    assert rows[4:8] == [
        (32, "down", 5, 6, 16),  # 6 != min 5: max=6, floor(11/2)=5 -> 16
        (16, "down-reset", 1, 5, 4),  # 5 == min 5: max=5, min=1, floor(6/2)=3 -> 4
        (4, "hold", 1, 5, 4),
        (4, "hold", 1, 5, 4),
    ]
    # cap back to 180: 4 is under the band; climb to 32 again.
    assert rows[8:] == [
        (4, "up", 3, 5, 8),  # min=3, ceil(8/2)=4 -> 8
        (8, "up", 4, 5, 16),  # min=4, ceil(9/2)=5 -> 16
        (16, "up", 5, 9, 64),  # 5 == max 5 < N: mirror reset max=9, min=5, ceil(14/2)=7 -> 64
        (64, "down", 5, 7, 32),
        (32, "hold", 5, 7, 32),
        (32, "hold", 5, 7, 32),
    ]


def test_bare_pseudo_code_gets_stuck_below_a_risen_cap() -> None:
    caps = [180.0] * 4 + [100.0] * 4 + [180.0] * 5
    rows = drive(Algorithm1(mirror_reset=False), PEAK.__getitem__, caps)
    # identical until the range ceiling is reached ...
    assert rows[:10] == drive(Algorithm1(), PEAK.__getitem__, caps)[:10]
    # ... then line 8-9 with current == maxBS == 5: min=5, ceil((5+5)/2)=5, forever
    assert rows[10:] == [(16, "at-ceiling", 5, 5, 16)] * 3


def test_no_further_reduction_at_the_first_size() -> None:
    # even size 1 (70 W) is over a 60 W cap
    rows = drive(Algorithm1(), PEAK.__getitem__, [60.0] * 3)
    assert rows == [(1, "at-bottom", 1, 1, 1)] * 3  # lines 12-16: max=1, min=1, floor(2/2)=1


def test_leaving_the_bottom_when_the_cap_rises() -> None:
    rows = drive(Algorithm1(), PEAK.__getitem__, [60.0, 180.0, 180.0, 180.0, 180.0])
    assert rows[0] == (1, "at-bottom", 1, 1, 1)
    # 1 == max 1 < N: mirror reset max=9; min=1, ceil(10/2)=5
    assert rows[1:] == [(1, "up", 1, 9, 16), (16, "up", 5, 9, 64), (64, "down", 5, 7, 32), (32, "hold", 5, 7, 32)]
    bare = drive(Algorithm1(mirror_reset=False), PEAK.__getitem__, [60.0, 180.0, 180.0])
    assert bare[1:] == [(1, "at-ceiling", 1, 1, 1)] * 2


def test_no_further_improvement_at_the_last_size_then_reset_on_violation() -> None:
    # cap 400: band [320, 400]; even 256 (250 W) is under. Climb: 1 -> 16 -> 64 -> 128 -> 256.
    caps = [400.0] * 6 + [240.0] * 3
    rows = drive(Algorithm1(), PEAK.__getitem__, caps)
    assert rows[:6] == [
        (1, "up", 1, 9, 16),
        (16, "up", 5, 9, 64),  # ceil(14/2)=7
        (64, "up", 7, 9, 128),  # ceil(16/2)=8
        (128, "up", 8, 9, 256),  # ceil(17/2)=9
        (256, "at-top", 9, 9, 256),  # line 8 still runs: min=9, ceil(18/2)=9
        (256, "at-top", 9, 9, 256),
    ]
    # cap 240: band [192, 240]; 256 (250) over, current == min 9: reset max=9, min=1, floor(10/2)=5
    assert rows[6:] == [
        (256, "down-reset", 1, 9, 16),
        (16, "up", 5, 9, 64),  # 140 < 192
        (64, "hold", 5, 9, 64),  # 205 in [192, 240]
    ]


def test_invalid_readings_hold_size_and_state() -> None:
    ctrl = Algorithm1()
    d = ctrl.decide(obs(1, 70, 180))
    assert d.setting.batch_size == 16
    before = dict(d.state)
    for bad in (obs(16, math.nan, 180), obs(16, 500, 180, samples=0), obs(16, math.inf, 180)):
        d = ctrl.decide(bad)
        assert (d.reason, d.setting.batch_size, d.state) == ("no-reading", 16, before)
    assert ctrl.decide(obs(16, 140, 180)).setting.batch_size == 64  # search resumes where it was


def test_band_edges_are_inclusive() -> None:
    ctrl = Algorithm1(sizes=(1, 2, 3))
    assert ctrl.decide(obs(1, 160.0, 200.0)).reason == "hold"  # exactly alpha*cap
    assert ctrl.decide(obs(1, 200.0, 200.0)).reason == "hold"  # exactly cap
    assert ctrl.decide(obs(1, 200.001, 200.0)).reason == "at-bottom"


def test_custom_sizes_alpha_and_initial() -> None:
    # sizes 3,5,7,11,13 (N=5), alpha 0.5, start at 7 (position 3). Peak = 10 * size.
    ctrl = Algorithm1(sizes=(3, 5, 7, 11, 13), alpha=0.5, initial=7)
    assert ctrl.initial() == Setting(7)
    rows = drive(ctrl, lambda s: 10.0 * s, [200.0, 200.0, 100.0, 100.0])
    assert rows == [
        (7, "up", 3, 5, 11),  # 70 < 0.5*200: min=3, ceil((3+5)/2)=4 -> 11
        (11, "hold", 3, 5, 11),  # 110 in [100, 200]
        (11, "down", 3, 4, 7),  # cap 100: 110 over, 4 != min 3: max=4, floor(7/2)=3 -> 7
        (7, "hold", 3, 4, 7),  # 70 in [50, 100]
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sizes": ()}, "batch sizes"),
        ({"sizes": (4, 2)}, "batch sizes"),
        ({"sizes": (1, 1, 2)}, "batch sizes"),
        ({"sizes": (0, 1)}, "batch sizes"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": -0.2}, "alpha"),
        ({"initial": 3}, "initial batch size"),
    ],
)
def test_bad_configuration_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Algorithm1(**kwargs)
    assert info.value.field == field


def test_registry_builds_algorithm1_with_options() -> None:
    ctrl = make_controller("batchsizer", sizes=(2, 4, 8), alpha=0.7, initial=4)
    assert isinstance(ctrl, Algorithm1)
    assert ctrl.initial() == Setting(4)
    assert ctrl.describe() == {"name": "batchsizer", "sizes": [2, 4, 8], "alpha": 0.7}


def test_band_search_invariant_holds_for_any_reading_sequence() -> None:
    """min <= current <= max within 1..N, whatever the readings (a cheap exhaustive sweep)."""
    import itertools

    for n in (1, 2, 3, 5, 9):
        for seq in itertools.product((0.0, 0.9, 2.0), repeat=6):
            for mirror in (True, False):
                s = BandSearch(n, alpha=0.8, mirror_reset=mirror)
                for peak in seq:
                    s.step(peak, 1.0)
                    assert 1 <= s.min_pos <= s.current <= s.max_pos <= n
