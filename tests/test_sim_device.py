"""SimDevice through the real control loop: spikes, knobs, hardware power limit, determinism."""

from __future__ import annotations

import pytest

from batchsizer.core.batching import Batch, DynamicBatchStream
from batchsizer.core.caps import ConstantCap
from batchsizer.core.loop import ControlLoop, LoopObserver, Window
from batchsizer.errors import ConfigError, UnsupportedError
from batchsizer.policies import make_controller
from batchsizer.sim import GPU_NAMES, make_sim_device

P40_LEVELS = (544, 632, 734, 835, 949, 1063, 1189, 1303, 1430, 1531)


def _run(device, size: int, n: int) -> None:
    for i in range(n):
        device.run_batch(Batch(i * size, list(range(size))))


class Periods(LoopObserver):
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def on_period(self, record) -> None:
        o = record.observation
        self.rows.append((o.setting.batch_size, o.setting.clock_mhz, o.peak_w, o.end))


def test_knobs_levels_and_defaults():
    d = make_sim_device("p40", "res101", "caltech")
    assert d.knobs.clock_levels_mhz == P40_LEVELS and d.knobs.default_clock_mhz == 1531
    for g in GPU_NAMES:
        k = make_sim_device(g, "res50", "imagenet").knobs
        assert len(k.clock_levels_mhz) == 10 and k.default_clock_mhz == k.clock_levels_mhz[-1]
    with pytest.raises(UnsupportedError, match="544"):
        d.set_clock(600)
    with pytest.raises(ConfigError, match="125 to 250"):
        d.set_power_limit(300)


def test_power_spikes_between_idle_and_compute():
    d = make_sim_device("p40", "incv1", "caltech", seed=1)
    _run(d, 128, 20)
    tw = d.reference_meter.window(0.0, d.clock.now())
    assert 170 < tw.peak_w <= 250
    assert min(s.watts for s in d.reference_meter.samples(0.0, d.clock.now())) < 52  # idles near 48 W
    assert d.meter.window(0.0, d.clock.now()).peak_w == pytest.approx(tw.peak_w, rel=0.06)


def test_lower_clock_slower_and_lower_power():
    out = {}
    for mhz in (544, 1531):
        d = make_sim_device("p40", "res50", "caltech", seed=2)
        d.set_clock(mhz)
        _run(d, 16, 30)
        out[mhz] = (d.clock.now(), d.reference_meter.window(0.0, d.clock.now()).peak_w)
    assert out[544][0] > 1.3 * out[1531][0] and out[544][1] < out[1531][1] - 40


def test_a_raised_clock_lock_takes_effect_at_once():
    """Going back up to a higher locked clock runs the next batch at it, as on a real card; a
    power limit in force still holds the clock down."""

    def batch_time(d) -> float:
        t0 = d.clock.now()
        _run(d, 16, 1)
        return d.clock.now() - t0

    fresh = make_sim_device("p40", "res50", "caltech", seed=2, time_cv=0.0, power_cv=0.0, host_cv=0.0, thermal=False)
    _run(fresh, 16, 3)
    top = batch_time(fresh)
    d = make_sim_device("p40", "res50", "caltech", seed=2, time_cv=0.0, power_cv=0.0, host_cv=0.0, thermal=False)
    d.set_clock(544)
    _run(d, 16, 3)
    low = batch_time(d)
    d.set_clock(1531)
    assert low > 1.3 * top
    assert batch_time(d) == pytest.approx(top, rel=0.02)

    limited = make_sim_device("p40", "res152", "caltech", seed=4, host_scale=0.2)
    limited.set_power_limit(150)
    _run(limited, 64, 60)  # long enough for the limiter to pull the clock down
    assert limited.throttle_mhz < 1531
    held = limited.throttle_mhz
    limited.set_clock(1531)  # a lock at or above where the limiter holds the clock changes nothing
    assert limited.throttle_mhz == held
    limited.set_clock(1430)
    assert limited.throttle_mhz == min(held, 1430)


def _sliding_means(device, start: float, end: float, width: float = 1.0) -> list[float]:
    tr = device.trace
    out, t = [], start
    while t + width <= end:
        out.append(tr.mean(t, t + width))
        t += 0.25
    return out


def test_hardware_power_limit_holds_the_one_second_average():
    free = make_sim_device("p40", "res152", "caltech", seed=4, host_scale=0.2)
    _run(free, 64, 150)
    d = make_sim_device("p40", "res152", "caltech", seed=4, host_scale=0.2)
    d.set_power_limit(150)
    _run(d, 64, 150)
    means = _sliding_means(d, 10.0, d.clock.now())
    assert len(means) > 20
    assert all(abs(m - 150) < 10 for m in means), (min(means), max(means))
    assert sum(means) / len(means) == pytest.approx(150, abs=4)
    assert d.throttle_mhz < 1531 and d.clock.now() > free.clock.now() * 1.1  # slowed down to hold it
    d.set_power_limit(None)
    assert d.power_limit_w == 250


def test_same_seed_same_run_other_seed_differs():
    def job(seed: int) -> list[tuple]:
        d = make_sim_device("p40", "res101", "caltech", seed=seed)
        obs = Periods()
        ControlLoop(d, make_controller("batchsizer", d.knobs), ConstantCap(200), Window(10), [obs]).run(
            DynamicBatchStream(range(3000))
        )
        return obs.rows

    a, b, c = job(5), job(5), job(6)
    assert a == b and a != c


def test_default_job_climbs_backs_off_and_settles():
    d = make_sim_device("p40", "res101", "caltech", seed=0)
    obs = Periods()
    s = ControlLoop(d, make_controller("batchsizer", d.knobs), ConstantCap(200), Window(10), [obs]).run(
        DynamicBatchStream(range(10_000))
    )
    sizes = [r[0] for r in obs.rows]
    top = max(sizes)
    assert sizes[0] == 1 and top >= 64  # climbs
    assert sizes.index(top) < len(sizes) - 1 and sizes[-1] < top  # backs off
    tail = sizes[len(sizes) // 2 :]
    assert max(set(tail), key=tail.count) == sizes[-1] and tail.count(sizes[-1]) > 0.8 * len(tail)  # settles
    assert s.true_power is not None and s.true_power["energy_j"] > 0


def test_dvfs_controller_moves_the_clock():
    d = make_sim_device("p40", "res101", "caltech")
    obs = Periods()
    ControlLoop(d, make_controller("dvfs", d.knobs), ConstantCap(150), Window(10), [obs]).run(
        DynamicBatchStream(range(2000))
    )
    clocks = {r[1] for r in obs.rows}
    assert len(clocks) >= 3 and {r[0] for r in obs.rows} == {16}


def test_thermal_drift_raises_power_slowly_and_variation_is_seeded():
    d = make_sim_device("p40", "res50", "caltech", seed=9, power_cv=0.0, time_cv=0.0, host_cv=0.0)
    _run(d, 64, 5)
    early = d.reference_meter.window(0.0, d.clock.now()).peak_w
    _run(d, 64, 400)  # minutes of virtual time
    t = d.clock.now()
    _run(d, 64, 5)
    late = d.reference_meter.window(t, d.clock.now()).peak_w
    assert 1.01 < late / early < 1.08  # a few percent warmer, not a jump
    cold = make_sim_device("p40", "res50", "caltech", seed=9, thermal=False)
    warm = make_sim_device("p40", "res50", "caltech", seed=9)
    _run(cold, 8, 20), _run(warm, 8, 20)
    lat = [round(s.t, 9) for s in warm.reference_meter.samples(0.0, warm.clock.now())]
    assert len(set(lat)) == len(lat) and cold.clock.now() == pytest.approx(warm.clock.now())
    other = make_sim_device("p40", "res50", "caltech", seed=10)
    _run(other, 8, 20)
    assert other.clock.now() != warm.clock.now()  # per-batch variation depends on the seed
