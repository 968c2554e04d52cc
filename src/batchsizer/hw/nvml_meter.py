"""Board power of an NVIDIA GPU through NVML, sampled at the sensor's own update rate.

Reads ``NVML_FI_DEV_POWER_INSTANT`` where the GPU has it; otherwise ``nvmlDeviceGetPowerUsage``,
which is instantaneous before Ampere but a 1 s average on Ampere (except GA100) and newer, too
slow to see a batch's spike, and the meter says so in ``notes`` and the log. Energy comes from
the total-energy counter where present (Volta and newer). The sensor's update period is
measured at start by watching how often the reading changes.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

from batchsizer.core.clock import Clock
from batchsizer.errors import DeviceError, UnsupportedError
from batchsizer.hw.nvml import Gpu
from batchsizer.hw.sampler import InstantReading, SampledMeter, TransientReadError

log = logging.getLogger(__name__)

#: sensor update periods from the literature (the data README's table), used when measuring fails
KNOWN_PERIOD_S = {"Pascal": 0.02, "Volta": 0.02}
DEFAULT_PERIOD_S = 0.1
#: poll at half the update period, within these bounds (NVML may return 0 when polled faster)
MIN_POLL_S, MAX_POLL_S = 0.005, 0.05
AVERAGING_ARCHITECTURES = {"Ampere", "Ada", "Hopper", "Blackwell"}


def is_ga100(name: str) -> bool:
    """Whether ``name`` is a GA100 part (A100, A30, A800): unlike later Ampere, its power usage is not a 1 s mean."""
    return any(tag in name for tag in ("A100", "A30", "A800"))


def measure_update_period(
    read: Callable[[], float], seconds: float = 0.6, changes: int = 8, poll_s: float = 0.001
) -> float | None:
    """Median time between changes of the reading, polled every ``poll_s``; None if it never changed twice.

    Polled this fast, NVML may answer 0 W or "not supported" now and then: such reads are skipped."""
    t_end = time.monotonic() + seconds
    last: float | None = None
    times: list[float] = []
    while time.monotonic() < t_end and len(times) <= changes:
        time.sleep(poll_s)
        try:
            value = read()
        except DeviceError:
            continue
        if not value or value <= 0:
            continue
        if last is None:
            last = value
        elif value != last:
            times.append(time.monotonic())
            last = value
    if len(times) < 3:
        return None
    return statistics.median(b - a for a, b in zip(times, times[1:]))


class NvmlMeter(SampledMeter):
    """Power of one GPU, polled in a background thread into a ring buffer on the loop's clock."""

    def __init__(
        self,
        gpu: Gpu,
        *,
        clock: Clock | None = None,
        probe_s: float = 0.6,
        update_period_s: float | None = None,
        start: bool = True,
    ) -> None:
        self.gpu = gpu
        self.notes: list[str] = []
        name = gpu.name()
        arch = gpu.architecture()
        try:
            gpu.instant_power_w()
            self._power_fn = gpu.instant_power_w
            self.source = "nvml:instant"
        except UnsupportedError:
            self._power_fn = gpu.power_usage_w
            self.source = "nvml:power_usage"
            if arch in AVERAGING_ARCHITECTURES and not is_ga100(name):
                self.notes.append(
                    f"{name} has no NVML_FI_DEV_POWER_INSTANT here; falling back to nvmlDeviceGetPowerUsage, "
                    "which on Ampere (except GA100) and newer is a 1 s average: short spikes are invisible "
                    "and caps may be exceeded unseen (a newer driver, >= 530, adds the instant field)"
                )
            else:
                self.notes.append(
                    f"{name} has no NVML_FI_DEV_POWER_INSTANT; using nvmlDeviceGetPowerUsage, instantaneous on {arch}"
                )
        try:
            gpu.total_energy_j()
            self.has_energy_counter = True
        except UnsupportedError:
            self.has_energy_counter = False
            self.notes.append(
                f"{name} has no total-energy counter (it needs Volta or newer); energy is integrated from samples"
            )
        self.measured_period_s: float | None = None
        if update_period_s is None:
            self.measured_period_s = measure_update_period(self._power_fn, seconds=probe_s) if probe_s > 0 else None
            if self.measured_period_s is None:
                update_period_s = KNOWN_PERIOD_S.get(arch, DEFAULT_PERIOD_S)
                source = f"known for {arch}" if arch in KNOWN_PERIOD_S else f"assumed where none is known ({arch})"
                self.notes.append(
                    f"the power reading did not change during the {probe_s:g} s probe (idle GPU?); "
                    f"using the {update_period_s * 1000:g} ms update period {source}"
                )
            else:
                update_period_s = self.measured_period_s
        self.update_period_s = float(update_period_s)
        #: how far back one reading looks: about 1 s for the averaged nvmlDeviceGetPowerUsage of Ampere
        #: (except GA100) and newer, else about one update period (the instant field's short window)
        averaged = self.source == "nvml:power_usage" and arch in AVERAGING_ARCHITECTURES and not is_ga100(name)
        self.window_s = 1.0 if averaged else self.update_period_s
        for note in self.notes:
            log.warning("%s", note)
        super().__init__(
            self._read_both,
            poll_s=min(max(self.update_period_s / 2, MIN_POLL_S), MAX_POLL_S),
            clock=clock,
            name=f"nvml-sampler-{gpu.index}",
        )
        if start:
            self.start()

    def _read_both(self) -> InstantReading:
        try:
            watts = self._power_fn()
            joules = self.gpu.total_energy_j() if self.has_energy_counter else None
        except UnsupportedError as exc:
            # both worked when the meter opened: NVML says this when polled too often (the sampler
            # then rides it out and polls less often), not because the GPU lost the feature
            raise TransientReadError(f"{exc} (it was supported when the meter opened)") from None
        if watts <= 0:  # a working GPU never draws 0 W: NVML's other answer to being polled too often
            raise TransientReadError(f"GPU {self.gpu.index} read 0 W")
        return watts, joules

    def describe(self) -> dict[str, object]:
        """Where readings come from, the update period (measured or assumed), polling and notes."""
        return {
            "source": self.source,
            "update_period_s": self.update_period_s,
            "update_period_measured": self.measured_period_s is not None,
            "poll_s": self.poll_s,
            "energy_counter": self.has_energy_counter,
            "read_errors": self.errors,
            "notes": list(self.notes),
        }
