"""NVML telemetry and GPU knobs against a fake ``pynvml`` module (no GPU needed)."""

from __future__ import annotations

import math
import sys
import time

import pytest

from batchsizer.errors import ConfigError, PermissionDeniedError, TelemetryError, UnsupportedError
from batchsizer.hw.actuators import GpuActuators
from batchsizer.hw.gpu import gpu_info, spread_levels
from batchsizer.hw.nvml import Nvml
from batchsizer.hw.nvml_meter import NvmlMeter, measure_update_period
from batchsizer.testing import fake_nvml
from batchsizer.testing.fake_nvml import FakeGpu, FakeNvml


@pytest.fixture
def install(monkeypatch):
    def _install(*gpus: FakeGpu, **kw) -> FakeNvml:
        fake = FakeNvml(list(gpus) or [FakeGpu()], **kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake.module)
        return fake

    return _install


def open_gpu(index: int = 0):
    nvml = Nvml()
    return nvml, nvml.gpu(index)


def test_instant_field_is_used_where_supported(install):
    install(FakeGpu(update_period_s=0.02))
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, probe_s=0.5)
    try:
        assert meter.source == "nvml:instant"
        assert meter.notes == []
        # the fake sensor refreshes every 20 ms; the probe must see that, not its own 1 ms polling
        assert meter.update_period_s == pytest.approx(0.02, rel=0.35)
        assert meter.poll_s == pytest.approx(meter.update_period_s / 2)
        time.sleep(0.15)
        now = meter.clock.now()
        samples = meter.samples(now - 0.1, now)
        assert len(samples) >= 5
        assert all(90 <= s.watts <= 150 for s in samples)
    finally:
        meter.close()
        nvml.close()


def test_falls_back_to_power_usage_and_says_it_is_a_1s_average(install):
    install(FakeGpu(name="NVIDIA A10", architecture=7, instant_field=False))
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, probe_s=0.3)
    try:
        assert meter.source == "nvml:power_usage"
        assert any("1 s average" in n for n in meter.notes)
        assert meter.window(meter.clock.now() - 0.05, meter.clock.now()).valid
    finally:
        meter.close()
        nvml.close()


def test_pre_ampere_fallback_is_not_called_an_average(install):
    install(FakeGpu(name="Tesla P40", architecture=4, instant_field=False, energy_counter=False))
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, probe_s=0.3)
    try:
        assert not any("1 s average" in n for n in meter.notes)
        assert any("instantaneous on Pascal" in n for n in meter.notes)
        assert not meter.has_energy_counter
        assert any("energy counter" in n for n in meter.notes)
        assert meter.energy_j(0.0, meter.clock.now()) is None
    finally:
        meter.close()
        nvml.close()


def test_energy_counter_gives_window_energy(install):
    install(FakeGpu(power_fn=lambda t: 200.0, update_period_s=0.02))
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, update_period_s=0.02)
    try:
        start = meter.clock.now()
        time.sleep(0.7)
        end = meter.clock.now()
        energy = meter.energy_j(start, end)
        assert energy is not None
        assert energy == pytest.approx(200.0 * (end - start), rel=0.05)
        assert meter.energy_j(end - 0.1, end) is None  # too short for a coarse counter
    finally:
        meter.close()
        nvml.close()


def test_idle_sensor_falls_back_to_known_period(install):
    install(FakeGpu(name="Tesla V100", architecture=5, power_fn=lambda t: 50.0))
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, probe_s=0.1)
    try:
        assert meter.measured_period_s is None
        assert meter.update_period_s == 0.02
        assert any("did not change" in n and "known for Volta" in n for n in meter.notes)
    finally:
        meter.close()
        nvml.close()
    install(FakeGpu(power_fn=lambda t: 50.0))  # Hopper: no period known, so the default is said to be one
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, probe_s=0.1)
    try:
        assert meter.update_period_s == 0.1
        assert any("assumed where none is known (Hopper)" in n for n in meter.notes)
    finally:
        meter.close()
        nvml.close()


def test_transient_errors_are_ridden_out(install):
    g = FakeGpu()
    install(g)
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, update_period_s=0.02)
    try:
        g.read_errors.extend([fake_nvml.ERROR_UNKNOWN, fake_nvml.ERROR_TIMEOUT] * 3)
        time.sleep(0.3)
        assert meter.errors >= 6
        assert meter.failure is None
        now = meter.clock.now()
        assert meter.samples(now - 0.1, now)
    finally:
        meter.close()
        nvml.close()


def test_persistent_errors_stop_the_meter_with_the_cause(install):
    g = FakeGpu()
    install(g)
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, update_period_s=0.02)
    try:
        g.always_fail = fake_nvml.ERROR_GPU_IS_LOST
        time.sleep(0.2)
        with pytest.raises(TelemetryError, match="power readings stopped"):
            meter.samples(0.0, meter.clock.now())
    finally:
        meter.close()
        nvml.close()


def test_transient_errors_that_persist_end_in_failure(install):
    g = FakeGpu()
    install(g)
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, update_period_s=0.02)
    meter.max_error_s = 0.1
    try:
        g.always_fail = fake_nvml.ERROR_UNKNOWN
        time.sleep(0.4)
        assert meter.failure is not None
    finally:
        meter.close()
        nvml.close()


def test_nvml_absent_or_driver_not_loaded(install, monkeypatch):
    install(init_error=fake_nvml.ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(UnsupportedError, match="driver"):
        Nvml()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with pytest.raises(UnsupportedError, match="nvidia-ml-py"):
        Nvml()


def test_gpu_info_and_clock_levels(install):
    install(
        FakeGpu(), FakeGpu(name="Tesla P40", architecture=4, instant_field=False, energy_counter=False, uuid="GPU-p40")
    )
    with Nvml() as nvml:
        assert nvml.count() == 2
        h100 = gpu_info(nvml.gpu(0))
        assert h100.architecture == "Hopper"
        assert h100.power_limits is not None and h100.power_limits.max_w == 700
        assert h100.sm_clocks_mhz[0] == 345 and h100.sm_clocks_mhz == tuple(sorted(h100.sm_clocks_mhz))
        assert h100.power_source.startswith("instant") and h100.energy_counter
        p40 = gpu_info(nvml.gpu_by_uuid("GPU-p40"))
        assert p40.index == 1 and p40.architecture == "Pascal"
        assert p40.power_source == "nvmlDeviceGetPowerUsage" and not p40.energy_counter
        with pytest.raises(UnsupportedError, match="sees 2 GPU"):
            nvml.gpu(5)
    levels = spread_levels(tuple(range(300, 2000, 15)), 16)
    assert len(levels) == 16 and levels[0] == 300 and levels[-1] == 1995


def test_locked_clocks_set_and_restored(install):
    (g,) = install().gpus
    with Nvml() as nvml:
        act = GpuActuators(nvml.gpu(0))
        act.set_clock(1005)
        assert g.locked == (1005, 1005) and act.clock_mode == "locked"
        act.set_clock(None)
        assert g.locked is None
        with pytest.raises(ConfigError, match="not a supported SM clock"):
            act.set_clock(1006)


def test_application_clocks_on_older_gpus(install):
    (g,) = install(
        FakeGpu(
            name="Tesla P40",
            architecture=4,
            locked_clocks=False,
            memory_clocks=(3615,),
            graphics_clocks=(544, 1063, 1531),
        )
    ).gpus
    with Nvml() as nvml:
        act = GpuActuators(nvml.gpu(0))
        act.set_clock(544)
        assert act.clock_mode == "application" and g.app_clocks == (3615, 544)
        act.set_clock(1063)
        assert g.app_clocks == (3615, 1063)
        act.restore()
        assert g.app_clocks == (3615, 1531)


def test_power_limit_set_checked_and_restored(install):
    (g,) = install(FakeGpu(power_limit_w=650.0)).gpus
    with Nvml() as nvml:
        act = GpuActuators(nvml.gpu(0))
        act.set_power_limit(300)
        act.set_power_limit(250)
        assert g.power_limit_w == 250
        with pytest.raises(ConfigError, match="200-700 W"):
            act.set_power_limit(100)
        act.restore()
        assert g.power_limit_w == 650  # the limit in force before the first change


def test_permission_denied_says_what_is_needed(install):
    (g,) = install(FakeGpu(can_set=False)).gpus
    with Nvml() as nvml:
        act = GpuActuators(nvml.gpu(0))
        with pytest.raises(PermissionDeniedError, match="root or CAP_SYS_ADMIN"):
            act.set_clock(1005)
        with pytest.raises(PermissionDeniedError, match="power limit.*root or CAP_SYS_ADMIN"):
            act.set_power_limit(300)
        assert g.locked is None and g.power_limit_w == 700
        act.restore()  # nothing was changed, so nothing to undo and no error


def test_read_only_actuators_refuse_changes(install):
    (g,) = install().gpus
    with Nvml() as nvml:
        act = GpuActuators(nvml.gpu(0), allow_changes=False)
        with pytest.raises(UnsupportedError, match="read-only"):
            act.set_power_limit(300)
        act.set_clock(None)  # letting the GPU choose is always allowed
        assert g.calls == []


def test_closing_the_meter_returns_at_once_and_no_reading_follows(install):
    """A short job must not wait a poll period at its end, and NVML must not be read once closed."""
    g = FakeGpu()
    reads: list[float] = []
    g.power_fn = lambda t: reads.append(t) or 150.0
    install(g)
    nvml, gpu = open_gpu()
    meter = NvmlMeter(gpu, update_period_s=0.2)  # polls every 100 ms
    time.sleep(0.05)
    t0 = time.perf_counter()
    meter.close()
    assert time.perf_counter() - t0 < 0.05
    n = len(reads)
    deadline = time.monotonic() + 2
    while meter._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not meter._thread.is_alive()
    assert len(reads) == n
    nvml.close()


@pytest.mark.parametrize("instant_field", [True, False])
def test_a_sensor_polled_too_often_is_polled_less_often(install, instant_field: bool):
    """Zeus notes NVML may answer 0 W or 'not supported' when polled faster than about 50 ms. The
    probe skips such answers, the sampler rides them out and halves its pace until reads work."""
    g = FakeGpu(power_fn=lambda t: 150.0 + 50.0 * math.sin(t * 40), update_period_s=0.01, instant_field=instant_field)
    g.min_read_interval_s = 0.035
    install(g)
    nvml, gpu = open_gpu()
    assert 0.02 < measure_update_period(gpu.instant_power_w if instant_field else gpu.power_usage_w) < 0.1
    meter = NvmlMeter(gpu, update_period_s=0.01)  # polls every 5 ms: too often for this sensor
    try:
        assert meter.poll_s == 0.005
        time.sleep(1.0)
        assert meter.failure is None
        assert meter.errors >= 6 and meter.poll_s >= 0.02  # slowed down twice, until reads worked
        now = meter.clock.now()
        recent = meter.samples(now - 0.5, now)
        assert len(recent) >= 5 and all(s.watts > 0 for s in recent)
    finally:
        meter.close()
        nvml.close()
