"""The sample ring: windows come back exactly, and asking for a recent one costs the same however full it is."""

from __future__ import annotations

import bisect
from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from batchsizer.core.telemetry import SampleBuffer


def _reference(times: list[float], watts: list[float], start: float, end: float) -> list[tuple[float, float]]:
    """The definition: samples with t <= end, from the last one at or before ``start`` (or the first)."""
    if end < start:
        return []
    lo = max(bisect.bisect_right(times, start) - 1, 0)
    hi = bisect.bisect_right(times, end)
    return [(times[i], watts[i]) for i in range(lo, hi)]


@given(
    gaps=st.lists(st.floats(0.0, 1.0), max_size=60),
    start=st.floats(-2.0, 40.0),
    length=st.floats(-1.0, 40.0),
)
def test_between_returns_the_window_and_the_sample_before_it(gaps: list[float], start: float, length: float) -> None:
    buf = SampleBuffer()
    times, t = [], 0.0
    for g in gaps:
        t += g
        times.append(t)
    watts = [float(i) for i in range(len(times))]
    for ti, w in zip(times, watts):
        buf.append(ti, w)
    got = [(s.t, s.watts) for s in buf.between(start, start + length)]
    assert got == _reference(times, watts, start, start + length)


class _CountingDeque(deque):
    """Counts the samples read out of it, in either direction."""

    read = 0

    def __iter__(self):
        for x in super().__iter__():
            self.read += 1
            yield x

    def __reversed__(self):
        for x in super().__reversed__():
            self.read += 1
            yield x


def test_a_recent_window_reads_only_its_own_samples() -> None:
    """After half an hour at 100 Hz the ring is full; each control period must not read all of it."""
    buf = SampleBuffer()
    for i in range(200_000):
        buf.append(i * 0.01, 100.0)
    buf._times = _CountingDeque(buf._times, maxlen=buf._times.maxlen)
    buf._watts = _CountingDeque(buf._watts, maxlen=buf._watts.maxlen)
    assert len(buf.between(1998.99, 1999.99)) == 101
    assert buf._times.read <= 102 and buf._watts.read <= 102  # not 200,000 (it copied the ring before)
