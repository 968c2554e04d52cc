"""A stand-in for the ``pynvml`` module, for tests and for dry runs of the GPU check without a GPU.

Install it with ``install_fake_nvml(...)`` (or put ``FakeNvml(...).module`` in ``sys.modules`` as
``pynvml``); :mod:`batchsizer.hw.nvml` then talks to it exactly as to NVML. Each fake GPU has a
sensor that refreshes every ``update_period_s`` (a new reading per period, like the real one),
and switches for what real GPUs differ in: the instantaneous-power field, the energy counter,
locked versus application clocks, permission to change settings, and injected errors.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

SUCCESS = 0
ERROR_UNINITIALIZED = 1
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_NOT_FOUND = 6
ERROR_DRIVER_NOT_LOADED = 9
ERROR_TIMEOUT = 10
ERROR_GPU_IS_LOST = 15
ERROR_UNKNOWN = 999
FI_DEV_POWER_INSTANT = 186
CLOCK_SM = 1
CLOCK_MEM = 2


class NVMLError(Exception):
    """Like ``pynvml.NVMLError``: carries the NVML return code in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    """One fake GPU. ``power_fn(t)`` is the true power at monotonic time ``t``."""

    name: str = "NVIDIA H100 80GB HBM3"
    architecture: int = 9  # Hopper
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    power_fn: Callable[[float], float] = field(default=lambda t: 120.0 + 30.0 * math.sin(t * 7.0))
    update_period_s: float = 0.02
    instant_field: bool = True
    energy_counter: bool = True
    locked_clocks: bool = True
    can_set: bool = True
    limits_w: tuple[float, float, float] = (200.0, 700.0, 700.0)  # min, max, default
    memory_clocks: tuple[int, ...] = (2619,)
    graphics_clocks: tuple[int, ...] = tuple(range(345, 1981, 15))
    #: errors to raise from power reads, one per call, before reading normally again
    read_errors: list[int] = field(default_factory=list)
    #: errors to raise from every power read while set (a GPU gone bad)
    always_fail: int | None = None
    #: like NVML polled too often: a power read sooner than this after the last one that worked
    #: answers "not supported" (the instant field) or 0 W (power usage)
    min_read_interval_s: float = 0.0
    # state the fake keeps, as NVML would
    power_limit_w: float = 0.0
    locked: tuple[int, int] | None = None
    app_clocks: tuple[int, int] | None = None
    calls: list[str] = field(default_factory=list)
    _energy_j: float = 0.0
    _energy_t: float | None = None
    _last_read_t: float = -math.inf

    def __post_init__(self) -> None:
        if not self.power_limit_w:
            self.power_limit_w = self.limits_w[2]
        if self.app_clocks is None:
            self.app_clocks = (max(self.memory_clocks), max(self.graphics_clocks))

    def too_soon(self) -> bool:
        """Whether a power read now comes too soon after the last one (see ``min_read_interval_s``)."""
        return time.monotonic() - self._last_read_t < self.min_read_interval_s

    def reading(self) -> float:
        """The sensor's value now: the true power at the start of the current update period."""
        self._fail_maybe()
        t = self._last_read_t = time.monotonic()
        tick = math.floor(t / self.update_period_s) * self.update_period_s
        return float(self.power_fn(tick))

    def energy(self) -> float:
        """The energy counter in joules: ``power_fn`` integrated since the first call (may raise a queued error)."""
        self._fail_maybe()
        t = time.monotonic()
        if self._energy_t is not None:
            self._energy_j += float(self.power_fn(t)) * (t - self._energy_t)
        self._energy_t = t
        return self._energy_j

    def _fail_maybe(self) -> None:
        if self.always_fail is not None:
            raise NVMLError(self.always_fail)
        if self.read_errors:
            raise NVMLError(self.read_errors.pop(0))


class FakeNvml:
    """The fake library: ``.module`` is what to install as ``pynvml``."""

    def __init__(
        self, gpus: list[FakeGpu] | None = None, *, driver: str = "550.54.15", init_error: int | None = None
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.driver = driver
        self.init_error = init_error
        self.initialised = 0
        self.module = self._build()

    def _gpu(self, handle: Any) -> FakeGpu:
        if not isinstance(handle, FakeGpu):
            raise NVMLError(ERROR_INVALID_ARGUMENT)
        return handle

    def _build(self) -> ModuleType:
        m = ModuleType("pynvml")
        m.__dict__.update(
            NVMLError=NVMLError,
            NVML_SUCCESS=SUCCESS,
            NVML_ERROR_UNINITIALIZED=ERROR_UNINITIALIZED,
            NVML_ERROR_INVALID_ARGUMENT=ERROR_INVALID_ARGUMENT,
            NVML_ERROR_NOT_SUPPORTED=ERROR_NOT_SUPPORTED,
            NVML_ERROR_NO_PERMISSION=ERROR_NO_PERMISSION,
            NVML_ERROR_NOT_FOUND=ERROR_NOT_FOUND,
            NVML_ERROR_DRIVER_NOT_LOADED=ERROR_DRIVER_NOT_LOADED,
            NVML_ERROR_TIMEOUT=ERROR_TIMEOUT,
            NVML_ERROR_GPU_IS_LOST=ERROR_GPU_IS_LOST,
            NVML_ERROR_UNKNOWN=ERROR_UNKNOWN,
            NVML_FI_DEV_POWER_INSTANT=FI_DEV_POWER_INSTANT,
            NVML_CLOCK_SM=CLOCK_SM,
            NVML_CLOCK_MEM=CLOCK_MEM,
        )
        fake = self

        def init() -> None:
            if fake.init_error is not None:
                raise NVMLError(fake.init_error)
            fake.initialised += 1

        def shutdown() -> None:
            fake.initialised -= 1

        def need_init() -> None:
            if fake.initialised <= 0:
                raise NVMLError(ERROR_UNINITIALIZED)

        def count() -> int:
            need_init()
            return len(fake.gpus)

        def by_index(i: int) -> FakeGpu:
            need_init()
            if not 0 <= i < len(fake.gpus):
                raise NVMLError(ERROR_INVALID_ARGUMENT)
            return fake.gpus[i]

        def by_uuid(uuid: str) -> FakeGpu:
            need_init()
            for g in fake.gpus:
                if g.uuid == uuid:
                    return g
            raise NVMLError(ERROR_NOT_FOUND)

        def field_values(h: Any, ids: list[int]) -> list[Any]:
            g = fake._gpu(h)
            out = []
            for fid in ids:
                if fid == FI_DEV_POWER_INSTANT and g.instant_field and not g.too_soon():
                    mw = int(round(g.reading() * 1000))
                    out.append(SimpleNamespace(fieldId=fid, nvmlReturn=SUCCESS, value=SimpleNamespace(uiVal=mw)))
                else:
                    out.append(
                        SimpleNamespace(fieldId=fid, nvmlReturn=ERROR_NOT_SUPPORTED, value=SimpleNamespace(uiVal=0))
                    )
            return out

        def total_energy(h: Any) -> int:
            g = fake._gpu(h)
            if not g.energy_counter:
                raise NVMLError(ERROR_NOT_SUPPORTED)
            return int(g.energy() * 1000)

        def setter(name: str, apply: Callable[[FakeGpu], None]) -> Callable[[FakeGpu], None]:
            def run(g: FakeGpu) -> None:
                g = fake._gpu(g)
                g.calls.append(name)
                if not g.can_set:
                    raise NVMLError(ERROR_NO_PERMISSION)
                apply(g)

            return run

        def set_locked(h: Any, lo: int, hi: int) -> None:
            def apply(g: FakeGpu) -> None:
                if not g.locked_clocks:
                    raise NVMLError(ERROR_NOT_SUPPORTED)
                g.locked = (lo, hi)

            setter("set_locked", apply)(h)

        def reset_locked(h: Any) -> None:
            def apply(g: FakeGpu) -> None:
                if not g.locked_clocks:
                    raise NVMLError(ERROR_NOT_SUPPORTED)
                g.locked = None

            setter("reset_locked", apply)(h)

        def set_app(h: Any, mem: int, sm: int) -> None:
            def apply(g: FakeGpu) -> None:
                if sm not in g.graphics_clocks or mem not in g.memory_clocks:
                    raise NVMLError(ERROR_INVALID_ARGUMENT)
                g.app_clocks = (mem, sm)

            setter("set_app", apply)(h)

        def reset_app(h: Any) -> None:
            setter("reset_app", lambda g: setattr(g, "app_clocks", (max(g.memory_clocks), max(g.graphics_clocks))))(h)

        def set_limit(h: Any, mw: int) -> None:
            def apply(g: FakeGpu) -> None:
                if not g.limits_w[0] * 1000 <= mw <= g.limits_w[1] * 1000:
                    raise NVMLError(ERROR_INVALID_ARGUMENT)
                g.power_limit_w = mw / 1000.0

            setter("set_limit", apply)(h)

        def app_clock(h: Any, kind: int) -> int:
            g = fake._gpu(h)
            assert g.app_clocks is not None
            return g.app_clocks[0] if kind == CLOCK_MEM else g.app_clocks[1]

        def power_usage(h: Any) -> int:
            g = fake._gpu(h)
            return 0 if g.too_soon() else int(round(g.reading() * 1000))

        m.__dict__.update(
            nvmlInit=init,
            nvmlShutdown=shutdown,
            nvmlSystemGetDriverVersion=lambda: fake.driver,
            nvmlDeviceGetCount=count,
            nvmlDeviceGetHandleByIndex=by_index,
            nvmlDeviceGetHandleByUUID=by_uuid,
            nvmlDeviceGetIndex=lambda h: fake.gpus.index(fake._gpu(h)),
            nvmlDeviceGetName=lambda h: fake._gpu(h).name,
            nvmlDeviceGetUUID=lambda h: fake._gpu(h).uuid,
            nvmlDeviceGetArchitecture=lambda h: fake._gpu(h).architecture,
            nvmlDeviceGetPowerManagementLimitConstraints=lambda h: [
                int(fake._gpu(h).limits_w[0] * 1000),
                int(fake._gpu(h).limits_w[1] * 1000),
            ],
            nvmlDeviceGetPowerManagementDefaultLimit=lambda h: int(fake._gpu(h).limits_w[2] * 1000),
            nvmlDeviceGetPowerManagementLimit=lambda h: int(fake._gpu(h).power_limit_w * 1000),
            nvmlDeviceGetSupportedMemoryClocks=lambda h: list(fake._gpu(h).memory_clocks),
            nvmlDeviceGetSupportedGraphicsClocks=lambda h, mem: list(reversed(fake._gpu(h).graphics_clocks)),
            nvmlDeviceGetApplicationsClock=app_clock,
            nvmlDeviceGetClockInfo=lambda h, kind: app_clock(h, kind),
            nvmlDeviceGetFieldValues=field_values,
            nvmlDeviceGetPowerUsage=power_usage,
            nvmlDeviceGetTotalEnergyConsumption=total_energy,
            nvmlDeviceSetGpuLockedClocks=set_locked,
            nvmlDeviceResetGpuLockedClocks=reset_locked,
            nvmlDeviceSetApplicationsClocks=set_app,
            nvmlDeviceResetApplicationsClocks=reset_app,
            nvmlDeviceSetPowerManagementLimit=set_limit,
        )
        return m


def install_fake_nvml(fake: FakeNvml) -> ModuleType | None:
    """Put ``fake`` in ``sys.modules`` as ``pynvml``; returns what was there (to put back)."""
    previous = sys.modules.get("pynvml")
    sys.modules["pynvml"] = fake.module
    return previous
