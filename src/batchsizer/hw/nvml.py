"""A thin, typed wrapper over NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

Every NVML error is mapped to one of :mod:`batchsizer.errors`' types so callers never see
``pynvml.NVMLError``: no permission -> :class:`PermissionDeniedError` (setting clocks or power
limits needs root or CAP_SYS_ADMIN), not supported -> :class:`UnsupportedError`, anything else ->
:class:`TelemetryError` (flagged ``transient`` when a retry may succeed). ``pynvml`` is imported
when NVML is first opened, so tests can replace the module wholesale in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from batchsizer.errors import DeviceError, PermissionDeniedError, TelemetryError, UnsupportedError

PERMISSION_HINT = (
    "needs root or CAP_SYS_ADMIN: run as root (sudo), or have an administrator set it with nvidia-smi "
    "(-lgc for clocks, -pl for the power limit)"
)

#: NVML error names after which a retry may well succeed
_TRANSIENT = ("NVML_ERROR_UNKNOWN", "NVML_ERROR_TIMEOUT", "NVML_ERROR_IN_USE", "NVML_ERROR_INSUFFICIENT_RESOURCES")
_UNSUPPORTED = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")
_NO_LIBRARY = ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED")

_ARCHITECTURES = {
    2: "Kepler",
    3: "Maxwell",
    4: "Pascal",
    5: "Volta",
    6: "Turing",
    7: "Ampere",
    8: "Ada",
    9: "Hopper",
    10: "Blackwell",
}


class NvmlError(TelemetryError):
    """An NVML call failed in a way that is neither 'unsupported' nor 'no permission'."""

    def __init__(self, message: str, code: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


def load() -> ModuleType:
    """The ``pynvml`` module, or :class:`UnsupportedError` saying how to get it."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise UnsupportedError(
            "NVML is not available: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
        ) from None


def _codes(lib: ModuleType, names: tuple[str, ...]) -> set[int]:
    return {getattr(lib, n) for n in names if hasattr(lib, n)}


def translate(lib: ModuleType, exc: BaseException, what: str) -> DeviceError:
    """The batchsizer error for an NVML exception raised while doing ``what``."""
    code = getattr(exc, "value", None)
    text = f"{what} failed: {exc}"
    if code == getattr(lib, "NVML_ERROR_NO_PERMISSION", object()):
        return PermissionDeniedError(f"{what} {PERMISSION_HINT}")
    if code in _codes(lib, _UNSUPPORTED):
        return UnsupportedError(f"{what} is not supported on this GPU or driver ({exc})")
    if code in _codes(lib, _NO_LIBRARY):
        return UnsupportedError(f"NVML is not available ({exc}): is the NVIDIA driver installed and loaded?")
    return NvmlError(text, code, transient=code in _codes(lib, _TRANSIENT))


class Nvml:
    """NVML initialised once per process and shut down when the last user closes it."""

    _lock = threading.Lock()
    _users = 0

    def __init__(self) -> None:
        self.lib = load()
        with Nvml._lock:
            if Nvml._users == 0:
                self.call("initialising NVML", self.lib.nvmlInit)
            Nvml._users += 1
        self._open = True

    def call(self, what: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` with NVML errors translated."""
        try:
            return fn(*args)
        except Exception as exc:
            if isinstance(exc, getattr(self.lib, "NVMLError", ())):
                raise translate(self.lib, exc, what) from None
            raise

    def count(self) -> int:
        """How many GPUs NVML sees."""
        return int(self.call("counting GPUs", self.lib.nvmlDeviceGetCount))

    def gpu(self, index: int) -> Gpu:
        """The GPU at NVML index ``index``; UnsupportedError when there is no such GPU."""
        n = self.count()
        if not 0 <= index < n:
            raise UnsupportedError(f"no NVIDIA GPU {index}: NVML sees {n} GPU(s)")
        return Gpu(self, index, self.call(f"opening GPU {index}", self.lib.nvmlDeviceGetHandleByIndex, index))

    def gpu_by_uuid(self, uuid: str) -> Gpu:
        """The GPU with this UUID (NVML's error, translated, when there is none)."""
        handle = self.call(f"opening GPU {uuid}", self.lib.nvmlDeviceGetHandleByUUID, uuid)
        index = int(self.call("reading the GPU index", self.lib.nvmlDeviceGetIndex, handle))
        return Gpu(self, index, handle)

    def driver_version(self) -> str:
        """The NVIDIA driver's version string."""
        return _text(self.call("reading the driver version", self.lib.nvmlSystemGetDriverVersion))

    def close(self) -> None:
        """Release this handle; NVML itself is shut down when the last open handle closes."""
        if not self._open:
            return
        self._open = False
        with Nvml._lock:
            Nvml._users -= 1
            if Nvml._users == 0:
                with contextlib.suppress(Exception):  # shutting down: nothing useful to do with a failure
                    self.lib.nvmlShutdown()

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class PowerLimits:
    """Board power limits in watts: the settable range, the default and the one in force."""

    min_w: float
    max_w: float
    default_w: float
    current_w: float


class Gpu:
    """One GPU's NVML handle with typed, unit-converted reads and writes (W, J, MHz)."""

    def __init__(self, nvml: Nvml, index: int, handle: Any) -> None:
        self.nvml = nvml
        self.lib = nvml.lib
        self.index = index
        self.handle = handle

    def _call(self, what: str, name: str, *args: Any) -> Any:
        fn = getattr(self.lib, name, None)
        if fn is None:
            raise UnsupportedError(f"{what} is not supported by this nvidia-ml-py ({name} missing)")
        return self.nvml.call(f"{what} on GPU {self.index}", fn, self.handle, *args)

    # --- facts -------------------------------------------------------------------------------
    def name(self) -> str:
        """The product name, e.g. ``Tesla P40``."""
        return _text(self._call("reading the name", "nvmlDeviceGetName"))

    def uuid(self) -> str:
        """The GPU's UUID (``GPU-...``), stable across reboots unlike the index."""
        return _text(self._call("reading the UUID", "nvmlDeviceGetUUID"))

    def architecture(self) -> str:
        """The architecture's name (``Volta``, ``Ampere``...); ``unknown`` where NVML cannot tell."""
        try:
            code = int(self._call("reading the architecture", "nvmlDeviceGetArchitecture"))
        except UnsupportedError:
            return "unknown"
        return _ARCHITECTURES.get(code, f"unknown ({code})")

    def power_limits(self) -> PowerLimits:
        """The settable range, default and current board power limits, in watts (NVML gives mW)."""
        lo, hi = self._call("reading the power limit range", "nvmlDeviceGetPowerManagementLimitConstraints")
        default = self._call("reading the default power limit", "nvmlDeviceGetPowerManagementDefaultLimit")
        current = self._call("reading the power limit", "nvmlDeviceGetPowerManagementLimit")
        return PowerLimits(lo / 1000.0, hi / 1000.0, default / 1000.0, current / 1000.0)

    def memory_clocks(self) -> tuple[int, ...]:
        """The supported memory clocks in MHz, ascending."""
        return tuple(sorted(int(c) for c in self._call("reading memory clocks", "nvmlDeviceGetSupportedMemoryClocks")))

    def graphics_clocks(self, memory_mhz: int | None = None) -> tuple[int, ...]:
        """Supported SM clocks (ascending) at ``memory_mhz`` (default: the highest memory clock)."""
        if memory_mhz is None:
            memory_mhz = max(self.memory_clocks())
        clocks = self._call("reading graphics clocks", "nvmlDeviceGetSupportedGraphicsClocks", memory_mhz)
        return tuple(sorted({int(c) for c in clocks}))

    def application_clocks(self) -> tuple[int, int]:
        """(memory MHz, SM MHz) of the application clocks in force."""
        mem = self._call(
            "reading the memory application clock", "nvmlDeviceGetApplicationsClock", self.lib.NVML_CLOCK_MEM
        )
        sm = self._call("reading the SM application clock", "nvmlDeviceGetApplicationsClock", self.lib.NVML_CLOCK_SM)
        return int(mem), int(sm)

    # --- power -------------------------------------------------------------------------------
    def instant_power_w(self) -> float:
        """Instantaneous board power (``NVML_FI_DEV_POWER_INSTANT``), where the GPU has the field."""
        field = getattr(self.lib, "NVML_FI_DEV_POWER_INSTANT", None)
        if field is None:
            raise UnsupportedError("this nvidia-ml-py has no NVML_FI_DEV_POWER_INSTANT field")
        values = self._call("reading instantaneous power", "nvmlDeviceGetFieldValues", [field])
        v = values[0]
        ret = int(v.nvmlReturn)
        if ret != getattr(self.lib, "NVML_SUCCESS", 0):
            raise translate(self.lib, self.lib.NVMLError(ret), f"reading instantaneous power on GPU {self.index}")
        return float(v.value.uiVal) / 1000.0

    def power_usage_w(self) -> float:
        """``nvmlDeviceGetPowerUsage``: instantaneous before Ampere, a 1 s average on Ampere (except GA100) and newer."""
        return float(self._call("reading power", "nvmlDeviceGetPowerUsage")) / 1000.0

    def total_energy_j(self) -> float:
        """The board's energy counter since the driver loaded (Volta and newer)."""
        return float(self._call("reading the energy counter", "nvmlDeviceGetTotalEnergyConsumption")) / 1000.0

    # --- knobs (need root or CAP_SYS_ADMIN) --------------------------------------------------
    def set_locked_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock into [min_mhz, max_mhz] (needs root; Volta and newer)."""
        self._call("locking the SM clock", "nvmlDeviceSetGpuLockedClocks", min_mhz, max_mhz)

    def reset_locked_clocks(self) -> None:
        """Let the GPU choose its SM clock again."""
        self._call("unlocking the SM clock", "nvmlDeviceResetGpuLockedClocks")

    def set_application_clocks(self, memory_mhz: int, sm_mhz: int) -> None:
        """Set the application clocks (memory, SM), the older way to fix the SM clock."""
        self._call("setting application clocks", "nvmlDeviceSetApplicationsClocks", memory_mhz, sm_mhz)

    def set_power_limit_w(self, watts: float) -> None:
        """Set the board power limit to ``watts`` (sent to NVML in mW; needs root)."""
        self._call("setting the power limit", "nvmlDeviceSetPowerManagementLimit", int(round(watts * 1000)))
