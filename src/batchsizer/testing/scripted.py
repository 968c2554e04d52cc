"""Test support: a meter driven by hand or by a function of time, a device on virtual time whose batch
time and power are given functions, and the ``scripted`` device kind (``--device scripted``) built on
them. Not for production jobs: nothing here measures anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchsizer.core.batching import Batch
from batchsizer.core.clock import VirtualClock
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.telemetry import PowerMeter, PowerSample, SampleBuffer
from batchsizer.core.types import DeviceKnobs
from batchsizer.core.workloads import Workload, WorkloadOptions
from batchsizer.errors import UnsupportedError


class ScriptedMeter(PowerMeter):
    """A meter that tests (and the default demo before the simulator) drive by hand.

    Push samples with :meth:`push`, or give a function of time that is sampled every
    ``update_period_s`` when a window is asked for.
    """

    source = "scripted"

    def __init__(self, update_period_s: float = 0.02, fn=None) -> None:
        self.update_period_s = update_period_s
        self._buffer = SampleBuffer()
        self._fn = fn
        self._next_t = 0.0

    def push(self, t: float, watts: float) -> None:
        """Add a reading of ``watts`` at ``t`` by hand (in time order)."""
        self._buffer.append(t, watts)

    def advance_to(self, end: float) -> None:
        """Sample the function up to ``end`` (a device on virtual time calls this as time moves)."""
        if self._fn is None:
            return
        while self._next_t <= end:
            self._buffer.append(self._next_t, float(self._fn(self._next_t)))
            self._next_t += self.update_period_s

    def samples(self, start: float, end: float) -> list[PowerSample]:
        """The readings in [start, end], sampling the function up to ``end`` first if one was given."""
        self.advance_to(end)
        return self._buffer.between(start, end)


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
        """Set the clock to a level of ``knobs`` (None: its default) and note it in ``clock_history``."""
        if not self.knobs.has_clocks:
            super().set_clock(mhz)
            return
        if mhz is not None and mhz not in self.knobs.clock_levels_mhz:
            raise UnsupportedError(f"{mhz} MHz is not one of {self.knobs.clock_levels_mhz}")
        self.clock_mhz = mhz if mhz is not None else self.knobs.default_clock_mhz
        self.clock_history.append((self.clock.now(), self.clock_mhz))

    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        """Advance virtual time by ``prep_s`` idle then ``time_fn`` computing at ``power_fn``."""
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


def open_scripted_workload(opts: WorkloadOptions) -> Workload:
    """``--device scripted``: a tiny analytic device (no hardware, no simulator) for tests."""
    device = ScriptedDevice(
        time_fn=lambda b, c: 0.004 + 0.0012 * b,
        power_fn=lambda b, c: min(250.0, 60.0 + 24.0 * b**0.5),
        prep_s=0.002,
        update_period_s=0.02,
    )
    return Workload(device, range(opts.items), info={"device": "scripted"})
