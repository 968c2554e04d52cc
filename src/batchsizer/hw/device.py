"""A real device for the control loop: a PyTorch runner on wall-clock time with a power meter.

The CPU device uses RAPL where it can read it; where it cannot, it gets a :class:`NoMeter`, which
lets jobs without a power question run (``batchsizer profile`` records throughput only) but
refuses, with the reason, to pretend to measure power under a cap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from batchsizer.batching import Batch
from batchsizer.clock import WallClock
from batchsizer.devices import BatchOutcome, Device
from batchsizer.errors import ConfigError, DeviceError
from batchsizer.hw.torch_runner import TorchRunner
from batchsizer.telemetry import PowerMeter, PowerSample

log = logging.getLogger(__name__)


class NoMeter(PowerMeter):
    """Stands in where no power sensor can be read; any request for power raises why."""

    source = "none"
    available = False

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason

    def samples(self, start: float, end: float) -> list[PowerSample]:
        raise ConfigError(
            "cap",
            f"{self.device} has no usable power meter ({self.reason}); a power cap cannot be enforced on it",
        )


class TorchDevice(Device):
    """Runs batches through a :class:`TorchRunner`; ``batch.prepared`` is the input tensor/array.

    ``input_fn`` builds the input from the batch when nothing was prepared. ``closers`` are
    called on close (worker pools, NVML), after the meter stops.
    """

    def __init__(
        self,
        name: str,
        runner: TorchRunner,
        meter: PowerMeter,
        *,
        input_fn: Callable[[Batch[Any]], Any] | None = None,
        closers: list[Callable[[], None]] | None = None,
    ) -> None:
        self.name = name
        self.runner = runner
        self.clock = WallClock()
        self.meter = meter
        self.input_fn = input_fn
        self.closers = list(closers or [])
        self._closed = False

    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        x = batch.prepared
        if x is None:
            if self.input_fn is None:
                raise DeviceError(f"{self.name}: the batch has no prepared input and the device no input function")
            x = self.input_fn(batch)
        start, end, labels = self.runner.run(x)
        return BatchOutcome(start, end, labels)

    def describe(self) -> dict[str, Any]:
        meter = getattr(self.meter, "describe", None)
        return {
            "name": self.name,
            **self.runner.describe(),
            "meter": meter() if callable(meter) else {"source": self.meter.source},
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.meter.close()
        for close in reversed(self.closers):
            try:
                close()
            except Exception as exc:  # closing: report, keep closing the rest
                log.error("%s: closing failed: %s", self.name, exc)
