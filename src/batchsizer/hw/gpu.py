"""An NVIDIA GPU as a device: PyTorch on ``cuda:N``, NVML power, and the clock/power-limit knobs.

The GPU PyTorch uses is matched to its NVML handle by UUID (``CUDA_VISIBLE_DEVICES`` and device
ordering can make the numbers differ). Settings changed through the knobs are put back on close.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from batchsizer.core.types import DeviceKnobs
from batchsizer.errors import DeviceError, UnsupportedError
from batchsizer.hw.actuators import GpuActuators, settings_permission
from batchsizer.hw.nvml import Gpu, Nvml, PowerLimits
from batchsizer.hw.nvml_meter import NvmlMeter
from batchsizer.hw.torch_device import TorchDevice

#: at most this many clock levels are offered to controllers (evenly spread, ends included)
MAX_CLOCK_LEVELS = 16


@dataclass
class GpuInfo:
    """What ``batchsizer devices`` shows for a GPU."""

    index: int
    name: str
    uuid: str
    architecture: str
    power_limits: PowerLimits | None
    memory_clocks_mhz: tuple[int, ...]
    sm_clocks_mhz: tuple[int, ...]
    power_source: str
    energy_counter: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (clock tuples as lists), for ``batchsizer devices --json``."""
        d = asdict(self)
        d["memory_clocks_mhz"] = list(self.memory_clocks_mhz)
        d["sm_clocks_mhz"] = list(self.sm_clocks_mhz)
        return d


def _or_none(fn: Any) -> Any:
    try:
        return fn()
    except UnsupportedError:
        return None


def gpu_info(gpu: Gpu) -> GpuInfo:
    """Facts about a GPU, reading only (no permission needed); absent features come back empty."""
    memory = _or_none(gpu.memory_clocks) or ()
    sm = _or_none(lambda: gpu.graphics_clocks(max(memory))) if memory else None
    instant = _or_none(gpu.instant_power_w) is not None
    energy = _or_none(gpu.total_energy_j) is not None
    return GpuInfo(
        index=gpu.index,
        name=gpu.name(),
        uuid=_or_none(gpu.uuid) or "",
        architecture=gpu.architecture(),
        power_limits=_or_none(gpu.power_limits),
        memory_clocks_mhz=tuple(memory),
        sm_clocks_mhz=tuple(sm or ()),
        power_source="instant (NVML_FI_DEV_POWER_INSTANT)" if instant else "nvmlDeviceGetPowerUsage",
        energy_counter=energy,
    )


def spread_levels(levels: tuple[int, ...], most: int = MAX_CLOCK_LEVELS) -> tuple[int, ...]:
    """Up to ``most`` levels evenly spread over ``levels`` (ascending), lowest and highest kept."""
    if len(levels) <= most:
        return levels
    step = (len(levels) - 1) / (most - 1)
    return tuple(sorted({levels[round(i * step)] for i in range(most)}))


def open_nvml_gpu(torch_index: int) -> tuple[Nvml, Gpu]:
    """NVML's handle for the GPU PyTorch calls ``cuda:torch_index`` (matched by UUID where torch knows it)."""
    nvml = Nvml()
    try:
        uuid = None
        try:
            import torch

            props = torch.cuda.get_device_properties(torch_index)
            uuid = getattr(props, "uuid", None)
        except Exception:  # no torch / no CUDA here: fall back to the index
            uuid = None
        if uuid is not None:
            text = str(uuid)
            return nvml, nvml.gpu_by_uuid(text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
        return nvml, nvml.gpu(torch_index)
    except BaseException:
        nvml.close()
        raise


class CudaDevice(TorchDevice):
    """A GPU for the control loop.

    Its clocks are offered to controllers (``adaptive`` moves them with the batch size, ``dvfs`` only
    them) when the process may change them: ``allow_changes=None`` (the default) decides that from
    root or CAP_SYS_ADMIN, ``False`` opens the GPU read-only (``--read-only``, the GPU check). Without
    it the controllers move the batch size alone, and nothing on the card is changed."""

    def __init__(
        self,
        name: str,
        runner: Any,
        nvml: Nvml,
        gpu: Gpu,
        *,
        meter: NvmlMeter | None = None,
        allow_changes: bool | None = None,
        **kw: Any,
    ) -> None:
        self.gpu = gpu
        self.info = gpu_info(gpu)
        withheld = "opened read-only" if allow_changes is False else settings_permission()
        self.actuators = GpuActuators(gpu, allow_changes=withheld is None)
        meter = meter or NvmlMeter(gpu)
        super().__init__(name, runner, meter, **kw)
        self.closers.insert(0, nvml.close)
        levels = spread_levels(self.info.sm_clocks_mhz)
        if withheld is None or not levels:
            self.knobs = DeviceKnobs(levels, levels[-1] if levels else None)
        else:
            self.knobs = DeviceKnobs(clocks_withheld=f"{name}'s clocks are not offered: {withheld}")

    def set_clock(self, mhz: int | None) -> None:
        """Lock the SM clock through NVML (None: unlock); UnsupportedError when opened read-only."""
        self.actuators.set_clock(mhz)

    def set_power_limit(self, watts: float | None) -> None:
        """Set the board power limit through NVML (None: the one before the job)."""
        self.actuators.set_power_limit(watts)

    def describe(self) -> dict[str, Any]:
        """The torch device's description plus the GPU's NVML facts and whether settings may change."""
        d = super().describe()
        d["gpu"] = self.info.to_dict()
        d["settings"] = "changeable" if self.actuators.allow_changes else "read-only"
        return d

    def close(self) -> None:
        """Put back the clock and power limit the job changed (failures logged), then close as TorchDevice."""
        if self._closed:
            return
        with contextlib.suppress(DeviceError):  # logged by restore; closing goes on
            self.actuators.restore()
        super().close()
