"""The true power trace and an NVML-like sensor over it, both computed lazily when a window is asked for.

:class:`PowerTrace` holds the true board power as piecewise-constant segments with the running
energy at each segment's start, so the mean over any interval costs two binary searches.
:class:`NvmlSensor` publishes a reading every ``update_period_s`` (fixed phase per seed): ``gain``
times the true mean over ``window_s`` ending ``delay_s`` earlier, plus noise that is a pure
function of (seed, reading index), so a window's readings are computed only when asked for and the
same seed always gives the same readings. :class:`TrueMeter` is the reference: every segment of
the true trace, for accounting that compares with what the sensor let the controller see.
Old segments are dropped past ``keep`` so memory stays bounded on long jobs.
"""

from __future__ import annotations

import bisect
import math

from batchsizer.core.telemetry import PowerMeter, PowerSample
from batchsizer.sim.gpus import SensorSpec

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64: a fast, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def hashed_normal(seed: int, index: int) -> float:
    """An approximately standard normal number determined by (seed, index): sum of 4 uniforms."""
    h = _mix((seed * 0x100000001B3) ^ index)
    total = 0.0
    for _ in range(4):
        total += (h & 0xFFFF) / 65536.0
        h >>= 16
    return (total - 2.0) * math.sqrt(3.0)


class PowerTrace:
    """True power as segments: ``times[i]`` starts a segment at ``watts[i]``; the last one holds."""

    def __init__(self, t0: float, watts: float, keep: int = 50_000) -> None:
        self.times = [t0]
        self.watts = [watts]
        self.energy = [0.0]  # energy from t0 to times[i]
        self.keep = keep
        self.t0 = t0

    def append(self, t: float, watts: float) -> None:
        """Power becomes ``watts`` from ``t`` (not before the last change)."""
        last_t, last_w = self.times[-1], self.watts[-1]
        if watts == last_w:
            return
        if t <= last_t:
            self.watts[-1] = watts  # a zero-length segment: replace it
            return
        self.energy.append(self.energy[-1] + last_w * (t - last_t))
        self.times.append(t)
        self.watts.append(watts)
        if len(self.times) > 2 * self.keep:
            cut = len(self.times) - self.keep
            del self.times[:cut], self.watts[:cut], self.energy[:cut]

    def integral(self, t: float) -> float:
        """Energy (J) from the trace's origin to ``t``; before the first segment its power extends back."""
        times = self.times
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            return self.energy[0] + self.watts[0] * (t - times[0])
        return self.energy[i] + self.watts[i] * (t - times[i])

    def mean(self, a: float, b: float) -> float:
        """Mean true power (W) over [a, b]; the power at ``b`` when the span is empty."""
        if b <= a:
            return self.at(b)
        return (self.integral(b) - self.integral(a)) / (b - a)

    def at(self, t: float) -> float:
        """True power (W) in force at ``t`` (the first segment's before the trace starts)."""
        i = bisect.bisect_right(self.times, t) - 1
        return self.watts[max(i, 0)]

    def segments(self, start: float, end: float) -> list[PowerSample]:
        """The true trace over [start, end] as held samples (the one in force at ``start`` first)."""
        times, watts = self.times, self.watts
        lo = max(bisect.bisect_right(times, start) - 1, 0)
        hi = bisect.bisect_right(times, end)
        out = [PowerSample(times[lo], watts[lo])]
        out.extend(PowerSample(times[i], watts[i]) for i in range(lo + 1, hi))
        return out


class NvmlSensor(PowerMeter):
    """What nvmlDeviceGetPowerUsage would return on the simulated GPU, computed on demand."""

    source = "sim-nvml"

    def __init__(self, trace: PowerTrace, spec: SensorSpec, seed: int = 0, phase_s: float | None = None) -> None:
        self.trace = trace
        self.spec = spec
        self.seed = seed
        self.update_period_s = spec.update_period_s
        #: how far back one reading looks: its averaging window and its delay
        self.window_s = spec.window_s + spec.delay_s
        # where in its period the sensor publishes, fixed per seed (a real card's phase is arbitrary)
        self.phase_s = (_mix(seed ^ 0x5EED) % 10_000) / 10_000 * spec.update_period_s if phase_s is None else phase_s

    def update_index(self, t: float) -> int:
        """Index of the last reading published at or before ``t``."""
        return math.floor((t - self.phase_s) / self.update_period_s + 1e-9)

    def reading(self, k: int) -> PowerSample:
        """The k-th published reading."""
        spec = self.spec
        t = self.phase_s + k * spec.update_period_s
        end = t - spec.delay_s
        watts = spec.gain * self.trace.mean(end - spec.window_s, end)
        if spec.noise_w:
            watts += spec.noise_w * hashed_normal(self.seed, k)
        return PowerSample(t, round(max(watts, 0.0), 2))

    def samples(self, start: float, end: float) -> list[PowerSample]:
        """The readings the sensor published in [start, end], with the one in force at ``start`` first."""
        first = max(self.update_index(start), self.update_index(self.trace.t0))
        last = self.update_index(end)
        return [self.reading(k) for k in range(first, last + 1)]

    def energy_j(self, start: float, end: float) -> float | None:
        """The total-energy counter (Volta and newer): true energy up to the last update, in mJ steps."""
        if not self.spec.energy_counter:
            return None

        def counter(t: float) -> float:
            k = self.update_index(t)
            u = self.phase_s + k * self.update_period_s
            return math.floor(self.trace.integral(max(u, self.trace.t0)) * 1000.0) / 1000.0

        return max(counter(end) - counter(start), 0.0)


class TrueMeter(PowerMeter):
    """The true power, segment by segment (the simulator's reference meter)."""

    source = "sim-true"

    def __init__(self, trace: PowerTrace) -> None:
        self.trace = trace
        self.update_period_s = 0.0

    def samples(self, start: float, end: float) -> list[PowerSample]:
        """The true trace over [start, end] as held samples: exact, no sensor lag."""
        return self.trace.segments(start, end)

    def energy_j(self, start: float, end: float) -> float | None:
        """The exact energy (J) of the true trace over [start, end]."""
        return self.trace.integral(end) - self.trace.integral(start)
