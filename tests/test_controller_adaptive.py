"""The adaptive controller on hand-made observations: the safe bound, exploration, the user's sizes,
power that falls with the batch size, caps that move or cannot be met, a load change, the frontier."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest

from batchsizer.core.types import DeviceKnobs, Observation, Setting
from batchsizer.errors import ConfigError
from batchsizer.policies import make_controller
from batchsizer.policies.adaptive import Adaptive, all_sizes
from batchsizer.policies.safe_model import SafeModel


def peak_concave(b: int, clock: float = 1500.0) -> float:
    """Rises with the batch size and bends over (the paper's Fig. 1); dynamic part ~ clock^2."""
    return 50.0 + 180.0 * b / (b + 40.0) * (clock / 1500.0) ** 2


def batch_time(b: int, clock: float = 1500.0) -> float:
    """A fixed cost per batch and a cost per image: speed saturates with the size."""
    return (0.02 + 0.004 * b) * 1500.0 / clock


def obs(setting: Setting, cap: float, peak_of: Callable = peak_concave, time_of: Callable = batch_time,
        period: int = 0, clean: bool = True) -> Observation:  # fmt: skip
    b = setting.batch_size
    clock = float(setting.clock_mhz) if setting.clock_mhz else 1500.0
    t = 10 * time_of(b, clock)
    peak = peak_of(b, clock)
    return Observation(
        period, 0.0, t, cap, peak, 0.5 * (50 + peak), 10 * b, 10, setting, 20,
        update_period_s=0.02, period_cap_w=cap, clean_peak_w=peak if clean else math.nan,
    )  # fmt: skip


def drive(ctrl: Adaptive, caps: list[float], peak_of: Callable = peak_concave, time_of: Callable = batch_time):
    setting = ctrl.initial()
    seen = [setting]
    for i, cap in enumerate(caps):
        setting = ctrl.decide(obs(setting, cap, peak_of, time_of, i)).setting
        seen.append(setting)
    return seen


def best_static(cap: float, sizes, peak_of: Callable = peak_concave, time_of: Callable = batch_time) -> int:
    ok = [b for b in sizes if peak_of(b, 1500.0) <= cap]
    return max(ok, key=lambda b: b / time_of(b, 1500.0))


def test_reaches_the_best_size_without_going_over() -> None:
    path = drive(Adaptive(), [200.0] * 40)
    best = best_static(200.0, all_sizes())
    b = path[-1].batch_size
    # within the saturation gate (gain_eps = 1%) of the best static speed
    assert b / batch_time(b) >= (1 - 0.015) * best / batch_time(best)
    # the climb overshoots at most once (a probe the loop stops after one batch), then stays under
    over = [s for s in path if peak_concave(s.batch_size) > 200.0]
    assert len(over) <= 1 and peak_concave(path[-1].batch_size) <= 200.0


def test_the_users_size_list_is_respected_even_when_coarse() -> None:
    path = drive(Adaptive(sizes=(1, 16, 256)), [200.0] * 12)
    assert {s.batch_size for s in path} <= {1, 16, 256}
    assert path[-1].batch_size == 16  # 256 draws 206 W: over; 16 fits (a coarse list is tried, not stuck at 1)


def test_power_falling_with_batch_size() -> None:
    def falling(b: int, clock: float = 1500.0) -> float:
        return 260.0 - 20.0 * math.log2(b)

    path = drive(Adaptive(sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256)), [150.0] * 20, peak_of=falling)
    # only 64 and above are under 150 W; the lowest-power setting is the largest size
    assert path[-1].batch_size >= 64
    assert falling(path[-1].batch_size) <= 150.0


def test_cap_drop_is_met_within_one_period_and_a_rise_is_used() -> None:
    ctrl = Adaptive()
    caps = [220.0] * 30 + [120.0] * 15 + [220.0] * 30
    path = drive(ctrl, caps)
    after_drop = path[31]  # decided on the first period whose cap is 120 W
    assert peak_concave(after_drop.batch_size) <= 120.0
    assert path[-1].batch_size > 2 * path[44].batch_size


def test_no_setting_meets_the_cap_goes_to_the_lowest_power_setting() -> None:
    knobs = DeviceKnobs(clock_levels_mhz=(600, 1000, 1500), default_clock_mhz=1500)
    ctrl = Adaptive(knobs=knobs)
    path = drive(ctrl, [40.0] * 6)
    assert path[-1] == Setting(1, 600)
    assert path[1] == Setting(1, 600)  # within one period of seeing the smallest size over the cap


def test_a_mixed_reading_over_the_cap_rules_the_setting_out() -> None:
    """No clean reading, but the period's readings over the cap: this setting is over it, so the
    controller does not return to it at that cap."""
    ctrl = Adaptive(sizes=(1, 64, 128))
    s = ctrl.initial()
    s = ctrl.decide(obs(s, 200.0)).setting
    seen = []
    for i in range(8):
        o = obs(s, 180.0, period=i + 1, clean=s.batch_size == 1)
        if s.batch_size != 1:
            o = Observation(**{**{f: getattr(o, f) for f in o.__slots__}, "peak_w": 250.0})  # type: ignore[attr-defined]
        s = ctrl.decide(o).setting
        seen.append(s.batch_size)
    assert seen.count(64) + seen.count(128) <= 2


def test_bound_grows_from_measured_settings_and_is_at_least_the_readings() -> None:
    m = SafeModel(all_sizes(64), (1.0,), None)
    m.add(8, 1.0, 100.0, 0.05, 80.0)
    sizes = np.array([4.0, 8.0, 16.0])
    b = m.bound_w(np.ones(3), sizes)
    assert b[1] == pytest.approx(100.0) and b[0] == pytest.approx(100.0)  # no fall assumed
    assert b[2] == pytest.approx(200.0)  # at most in proportion to the size before a slope is known
    m.add(16, 1.0, 110.0, 0.09, 85.0)
    # a measured slope tightens it as far again as the sizes it was measured over (16 -> 32) ...
    assert m.bound_w(np.ones(1), np.array([32.0]))[0] < 200.0
    # ... and says nothing further up: there power may climb in proportion again
    assert m.bound_w(np.ones(1), np.array([256.0]))[0] >= 110.0 * 2 ** 0.1 * 8 - 1e-6


def test_a_flat_start_does_not_bound_large_sizes() -> None:
    """Idle power dominating small sizes hides how fast the dynamic part grows (an S-shaped curve, as
    in the measured V100 shufflenet table: 41 W at 8, 49 W at 25, 178 W at 256): the flat slope seen at
    small sizes must not make a size 100 times larger look safe under a 133 W cap."""
    m = SafeModel(all_sizes(4096), (1.0,), None)
    for b, w in ((8, 41.0), (25, 48.7)):
        m.add(b, 1.0, w, 0.04 * b / 8, w - 1)
    near, far = m.bound_w(np.ones(2), np.array([60.0, 4096.0]))
    assert near < 2 * 48.7  # within reach of the slope: tighter than proportional
    assert far > 133.0 * 5  # far beyond it: proportional growth, nowhere near safe


def test_adaptive_predicts_settings_it_has_not_run_and_its_measured_frontier_does_not() -> None:
    """The real controller after a few periods at small sizes under a low cap: its measured frontier
    stops at what it ran; its predicted one reaches higher caps with larger, faster settings, each
    predicted power (margin included) under its cap."""
    ctrl = Adaptive(initial=4)
    drive(ctrl, [90.0] * 12)
    caps = [100.0, 150.0, 200.0, 300.0]
    measured = {p.cap_w: p.throughput for p in ctrl.frontier(caps)}
    predicted = ctrl.frontier(caps, predicted=True)
    assert predicted and all(p.power_w <= p.cap_w for p in predicted)
    run = {b for b, _ in ctrl.model.stats}
    assert any(p.setting.batch_size not in run for p in predicted)
    assert max(p.throughput for p in predicted) > max(measured.values(), default=0.0)


def test_a_memory_limit_holds_for_a_coarse_size_list_and_for_the_predicted_frontier() -> None:
    """Batches over 20 do not fit in memory: with sizes 1, 16, 256 the one-batch step to the next size
    up (256) must not be tried, and the predicted frontier offers no size the memory does not hold."""
    from dataclasses import replace

    ctrl = Adaptive(sizes=(1, 16, 256))
    s = ctrl.initial()
    asked = []
    for i in range(20):
        s = ctrl.decide(replace(obs(Setting(min(s.batch_size, 20), s.clock_mhz), 400.0, period=i), size_limit=20)).setting
        asked.append(s.batch_size)
    assert max(asked) <= 16 and asked[-1] == 16, asked
    predicted = ctrl.frontier([150.0, 230.0, 400.0], predicted=True)
    assert predicted and all(p.setting.batch_size <= 20 for p in predicted)


def test_frontier_and_options() -> None:
    ctrl = Adaptive()
    drive(ctrl, [200.0] * 30)
    front = ctrl.frontier([120.0, 160.0, 200.0])
    assert [p.cap_w for p in front] == [120.0, 160.0, 200.0]
    assert front[0].throughput <= front[1].throughput <= front[2].throughput
    assert all(p.power_w <= p.cap_w for p in front)
    assert make_controller("adaptive").describe()["sizes"] == "1..256"
    with pytest.raises(ConfigError):
        Adaptive(initial=3000)
    with pytest.raises(ConfigError):
        Adaptive(gain_eps=2.0)


def test_the_saturation_gate_stops_probes_that_promise_less_than_gain_eps() -> None:
    """Speed b / (b + 0.25): past a few dozen the larger sizes are each less than 1% faster than the
    one before. By default the controller stops probing once nothing promises 1% (the gate); with
    ``gain_eps`` 0 it goes on probing for those crumbs."""

    def saturating(b: int, clock: float = 1500.0) -> float:
        return 0.004 * (b + 0.25)

    def probes_after_settling(ctrl: Adaptive, after: int = 6) -> tuple[list[int], int]:
        setting, probes = ctrl.initial(), []
        for i in range(30):
            d = ctrl.decide(obs(setting, 200.0, time_of=saturating, period=i))
            if i >= after and d.reason.startswith(("explore", "expand")):
                probes.append(d.setting.batch_size)
            setting = d.setting
        return probes, setting.batch_size

    probes, settled = probes_after_settling(Adaptive())
    assert probes == [] and peak_concave(settled) <= 200.0
    crumbs, _ = probes_after_settling(Adaptive(gain_eps=0.0))
    assert len(crumbs) >= 5
    # the default stopped where the next size probed without the gate promises less than 1% more
    nxt, _ = probes_after_settling(Adaptive(gain_eps=0.0), after=0)
    first = next(b for b in nxt if b > settled)
    assert first / saturating(first) < 1.01 * settled / saturating(settled)


def test_a_memory_limit_bounds_the_sizes_asked_but_a_smaller_batch_alone_does_not() -> None:
    """The loop found batches over 20 do not fit in memory: no more asking for them. A batch smaller
    than asked for another reason (a request queue with less waiting) is no such limit."""
    ctrl = Adaptive()
    s = ctrl.initial()
    asked = []
    for i in range(40):
        o = obs(Setting(min(s.batch_size, 20), s.clock_mhz), 1000.0, period=i)
        s = ctrl.decide(Observation(**{**{f: getattr(o, f) for f in Observation.__slots__}, "size_limit": 20})).setting  # type: ignore[attr-defined]
        asked.append(s.batch_size)
    assert all(b <= 20 for b in asked[-30:])
    free = Adaptive()
    s = free.initial()
    for i in range(40):
        s = free.decide(obs(Setting(min(s.batch_size, 20), s.clock_mhz), 1000.0, period=i)).setting
    assert s.batch_size > 20


def test_lower_clock_explored_when_a_tight_cap_makes_it_pay() -> None:
    """At 1500 MHz only small batches fit a 100 W cap; at a lower clock a larger batch fits and is faster."""
    knobs = DeviceKnobs(clock_levels_mhz=(600, 900, 1200, 1500), default_clock_mhz=1500)

    def host_bound(b: int, clock: float = 1500.0) -> float:  # mostly host time: the clock costs little
        return 0.03 + 0.002 * b + 0.0005 * b * 1500.0 / clock

    path = drive(Adaptive(knobs=knobs), [100.0] * 60, time_of=host_bound)
    final = path[-1]
    assert final.clock_mhz is not None and final.clock_mhz < 1500
    assert peak_concave(final.batch_size, final.clock_mhz) <= 100.0
    top_only = best_static(100.0, all_sizes(), time_of=host_bound)
    assert final.batch_size / host_bound(final.batch_size, final.clock_mhz) > top_only / host_bound(top_only)


def test_a_load_change_is_relearned() -> None:
    ctrl = Adaptive()
    setting = ctrl.initial()
    for i in range(30):
        setting = ctrl.decide(obs(setting, 200.0, period=i)).setting
    before = setting.batch_size

    def heavier(b: int, clock: float = 1500.0) -> float:
        return 50.0 + 260.0 * b / (b + 40.0)

    def slower(b: int, clock: float = 1500.0) -> float:
        return 1.5 * batch_time(b, clock)

    for i in range(30, 60):
        setting = ctrl.decide(obs(setting, 200.0, heavier, slower, period=i)).setting
    assert ctrl.changes >= 1
    assert heavier(setting.batch_size) <= 200.0 and setting.batch_size < before


def test_a_mixed_reading_after_a_period_over_the_cap_proves_nothing() -> None:
    """Backing off from a setting over the cap, the next period's readings still average it (a 1 s
    sensor): over the cap, they say nothing of the new setting, which stays a candidate."""
    ctrl = Adaptive(sizes=(1, 64, 128))
    s = ctrl.decide(obs(ctrl.initial(), 300.0)).setting  # climbs
    over = Observation(**{**{f: getattr(obs(Setting(128), 180.0), f) for f in Observation.__slots__}})  # type: ignore[attr-defined]
    ctrl.decide(over)  # 128 reads over the 180 W cap: back off
    mixed = obs(Setting(64), 180.0, clean=False)
    mixed = Observation(**{**{f: getattr(mixed, f) for f in Observation.__slots__}, "peak_w": 200.0})  # type: ignore[attr-defined]
    ctrl.decide(mixed)
    assert ctrl.model.stats.get((64, 1.0)) is None or ctrl.model.stats[(64, 1.0)].at_least_w == 0.0
    assert s is not None


def test_a_dip_below_the_cap_is_found_when_every_size_tried_is_over_it() -> None:
    """Power falls from batch 1 to a dip and rises again (well over the cap at 256): starting over the
    cap, the controller searches for the bottom of the dip rather than stopping at the lowest reading
    so far, and ends under the cap."""

    def dip(b: int, clock: float = 1500.0) -> float:
        return 200.0 - 90.0 * math.exp(-((math.log2(b) - 5) ** 2) / 3) + 0.15 * b

    path = drive(Adaptive(), [150.0] * 40, peak_of=dip)
    assert dip(path[-1].batch_size) <= 150.0
    assert sum(dip(s.batch_size) > 150.0 for s in path[10:]) == 0


def test_a_higher_power_limit_is_tried_when_the_lowest_one_is_all_that_was_measured() -> None:
    """Over the cap at the default (highest) limit, the controller drops to the lowest limit; where no
    batch size is faster per item, it must then try a higher limit (safe by the bound), not stay at
    the lowest because nothing measured yet says a higher limit is faster (the A40 BERT table)."""
    limits = (100.0, 150.0, 200.0, 250.0, 300.0)
    ctrl = Adaptive(sizes=(8, 16, 32), knobs=DeviceKnobs(power_limits_w=limits, default_power_limit_w=300.0))

    def power(b: int, limit: float) -> float:
        return min(limit, 262.0) - 2 + 0.05 * b

    def time_of(b: int, limit: float) -> float:  # no size is faster per item (as BERT on the A40)
        return 0.01 * b * 262.0 / min(limit, 262.0)

    setting = ctrl.initial()
    for i in range(30):
        limit = setting.power_limit_w or 300.0
        t, p = 10 * time_of(setting.batch_size, limit), power(setting.batch_size, limit)
        # a 1 s averaging sensor: the first period gives no reading of its setting alone
        o = Observation(i, 0.0, t, 201.5, p, p - 1, 10 * setting.batch_size, 10, setting, 20, update_period_s=0.02,
                        period_cap_w=201.5, clean_peak_w=p if i else math.nan)  # fmt: skip
        setting = ctrl.decide(o).setting
    assert setting.power_limit_w == 200.0


def test_an_extension_a_measurement_contradicts_bounds_nothing() -> None:
    """Readings at 8, 15 and 46 under the highest power limit grow slowly; 288 one limit lower reads
    192 W, far above what their slope allows there. Their extension is then no bound: 287 at that limit
    must not look safe under a 170.8 W cap (the A40 shufflenet table, where it walked down size by size,
    over the cap at every step)."""
    m = SafeModel(all_sizes(1024), (275.0, 300.0), "limit")
    for b, w in ((8, 89.3), (15, 95.6), (46, 113.0)):
        m.add(b, 300.0, w, 0.04 * b / 8, w - 1)
    m.add(288, 275.0, 192.0, 0.06, 191.0)
    assert m.bound_w(np.array([275.0]), np.array([287.0]))[0] >= 192.0


def _memory_bound_time(b: int, clock: float = 1500.0) -> float:
    """Time that a lower clock stretches only a little (a memory-bound model)."""
    return (0.02 + 0.004 * b) * (1500.0 / clock) ** 0.3


def _serve(ctrl: Adaptive, cap: float, periods: int, **told) -> list[Setting]:
    """Drive ``ctrl`` as a server would: every observation also tells the source's latency bound."""
    from dataclasses import replace

    setting, seen = ctrl.initial(), []
    for i in range(periods):
        o = replace(obs(setting, cap, peak_concave, _memory_bound_time, i), **told)
        setting = ctrl.decide(o).setting
        seen.append(setting)
    return seen


def test_a_servers_batch_time_bound_keeps_it_off_slow_settings() -> None:
    """Unbounded, the fastest setting under 120 W is a large batch at 1000 MHz (over a second a batch);
    told a batch may take 0.2 s, the controller ends on a setting that meets it and does not return
    to one it measured slower than that (it could only have run at the smallest size)."""
    knobs = DeviceKnobs(clock_levels_mhz=(500, 1000, 1500), default_clock_mhz=1500)

    def slow(s: Setting) -> bool:
        return _memory_bound_time(s.batch_size, float(s.clock_mhz or 1500)) > 0.2 and s.batch_size > 1

    free = _serve(Adaptive(knobs=knobs), 120.0, 60)
    assert slow(free[-1])  # the bound changes the answer here
    bounded = _serve(Adaptive(knobs=knobs), 120.0, 60, batch_time_limit_s=0.2)
    assert not slow(bounded[-1]) and peak_concave(bounded[-1].batch_size, bounded[-1].clock_mhz) <= 120.0
    tried_slow = [s for s in bounded if slow(s)]
    assert len(tried_slow) == len(set(tried_slow))  # a setting measured too slow is not asked for again


def test_the_largest_size_a_servers_latency_limit_lets_run_is_not_exceeded() -> None:
    """A server that cut batches to 8 at the clock that ran: the controller asks for no more than 8
    there (a size that never runs is never measured, and asking for it again and again stalls it)."""
    sizes = _serve(Adaptive(), 300.0, 30, batch_time_limit_s=math.inf, latency_size_limit=8)
    assert max(s.batch_size for s in sizes) == 8
    assert max(s.batch_size for s in _serve(Adaptive(), 300.0, 30)) > 8


def test_with_nothing_under_the_cap_the_fallback_keeps_off_settings_that_cannot_run() -> None:
    """Cap out of reach, batches over 0.05 s cut by the server (or sizes over 4 by the memory): the
    lowest-power fallback must not walk through the settings it just ruled out (each one unmeasured,
    so each once looked like the lowest), but go to the bottom setting and stay."""
    knobs = DeviceKnobs(clock_levels_mhz=(500, 1000, 1500), default_clock_mhz=1500)

    def ok(s: Setting) -> bool:
        return s.batch_size == 1 or _memory_bound_time(s.batch_size, float(s.clock_mhz or 1500)) <= 0.05

    seen = _serve(Adaptive(sizes=range(1, 33), knobs=knobs), 40.0, 25, batch_time_limit_s=0.05)
    assert all(ok(s) for s in seen[1:]), [(s.batch_size, s.clock_mhz) for s in seen if not ok(s)]
    assert seen[-1].batch_size == 1
    from dataclasses import replace

    ctrl = Adaptive(sizes=range(1, 33), knobs=knobs)
    setting = ctrl.initial()
    tried = []
    for i in range(25):
        setting = ctrl.decide(replace(obs(setting, 40.0, peak_concave, _memory_bound_time, i), size_limit=4)).setting
        tried.append(setting.batch_size)
    assert max(tried[1:]) <= 4, tried


def test_the_point_prediction_past_the_measured_sizes_is_linear_in_log_size() -> None:
    """Between measured sizes power is interpolated linearly in log size; past the largest it carries
    on along the line through the largest size and the largest one a distinguishable step (1.25x) below
    it: measured at 1, 2, 8 and 9 (9 and 8 are too close to make a slope), batch 256 is predicted on
    the line through 2 and 9; time per batch linear in the size."""
    m = SafeModel(all_sizes(), (1.0,), None)
    for b, w in ((1, 60.0), (2, 80.0), (8, 100.0), (9, 101.0)):
        m.add(b, 1.0, w, 0.01 + 0.002 * b, w - 5)
    power, time = m.predict(1.0)
    sizes = list(m.sizes)
    slope = (101.0 - 80.0) / math.log(9 / 2)
    assert power[sizes.index(256)] == pytest.approx(101.0 + slope * math.log(256 / 9), rel=1e-6)
    assert time[sizes.index(256)] == pytest.approx(0.01 + 0.002 * 256, rel=1e-6)
    assert power[sizes.index(4)] == pytest.approx(80.0 + 20.0 * math.log(2) / math.log(4), rel=1e-6)


def test_under_a_rolling_mean_rule_a_probe_need_not_outlast_the_rule_window() -> None:
    # the same observations under peak and under avg:1: the periods asked for are as long
    asked = {}
    for window in (0.0, 1.0):
        ctrl = Adaptive(knobs=DeviceKnobs())
        o = dataclasses.replace(obs(Setting(1), 200.0), cap_rule_window_s=window)
        asked[window] = ctrl.decide(o).min_period_s
    assert asked[1.0] == asked[0.0] < 1.0


@pytest.mark.parametrize(("model", "dataset", "cap"), [("mobv1", "imagenet", 61.4), ("res50", "caltech", 150.0)])
def test_under_avg_1_on_the_simulator_it_stays_under_the_cap(model: str, dataset: str, cap: float) -> None:
    """Batches longer than the rule's window (MobileNet at batch 256 on the P40 at 61.4 W: 1.7 s) are
    judged by their peak, shorter ones by their mean: either way the rolling mean stays under the cap."""
    from batchsizer.core.batching import DynamicBatchStream
    from batchsizer.core.cap_rule import CapRule
    from batchsizer.core.caps import ConstantCap
    from batchsizer.core.loop import ControlLoop, Window
    from batchsizer.sim import make_sim_device

    device = make_sim_device("p40", model, dataset, seed=0)
    summary = ControlLoop(device, Adaptive(knobs=device.knobs), ConstantCap(cap), Window(batches=10),
                          cap_rule=CapRule(1.0)).run(DynamicBatchStream(range(5000)))  # fmt: skip
    assert summary.over_cap_fraction < 0.005
    assert summary.throughput > 0


def test_the_bound_over_the_grid_is_the_bound_at_each_of_its_settings() -> None:
    # bound_grid works the rises in size and in level out once each; the values are bound_w's, exactly
    rng = np.random.default_rng(3)
    sizes, levels = all_sizes(), (544.0, 900.0, 1200.0, 1531.0)
    m = SafeModel(sizes, levels, "clock")
    for _ in range(12):
        b, k = int(rng.integers(1, 257)), float(rng.choice(levels))
        m.add(b, k, float(peak_concave(b, k) + rng.normal(0, 2)), batch_time(b, k), 0.5 * (50 + peak_concave(b, k)))
    grid_b, grid_k = np.meshgrid(np.asarray(sizes, float), np.asarray(levels[::-1], float))
    assert np.array_equal(m.bound_grid(levels[::-1], sizes).ravel(), m.bound_w(grid_k.ravel(), grid_b.ravel()))
    assert np.isinf(SafeModel(sizes, levels, "clock").bound_grid(levels, sizes)).all()


def test_a_level_read_only_at_the_floor_size_is_carried_by_shifting_not_by_its_own_prior() -> None:
    """Batch 1 at the lowest clock reads the least of all (the idle floor is taken from it): a clock
    read at batch 1 only gets the lowest clock's curve carried up and shifted through its reading, not
    its own prior (power in proportion to the size, idle included: 62.4 W at batch 1, 8 kW at 128)."""
    sizes, levels = all_sizes(), (210.0, 343.0, 1410.0)
    m = SafeModel(sizes, levels, "clock")
    for b, p in ((1, 60.0), (2, 61.0), (8, 66.0), (64, 73.0), (256, 76.0)):
        m.add(b, 210.0, p, 0.01 * b, p)
    m.add(1, 343.0, 62.4, 0.007, 62.4)
    power, _ = m.predict_level(343.0)
    ref, _ = m.predict_level(210.0)
    assert power[0] == pytest.approx(62.4)
    assert 62.4 < power[127] < 200.0  # 128 at 343 MHz: the 210 MHz rise carried up by the clock's prior
    assert np.all(np.diff(power) >= -1e-9) and power[255] - power[0] > ref[255] - ref[0]
