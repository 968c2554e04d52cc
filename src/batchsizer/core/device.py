"""The device interface the control loop drives, real or simulated (a scripted one for tests is in
:mod:`batchsizer.testing.scripted`).

A device runs a batch, owns a clock (wall or virtual) and a power meter, and exposes its knobs:
clock levels through :meth:`Device.set_clock` and the board power limit through
:meth:`Device.set_power_limit`, where it has them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchsizer.core.batching import Batch
from batchsizer.core.clock import Clock
from batchsizer.core.telemetry import PowerMeter
from batchsizer.core.types import DeviceKnobs, Setting
from batchsizer.errors import UnsupportedError

if TYPE_CHECKING:
    from batchsizer.core.cap_rule import CapRule
    from batchsizer.core.observer import LoopObserver


@dataclass(slots=True)
class BatchOutcome:
    """When a batch started and ended on the device's clock, and its outputs if any."""

    start: float
    end: float
    outputs: Any = None

    @property
    def latency_s(self) -> float:
        """Seconds from the batch's start to its end on the device's clock."""
        return self.end - self.start


class Device(ABC):
    """Anything the loop can run batches on."""

    name: str = "device"
    clock: Clock
    meter: PowerMeter
    #: a meter of the true power where it is known (the simulator), for honest accounting
    reference_meter: PowerMeter | None = None
    knobs: DeviceKnobs = DeviceKnobs()

    @abstractmethod
    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        """Process one batch and return its timing (and outputs)."""

    def set_clock(self, mhz: int | None) -> None:
        """Lock the SM clock to ``mhz`` (None: let the device choose)."""
        if mhz is not None:
            raise UnsupportedError(f"{self.name} has no settable clock")

    def set_power_limit(self, watts: float | None) -> None:
        """Set the board's own power limit (None: restore the default)."""
        if watts is not None:
            raise UnsupportedError(f"{self.name} has no settable power limit")

    def apply(self, setting: Setting) -> None:
        """Apply the clock and power-limit parts of a setting (the batch size is applied to the stream)."""
        if setting.clock_mhz is not None or self.knobs.has_clocks:
            self.set_clock(setting.clock_mhz)
        if setting.power_limit_w is not None or self.knobs.has_power_limits:
            self.set_power_limit(setting.power_limit_w)

    def describe(self) -> dict[str, Any]:
        """What the job's start record and ``on_start`` tell about the device; subclasses add their details."""
        return {"name": self.name}

    def loop_observers(self, cap_rule: CapRule) -> Sequence[LoopObserver]:
        """Observers the device attaches to each job run on it, fresh for each, ahead of the job's own
        (the simulator: its true-power accounting, :mod:`batchsizer.core.reference_power`). None by default."""
        return ()

    def close(self) -> None:
        """Restore what was changed and release resources."""
        self.meter.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
