"""Fault injection for power meters: wrap any meter and break its readings on purpose.

Used by the fault-injection tests (and usable against the simulator or a real meter) to check that
the loop's :class:`~batchsizer.core.guard.TelemetryGuard` catches each kind of bad telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchsizer.core.telemetry import PowerMeter, PowerSample
from batchsizer.errors import TelemetryError

#: what :class:`FaultyMeter` can inject
INJECTABLE = ("error", "zero", "stale", "dead", "spike")


@dataclass(frozen=True)
class Injection:
    """One fault over [start, end) on the meter's clock. ``watts`` is the spike's height."""

    kind: str
    start: float
    end: float = float("inf")
    watts: float = 10_000.0

    def __post_init__(self) -> None:
        if self.kind not in INJECTABLE:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {', '.join(INJECTABLE)}")

    def covers(self, t: float) -> bool:
        """Whether ``t`` falls in the fault's span [start, end)."""
        return self.start <= t < self.end


class FaultyMeter(PowerMeter):
    """A meter that passes through ``inner`` except where an :class:`Injection` says otherwise.

    * ``error``: ``samples`` raises :class:`TelemetryError` when asked about a window ending in the span.
    * ``zero``: readings in the span read 0 W.
    * ``stale``: readings in the span keep the value of the last reading before it (a frozen sensor).
    * ``dead``: readings in the span are missing (the sampler thread died, and restarts at ``end``).
    * ``spike``: the reading(s) within one sensor period of ``start`` read ``watts``.
    """

    def __init__(self, inner: PowerMeter, injections: list[Injection] | tuple[Injection, ...] = ()) -> None:
        self.inner = inner
        self.injections = list(injections)
        self.update_period_s = inner.update_period_s
        self.source = f"faulty {inner.source}"
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        # anything else (advance_to, describe...) is the wrapped meter's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def add(self, injection: Injection) -> None:
        """Add a fault to inject from now on."""
        self.injections.append(injection)

    def samples(self, start: float, end: float) -> list[PowerSample]:
        """The inner meter's readings over [start, end] with the injected faults applied."""
        self.calls += 1
        for inj in self.injections:
            if inj.kind == "error" and inj.covers(end):
                raise TelemetryError(f"injected NVML error (NVMLError_Unknown) at t={end:.3f}")
        # ask from far enough back to know the value a stale span froze at, or the last reading a dead one kept
        earliest = min([start, *(i.start for i in self.injections if i.kind in ("stale", "dead") and i.covers(start))])
        raw = self.inner.samples(earliest, end)
        out: list[PowerSample] = []
        for s in raw:
            watts: float | None = s.watts
            for inj in self.injections:
                if inj.kind == "spike":
                    if inj.start <= s.t < inj.start + self.update_period_s:
                        watts = inj.watts  # one reading: a spike lasts one sensor period
                    continue
                if not inj.covers(s.t):
                    continue
                if inj.kind == "zero":
                    watts = 0.0
                elif inj.kind == "dead":
                    watts = None
                elif inj.kind == "stale":
                    frozen = [p.watts for p in raw if p.t < inj.start]
                    held = self.inner.samples(inj.start, inj.start)
                    watts = frozen[-1] if frozen else (held[0].watts if held else s.watts)
            if watts is not None:
                out.append(PowerSample(s.t, watts))
        before = [s for s in out if s.t <= start]
        return before[-1:] + [s for s in out if s.t > start]

    def energy_j(self, start: float, end: float) -> float | None:
        """None always: a hardware counter would hide the injected readings from the energy figure."""
        return None  # a counter would hide the injected readings from the energy figure

    def close(self) -> None:
        """Close the inner meter."""
        self.inner.close()
