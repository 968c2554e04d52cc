"""Splitting one power budget between GPUs: pure functions, no Ray, no clocks, no I/O.

Each allocation period the coordinator describes every live worker as a :class:`WorkerView` (its
cap range, weight, board power and a throughput curve: predicted or measured items/s at caps)
and one of the allocators below returns a cap per worker, each within its range, their sum at or
under the budget less a reserve for noise.

* ``equal``: the budget divided by the count (DCGM's rule), clipped to each range, what a clipped
  worker cannot take shared among the others (water-filling).
* ``proportional``: in proportion to each board's power limit, clipped the same way.
* ``marginal``: maximises the total weighted throughput. Each worker's curve is made concave (its
  upper concave envelope); for concave curves the optimum gives every watt to the worker that
  earns the most weighted items/s for it, i.e. all curve segments taken in order of slope until
  the budget is spent (exact for piecewise-linear concave curves, O(S log S) in the segments).
  Budget that earns nothing more (every curve flat) is shared out equally, as headroom.

A worker whose sensor failed is ``held``: it gets its lowest cap whatever the allocator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from batchsizer.errors import ConfigError

ALLOCATORS: tuple[str, ...] = ("marginal", "equal", "proportional")

#: caps on each worker's curve grid, from its lowest to its highest cap
GRID_POINTS = 17


@dataclass(frozen=True)
class WorkerView:
    """What an allocator knows about one worker."""

    name: str
    min_w: float
    max_w: float
    weight: float = 1.0
    #: the board's power limit (proportional's share); its highest cap when not given
    board_w: float | None = None
    #: (cap W, items/s) points, ascending in cap; from the controller's frontier or measured
    curve: tuple[tuple[float, float], ...] = ()
    #: its sensor failed: held at its lowest cap
    held: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_w) and math.isfinite(self.max_w) and 0 < self.min_w <= self.max_w):
            raise ConfigError("worker", f"{self.name}: cap range must be 0 < lowest <= highest, got {self.min_w}..{self.max_w}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError("weight", f"{self.name}: must be a positive number, got {self.weight!r}")


@dataclass
class Allocation:
    """Caps by worker name, the budget they were split from, and a note on how."""

    caps: dict[str, float]
    budget_w: float
    note: str = ""
    #: the budget is below the sum of the lowest caps: every worker is at its lowest, over budget
    infeasible: bool = False
    predicted: dict[str, float] = field(default_factory=dict)

    @property
    def total_w(self) -> float:
        """The sum of the caps (W)."""
        return sum(self.caps.values())


def _fill(budget: float, lo: np.ndarray, hi: np.ndarray, share: np.ndarray) -> np.ndarray:
    """``clip(lam * share, lo, hi)`` with ``lam`` chosen so the sum is ``budget`` (lo.sum() <= budget <= hi.sum())."""
    if budget <= lo.sum():
        return lo.copy()
    if budget >= hi.sum():
        return hi.copy()
    a, b = 0.0, float((hi / share).max())
    for _ in range(100):  # bisection: the sum is monotone in lam
        mid = (a + b) / 2
        if np.clip(mid * share, lo, hi).sum() > budget:
            b = mid
        else:
            a = mid
    return np.clip(a * share, lo, hi)


def _shares(workers: Sequence[WorkerView], budget_w: float, kind: str) -> Allocation:
    lo = np.array([w.min_w for w in workers], dtype=float)
    hi = np.array([w.min_w if w.held else w.max_w for w in workers], dtype=float)
    boards = [w.board_w or w.max_w for w in workers]
    share = np.ones(len(workers)) if kind == "equal" else np.array(boards, dtype=float)
    caps = _fill(budget_w, lo, hi, share)
    return Allocation({w.name: float(c) for w, c in zip(workers, caps)}, budget_w, kind, bool(budget_w < lo.sum()))


def equal(budget_w: float, workers: Sequence[WorkerView]) -> Allocation:
    """DCGM's rule: the budget divided by the count, clipped, the rest shared among the unclipped."""
    return _shares(workers, budget_w, "equal")


def proportional(budget_w: float, workers: Sequence[WorkerView]) -> Allocation:
    """In proportion to each board's power limit, clipped, the rest shared among the unclipped."""
    return _shares(workers, budget_w, "proportional")


def concave_envelope(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper concave envelope of ``points`` (x ascending after sorting; duplicates keep the highest y)."""
    best: dict[float, float] = {}
    for x, y in points:
        if math.isfinite(x) and math.isfinite(y):
            best[x] = max(y, best.get(x, -math.inf))
    hull: list[tuple[float, float]] = []
    for x, y in sorted(best.items()):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point when it lies on or under the chord from hull[-2] to (x, y)
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append((x, y))
    return hull


def curve_at(curve: Sequence[tuple[float, float]], x: float) -> float:
    """Linear interpolation of a curve (flat beyond its ends); 0 for an empty curve."""
    if not curve:
        return 0.0
    xs = [p[0] for p in curve]
    ys = [p[1] for p in curve]
    return float(np.interp(x, xs, ys))


def _segments(w: WorkerView) -> tuple[list[tuple[float, float]], float]:
    """A worker's concave curve over [min_w, max_w] as (length W, slope items/s per W) segments, and its value at min_w."""
    pts = [(c, y) for c, y in w.curve if w.min_w <= c <= w.max_w]
    if w.curve:
        pts += [(w.min_w, curve_at(w.curve, w.min_w)), (w.max_w, curve_at(w.curve, w.max_w))]
    else:
        pts = [(w.min_w, 0.0), (w.max_w, 0.0)]
    hull = concave_envelope(pts)
    segs = [(x2 - x1, w.weight * (y2 - y1) / (x2 - x1)) for (x1, y1), (x2, y2) in zip(hull, hull[1:]) if x2 > x1]
    return segs, w.weight * hull[0][1]


def marginal(budget_w: float, workers: Sequence[WorkerView]) -> Allocation:
    """Maximise the total weighted throughput: every watt above the lowest caps to the steepest curve segment."""
    caps = np.array([w.min_w for w in workers], dtype=float)
    base = float(caps.sum())
    if budget_w <= base:
        return Allocation({w.name: float(c) for w, c in zip(workers, caps)}, budget_w, "marginal", budget_w < base)
    lengths, slopes, owner = [], [], []
    for i, w in enumerate(workers):
        if w.held:
            continue
        segs, _ = _segments(w)
        for length, slope in segs:
            lengths.append(length)
            slopes.append(slope)
            owner.append(i)
    left = budget_w - base
    if slopes:
        order = np.lexsort((np.array(owner), -np.array(slopes)))  # steepest first; ties by worker order
        for k in order:
            if left <= 1e-9 or slopes[k] <= 0:
                break
            take = min(lengths[k], left)
            caps[owner[k]] += take
            left -= take
    note = "marginal"
    if left > 1e-6:  # nothing earns more: share the rest out as headroom
        lo = caps.copy()
        hi = np.array([w.min_w if w.held else w.max_w for w in workers], dtype=float)
        caps = _fill(float(caps.sum()) + left, lo, hi, np.ones(len(workers)))
        note = "marginal (rest shared as headroom)"
    predicted = {w.name: w.weight * curve_at(concave_envelope(list(w.curve)), c) for w, c in zip(workers, caps)}
    return Allocation({w.name: float(c) for w, c in zip(workers, caps)}, budget_w, note, False, predicted)


def allocate(kind: str, budget_w: float, workers: Sequence[WorkerView], reserve: float = 0.01) -> Allocation:
    """Split ``budget_w`` less ``reserve`` (a fraction kept for noise) between ``workers`` with allocator ``kind``."""
    if kind not in ALLOCATORS:
        raise ConfigError("allocator", f"must be one of {', '.join(ALLOCATORS)}, got {kind!r}")
    if not 0 <= reserve < 1:
        raise ConfigError("reserve", f"must be a fraction from 0 to below 1, got {reserve!r}")
    if not workers:
        return Allocation({}, budget_w, "no workers")
    usable = budget_w * (1.0 - reserve)
    fn = {"marginal": marginal, "equal": equal, "proportional": proportional}[kind]
    result = fn(usable, workers)
    for w in workers:  # held workers at their lowest, whatever the rule
        if w.held:
            result.caps[w.name] = w.min_w
    result.budget_w = budget_w
    return result


def cap_grid(min_w: float, max_w: float, points: int = GRID_POINTS) -> list[float]:
    """``points`` caps evenly from ``min_w`` to ``max_w`` (where a worker's curve is asked for)."""
    if max_w <= min_w:
        return [float(min_w)]
    return [float(min_w + (max_w - min_w) * i / (points - 1)) for i in range(points)]


@dataclass(frozen=True)
class Measured:
    """What a worker measured at one setting: items/s, the power it drew by the cap rule, and for how long."""

    power_w: float
    throughput: float
    seconds: float


#: the margin a controller keeps under its cap (adaptive's is at least 2%)
MARGIN = 0.02
#: beyond the highest power measured, the curve goes on at this share of its last slope (optimism
#: that makes the allocator try a higher cap, where the controller then measures the truth)
EXTEND = 0.5


def measured_curve(
    points: Sequence[Measured],
    min_w: float,
    max_w: float,
    idle_w: float = 0.0,
    saturated: bool = False,
) -> tuple[tuple[float, float], ...]:
    """A concave throughput curve over caps from the settings a worker ran, for a controller without a frontier.

    Every setting its controller ran is a point (the cap it needs: its power by the cap rule plus
    the controller's margin; its items/s); the best throughput within each cap is a staircase,
    made concave by its upper envelope. Below the lowest power seen the curve falls linearly to
    the idle power; above the highest it is flat when the worker was not held back by its cap
    (``saturated``), else it goes on at half its last slope, so a GPU that earned more per watt
    near its cap is given more and measures what that buys."""
    pts = sorted((p for p in points if p.seconds > 0 and math.isfinite(p.throughput) and math.isfinite(p.power_w)),
                 key=lambda p: p.power_w)  # fmt: skip
    if not pts:
        return ()
    stair: list[tuple[float, float]] = []
    best = 0.0
    for p in pts:
        best = max(best, p.throughput)
        stair.append((p.power_w * (1 + MARGIN), best))
    c0, y0 = stair[0]
    out = list(stair)
    if min_w < c0:
        out.append((min_w, y0 * max(min_w - idle_w, 0.0) / (c0 - idle_w) if c0 > idle_w else y0))
    hull = concave_envelope(out)
    cl, yl = hull[-1]
    if cl < max_w:
        slope = (yl - hull[-2][1]) / (cl - hull[-2][0]) if len(hull) >= 2 and not saturated else 0.0
        if len(hull) < 2 and not saturated:  # one point: the slope of the line from idle through it
            slope = yl / (cl - idle_w) if cl > idle_w else 0.0
        hull.append((max_w, yl + EXTEND * max(slope, 0.0) * (max_w - cl)))
    hull = concave_envelope(hull)
    lo = curve_at(hull, min_w)
    inside = [(c, y) for c, y in hull if min_w < c < max_w]
    return tuple([(min_w, lo), *inside, (max_w, curve_at(hull, max_w))])
