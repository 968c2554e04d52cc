"""The curve a worker offers the allocator: measured frontier, and past it the controller model's prediction."""

from __future__ import annotations

import numpy as np
import pytest

from batchsizer.core.caps import ConstantCap
from batchsizer.core.types import FrontierPoint, Setting
from batchsizer.fleet.allocator import WorkerView, allocate, cap_grid, curve_at
from batchsizer.fleet.coordinator import Fleet, FleetOptions, job_key
from batchsizer.fleet.frontier import offered_curve, predicted_frontier
from batchsizer.fleet.worker import FleetWorker, WorkerConfig
from batchsizer.policies.safe_model import SafeModel


class _Model:
    """A stand-in for adaptive's SafeModel: two levels, power and time per batch at sizes 1, 2, 4."""

    sizes = (1, 2, 4)
    levels = (500.0, 1000.0)

    def __init__(self, margin: float = 5.0) -> None:
        self.margin = margin

    def margin_w(self, size: int, level: float) -> float:
        return self.margin

    def predict_level(self, level: float):
        if level == 500.0:
            return np.array([100.0, 110.0, 120.0]), np.array([0.1, 0.1, 0.1])  # 10, 20, 40 items/s
        return np.array([150.0, 170.0, 200.0]), np.array([0.05, 0.05, 0.05])  # 20, 40, 80 items/s


class _Controller:
    """A controller whose model is the stand-in: its predicted frontier is SafeModel's rule over it."""

    def __init__(self, model=None) -> None:
        self.model = model

    def frontier(self, caps_w, predicted: bool = False):
        if not predicted or self.model is None:
            return []
        return [
            FrontierPoint(cap, Setting(size), speed, 0.0, power)
            for cap, size, _, speed, power in SafeModel.predicted_best(self.model, caps_w)
        ]


def test_predicted_frontier_takes_the_fastest_setting_whose_power_and_margin_fit() -> None:
    got = dict(predicted_frontier(_Controller(_Model()), [100.0, 125.0, 160.0, 180.0, 205.0]))
    assert 100.0 not in got  # 100 W + 5 W margin fits under no cap below 105 W
    assert got[125.0] == pytest.approx(40)  # size 4 at level 500: 120 + 5 <= 125
    assert got[160.0] == pytest.approx(40)  # level 1000 size 1 (20 items/s) fits but is slower
    assert got[180.0] == pytest.approx(40)
    assert got[205.0] == pytest.approx(80)
    assert predicted_frontier(_Controller(None), [200.0]) == []
    assert predicted_frontier(object(), [200.0]) == []  # no frontier at all: nothing predicted


def test_offered_curve_believes_measurements_where_they_rise_and_the_model_past_them() -> None:
    caps = [100.0, 150.0, 200.0, 250.0]
    measured = [(100.0, 10.0), (150.0, 30.0), (200.0, 30.0), (250.0, 30.0)]  # flat past 150: nothing tried
    predicted = [(100.0, 50.0), (150.0, 40.0), (200.0, 45.0), (250.0, 60.0)]
    got = dict(offered_curve(caps, measured, predicted))
    assert got[100.0] == 10.0 and got[150.0] == 30.0  # searched there: the measurement, not the prediction
    assert got[200.0] == 45.0 and got[250.0] == 60.0  # blind there: the prediction
    low = dict(offered_curve(caps, measured, [(250.0, 20.0)]))
    assert low[250.0] == 30.0  # a prediction below what was measured does not lower the curve
    assert offered_curve(caps, [], []) == ()
    assert dict(offered_curve(caps, [], predicted)) == dict(predicted)


def test_the_allocator_offers_a_higher_cap_to_a_worker_held_back_where_it_measured_nothing() -> None:
    """A measured frontier is flat past the cap a worker ran under; with the model's prediction past it,
    marginal moves watts from a worker that earns nothing more to the one its cap holds back."""
    caps = cap_grid(100, 300)
    flat_measured = [(c, 100.0 + min(c, 150.0) - 100.0) for c in caps]  # measured up to 150 W only
    rising = [(c, c) for c in caps]
    saturated = tuple((c, 200.0) for c in caps)
    held = WorkerView("held", 100, 300, curve=offered_curve(caps, flat_measured, rising))
    sat = WorkerView("sat", 100, 300, curve=saturated)
    before = allocate("marginal", 300, [WorkerView("held", 100, 300, curve=tuple(flat_measured)), sat], reserve=0.0)
    after = allocate("marginal", 300, [held, sat], reserve=0.0)
    assert before.caps["held"] == pytest.approx(150)  # the measured curve stops paying at 150 W
    assert after.caps["held"] == pytest.approx(200)  # every watt above the lowest caps to it


def test_a_worker_under_a_low_cap_offers_a_curve_that_rises_past_it() -> None:
    """A real worker (adaptive controller, simulated A100, heavy model) run a few seconds under 150 W:
    its controller measured nothing above that cap, yet its curve rises there (a measured frontier alone
    is flat past the cap, so the allocator would never offer it more)."""
    cfg = WorkerConfig("a100-0", "a100", "Res101", "caltech", seed=1)
    fleet = Fleet(
        [cfg], ConstantCap(150 / 0.99), {job_key(cfg): 10**6}, FleetOptions(allocator="equal", duration_s=6, chunk=64)
    )
    fleet.run()
    worker: FleetWorker = fleet.members[0].handle
    curve = worker.curve()
    assert curve["source"] == "frontier+model"
    points = curve["points"]
    front = {p.cap_w: p.throughput for p in worker.controller.frontier([p[0] for p in points])}
    top_measured = max(front.values())
    reached = min(c for c, y in front.items() if y >= top_measured)
    assert reached < 150.0
    for cap, value in points:
        if cap <= reached:  # up to where its measurements reach their best, the measured frontier as it is
            assert value == pytest.approx(front[cap])
    assert curve_at(points, 400.0) > 1.05 * top_measured


def _fleet_with(settled: list[bool], allocator: str = "marginal") -> Fleet:
    from batchsizer.fleet.coordinator import _Member

    cfgs = [WorkerConfig(f"w{i}", "v100", "Res101", "caltech") for i in range(len(settled))]
    fleet = Fleet(
        cfgs, ConstantCap(600), {job_key(cfgs[0]): 10}, FleetOptions(allocator=allocator, period_s=5, settle_wait_s=15)
    )
    fleet.members = [_Member(c, None, {}, job_key(c), 150.0, settled=s) for c, s in zip(cfgs, settled)]
    fleet._next_alloc = 5.0
    return fleet


def test_a_periodic_reallocation_waits_for_the_workers_to_settle_at_most_settle_wait() -> None:
    searching = _fleet_with([True, False])
    for t, due in ((4.75, False), (5.0, False), (19.75, False), (20.0, True)):
        searching.t = t
        assert searching._due() is due, t
    settled = _fleet_with([True, True])
    settled.t = 4.75
    assert not settled._due()
    settled.t = 5.0
    assert settled._due()
    equal = _fleet_with([False, False], "equal")  # its split does not depend on the curves: no wait
    equal.t = 5.0
    assert equal._due()
    with pytest.raises(Exception, match="settle wait"):
        FleetOptions(settle_wait_s=-1)
