"""The budget allocators and the item queue: pure functions, no Ray."""

from __future__ import annotations

import itertools
import random

import pytest

from batchsizer.errors import ConfigError
from batchsizer.fleet.allocator import (
    Measured,
    WorkerView,
    allocate,
    cap_grid,
    concave_envelope,
    curve_at,
    measured_curve,
)
from batchsizer.fleet.queue import ChunkQueue


def _view(name: str, lo: float, hi: float, f, weight: float = 1.0, held: bool = False) -> WorkerView:
    pts = tuple((c, f(c)) for c in cap_grid(lo, hi))
    return WorkerView(name, lo, hi, weight, hi, pts, held)


def _brute(views: list[WorkerView], budget: float, step: float = 5.0) -> float:
    """Best total on a grid of caps, by trying every combination."""
    grids = [[v.min_w + k * step for k in range(int((v.max_w - v.min_w) / step) + 1)] for v in views]
    best = 0.0
    for caps in itertools.product(*grids):
        if sum(caps) <= budget + 1e-9:
            best = max(best, sum(v.weight * curve_at(v.curve, c) for v, c in zip(views, caps)))
    return best


def test_equal_and_proportional_respect_ranges_and_budget() -> None:
    views = [_view("a", 100, 250, lambda c: c), _view("b", 150, 300, lambda c: c), _view("c", 200, 700, lambda c: c)]
    eq = allocate("equal", 900, views, reserve=0.0)
    assert eq.caps["a"] == pytest.approx(250)  # clipped at its top, the rest shared by the others
    assert eq.caps["b"] == pytest.approx(eq.caps["c"]) == pytest.approx(325, abs=0.01) or eq.caps["b"] == pytest.approx(300)
    assert eq.total_w == pytest.approx(900)
    pr = allocate("proportional", 900, views, reserve=0.0)
    assert pr.total_w == pytest.approx(900)
    assert pr.caps["c"] > pr.caps["b"] > pr.caps["a"]
    for a in (eq, pr):
        for v in views:
            assert v.min_w - 1e-9 <= a.caps[v.name] <= v.max_w + 1e-9


def test_marginal_matches_brute_force_on_concave_curves() -> None:
    rng = random.Random(3)
    for _ in range(6):
        views = []
        for i in range(3):
            k, idle = rng.uniform(0.5, 3.0), rng.uniform(20, 90)
            lo = rng.choice([100.0, 125.0, 150.0])
            views.append(_view(f"w{i}", lo, lo + 150, lambda c, k=k, idle=idle: k * 30 * (c - idle) ** 0.5, rng.uniform(0.5, 2)))
        budget = sum(v.min_w for v in views) + rng.uniform(20, 400)
        a = allocate("marginal", budget, views, reserve=0.0)
        assert a.total_w <= budget + 1e-6
        got = sum(v.weight * curve_at(v.curve, a.caps[v.name]) for v in views)
        assert got >= _brute(views, budget) - 1e-6  # at least the best on a 5 W grid
        eq = allocate("equal", budget, views, reserve=0.0)
        assert got >= sum(v.weight * curve_at(v.curve, eq.caps[v.name]) for v in views) - 1e-9


def test_marginal_gives_watts_to_who_earns_more_and_spares_a_saturated_gpu() -> None:
    flat = _view("flat", 100, 300, lambda c: min(500.0, 5 * c))  # saturates at 100 W
    steep = _view("steep", 100, 300, lambda c: 2 * c)
    a = allocate("marginal", 400, [flat, steep], reserve=0.0)
    assert a.caps["flat"] == pytest.approx(100)
    assert a.caps["steep"] == pytest.approx(300)


def test_weights_reserve_held_and_infeasible() -> None:
    a, b = _view("a", 100, 300, lambda c: c), _view("b", 100, 300, lambda c: c, weight=3.0)
    alloc = allocate("marginal", 400, [a, b], reserve=0.05)
    assert alloc.total_w <= 400 * 0.95 + 1e-9
    assert alloc.caps["b"] == pytest.approx(280)  # the weighted one gets everything above the lowest
    held = _view("h", 100, 300, lambda c: 10 * c, held=True)
    alloc = allocate("equal", 600, [held, a], reserve=0.0)
    assert alloc.caps["h"] == 100 and alloc.caps["a"] == 300
    low = allocate("marginal", 150, [a, b], reserve=0.0)
    assert low.infeasible and low.caps == {"a": 100, "b": 100}
    with pytest.raises(ConfigError, match="allocator"):
        allocate("fastest", 400, [a])


def test_concave_envelope_and_measured_curve() -> None:
    env = concave_envelope([(0, 0), (1, 0.2), (2, 2), (3, 2.5), (4, 2.6)])
    assert (1, 0.2) not in env and env[0] == (0, 0) and env[-1] == (4, 2.6)
    slopes = [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in zip(env, env[1:])]
    assert all(s1 >= s2 for s1, s2 in zip(slopes, slopes[1:]))
    pts = [Measured(130, 100, 1.0), Measured(160, 150, 1.0), Measured(190, 170, 1.0)]
    curve = measured_curve(pts, 125, 250, idle_w=50)
    assert curve[0][0] == 125 and curve[-1][0] == 250
    assert curve_at(curve, 160 * 1.02) == pytest.approx(150)
    assert curve_at(curve, 250) > 170  # held back by its cap: goes on rising, at half its last slope
    flat = measured_curve(pts, 125, 250, idle_w=50, saturated=True)
    assert curve_at(flat, 250) == pytest.approx(170)
    assert measured_curve([], 125, 250) == ()


def test_queue_commits_each_item_once_and_takes_back_a_lost_workers_chunks() -> None:
    q = ChunkQueue.for_items(1000, 64)
    a = q.lease("a", 100)
    b = q.lease("b", 1)
    assert [len(c) for c in a] == [64, 64] and len(b) == 1
    q.commit("a", [a[0].cid])
    back = q.give_back("a")
    assert back == [a[1]] and q.waiting[0] == a[1]
    c = q.lease("c", 10_000)
    q.commit("c", [x.cid for x in c])
    q.commit("b", [b[0].cid])
    assert q.done and q.committed_items == 1000
    with pytest.raises(RuntimeError):
        q.commit("c", [c[0].cid])  # not leased any more
    resumed = ChunkQueue.for_items(10, 4, done=range(0, 10, 2))
    ids = [i for ch in resumed.lease("x", 100) for i in ch.ids]
    assert ids == [1, 3, 5, 7, 9]
