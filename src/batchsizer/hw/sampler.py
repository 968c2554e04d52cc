"""A power meter fed by a background thread that polls a sensor into a ring buffer.

The thread stamps each reading on the loop's clock, so a control period's window lines up with
the batches it covers; it rides out transient read errors (counting them) and stops, reporting
the cause on the next read of the meter, when errors persist. A hardware energy counter, where
the sensor has one, gives the window's energy instead of the integral of the samples.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from batchsizer.core.clock import Clock, WallClock
from batchsizer.core.telemetry import PowerMeter, PowerSample, SampleBuffer
from batchsizer.errors import DeviceError, TelemetryError

log = logging.getLogger(__name__)

#: (watts or None, energy counter in joules or None) read at one instant
InstantReading = tuple[float | None, float | None]


class TransientReadError(TelemetryError):
    """A reading failed in a way a retry may fix (a torn read, a busy driver)."""

    transient = True


def _interpolate(points: list[PowerSample], t: float) -> float | None:
    """The counter at time ``t`` by linear interpolation between the readings around it."""
    for a, b in zip(points, points[1:]):
        if a.t <= t <= b.t:
            if b.t == a.t:
                return b.watts
            return a.watts + (b.watts - a.watts) * (t - a.t) / (b.t - a.t)
    return None


class SampledMeter(PowerMeter):
    """Polls ``read()`` every ``poll_s`` seconds in a daemon thread once :meth:`start` is called.

    ``read`` returns (watts, counter joules); either may be None. Errors of type
    :class:`DeviceError` with ``transient`` set are retried for up to ``max_error_s``.
    """

    #: windows shorter than this get their energy from the samples, not the (coarse) counter
    min_counter_window_s: float = 0.5
    #: after this many transient errors in a row the poll period doubles (NVML fails when polled too
    #: often), up to ``max_poll_s``
    backoff_after: int = 3
    max_poll_s: float = 0.1

    def __init__(
        self,
        read: Callable[[], InstantReading],
        *,
        poll_s: float,
        clock: Clock | None = None,
        max_error_s: float = 2.0,
        name: str = "power-sampler",
    ) -> None:
        self._read = read
        self.poll_s = poll_s
        self.clock = clock or WallClock()
        self.max_error_s = max_error_s
        self.errors = 0
        self.failure: DeviceError | None = None
        self._power = SampleBuffer()
        self._counter = SampleBuffer()
        self._lock = threading.Lock()  # one reading at a time, appended in time order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> SampledMeter:
        """Take a first reading (a non-transient error raises here) and start the polling thread; idempotent."""
        if not self._started:
            self._started = True
            try:
                self._poll_once()
            except TelemetryError as exc:
                if not getattr(exc, "transient", False):
                    raise
                self.errors += 1  # the thread polls again in a moment
            self._thread.start()
        return self

    def _poll_once(self) -> None:
        with self._lock:
            if self._stop.is_set():  # closed: the sensor may already be shut down
                return
            t0 = self.clock.now()
            watts, joules = self._read()
            t = (t0 + self.clock.now()) / 2
            if watts is not None and watts > 0:  # NVML may return 0 when polled too often
                self._power.append(t, watts)
            if joules is not None:
                self._counter.append(t, joules)

    def _run(self) -> None:
        failing_since: float | None = None
        in_a_row = 0
        # time.sleep, not Event.wait(timeout): each wake-up of a timed Event.wait costs about half as much
        # CPU again (it builds a lock per wait), and this thread wakes 20-200 times a second beside the model;
        # close() then waits at most one poll period
        while not self._stop.is_set():
            time.sleep(self.poll_s)
            if self._stop.is_set():
                return
            try:
                self._poll_once()
                failing_since = None
                in_a_row = 0
            except DeviceError as exc:
                now = self.clock.now()
                self.errors += 1
                in_a_row += 1
                transient = isinstance(exc, TelemetryError) and getattr(exc, "transient", False)
                if failing_since is None:
                    failing_since = now
                if not transient or now - failing_since > self.max_error_s:
                    self.failure = exc
                    log.error("power readings stopped after %d error(s): %s", self.errors, exc)
                    return
                if in_a_row >= self.backoff_after and self.poll_s < self.max_poll_s:
                    self.poll_s = min(2 * self.poll_s, self.max_poll_s)
                    in_a_row = 0  # the allowance (max_error_s since the first failure) is not renewed
                    log.warning(
                        "power reads keep failing (%s); polling every %.0f ms from now on", exc, self.poll_s * 1e3
                    )
                else:
                    log.debug("transient power read error (riding it out): %s", exc)

    def _check(self) -> None:
        if self.failure is not None:
            raise TelemetryError(f"{self.source}: power readings stopped: {self.failure}")

    def samples(self, start: float, end: float) -> list[PowerSample]:
        """The polled readings in [start, end]; TelemetryError once the sampler has given up."""
        self._check()
        return self._power.between(start, end)

    def energy_j(self, start: float, end: float) -> float | None:
        """Energy from the counter, interpolated at both ends; None without a counter or for short windows."""
        if end - start < self.min_counter_window_s or len(self._counter) == 0:
            return None
        last = self._counter.last()
        if last is not None and last.t < end and self.failure is None:
            try:
                self._poll_once()  # a reading at or after ``end``, so the window is bracketed
            except DeviceError:
                return None
        points = self._counter.between(start, end + 10 * self.poll_s + 1.0)
        a, b = _interpolate(points, start), _interpolate(points, end)
        if a is None or b is None or b <= a:
            return None
        return b - a

    def close(self) -> None:
        """Stop polling, at once: no reading starts after this returns.

        The thread is not waited for (it sleeps up to one poll period, which a short job would
        otherwise pay at its end); it sees the flag when it wakes and exits without reading."""
        with self._lock:  # a reading in progress finishes first
            self._stop.set()
