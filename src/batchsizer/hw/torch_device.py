"""A real device for the control loop: a PyTorch runner on wall-clock time with a power meter.

The CPU device uses RAPL where it can read it; where it cannot, it gets a :class:`NoMeter`, which
lets jobs without a power question run (``batchsizer profile`` records throughput only; ``batchsizer
run --controller static`` with no cap runs uncapped) but refuses, with the reason, to pretend to
measure power under a cap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from batchsizer.core.batching import Batch
from batchsizer.core.clock import WallClock
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.telemetry import PowerMeter, PowerSample
from batchsizer.errors import ConfigError, DeviceError
from batchsizer.hw.torch_runner import TorchRunner

log = logging.getLogger(__name__)


class NoMeter(PowerMeter):
    """Stands in where no power sensor can be read; any request for power raises why."""

    source = "none"
    available = False
    #: no sensor, so no update period: an empty window is never taken for a dead sampler
    update_period_s = math.inf

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        #: set for a job that runs uncapped (:func:`uncapped_note`): then there are simply no samples
        self.allow_empty = False

    def samples(self, start: float, end: float) -> list[PowerSample]:
        """No readings for an uncapped job; otherwise ConfigError: a cap cannot be enforced without a meter."""
        if self.allow_empty:
            return []
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
        """Run the prepared input (or ``input_fn``'s) through the model; the outputs are the predicted classes."""
        x = batch.prepared
        if x is None:
            if self.input_fn is None:
                raise DeviceError(f"{self.name}: the batch has no prepared input and the device no input function")
            x = self.input_fn(batch)
        start, end, labels = self.runner.run(x)
        return BatchOutcome(start, end, labels)

    def describe(self) -> dict[str, Any]:
        """The name, the runner's model, device and dtype, and the meter's description."""
        meter = getattr(self.meter, "describe", None)
        return {
            "name": self.name,
            **self.runner.describe(),
            "meter": meter() if callable(meter) else {"source": self.meter.source},
        }

    def close(self) -> None:
        """Stop the meter, then call the closers in reverse order; each failure is logged, not raised."""
        if self._closed:
            return
        self._closed = True
        self.meter.close()
        for close in reversed(self.closers):
            try:
                close()
            except Exception as exc:  # closing: report, keep closing the rest
                log.error("%s: closing failed: %s", self.name, exc)


class Uncapped:
    """The cap source of a job run without a cap (a device with no power meter, static batch size)."""

    def cap_at(self, elapsed: float) -> float:
        """Infinity: nothing to hold the power under."""
        return math.inf

    def __repr__(self) -> str:
        return "none (no power meter)"


def uncapped_note(meter: PowerMeter, *, cap_given: bool, controller: str) -> str | None:
    """None when ``meter`` can measure; else the summary note for a job that may run uncapped, or why it may not.

    Without a power meter nothing can be capped, and only the static controller works without power
    readings; such a job runs uncapped (the meter then returns no samples) rather than stopping at
    its first control period. Any other combination is refused before anything runs.
    """
    if getattr(meter, "available", True):
        return None
    device = getattr(meter, "device", "the device")
    reason = getattr(meter, "reason", "no power sensor")
    if cap_given:
        raise ConfigError(
            "cap",
            f"{device} has no usable power meter ({reason}), so a cap cannot be enforced on it; leave out "
            "--cap/--cap-schedule/--cap-file and use --controller static to run it uncapped",
        )
    if controller != "static":
        raise ConfigError(
            "controller",
            f"{controller} needs power readings and {device} has no usable power meter ({reason}); use "
            "--controller static to run it uncapped at a fixed --batch-size",
        )
    if isinstance(meter, NoMeter):
        meter.allow_empty = True
    return f"{device} has no power meter ({reason}): ran uncapped; power and energy were not measured"
