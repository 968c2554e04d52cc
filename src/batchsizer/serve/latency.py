"""An online model of batch service time per size, an arrival-rate estimate, and the latency limit.

The latency limit is the largest batch-size cap whose predicted p99 latency stays under the SLO at
the offered load: a request may wait for the batch in service, then for its own batch to fill (at
most the wait timeout), then for its batch to run. At light load batches do not fill to the cap
(they leave at the wait timeout with what arrived), so a larger cap costs nothing there and the
limit rises to the largest size; at heavy load batches are full and the service time of a full
batch bounds the cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: z of the upper quantile of a batch's service time (mean + z * sd); 2.33 is a normal p99
UPPER_Z = 2.33
#: the least relative spread assumed for a size's service time (a few batches say little about it)
MIN_CV = 0.05


@dataclass
class _SizeStats:
    """Exponentially weighted mean and variance of one size's service time."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0

    def add(self, x: float, weight: float) -> None:
        self.n += 1
        if self.n == 1:
            self.mean, self.var = x, 0.0
            return
        w = max(weight, 1.0 / self.n)
        d = x - self.mean
        self.mean += w * d
        self.var = (1 - w) * (self.var + w * d * d)


class ServiceModel:
    """Service time (s) of a batch by size, learned from every batch that ran.

    Sizes that ran have their own weighted mean and spread (recent batches count more, so a clock or
    load change is followed); sizes that did not are predicted from a least-squares line
    ``a + k * size`` through the sizes that did, never below the nearest smaller size that ran (nor,
    with one size seen, below that size's time scaled by the size: a guess that errs high).
    """

    def __init__(self, weight: float = 0.1, upper_z: float = UPPER_Z, min_cv: float = MIN_CV) -> None:
        self.weight = weight
        self.upper_z = upper_z
        self.min_cv = min_cv
        self._stats: dict[int, _SizeStats] = {}
        self._fit: tuple[float, float] | None = None
        self._fit_stale = True

    def observe(self, size: int, seconds: float) -> None:
        """Learn that a batch of ``size`` took ``seconds``; impossible values are ignored."""
        if size < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        self._stats.setdefault(size, _SizeStats()).add(seconds, self.weight)
        self._fit_stale = True

    @property
    def sizes_seen(self) -> tuple[int, ...]:
        """The batch sizes that have run, ascending."""
        return tuple(sorted(self._stats))

    @property
    def known(self) -> bool:
        """Whether any batch has run, so there is something to predict from."""
        return bool(self._stats)

    def _line(self) -> tuple[float, float] | None:
        if self._fit_stale:
            self._fit, self._fit_stale = self._fit_line(), False
        return self._fit

    def _fit_line(self) -> tuple[float, float] | None:
        pts = [(b, s.mean, s.n) for b, s in self._stats.items()]
        if len(pts) < 2:
            return None
        w = sum(n for _, _, n in pts)
        mb = sum(b * n for b, _, n in pts) / w
        mt = sum(t * n for _, t, n in pts) / w
        sbb = sum(n * (b - mb) ** 2 for b, _, n in pts)
        if sbb <= 0:
            return None
        k = sum(n * (b - mb) * (t - mt) for b, t, n in pts) / sbb
        return mt - k * mb, k

    def mean(self, size: int) -> float | None:
        """Predicted mean service time of a batch of ``size``; None before any batch ran."""
        stats = self._stats.get(size)
        if stats is not None:
            return stats.mean
        if not self._stats:
            return None
        seen = sorted(self._stats)
        below = [b for b in seen if b < size]
        floor = self._stats[below[-1]].mean if below else 0.0
        line = self._line()
        if line is None or line[1] <= 0:
            b0 = seen[0] if not below else below[-1]
            guess = self._stats[b0].mean * max(1.0, size / b0)
        else:
            guess = line[0] + line[1] * size
            if size > seen[-1]:  # beyond what ran: at least proportional growth from the largest
                top = self._stats[seen[-1]].mean
                guess = max(guess, top + (top / seen[-1]) * (size - seen[-1]) * 0.5)
        return max(guess, floor)

    def upper(self, size: int) -> float | None:
        """An upper quantile (about p99) of the service time at ``size``."""
        m = self.mean(size)
        if m is None:
            return None
        stats = self._stats.get(size)
        sd = math.sqrt(stats.var) if stats is not None and stats.n > 2 else 0.0
        return m + self.upper_z * max(sd, self.min_cv * m)


class RateEstimate:
    """Arrivals per second, exponentially weighted over about ``tau_s`` seconds."""

    def __init__(self, tau_s: float = 1.0) -> None:
        self.tau_s = tau_s
        self._x = 0.0
        self._t: float | None = None
        self._first: float | None = None

    def add(self, t: float) -> None:
        """Count an arrival at ``t`` (s; out-of-order times are counted, not rewound)."""
        if self._t is not None and t > self._t:
            self._x *= math.exp(-(t - self._t) / self.tau_s)
        if self._first is None:
            self._first = t
        self._t = t if self._t is None else max(self._t, t)
        self._x += 1.0

    def rate(self, t: float) -> float:
        """Arrivals per second at ``t``; over the time seen while less than ``tau_s`` has passed; 0 before any."""
        if self._t is None or self._first is None:
            return 0.0
        x = self._x * math.exp(-max(t - self._t, 0.0) / self.tau_s)
        # in the first tau the average has not filled yet: divide by the time seen instead
        span = min(self.tau_s, max(t - self._first, 1e-3))
        return x / self.tau_s if span >= self.tau_s else x * (1 - math.exp(-span / self.tau_s)) / span


def effective_batch(model: ServiceModel, cap: int, rate: float, max_wait_s: float) -> int:
    """The batch size that forms under a cap ``cap`` at ``rate`` requests/s: what arrives while the
    previous batch runs and the wait runs out, at most ``cap``."""
    if rate <= 0:
        return 1
    b = 1
    for _ in range(8):  # a fixed point of b = rate * (wait + service(b)); converges in a few steps
        s = model.mean(b) or 0.0
        nb = min(cap, max(1, math.ceil(rate * (max_wait_s + s))))
        if nb == b:
            break
        b = nb
    return b


def predicted_p99(model: ServiceModel, cap: int, rate: float, max_wait_s: float) -> float | None:
    """Predicted p99 latency (s) under a size cap ``cap``: the batch in service, the wait for one's own
    batch to fill, and its run; None before the model knows anything."""
    b = effective_batch(model, cap, rate, max_wait_s)
    up = model.upper(b)
    if up is None:
        return None
    fill = max_wait_s if rate <= 0 else min(max_wait_s, (b - 1) / rate)
    return up + fill + up


def latency_limit(
    model: ServiceModel, sizes: Sequence[int], rate: float, max_wait_s: float, slo_s: float
) -> tuple[int, float | None]:
    """The largest size in ``sizes`` whose predicted p99 stays under ``slo_s`` (the smallest size when
    none does), and that prediction; the largest size when nothing is known yet."""
    if not model.known:
        return sizes[-1], None
    best, best_p = sizes[0], predicted_p99(model, sizes[0], rate, max_wait_s)
    for c in sizes:
        p = predicted_p99(model, c, rate, max_wait_s)
        if p is not None and p <= slo_s:
            best, best_p = c, p
    return best, best_p
