"""What "under the cap" means, and the one judgement of power against it that everything uses.

``peak`` (the paper's rule, the default): every sensor reading at or under the cap.
``avg:S``: the rolling mean of the sensor over the last ``S`` seconds at or under the cap, which
is what real limiters enforce (NVIDIA's power limit about 1 s, RAPL PL1 about 28 s, DCMI/Redfish a
limit with a correction time).

:func:`judged` turns held sensor readings into the series the rule constrains (the readings
themselves, or their trailing mean), and :class:`CapJudge` accounts time over the cap, the
worst overshoot, the energy above the cap and the contiguous excursions of that series against a
cap that may change with time. The summary, the records, the benchmark's trace and the loop's
early stop all use these, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from batchsizer.core.telemetry import PowerSample
from batchsizer.errors import ConfigError

#: readings and caps closer than this (W) count as equal: "at or under the cap" includes the cap
CAP_TOLERANCE_W = 1e-9


@dataclass(frozen=True, slots=True)
class CapRule:
    """``window_s == 0``: the peak rule; otherwise the rolling mean over ``window_s`` seconds."""

    window_s: float = 0.0

    @classmethod
    def parse(cls, text: str | CapRule | None) -> CapRule:
        """``"peak"`` or ``"avg:SECONDS"`` (e.g. ``avg:1``); ConfigError otherwise."""
        if isinstance(text, CapRule):
            return text
        if text is None:
            return PEAK
        raw = str(text).strip().lower()
        if raw == "peak":
            return PEAK
        head, sep, tail = raw.partition(":")
        if head in ("avg", "average", "mean") and sep:
            try:
                seconds = float(tail.rstrip("s"))
            except ValueError:
                seconds = math.nan
            if math.isfinite(seconds) and 0 < seconds <= 3600:
                return cls(seconds)
            raise ConfigError("cap rule", f"avg needs a window in seconds between 0 and 3600, e.g. avg:1; got {text!r}")
        raise ConfigError("cap rule", f"must be peak or avg:SECONDS (e.g. avg:1), got {text!r}")

    @property
    def is_peak(self) -> bool:
        """Whether every single reading must be under the cap (the paper's rule), not a rolling mean."""
        return self.window_s <= 0

    def __str__(self) -> str:
        return "peak" if self.is_peak else f"avg:{self.window_s:g}"

    def describe(self) -> str:
        """The rule in words, for the summary and messages."""
        if self.is_peak:
            return "every sensor reading at or under the cap"
        return f"the {self.window_s:g} s rolling mean of the sensor at or under the cap"


PEAK = CapRule()


def over(watts: float, cap_w: float) -> bool:
    """Whether ``watts`` breaks ``cap_w`` (a value exactly at the cap does not)."""
    return watts > cap_w + CAP_TOLERANCE_W


def judged(samples: Sequence[PowerSample], end: float, rule: CapRule) -> list[PowerSample]:
    """The series ``rule`` constrains, from held readings (each holds until the next, the last until ``end``).

    Peak: the readings. Average: at each reading's time ``t``, the mean of the held signal over the
    ``window_s`` seconds that end when that reading is replaced (the trailing mean reaches its
    extreme on a hold segment at one of its ends; taking the later end errs towards a violation
    while power rises). The first readings, with less than a window of history before them, are
    averaged over the history there is: pass readings from ``window_s`` before the span of interest.
    """
    if rule.is_peak or not samples:
        return list(samples)
    w = rule.window_s
    times = [s.t for s in samples]
    # prefix integral of the held signal at each sample time
    area = [0.0]
    for i in range(1, len(samples)):
        area.append(area[-1] + samples[i - 1].watts * (times[i] - times[i - 1]))
    out: list[PowerSample] = []
    j = 0  # first sample whose hold segment may overlap the window
    for i, s in enumerate(samples):
        seg_end = times[i + 1] if i + 1 < len(samples) else max(end, s.t)
        a = max(seg_end - w, times[0])
        while j + 1 < len(times) and times[j + 1] <= a:
            j += 1
        # integral of the held signal over [a, seg_end]
        upto_end = area[i] + s.watts * (seg_end - times[i])
        upto_a = area[j] + samples[j].watts * (a - times[j])
        span = seg_end - a
        out.append(PowerSample(s.t, (upto_end - upto_a) / span if span > 0 else s.watts))
    return out


@dataclass(frozen=True, slots=True)
class ViolationStats:
    """How a series fared against the cap: time over, excursions, worst overshoot, energy above."""

    over_s: float
    count: int
    longest_s: float
    worst_overshoot_w: float
    excess_j: float


class CapJudge:
    """Time over the cap as separate excursions (contiguous spans), fed one stretch at a time.

    Each held value of the judged series counts from its time to the next one (the last to the
    stretch's end), against the cap in force at the start of that hold; spans continue across stretches.
    """

    def __init__(self) -> None:
        self.over_s = 0.0
        self.count = 0
        self.longest_s = 0.0
        self.worst_overshoot_w = 0.0
        self.excess_j = 0.0
        self._open: tuple[float, float] | None = None  # (start, end) of the excursion in progress

    def feed(self, series: Sequence[PowerSample], start: float, end: float, cap_at: Callable[[float], float]) -> None:
        """Account the judged ``series`` over [start, end] against ``cap_at`` (device time to watts)."""
        for i, s in enumerate(series):
            a = max(s.t, start)
            b = min(series[i + 1].t if i + 1 < len(series) else end, end)
            if b <= a:
                continue
            cap = cap_at(a)
            if over(s.watts, cap):
                self.worst_overshoot_w = max(self.worst_overshoot_w, s.watts - cap)
                self.over_s += b - a
                self.excess_j += (s.watts - cap) * (b - a)
                if self._open is not None and a - self._open[1] <= 1e-9:
                    self._open = (self._open[0], b)
                else:
                    self._open = (a, b)
                    self.count += 1
                self.longest_s = max(self.longest_s, self._open[1] - self._open[0])
            else:
                self._open = None

    @property
    def open_since(self) -> float | None:
        """When the excursion still in progress at the end of the last stretch began, if one is."""
        return None if self._open is None else self._open[0]

    def stats(self) -> ViolationStats:
        """The totals so far: time over, excursions, longest, worst overshoot and energy over the cap."""
        return ViolationStats(self.over_s, self.count, self.longest_s, self.worst_overshoot_w, self.excess_j)


def violations(
    samples: Sequence[PowerSample], start: float, end: float, cap_at: Callable[[float], float] | float, rule: CapRule
) -> ViolationStats:
    """All at once: the readings over [start, end] judged by ``rule`` against ``cap_at`` (a cap or a function of time)."""
    cap_fn = cap_at if callable(cap_at) else (lambda _t, c=float(cap_at): c)
    judge = CapJudge()
    judge.feed(judged(samples, end, rule), start, end, cap_fn)
    return judge.stats()
