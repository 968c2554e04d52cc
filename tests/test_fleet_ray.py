"""A fleet of simulated GPUs as Ray actors on a local Ray (2 CPUs, 127.0.0.1, a small object store).

One Ray instance for the module. The budget held, a worker killed with ``ray.kill`` and the job
still exact, a budget step followed, and the same run in one process and on Ray.
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the fleet extra (ray) is not installed: pip install 'batchsizer[fleet]'")

from batchsizer.core.caps import CapSchedule, ConstantCap  # noqa: E402
from batchsizer.fleet.backend import LocalBackend, RayBackend  # noqa: E402
from batchsizer.fleet.coordinator import Fleet, FleetObserver, FleetOptions, job_key  # noqa: E402
from batchsizer.fleet.worker import WorkerConfig  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        object_store_memory=80 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        yield RayBackend()  # joins the running instance; does not stop it
    finally:
        ray.shutdown()


class Ticks(FleetObserver):
    def __init__(self) -> None:
        self.ticks: list[dict] = []
        self.commits: list[tuple[str, tuple[int, ...]]] = []

    def on_tick(self, t, fields):
        self.ticks.append(fields)

    def on_commit(self, worker, job, ids):
        self.commits.append((worker, ids))


def _workers(gpus=("p40", "v100", "a100"), model="Res101"):
    return [WorkerConfig(f"{g}-{i}", g, model, "caltech", seed=i) for i, g in enumerate(gpus)]


def _exact(obs: Ticks, total: int) -> None:
    ids = [i for _, chunk in obs.commits for i in chunk]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == set(range(total))


def test_budget_held_and_job_exact(backend) -> None:
    ws = _workers()
    obs = Ticks()
    total = 6000
    s = Fleet(ws, ConstantCap(600), {job_key(ws[0]): total}, FleetOptions(chunk=128), backend, [obs]).run()
    assert s["backend"] == "ray" and s["stop_reason"] == "done"
    _exact(obs, total)
    assert s["items"] == total
    assert all(t["cap_sum_w"] <= 600 * 0.99 + 1e-6 for t in obs.ticks)  # caps in force, reserve kept, never over
    assert s["over_budget_fraction"] <= 0.005
    assert {w["status"] for w in s["workers"].values()} == {"finished"}
    for w in s["workers"].values():
        assert w["summary"]["items"] == w["items_committed"] > 0
        assert w["cap_over_time"]


def test_killed_worker_job_still_exact(backend) -> None:
    ws = _workers()
    obs = Ticks()
    total = 6000
    killed = {}

    def kill_one(fleet: Fleet, t: float) -> None:
        if t >= 4.0 and not killed:
            m = fleet.members[1]
            ray.kill(m.handle, no_restart=True)
            killed["t"] = t

    fleet = Fleet(ws, ConstantCap(600), {job_key(ws[0]): total}, FleetOptions(chunk=128), backend, [obs], on_tick=kill_one)
    s = fleet.run()
    _exact(obs, total)
    lost = s["workers"]["v100-1"]
    assert lost["status"] == "lost" and lost["lost_at"] is not None
    assert lost["lost_at"] - killed["t"] <= fleet.options.tick_s + 1e-9  # found at the next tick
    assert any(e["kind"] == "worker-lost" for e in s["events"])
    # its budget is shared out within one allocation period: the others' caps rise past what they had
    after = [t for t in obs.ticks if t["start"] >= lost["lost_at"] + fleet.options.period_s]
    assert after and "v100-1" not in after[0]["caps"]
    assert after[0]["cap_sum_w"] > 600 * 0.99 - 45 - 200  # far more than two equal thirds: they took its share


def test_budget_step_followed(backend) -> None:
    ws = _workers(("p40", "a100"), "MobV2")
    obs = Ticks()
    budget = CapSchedule([(0, 500), (6, 300)])
    s = Fleet(ws, budget, {job_key(ws[0]): 10**7}, FleetOptions(duration_s=12), backend, [obs]).run()
    assert s["stop_reason"] == "duration"
    late = [t for t in obs.ticks if t["start"] >= 7.0]
    assert late and all(t["budget_w"] == 300 for t in late)
    assert all(t["cap_sum_w"] <= 300 * 0.99 + 1e-6 for t in late)
    assert all(t["sum_mean_w"] <= 300 for t in late)
    early = [t for t in obs.ticks if 2.0 <= t["start"] < 6.0]
    assert max(t["cap_sum_w"] for t in early) > 400  # the higher budget was used before the step
    assert s["over_budget_fraction"] <= 0.05


def test_same_run_in_one_process_and_on_ray(backend) -> None:
    def run(b):
        ws = _workers(("v100", "h100"), "MobV2")
        return Fleet(ws, ConstantCap(500), {job_key(ws[0]): 10**7}, FleetOptions(duration_s=4), b).run()

    a, b = run(LocalBackend()), run(backend)
    assert a["items"] == b["items"] and a["over_budget_fraction"] == b["over_budget_fraction"]
    assert [w["cap_over_time"] for w in a["workers"].values()] == [w["cap_over_time"] for w in b["workers"].values()]
