"""The simulated GPUs: board limits, clocks, idle power, compute speed and NVML sensor behaviour.

Facts come from public spec sheets and from ``shared/data/README.md`` (sensor table, idle power
with a CUDA context held, power-limit ranges); see ``docs/simulator.md`` for what was fitted.
The P40's clock levels are the paper's ten; the others get ten levels spread evenly over the
card's real settable SM clock range so a DVFS controller has the same number of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from batchsizer.errors import ConfigError


@dataclass(frozen=True)
class SensorSpec:
    """What ``nvmlDeviceGetPowerUsage`` reports on a GPU family.

    A reading is published every ``update_period_s``; it is ``gain`` times the mean of the true
    power over ``window_s`` ending ``delay_s`` before it, plus Gaussian noise of ``noise_w``.
    """

    update_period_s: float
    window_s: float
    delay_s: float = 0.0
    noise_w: float = 0.8
    gain: float = 1.0
    energy_counter: bool = True
    #: what NVML calls it, for describe()
    kind: str = "instantaneous"


@dataclass(frozen=True)
class GpuSpec:
    """One card. Power figures in W, clocks in MHz, compute in TFLOP/s (FP32 at the top clock)."""

    name: str
    family: str
    board_limit_w: float
    min_limit_w: float
    idle_w: float
    clock_levels_mhz: tuple[int, ...]
    peak_tflops: float
    #: host-to-device bandwidth (PCIe), GB/s
    pcie_gbps: float
    #: most dynamic power (above idle) the busiest model draws at the top clock
    dynamic_max_w: float
    #: core voltage at the lowest and the top clock level (V); the driver picks it from the clock
    volt_min: float
    volt_max: float
    #: batch size at which a mid-size model reaches half of its best per-image speed
    half_batch: float
    #: batch size past which contention makes each image slower (the paper's "after 256")
    contention_batch: float
    sensor: SensorSpec
    #: how many degrees C the die warms per watt of average power, and its time constant (s)
    thermal_c_per_w: float = 0.16
    thermal_tau_s: float = 60.0
    #: what nvmlDeviceGetPowerUsage reports where it differs from ``sensor`` (Hopper: a 1 s average)
    sensor_average: SensorSpec | None = None

    @property
    def top_clock_mhz(self) -> int:
        """The highest clock level (MHz), the default when the clock is not locked."""
        return self.clock_levels_mhz[-1]

    @property
    def min_clock_mhz(self) -> int:
        """The lowest clock level (MHz), the floor of the power limiter's throttling."""
        return self.clock_levels_mhz[0]

    def voltage(self, mhz: float) -> float:
        """The driver's voltage for a clock: linear between the lowest and the top level."""
        lo, hi = self.min_clock_mhz, self.top_clock_mhz
        x = min(max((mhz - lo) / (hi - lo), 0.0), 1.0)
        return self.volt_min + (self.volt_max - self.volt_min) * x

    def dynamic_scale(self, mhz: float) -> float:
        """Dynamic power relative to the top clock: f * V(f)^2, normalised to 1 there."""
        v = self.voltage(mhz) / self.volt_max
        return (mhz / self.top_clock_mhz) * v * v


def _levels(lo: int, hi: int, n: int = 10) -> tuple[int, ...]:
    return tuple(round(lo + (hi - lo) * i / (n - 1)) for i in range(n))


#: Pascal/Volta: instantaneous, 20 ms updates, ~10 ms averaging (README table); no energy counter on Pascal
_PASCAL = SensorSpec(update_period_s=0.020, window_s=0.010, delay_s=0.0, noise_w=0.8, energy_counter=False)
_VOLTA = SensorSpec(update_period_s=0.020, window_s=0.010, delay_s=0.0, noise_w=0.8, energy_counter=True)
#: GA100: instantaneous, 100 ms updates, ~25 ms window (75% unseen); window, 15 ms delay and 0.948 gain fitted
#: to transient_A100 (scripts/calibrate_sim.py)
_GA100 = SensorSpec(update_period_s=0.100, window_s=0.025, delay_s=0.015, noise_w=0.6, gain=0.948)
#: Hopper, driver >= 530: nvmlDeviceGetPowerUsage is a 1 s average updated every 100 ms
HOPPER_AVERAGE = SensorSpec(update_period_s=0.100, window_s=1.0, delay_s=0.0, noise_w=1.0, kind="1 s average")
#: the same GPUs' NVML_FI_DEV_POWER_INSTANT field: what batchsizer's NVML meter reads where it exists,
#: so it is the simulated H100's default sensor (``sensor="average"`` gives the 1 s average instead)
HOPPER_INSTANT = SensorSpec(update_period_s=0.100, window_s=0.025, delay_s=0.0, noise_w=1.0, kind="instant field")

GPUS: dict[str, GpuSpec] = {
    "p40": GpuSpec(
        name="Tesla P40",
        family="Pascal",
        board_limit_w=250.0,
        min_limit_w=125.0,
        idle_w=48.5,
        clock_levels_mhz=(544, 632, 734, 835, 949, 1063, 1189, 1303, 1430, 1531),
        peak_tflops=11.8,
        pcie_gbps=12.0,
        dynamic_max_w=196.0,
        volt_min=0.80,
        volt_max=1.05,
        half_batch=12.0,  # the paper: SM utilisation near 100% only past batch 128 (Fig. 2)
        contention_batch=256.0,
        sensor=_PASCAL,
    ),
    "v100": GpuSpec(
        name="Tesla V100-SXM2",
        family="Volta",
        board_limit_w=300.0,
        min_limit_w=150.0,
        idle_w=45.0,
        clock_levels_mhz=_levels(135, 1530),
        peak_tflops=15.7,
        pcie_gbps=12.0,
        dynamic_max_w=245.0,
        volt_min=0.71,
        volt_max=1.06,
        half_batch=3.0,  # fitted to Zeus V100 ResNet-50 throughput vs batch size
        contention_batch=384.0,
        sensor=_VOLTA,
    ),
    "a100": GpuSpec(
        name="A100-SXM4",
        family="Ampere GA100",
        board_limit_w=400.0,
        min_limit_w=100.0,
        idle_w=60.0,
        clock_levels_mhz=_levels(210, 1410),
        peak_tflops=19.5,
        pcie_gbps=24.0,
        dynamic_max_w=330.0,
        volt_min=0.70,
        volt_max=1.05,
        half_batch=4.0,  # V100's, scaled by SM count (108 vs 80)
        contention_batch=512.0,
        sensor=_GA100,
    ),
    "h100": GpuSpec(
        name="H100-SXM",
        family="Hopper",
        board_limit_w=700.0,
        min_limit_w=200.0,
        idle_w=100.0,
        clock_levels_mhz=_levels(345, 1980),
        peak_tflops=66.9,
        pcie_gbps=48.0,
        dynamic_max_w=590.0,
        volt_min=0.67,
        volt_max=1.05,
        half_batch=5.0,  # V100's, scaled by SM count (132 vs 80)
        contention_batch=1024.0,
        sensor=HOPPER_INSTANT,
        sensor_average=HOPPER_AVERAGE,
    ),
}


def sensor_for(gpu: GpuSpec, which: str | SensorSpec | None) -> SensorSpec:
    """The sensor to simulate: ``None``/``"default"`` (what batchsizer's meter reads), ``"average"``
    (nvmlDeviceGetPowerUsage: a 1 s average on Hopper, the same as default elsewhere), ``"instant"``, or a spec."""
    if isinstance(which, SensorSpec):
        return which
    key = (which or "default").strip().lower()
    if key in ("default", "instant"):
        return gpu.sensor
    if key == "average":
        return gpu.sensor_average or gpu.sensor
    raise ConfigError("sensor", f"unknown sensor {which!r}; choose default, instant or average")


def get_gpu(name: str) -> GpuSpec:
    """The spec for ``p40``/``v100``/``a100``/``h100`` (case-insensitive), or ConfigError listing them."""
    key = name.strip().lower()
    if key not in GPUS:
        raise ConfigError("device", f"unknown simulated GPU {name!r}; choose one of {', '.join(GPUS)}")
    return GPUS[key]


def override_sensor(
    base: SensorSpec,
    update_ms: float | None = None,
    window_ms: float | None = None,
    noise_w: float | None = None,
) -> SensorSpec:
    """``base`` with the given fields replaced (``--sensor-update-ms``, ``--sensor-window-ms``,
    ``--sensor-noise-w``); the others keep the family's values. Checked: update above 0 and at most
    10 s, window 0 (instantaneous) to 10 s, noise 0 to 100 W."""
    changes: dict[str, float] = {}
    for field, value, lo, hi, scale in (
        ("sensor-update-ms", update_ms, 0.0, 10_000.0, 1e-3),
        ("sensor-window-ms", window_ms, 0.0, 10_000.0, 1e-3),
        ("sensor-noise-w", noise_w, 0.0, 100.0, 1.0),
    ):
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi
        if not ok or (field == "sensor-update-ms" and value <= 0):
            low = "above 0" if field == "sensor-update-ms" else f"{lo:g}"
            raise ConfigError(field, f"must be {low} to {hi:g}, got {value!r}")
        key = {"sensor-update-ms": "update_period_s", "sensor-window-ms": "window_s", "sensor-noise-w": "noise_w"}[field]
        changes[key] = float(value) * scale
    if not changes:
        return base
    kind = f"{base.kind}, overridden"
    return replace(base, kind=kind, **changes)  # type: ignore[arg-type]
