"""The exact oracle: known answers on scripted devices, exactness on the simulator, and no compliant
controller above it by more than the noise."""

from __future__ import annotations

import math

import pytest

from batchsizer.core.types import Setting
from batchsizer.errors import ConfigError
from batchsizer.io.shared_data import DataUnavailable
from batchsizer.policies.static import Static
from batchsizer.repro.job_devices import open_job_device, sim_factory
from batchsizer.repro.jobs import Job, jobs_for
from batchsizer.repro.methods import MethodContext, get_method
from batchsizer.repro.oracle import (
    Estimate,
    OracleSearch,
    SensorModel,
    device_sizes,
    find_oracle,
    surely_over,
    upper_envelope,
)
from batchsizer.repro.runner import Plan, execute
from batchsizer.repro.sweep import Profile, SweepConfig
from batchsizer.testing.scripted import ScriptedDevice

LEVELS = (600, 1000, 1400)


def hump_device() -> ScriptedDevice:
    """Throughput rises with size and clock; power rises with both and has a narrow hump at size 190.

    Under 150 W at the top clock, sizes up to about 180 fit, the hump (about 181-200) does not, and
    201-222 fit again: a grid with bisection between neighbours (128 under, 192 over) never tries
    the best one."""

    def time_fn(n: int, mhz: int | None) -> float:
        return (0.0043 + 0.0005 * n) * 1400 / (mhz or 1400)

    def power_fn(n: int, mhz: int | None) -> float:
        f = (mhz or 1400) / 1400
        return 50.0 + (60.0 * math.exp(-(((n - 190) / 8.0) ** 2)) + 0.45 * n) * f * f

    return ScriptedDevice(time_fn, power_fn, idle_w=50.0, clock_levels_mhz=LEVELS)


def brute_force(dev: ScriptedDevice, cap: float) -> Setting:
    """The answer by definition: the fastest (size, clock) whose power is at or under the cap."""
    ok = [
        (n / dev.time_fn(n, c), -n, Setting(n, c)) for n in range(1, 257) for c in LEVELS if dev.power_fn(n, c) <= cap
    ]
    return max(ok, key=lambda t: (t[0], t[1]))[2]


def test_scripted_device_gives_the_exact_answer_also_where_power_is_not_monotone() -> None:
    cap = 150.0
    r = find_oracle(hump_device, cap, 3000)
    want = brute_force(hump_device(), cap)
    assert r.setting == want and r.clean
    assert want == Setting(222, 1400)  # past the hump, the top clock: 0.45 * 222 = 99.9 W over idle
    dev = hump_device()
    whole, rest = divmod(3000, 222)  # the job's last batch is a partial one
    assert r.throughput == pytest.approx(3000 / (whole * dev.time_fn(222, 1400) + dev.time_fn(rest, 1400)))
    assert r.peak_w <= cap
    # every setting with a higher estimate was run and read over the cap
    faster = [c for c in r.checks if c.estimate > r.estimate]
    assert faster and not any(c.compliant for c in faster)
    assert r.settings == 256 * 3 and r.skipped == 0  # a scripted device's readings are not bounded: nothing skipped


def test_sizes_can_be_restricted_and_checks_are_shared_between_queries() -> None:
    search = OracleSearch(hump_device, 150.0, 2000)
    full = search.best()
    runs = search.runs
    paper = search.best(lambda s: s.batch_size in (1, 2, 4, 8, 16, 32, 64, 128, 256))
    assert paper.setting == Setting(128, 1400)  # 50 + 0.45 * 128 = 107.6 W; not checked before: one more run
    assert search.runs == runs + 1
    small = search.best(lambda s: s.batch_size <= 64)
    dev = hump_device()
    want = max(
        ((n, c) for n in range(1, 65) for c in LEVELS if dev.power_fn(n, c) <= 150.0),
        key=lambda t: t[0] / dev.time_fn(*t),
    )
    assert small.setting == Setting(*want) and full.setting == Setting(222, 1400)
    again = search.runs
    assert search.best().setting == full.setting and search.runs == again  # answered from the kept checks


def test_no_setting_under_the_cap_gives_the_lowest_power_setting_unclean() -> None:
    r = find_oracle(hump_device, 50.05, 500, sizes=(1, 2, 3))  # size 1 at 600 MHz draws 50.08 W
    assert not r.clean and r.setting == Setting(1, 600)
    assert math.isfinite(r.throughput)


def two_phase_device() -> ScriptedDevice:
    """200 W while computing, 50 W between batches: every size is over a 150 W cap by the peak, not on average."""
    return ScriptedDevice(lambda n, c: 0.0025 * n, lambda n, c: 200.0, idle_w=50.0, prep_s=0.03)


def test_avg_rule_judges_the_rolling_mean_and_the_envelope_alternates_two_settings() -> None:
    # size 8: 20 ms at 200 W + 30 ms at 50 W, mean 110 W; size 16: 40 ms + 30 ms, mean 135.7 W;
    # size 32: 80 ms + 30 ms, mean 159.1 W (over 150 W on average too)
    peak = find_oracle(two_phase_device, 150.0, 2000, sizes=(8, 16, 32))
    assert not peak.clean
    avg = find_oracle(two_phase_device, 150.0, 2000, sizes=(8, 16, 32), rule="avg:1")
    assert avg.clean and avg.setting == Setting(16) and avg.rule == "avg:1"
    assert avg.throughput == pytest.approx(16 / 0.07, rel=1e-3)
    env = avg.envelope
    assert env is not None and env.low is not None and env.high is not None
    assert (env.low.setting, env.high.setting) == (Setting(16), Setting(32))
    m16, m32 = (200 * 0.04 + 50 * 0.03) / 0.07, (200 * 0.08 + 50 * 0.03) / 0.11
    share = (m32 - 150.0) / (m32 - m16)
    assert env.throughput == pytest.approx(share * 16 / 0.07 + (1 - share) * 32 / 0.11)
    assert env.throughput > avg.throughput


def test_upper_envelope_by_hand() -> None:
    def e(p: float, r: float) -> Estimate:
        return Estimate(Setting(int(p)), r, p, p)

    pts = [e(50, 10), e(100, 30), e(150, 35), e(120, 20)]  # (120, 20) lies under the hull
    assert upper_envelope(pts, 125).throughput == pytest.approx(32.5)
    assert upper_envelope(pts, 100).throughput == pytest.approx(30.0)
    assert upper_envelope(pts, 200).throughput == 35.0
    assert math.isnan(upper_envelope(pts, 40).throughput)


@pytest.mark.parametrize("text", ["avg:x", "avg:0", "max", "avg"])
def test_bad_cap_rule_is_one_clear_error_before_any_run(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        find_oracle(hump_device, 150.0, 100, rule=text)
    assert err.value.field == "cap rule"
    with pytest.raises(ConfigError):
        SweepConfig(rule=text)


# -- the simulator ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def p40_job() -> tuple[Job, OracleSearch]:
    job = jobs_for("p40", [8], items=3000)[0]  # Res50/ImageNet at 143 W: the clock and the size both matter
    search = OracleSearch(lambda: open_job_device(sim_factory, job, 0), job.cap_w, job.items)
    search.best()
    return job, search


def test_simulator_sizes_and_settings(p40_job: tuple[Job, OracleSearch]) -> None:
    job, search = p40_job
    assert device_sizes(open_job_device(sim_factory, job, 0)) == tuple(range(1, 257))
    assert len(search.settings) == 2560


def test_every_faster_setting_reads_over_the_cap_at_the_oracles_seed(p40_job: tuple[Job, OracleSearch]) -> None:
    """Exact, no tolerance: a static run (the runner's path, not the oracle's) of any setting estimated
    faster than the oracle goes over the cap in the same job and seed; skipped ones included."""
    job, search = p40_job
    best = search.best()
    assert best.clean and best.setting is not None
    faster = [e for e in search.estimates if e.throughput > best.estimate]
    skipped = [e for e in faster if surely_over(e, search.sensor, job.cap_w, job.items)]
    assert skipped and len(skipped) < len(faster)
    sample = faster[:: max(1, len(faster) // 25)] + skipped[:: max(1, len(skipped) // 10)]
    for est in sample:
        s = est.setting
        run = execute(
            open_job_device(sim_factory, job, 0), Plan(Static(s.batch_size, s.clock_mhz)), job.cap_w, job.items
        )
        assert run.summary.over_cap_s > 0, s
    again = execute(open_job_device(sim_factory, job, 0), Plan(Static(best.setting.batch_size, best.setting.clock_mhz)),
                    job.cap_w, job.items)  # fmt: skip
    assert again.summary.over_cap_s == 0 and again.summary.throughput == pytest.approx(best.throughput)


def tolerance(job: Job, search: OracleSearch, batches_run: int, batches_oracle: int) -> float:
    """How far above the oracle a compliant run may land by noise alone.

    Time: each batch's host and compute times vary by up to ``cv`` = 3% (SimDevice's host_cv, the
    larger of the two), so a run's throughput has a relative sd of ``cv / sqrt(batches)``; the
    difference of two runs is allowed 3 sd. Power: a reading is the setting's power plus noise of
    sd ``sigma`` (the sensor's noise and the per-batch power variation of the dynamic power at the
    cap); a controller that uses a setting briefly faces fewer readings than a static whole job, so
    it may get away with a setting up to 4 sigma closer to the cap. That is worth the ratio of the
    fastest noiseless throughput with power at the cap to the fastest at cap - 4 sigma."""
    dev = open_job_device(sim_factory, job, 0)
    cv = max(dev.time_cv, dev.host_cv)  # type: ignore[attr-defined]
    sensor = SensorModel.of(dev)
    assert sensor is not None
    idle = dev.plant.idle_w  # type: ignore[attr-defined]
    sigma = math.hypot(sensor.noise_w, sensor.power_cv * (job.cap_w - idle))

    def fastest(p: float) -> float:
        return max(e.throughput for e in search.estimates if e.peak_w <= p)

    noise = fastest(job.cap_w) / fastest(job.cap_w - 4 * sigma) - 1
    return 3 * cv * math.sqrt(1 / batches_run + 1 / batches_oracle) + noise


CONTROLLERS = ("adaptive", "batchsizer", "batchsizer-full", "aimd", "batchdvfs", "dvfs", "dvfs-best-batch")


@pytest.mark.parametrize(("gpu", "job_id"), [("p40", 5), ("p40", 19), ("v100", 13)])
def test_no_compliant_controller_beats_the_oracle_by_more_than_the_noise(gpu: str, job_id: int) -> None:
    job = jobs_for(gpu, [job_id], items=3000)[0]
    search = OracleSearch(lambda: open_job_device(sim_factory, job, 0), job.cap_w, job.items)
    best = search.best()
    assert best.clean and best.setting is not None
    knobs = open_job_device(sim_factory, job, 0).knobs
    paper = search.best(lambda s: s.batch_size in (1, 2, 4, 8, 16, 32, 64, 128, 256)).setting
    assert paper is not None
    profile = Profile(job.id, job.cap_w, 0, best_paper_size=paper.batch_size)
    n_oracle = math.ceil(job.items / best.setting.batch_size)

    def plans() -> list[tuple[str, Plan]]:  # fresh controllers for each run: they keep state
        out = [(n, get_method(n).build(MethodContext(job, knobs, profile))) for n in CONTROLLERS]
        for size in range(8, 257, 16):
            out += [(f"static {size}@{c}", Plan(Static(size, c))) for c in knobs.clock_levels_mhz[2::3]]
        return out

    checked = 0
    for seed in (0, 1):
        for name, plan in plans():
            run = execute(open_job_device(sim_factory, job, seed), plan, job.cap_w, job.items)
            if run.summary.over_cap_s > 0:
                continue
            checked += 1
            tol = tolerance(job, search, run.summary.batches, n_oracle)
            assert run.summary.throughput <= best.throughput * (1 + tol), (name, seed, run.summary.throughput, tol)
    assert checked >= 20


def test_measured_table_at_160_w_is_not_beaten_by_a_size_the_old_sweep_skipped() -> None:
    """The issue's case: on the V100 ShuffleNet table at 160 W the old sweep fell back to grid size 128
    (the board's default limit); the table's power limits are a knob too, and the oracle uses them."""
    from batchsizer.sim import make_table_device

    try:
        make_table_device("zeus-v100:shufflenetv2").close()
    except DataUnavailable as exc:
        pytest.skip(f"the measured tables are not here: {exc}")

    def dev() -> object:
        return make_table_device("zeus-v100:shufflenetv2", seed=0)

    search = OracleSearch(dev, 160.0, 20_000)  # type: ignore[arg-type]
    assert device_sizes(dev()) == tuple(range(8, 4097))  # type: ignore[arg-type]
    assert len(search.settings) == 4089 * 7  # every size at each of the table's seven limits
    default = search.best(lambda s: s.power_limit_w is None or s.power_limit_w == 250.0)
    assert default.clean and default.setting is not None and 128 < default.setting.batch_size < 192
    for size in range(129, 192, 9):  # the sizes the old sweep never tried: none compliant is faster
        run = execute(dev(), Plan(Static(size)), 160.0, 20_000)  # type: ignore[arg-type]
        if run.summary.over_cap_s == 0:
            assert run.summary.throughput <= default.throughput * 1.01, size
    best = search.best()
    assert best.clean and best.setting is not None and best.setting.power_limit_w is not None
    assert best.skipped > 0 and best.throughput > default.throughput
    s = best.setting
    run = execute(dev(), Plan(Static(s.batch_size, None, s.power_limit_w)), 160.0, 20_000)  # type: ignore[arg-type]
    assert run.summary.over_cap_s == 0 and run.summary.throughput == pytest.approx(best.throughput)


# -- the reproduction's methods: batchdvfs and the ablation ------------------------------------------

PAPER_SIZES = {1, 2, 4, 8, 16, 32, 64, 128, 256}


@pytest.fixture(scope="module")
def ablation() -> object:
    from batchsizer.repro.experiment import ExperimentConfig, run_experiment
    from batchsizer.repro.methods import ABLATION_METHODS

    methods = (*ABLATION_METHODS, "batchdvfs")
    return run_experiment(ExperimentConfig(job_ids=(8,), seeds=1, items=3000, workers=1, methods=methods))


def test_batchdvfs_is_a_default_method_and_searches_sizes_and_clocks(ablation) -> None:
    from batchsizer.repro.methods import DEFAULT_METHODS

    assert "batchdvfs" in DEFAULT_METHODS
    run = next(r for r in ablation.runs if r.method == "batchdvfs")
    assert (
        run.batch_sizes_used[0] == 1 and max(run.batch_sizes_used) <= 255
    )  # 1 -> 128 -> 64 here (positions 0, 127, 63)
    assert len(run.batch_sizes_used) > 1 and None not in run.clocks_used  # it searched, with the clock locked
    assert run.periods > run.duration_s / 0.5  # one-batch periods: it looks at the time after every batch


def test_ablation_gives_algorithm1_and_adaptive_the_same_knobs(ablation) -> None:
    runs = {r.method: r for r in ablation.runs}
    assert set(runs["batchsizer"].batch_sizes_used) <= PAPER_SIZES and runs["batchsizer"].clocks_used == [None]
    full = runs["batchsizer-full"]
    assert full.clocks_used == [None] and not set(full.batch_sizes_used) <= PAPER_SIZES  # every whole size
    assert runs["adaptive-paper"].clocks_used == [None]  # no clock knob
    assert None not in runs["adaptive"].clocks_used  # the full set includes the clock on this card
    from batchsizer.repro.experiment import aggregate
    from batchsizer.repro.report import method_summary

    shown = [r["method"] for r in method_summary(aggregate(ablation))]
    assert shown == ["batchsizer", "adaptive-paper", "batchsizer-full", "adaptive", "oracle", "batchdvfs"]


def test_adaptive_paper_uses_only_the_papers_sizes(ablation) -> None:
    run = next(r for r in ablation.runs if r.method == "adaptive-paper")
    assert set(run.batch_sizes_used) <= PAPER_SIZES


def test_profile_and_oracle_csv_describe_the_exact_oracle(ablation) -> None:
    from batchsizer.repro.report import profile_rows

    (row,) = profile_rows(ablation)
    prof = ablation.outcomes[0].profile
    assert prof.oracle_settings == 2560 and 0 < prof.oracle_checks < 2560 and prof.oracle_clean
    assert row["oracle_job_throughput"] == prof.oracle.throughput and row["cap_rule"] == "peak"
    assert row["envelope_throughput"] >= row["oracle_estimate"] * 0.999
    oracle_run = next(r for r in ablation.runs if r.method == "oracle")
    assert oracle_run.throughput == pytest.approx(prof.oracle.throughput)  # the same seed: the same job
