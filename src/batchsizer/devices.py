"""The device interface the control loop drives, real or simulated, and a scripted one for tests.

A device runs a batch, owns a clock (wall or virtual) and a power meter, and exposes its knobs:
clock levels through :meth:`Device.set_clock` and the board power limit through
:meth:`Device.set_power_limit`, where it has them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchsizer.batching import Batch
from batchsizer.clock import Clock, VirtualClock
from batchsizer.errors import UnsupportedError
from batchsizer.policies.base import DeviceKnobs, Setting
from batchsizer.telemetry import PowerMeter, ScriptedMeter


@dataclass(slots=True)
class BatchOutcome:
    """When a batch started and ended on the device's clock, and its outputs if any."""

    start: float
    end: float
    outputs: Any = None

    @property
    def latency_s(self) -> float:
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
        return {"name": self.name}

    def close(self) -> None:
        """Restore what was changed and release resources."""
        self.meter.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ScriptedDevice(Device):
    """A device on virtual time whose batch time and power are given functions, for tests.

    Each batch idles at ``idle_w`` for ``prep_s`` then computes at ``power_fn(size, clock)`` for
    ``time_fn(size, clock)`` seconds; the meter sees that every ``update_period_s``.
    """

    name = "scripted"

    def __init__(
        self,
        time_fn: Callable[[int, int | None], float],
        power_fn: Callable[[int, int | None], float],
        *,
        idle_w: float = 50.0,
        prep_s: float = 0.0,
        clock_levels_mhz: tuple[int, ...] = (),
        update_period_s: float = 0.005,
    ) -> None:
        self.clock = VirtualClock()
        self.time_fn = time_fn
        self.power_fn = power_fn
        self.idle_w = idle_w
        self.prep_s = prep_s
        self.knobs = DeviceKnobs(clock_levels_mhz, clock_levels_mhz[-1] if clock_levels_mhz else None)
        self.clock_mhz: int | None = self.knobs.default_clock_mhz
        self._segments: list[tuple[float, float, float]] = []  # (start, end, watts) of true power
        self.meter = ScriptedMeter(update_period_s, fn=self._true_power)
        self.clock_history: list[tuple[float, int | None]] = []

    def _true_power(self, t: float) -> float:
        for start, end, watts in reversed(self._segments):
            if start <= t < end:
                return watts
            if end <= t:
                break
        return self.idle_w

    def set_clock(self, mhz: int | None) -> None:
        if not self.knobs.has_clocks:
            super().set_clock(mhz)
            return
        if mhz is not None and mhz not in self.knobs.clock_levels_mhz:
            raise UnsupportedError(f"{mhz} MHz is not one of {self.knobs.clock_levels_mhz}")
        self.clock_mhz = mhz if mhz is not None else self.knobs.default_clock_mhz
        self.clock_history.append((self.clock.now(), self.clock_mhz))

    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        start = self.clock.now()
        size = len(batch)
        self.clock.advance(self.prep_s)
        compute_start = self.clock.now()
        seconds = self.time_fn(size, self.clock_mhz)
        self.clock.advance(seconds)
        self._segments.append((compute_start, self.clock.now(), self.power_fn(size, self.clock_mhz)))
        self.meter.advance_to(self.clock.now())
        if len(self._segments) > 64:
            del self._segments[:-64]
        return BatchOutcome(start, self.clock.now())
