"""GPU knobs for the baselines: the SM clock (DVFS) and the board power limit (hardware cap).

Both need root or CAP_SYS_ADMIN; without it the first change raises
:class:`PermissionDeniedError` saying so. The clock is locked with ``nvmlDeviceSetGpuLockedClocks``
(Volta and newer) and falls back to application clocks on older GPUs such as the P40. Whatever
was changed is put back by :meth:`GpuActuators.restore` (the device calls it on close).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from batchsizer.errors import ConfigError, DeviceError, UnsupportedError, describe_values
from batchsizer.hw.nvml import Gpu

log = logging.getLogger(__name__)

#: the Linux capability that NVML's clock and power-limit calls need when not root
CAP_SYS_ADMIN = 21


def settings_permission(status: Path = Path("/proc/self/status")) -> str | None:
    """None when this process may change GPU clocks and power limits; else why not.

    Found without touching the GPU, from CAP_SYS_ADMIN in the effective capability set (root on a
    host has it; root in a container usually does not, and NVML then refuses); where the kernel
    does not say, from being root. NVML can still refuse (a GPU without clock control): the loop
    then carries on with the batch size alone."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                if int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1:
                    return None
                root = hasattr(os, "geteuid") and os.geteuid() == 0
                return "changing GPU clocks or power limits needs CAP_SYS_ADMIN, which this process " + (
                    "does not have although it runs as root (a container?)" if root else "does not have (not root)"
                )
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return None
    return "changing GPU clocks or power limits needs root or CAP_SYS_ADMIN, which this process does not have"


class GpuActuators:
    """Sets one GPU's clock and power limit and remembers how to undo it."""

    def __init__(self, gpu: Gpu, *, allow_changes: bool = True) -> None:
        self.gpu = gpu
        self.allow_changes = allow_changes
        self.clock_mode: str | None = None  # "locked" or "application" once the clock was set
        self._saved_app_clocks: tuple[int, int] | None = None
        self._saved_limit_w: float | None = None
        self._clock_levels: tuple[int, ...] | None = None

    def _guard(self, what: str) -> None:
        if not self.allow_changes:
            raise UnsupportedError(f"{what}: this device was opened read-only (settings may not be changed)")

    def clock_levels(self) -> tuple[int, ...]:
        """The GPU's supported SM clocks (MHz, ascending), read from NVML once and kept."""
        if self._clock_levels is None:
            self._clock_levels = self.gpu.graphics_clocks()
        return self._clock_levels

    def set_clock(self, mhz: int | None) -> None:
        """Lock the SM clock at ``mhz``; None lets the GPU choose again."""
        if mhz is None:
            self.restore_clock()
            return
        self._guard("setting the SM clock")
        levels = self.clock_levels()
        if levels and mhz not in levels:
            raise ConfigError("clock", f"{mhz} MHz is not a supported SM clock of this GPU; choose from {describe_values(levels)}")
        if self.clock_mode in (None, "locked"):
            try:
                self.gpu.set_locked_clocks(mhz, mhz)
                self.clock_mode = "locked"
                return
            except UnsupportedError:
                if self.clock_mode == "locked":
                    raise
                log.info("locked clocks not supported on GPU %d; using application clocks", self.gpu.index)
        if self._saved_app_clocks is None:
            self._saved_app_clocks = self.gpu.application_clocks()
        self.gpu.set_application_clocks(self._saved_app_clocks[0], mhz)
        self.clock_mode = "application"

    def restore_clock(self) -> None:
        """Undo the clock change: unlock the clock, or put back the saved application clocks."""
        if self.clock_mode == "locked":
            self.gpu.reset_locked_clocks()
        elif self.clock_mode == "application" and self._saved_app_clocks is not None:
            self.gpu.set_application_clocks(*self._saved_app_clocks)
        self.clock_mode = None

    def set_power_limit(self, watts: float | None) -> None:
        """Set the board power limit; None puts back the one in force before the first change."""
        if watts is None:
            self.restore_power_limit()
            return
        self._guard("setting the power limit")
        limits = self.gpu.power_limits()
        if not limits.min_w <= watts <= limits.max_w:
            raise ConfigError(
                "power limit", f"{watts:g} W is outside this GPU's settable range {limits.min_w:g}-{limits.max_w:g} W"
            )
        self.gpu.set_power_limit_w(watts)
        if self._saved_limit_w is None:  # only once the change went through is there anything to undo
            self._saved_limit_w = limits.current_w

    def restore_power_limit(self) -> None:
        """Put back the power limit in force before the first change, if one was made."""
        if self._saved_limit_w is not None:
            self.gpu.set_power_limit_w(self._saved_limit_w)
            self._saved_limit_w = None

    def restore(self) -> None:
        """Undo every change; tries both knobs and raises the first failure afterwards."""
        first: DeviceError | None = None
        for undo in (self.restore_clock, self.restore_power_limit):
            try:
                undo()
            except DeviceError as exc:
                log.error("could not restore a GPU setting: %s", exc)
                first = first or exc
        if first is not None:
            raise first
