"""A simulated GPU behind a real clock: each batch's simulated duration is really waited.

The simulator runs on virtual time (a batch of ResNet-50 advances its clock by 40 ms in a few
microseconds); a server must answer in real time, and a batch job run with ``--time-scale`` lasts as
long as it would on the card (so its cap file can be edited by hand while it runs). :class:`RealtimeSimDevice` maps the wall clock
onto the simulator's clock (``time_scale`` real seconds per simulated second; 1 by default): its
``clock.now()`` is the simulated time matching now; before a batch, the card idles up to now
(``SimDevice.idle``: idle power in the trace, the power average and limiter aging); after it, the
device sleeps until the wall clock reaches the batch's simulated end. The meter is the simulator's
sensor on the same (simulated) time base, so the control loop reads it exactly as for a batch job.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from batchsizer.core.batching import Batch
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.errors import ConfigError


class _MappedClock:
    """The simulated time that corresponds to the wall clock now."""

    def __init__(self, device: RealtimeSimDevice) -> None:
        self.device = device

    def now(self) -> float:
        d = self.device
        return d.v0 + (time.monotonic() - d.r0) / d.time_scale

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds * self.device.time_scale)


def check_time_scale(time_scale: float) -> float:
    """``time_scale`` if it is a factor above 0 and at most 1000; ConfigError otherwise."""
    if not (isinstance(time_scale, (int, float)) and 0 < time_scale <= 1000):
        raise ConfigError("time-scale", f"must be a positive factor up to 1000 (1: real time), got {time_scale!r}")
    return float(time_scale)


class RealtimeSimDevice(Device):
    """Wraps a :class:`~batchsizer.sim.sim_device.SimDevice` so its batches take real time."""

    def __init__(self, inner: Any, time_scale: float = 1.0) -> None:
        check_time_scale(time_scale)
        if not hasattr(inner, "idle"):
            raise ConfigError("device", f"{getattr(inner, 'name', inner)!r} is not a simulated device")
        self.inner = inner
        self.name = inner.name
        self.meter = inner.meter
        self.reference_meter = inner.reference_meter
        self.knobs = inner.knobs
        self.time_scale = float(time_scale)
        self.r0 = time.monotonic()
        self.v0 = inner.clock.now()
        self.clock = _MappedClock(self)
        self._lock = threading.Lock()

    def _catch_up(self) -> None:
        gap = self.clock.now() - self.inner.clock.now()
        if gap > 0:
            self.inner.idle(gap)

    def run_batch(self, batch: Batch[Any]) -> BatchOutcome:
        """Idle the simulator up to now, run the batch on it, then sleep until its simulated end."""
        with self._lock:
            self._catch_up()
            outcome = self.inner.run_batch(batch)
        wake = self.r0 + (outcome.end - self.v0) * self.time_scale
        delay = wake - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return outcome

    def set_clock(self, mhz: int | None) -> None:
        """Set the simulated clock level, after idling the simulator up to now."""
        with self._lock:
            self._catch_up()
            self.inner.set_clock(mhz)

    def set_power_limit(self, watts: float | None) -> None:
        """Set the simulated power limit, after idling the simulator up to now."""
        with self._lock:
            self._catch_up()
            self.inner.set_power_limit(watts)

    def apply(self, setting: Any) -> None:
        """Apply a setting to the simulator, after idling it up to now."""
        with self._lock:
            self._catch_up()
            self.inner.apply(setting)

    def describe(self) -> dict[str, Any]:
        """The simulator's description, marked real-time with its ``time_scale``."""
        return {**self.inner.describe(), "realtime": True, "time_scale": self.time_scale}

    def loop_observers(self, cap_rule: Any) -> Any:
        """The simulated card's own (its true-power accounting)."""
        return self.inner.loop_observers(cap_rule)

    def close(self) -> None:
        """Close the wrapped simulator."""
        self.inner.close()
