"""The static and AIMD controllers, and the controller registry."""

from __future__ import annotations

import math

import pytest

from batchsizer.core.types import Observation, Setting
from batchsizer.errors import ConfigError
from batchsizer.policies import CONTROLLERS, Controller, Decision, DeviceKnobs, make_controller, register
from batchsizer.policies.aimd import Aimd
from batchsizer.policies.static import Static


def obs(size: int, peak: float, cap: float = 100.0, samples: int = 3) -> Observation:
    return Observation(0, 0.0, 1.0, cap, peak, peak, size, 1, Setting(size), samples)


def test_static_never_moves() -> None:
    s = Static(8, clock_mhz=1303)
    assert s.initial() == Setting(8, 1303)
    for peak in (10, 1000, math.nan):
        assert s.decide(obs(8, peak)).setting == Setting(8, 1303)
    assert s.describe() == {"name": "static", "batch_size": 8, "clock_mhz": 1303}
    with pytest.raises(ConfigError, match="batch_size"):
        Static(0)


def test_aimd_hand_trace() -> None:
    a = Aimd(initial=1, step=4, decrease=0.1, max_batch_size=16)
    sizes = []
    size = a.initial().batch_size
    for peak in (50, 50, 50, 50, 50, 150, 150, 50, 150, 150, 150, 150, 150):
        size = a.decide(obs(size, peak)).setting.batch_size
        sizes.append(size)
    # +4 up to the max 16, then floor(16*0.9)=14, floor(14*0.9)=12, +4=16, 14, 12, 10, 9, 8
    assert sizes == [5, 9, 13, 16, 16, 14, 12, 16, 14, 12, 10, 9, 8]
    a = Aimd(initial=1)
    assert a.decide(obs(1, 500)).setting.batch_size == 1  # never below 1
    assert a.decide(obs(1, math.nan)).reason == "no-reading"


def test_aimd_keeps_the_size_list() -> None:
    # the target steps +4 as without a list; the batch run is the largest listed size at or below it
    a = Aimd(sizes=(1, 16, 256))
    size = a.initial().batch_size
    assert size == 1
    seen = []
    for peak in (50, 50, 50, 50, 50, 150, 150):
        size = a.decide(obs(size, peak)).setting.batch_size
        seen.append(size)
    # targets 5, 9, 13, 17, 21 -> 1, 1, 1, 16, 16; over: floor(16*0.9)=14 -> 1, then floor(1*0.9) -> 1
    assert seen == [1, 1, 1, 16, 16, 1, 1]
    assert all(s in (1, 16, 256) for s in seen)
    assert a.describe()["sizes"] == [1, 16, 256]
    assert make_controller("aimd", sizes=(4, 8, 32)).initial().batch_size == 4
    assert make_controller("aimd", sizes=(4, 8, 32), initial=8).initial().batch_size == 8
    with pytest.raises(ConfigError, match="initial batch size"):
        make_controller("aimd", sizes=(4, 8, 32), initial=5)


def test_aimd_bad_options() -> None:
    with pytest.raises(ConfigError, match="aimd decrease"):
        Aimd(decrease=1.0)
    with pytest.raises(ConfigError, match="aimd step"):
        Aimd(step=0)


def test_registry_names_and_defaults() -> None:
    assert {"batchsizer", "dvfs", "static", "aimd"} <= set(CONTROLLERS)
    assert make_controller("static").initial() == Setting(16)
    assert make_controller("static", batch_size=4, clock_mhz=900).initial() == Setting(4, 900)
    assert make_controller("aimd", sizes=(1, 2, 64)).max_batch_size == 64  # type: ignore[attr-defined]
    assert make_controller("batchsizer").initial() == Setting(1)
    assert make_controller("dvfs", DeviceKnobs((500, 900), 900)).initial() == Setting(16, 500)


def test_unknown_controller_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        make_controller("pid")
    assert info.value.field == "controller"
    assert "unknown controller 'pid'" in info.value.problem
    for name in ("aimd", "batchsizer", "dvfs", "static"):
        assert name in info.value.problem


def test_register_a_new_controller() -> None:
    class Half(Controller):
        name = "half"

        def initial(self) -> Setting:
            return Setting(2)

        def decide(self, o: Observation) -> Decision:
            return Decision(Setting(max(1, o.setting.batch_size // 2)), "halve")

    register("half-test", lambda knobs, o: Half())
    try:
        c = make_controller("half-test")
        assert c.decide(obs(8, 1)).setting == Setting(4)
    finally:
        CONTROLLERS.pop("half-test")
