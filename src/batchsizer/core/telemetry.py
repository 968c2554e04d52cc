"""Power telemetry: timestamped samples in watts, and what a control period needs from them.

Every meter, real or simulated, is a :class:`PowerMeter`: it returns the samples it saw in a time
range, and this module derives the window's peak (Algorithm 1 uses the max), time-weighted mean and
energy from them the same way for all of them. A reading holds until the next one (zero-order
hold), which is how NVML's sensor behaves: the last sample before a window is its value at the
window's start.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PowerSample:
    """One reading: time on the loop's clock (s) and power (W)."""

    t: float
    watts: float


@dataclass(frozen=True, slots=True)
class PowerWindow:
    """What a control period saw. ``samples`` is 0 when no reading covers the window."""

    start: float
    end: float
    peak_w: float
    mean_w: float
    energy_j: float
    samples: int

    @property
    def valid(self) -> bool:
        """Whether the window holds at least one reading and a finite peak, so it can be judged."""
        return self.samples > 0 and math.isfinite(self.peak_w)


def empty_window(start: float, end: float) -> PowerWindow:
    """A window over [start, end] with no readings: NaN peak, mean and energy, 0 samples."""
    return PowerWindow(start, end, math.nan, math.nan, math.nan, 0)


def summarize(samples: Sequence[PowerSample], start: float, end: float) -> PowerWindow:
    """Peak, time-weighted mean and energy over [start, end] of held samples.

    ``samples`` are sorted by time; one before ``start`` sets the value at ``start`` for the mean
    and energy. The peak is the max of the readings taken in [start, end] (as the paper's
    controller takes the max of the readings since its last decision), so a reading of the
    previous setting does not count against the new one; only a window without a reading of its
    own falls back to the held one.
    """
    if not samples:
        return empty_window(start, end)
    peak = held_peak = -math.inf
    area = 0.0
    covered = 0.0
    for i, s in enumerate(samples):
        seg_start = max(s.t, start)
        seg_end = samples[i + 1].t if i + 1 < len(samples) else end
        seg_end = min(seg_end, end)
        if seg_end < seg_start or seg_start > end:
            continue
        if s.t >= start:
            peak = max(peak, s.watts)
        else:
            held_peak = max(held_peak, s.watts)
        area += s.watts * (seg_end - seg_start)
        covered += seg_end - seg_start
    if peak == -math.inf:
        peak = held_peak
    if peak == -math.inf:
        return empty_window(start, end)
    duration = end - start
    mean = area / covered if covered > 0 else peak
    return PowerWindow(start, end, peak, mean, mean * duration, len(samples))


class PowerMeter:
    """Base of every meter. Subclasses implement :meth:`samples`; the rest derives from it."""

    #: the sensor's update period in seconds, as known or measured
    update_period_s: float = 0.02
    #: a word on where readings come from, for records and warnings
    source: str = "meter"
    #: how far back one reading looks (averaging window and delay, s), where known; 0: unknown
    window_s: float = 0.0

    def samples(self, start: float, end: float) -> list[PowerSample]:
        """Readings in [start, end], preceded by the last one at or before ``start`` if any."""
        raise NotImplementedError

    def energy_j(self, start: float, end: float) -> float | None:
        """Energy from a hardware counter when the device has one, else None."""
        return None

    def window(self, start: float, end: float) -> PowerWindow:
        """Peak, mean and energy over [start, end] from this meter's samples (see :func:`measure`)."""
        return measure(self, start, end)[0]

    def close(self) -> None:
        """Stop any background sampling."""


class SampleBuffer:
    """A thread-safe ring of samples in time order, cheap to append to from a sampler thread."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._times: deque[float] = deque(maxlen=capacity)
        self._watts: deque[float] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def append(self, t: float, watts: float) -> None:
        """Add a reading at ``t`` (s) of ``watts``, dropping the oldest when full; ValueError if ``t`` goes back."""
        with self._lock:
            if self._times and t < self._times[-1]:
                raise ValueError(f"sample at t={t} is older than the last one at t={self._times[-1]}")
            self._times.append(t)
            self._watts.append(watts)

    def extend(self, samples: Iterable[PowerSample]) -> None:
        """Append each of ``samples`` in order (same time-order check as :meth:`append`)."""
        for s in samples:
            self.append(s.t, s.watts)

    def __len__(self) -> int:
        return len(self._times)

    def last(self) -> PowerSample | None:
        """The newest reading, or None while the buffer is empty."""
        with self._lock:
            if not self._times:
                return None
            return PowerSample(self._times[-1], self._watts[-1])

    def between(self, start: float, end: float) -> list[PowerSample]:
        """The samples in [start, end], and the last one before ``start`` (to interpolate from).

        Scans back from the newest sample, so the cost is that of the samples after ``start``,
        not of the whole ring: windows are recent, and the ring holds half an hour or more."""
        found: list[tuple[float, float]] = []
        if end < start:
            return []
        with self._lock:
            for t, w in zip(reversed(self._times), reversed(self._watts)):
                if t > end:
                    continue
                found.append((t, w))
                if t <= start:
                    break
        return [PowerSample(t, w) for t, w in reversed(found)]


def measure(meter: PowerMeter, start: float, end: float) -> tuple[PowerWindow, list[PowerSample]]:
    """A window and the samples behind it, in one read of the meter."""
    samples = meter.samples(start, end)
    w = summarize(samples, start, end)
    counter = meter.energy_j(start, end)
    if counter is not None and w.valid:
        w = PowerWindow(w.start, w.end, w.peak_w, w.mean_w, counter, w.samples)
    return w, samples
