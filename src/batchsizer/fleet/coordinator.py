"""The fleet's coordinator: lockstep virtual time, the budget split, the shared queue, faults.

Time. Every simulated GPU (a measured table played back is one too) has its own virtual clock; the coordinator keeps them in step. Time
moves in ticks (``tick_s``, 0.25 s): every live worker runs until its clock reaches the tick's
end, then all report (readings, finished chunks) and the coordinator decides what happens at that
instant: the budget read, caps changed, chunks leased, faults applied. The allocator runs every
``period_s`` (5 s) and at once when the budget changes or a worker is lost or finishes. Nothing
depends on how fast the host runs a worker, so a run on the simulator is reproducible from its
seed, and it is the same run in one process or on Ray.

In transit. A reallocation first applies the caps that go down. Caps that go up wait until every
lowered worker has confirmed (its controller decided under the new cap and its readings since are
under it), checked at each tick, so the caps in force never add up to more than the budget.

Faults. A lost worker's leased, uncommitted chunks go back to the queue and its budget is split
among the others at the tick it is found lost (within one allocation period). A worker whose
sensor fails is held at its lowest cap until its readings are good again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchsizer.core.caps import CapSource, ConstantCap
from batchsizer.errors import ConfigError
from batchsizer.fleet.accounting import BudgetAccount
from batchsizer.fleet.allocator import Allocation, WorkerView, allocate, concave_envelope, curve_at
from batchsizer.fleet.backend import LocalBackend, WorkerLost
from batchsizer.fleet.queue import ChunkQueue
from batchsizer.fleet.worker import WorkerConfig


@dataclass
class FleetOptions:
    """How the fleet runs; every field has the default ``batchsizer fleet`` uses."""

    allocator: str = "marginal"
    period_s: float = 5.0
    tick_s: float = 0.25
    #: share of the budget kept back for noise
    reserve: float = 0.01
    chunk: int = 256
    #: stop at this virtual time even with items left (None: when every item is done)
    duration_s: float | None = None
    rule_window_s: float = 0.0
    #: a periodic reallocation by ``marginal`` is applied only when it predicts at least this much more
    #: throughput than the caps in force (moving a cap costs the controllers a search); a forced one
    #: (budget change, a worker lost, finished or held) always is
    min_gain: float = 0.01
    #: a periodic reallocation by ``marginal`` waits (at most this long past its time) until every live
    #: worker has settled (its controller kept its setting for a few periods under its cap): a curve
    #: read while a controller still searches says where it searches, not what it does; 0: no wait
    settle_wait_s: float = 15.0
    #: worker name -> virtual time at which it is killed (fault injection)
    kills: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("period", self.period_s), ("tick", self.tick_s)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(name, f"must be a positive number of seconds, got {value!r}")
        if self.period_s < self.tick_s:
            raise ConfigError("period", f"must be at least one tick ({self.tick_s:g} s), got {self.period_s:g}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ConfigError("duration", f"must be a positive number of seconds, got {self.duration_s!r}")
        if self.chunk < 1:
            raise ConfigError("chunk", f"must be at least 1 item, got {self.chunk}")
        if not (math.isfinite(self.settle_wait_s) and self.settle_wait_s >= 0):
            raise ConfigError("settle wait", f"must be a number of seconds, 0 or more, got {self.settle_wait_s!r}")


@dataclass
class _Member:
    cfg: WorkerConfig
    handle: Any
    info: dict[str, Any]
    job: str
    cap_w: float
    status: str = "running"  # running | finished | lost
    sensor_failed: bool = False
    throughput: float = math.nan
    floor_w: float = 0.0
    #: its controller has kept its setting for a few periods under the cap in force
    settled: bool = False
    held_items: int = 0
    committed: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    lost_at: float | None = None
    why: str = ""
    #: (time, cap) each time the worker confirmed a new cap: its record where the worker's own is lost
    caps: list[tuple[float, float]] = field(default_factory=list)


#: a worker that cannot get under its lowest cap gets at least this much more than what it draws there
FLOOR_MARGIN = 1.03


class FleetObserver:
    """Hooks for what watches a fleet (records, the live view, tests). All optional."""

    def on_allocation(self, t: float, alloc: Allocation, applied: dict[str, float], pending: dict[str, float]) -> None:
        """A split applied at ``t``: ``applied`` the caps lowered at once, ``pending`` the raises waiting until the
        lowered workers confirm (W)."""

    def on_tick(self, t: float, fields: dict[str, Any]) -> None:
        """A tick ended at ``t``; ``fields``: budget, caps, power sums (W), seconds over, items committed, statuses."""

    def on_commit(self, worker: str, job: str, ids: tuple[int, ...]) -> None:
        """Items ``ids`` of ``job``, finished by ``worker``, are committed (each exactly once)."""

    def on_event(self, t: float, kind: str, message: str, **fields: Any) -> None:
        """Something happened at ``t``: ``kind`` (``budget``, ``worker-lost``, ``kill``, ``sensor-failed``, ...), a
        sentence, and fields such as ``worker``."""


class Fleet:
    """Runs workers (one per GPU) over shared queues under one power budget."""

    def __init__(
        self,
        workers: list[WorkerConfig],
        budget: CapSource,
        jobs: dict[str, int],
        options: FleetOptions | None = None,
        backend: Any = None,
        observers: list[FleetObserver] | None = None,
        done: dict[str, set[int]] | None = None,
        on_tick: Callable[[Fleet, float], None] | None = None,
    ) -> None:
        if not workers:
            raise ConfigError("gpu", "a fleet needs at least one worker (--gpu or --fleet)")
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ConfigError("fleet", f"worker names must differ, got {names}")
        self.configs = workers
        self.budget = budget
        self.options = options or FleetOptions()
        self.backend = backend or LocalBackend()
        self.observers = observers or []
        self.on_tick = on_tick
        done = done or {}
        self.queues = {job: ChunkQueue.for_items(n, self.options.chunk, done.get(job, ())) for job, n in jobs.items()}
        self.account = BudgetAccount(self.options.rule_window_s)
        self.true_account = BudgetAccount(self.options.rule_window_s)
        self.members: list[_Member] = []
        self.events: list[dict[str, Any]] = []
        self.allocations = 0
        self.t = 0.0
        self._pending: dict[str, float] = {}
        self._lowered: dict[str, float] = {}  # lowered, not yet confirmed: name -> the cap before
        self._budget_w = math.nan
        self._next_alloc = 0.0
        self._force_alloc = True
        self.transit_over_s = 0.0

    # -- helpers ------------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any, **kw: Any) -> None:
        for o in self.observers:
            getattr(o, hook)(*args, **kw)

    def _event(self, kind: str, message: str, **fields: Any) -> None:
        self.events.append({"t": self.t, "kind": kind, "message": message, **fields})
        self._emit("on_event", self.t, kind, message, **fields)

    def _calls(self, members: list[_Member], method: str, *args: Any) -> list[Any]:
        pending = [self.backend.call(m.handle, method, *args) for m in members]
        results = self.backend.gather(pending)
        for m, r in zip(members, results):
            if isinstance(r, WorkerLost):
                self._lose(m, r.why)
        return results

    def _lose(self, m: _Member, why: str) -> None:
        if m.status == "lost":
            return
        m.status, m.lost_at, m.why = "lost", self.t, why
        back = self.queues[m.job].give_back(m.cfg.name)
        self._pending.pop(m.cfg.name, None)
        self._lowered.pop(m.cfg.name, None)
        self._force_alloc = True
        self._event(
            "worker-lost",
            f"{m.cfg.name} lost at {self.t:.2f} s ({why}); {len(back)} unfinished chunk(s) "
            f"({sum(len(c) for c in back)} items) back to the queue, its budget shared out",
            worker=m.cfg.name,
            chunks=len(back),
        )

    @property
    def live(self) -> list[_Member]:
        """The workers still running (neither finished nor lost)."""
        return [m for m in self.members if m.status == "running"]

    # -- allocation -----------------------------------------------------------------------------
    def _views(self, members: list[_Member]) -> list[WorkerView]:
        curves = self._calls(members, "curve") if self.options.allocator == "marginal" else [None] * len(members)
        views = []
        for m, c in zip(members, curves):
            points = tuple(tuple(p) for p in c["points"]) if isinstance(c, dict) else ()
            lowest = min(max(m.info["min_w"], m.floor_w * FLOOR_MARGIN), m.info["max_w"])
            views.append(
                WorkerView(
                    m.cfg.name,
                    lowest,
                    m.info["max_w"],
                    m.cfg.weight,
                    m.info["board_w"],
                    points,  # type: ignore[arg-type]
                    held=m.sensor_failed,
                )
            )
        return views

    def _reallocate(self) -> None:
        live = self.live
        if not live:
            return
        # finished and lost GPUs still draw idle power from the same budget
        idle = sum(m.info["idle_w"] for m in self.members if m.status in ("finished", "lost"))
        views = [v for v in self._views(live)]
        live = self.live  # a worker may have been lost while asked for its curve
        views = [v for v in views if any(v.name == m.cfg.name for m in live)]
        alloc = allocate(self.options.allocator, self._budget_w - idle, views, self.options.reserve)
        forced = self._force_alloc
        self._next_alloc = self.t + self.options.period_s
        self._force_alloc = False
        if not forced and self.options.allocator == "marginal" and not self._worth_it(alloc, views, live):
            return
        if alloc.infeasible:
            self._too_low(alloc)
        lowers = {m.cfg.name: alloc.caps[m.cfg.name] for m in live if alloc.caps[m.cfg.name] < m.cap_w - 1e-9}
        raises = {m.cfg.name: alloc.caps[m.cfg.name] for m in live if alloc.caps[m.cfg.name] > m.cap_w + 1e-9}
        before = {m.cfg.name: m.cap_w for m in live}
        self._set_caps(lowers)
        for name in lowers:  # until confirmed, a lowered worker counts at the higher of its caps
            self._lowered[name] = max(self._lowered.get(name, 0.0), before[name])
        for name in raises:
            self._lowered.pop(name, None)
        self._pending = raises
        self.allocations += 1
        self._emit("on_allocation", self.t, alloc, lowers, raises)
        self._apply_raises()

    def _due(self) -> bool:
        """Whether a periodic reallocation is due: its time has come and, for ``marginal``, every live worker
        has settled under its cap (or it has waited ``settle_wait_s`` for them)."""
        if self.t < self._next_alloc - 1e-9:
            return False
        if self.options.allocator != "marginal" or self.t >= self._next_alloc + self.options.settle_wait_s - 1e-9:
            return True
        return all(m.settled for m in self.live)

    def _too_low(self, alloc: Allocation) -> None:
        """The budget is below the sum of the workers' lowest caps: each is held at its lowest, and the
        fleet draws more than the budget (an event, and a note in the summary)."""
        lowest = sum(alloc.caps.values())
        self._event("budget-too-low", f"the budget {self._budget_w:g} W is below the sum of the workers' lowest caps "
                    f"({lowest:.0f} W): each is held at its lowest, and the fleet draws more than the budget")  # fmt: skip

    def _worth_it(self, alloc: Allocation, views: list[WorkerView], live: list[_Member]) -> bool:
        """Whether the new split predicts ``min_gain`` more weighted throughput than the caps in force."""
        now = {m.cfg.name: m.cap_w for m in live}
        before = after = 0.0
        for v in views:
            env = concave_envelope(list(v.curve))
            before += v.weight * curve_at(env, now[v.name])
            after += v.weight * curve_at(env, alloc.caps[v.name])
        over = sum(now.values()) > (self._budget_w * (1 - self.options.reserve)) + 1e-6
        return over or after > before * (1 + self.options.min_gain)

    def _set_caps(self, caps: dict[str, float]) -> None:
        members = [m for m in self.live if m.cfg.name in caps]
        pending = [self.backend.call(m.handle, "set_cap", caps[m.cfg.name], self.t) for m in members]
        for m, r in zip(members, self.backend.gather(pending)):
            if isinstance(r, WorkerLost):
                self._lose(m, r.why)
            else:
                m.cap_w = float(r)
                if not m.caps or m.caps[-1][1] != m.cap_w:
                    m.caps.append((self.t, m.cap_w))

    def _apply_raises(self) -> None:
        """Raise caps as far as the budget allows, counting a lowered worker at its old cap until it confirms."""
        if not self._pending:
            return
        if self._lowered:
            members = [m for m in self.live if m.cfg.name in self._lowered]
            for m, ok in zip(members, self._calls(members, "confirmed")):
                if ok is True:
                    self._lowered.pop(m.cfg.name, None)
        budget = self._budget_w * (1 - self.options.reserve) - sum(
            m.info["idle_w"] for m in self.members if m.status in ("finished", "lost")
        )
        in_force = sum(max(m.cap_w, self._lowered.get(m.cfg.name, 0.0)) for m in self.live)
        room = budget - in_force
        raises = {}
        for name, cap in self._pending.items():
            m = next((x for x in self.live if x.cfg.name == name), None)
            if m is None:
                continue
            step = min(cap - m.cap_w, max(room, 0.0))
            if step > 1e-9:
                raises[name] = m.cap_w + step
                room -= step
        self._set_caps(raises)
        self._pending = {n: c for n, c in self._pending.items() if n not in raises or raises[n] < c - 1e-9}

    # -- the queue ------------------------------------------------------------------------------
    def _top_up(self, m: _Member, horizon_s: float) -> list[Any]:
        q = self.queues[m.job]
        thr = m.throughput if math.isfinite(m.throughput) and m.throughput > 0 else 0.0
        want = thr * horizon_s * 1.25
        if m.held_items >= max(want, 1) and m.held_items > 0:
            return []
        got = q.lease(m.cfg.name, int(want - m.held_items) + 1)
        return got

    def _advance(self, target: float) -> dict[str, dict[str, Any]]:
        """Every live worker to ``target``, leasing more where one runs dry; returns the reports."""
        reports: dict[str, dict[str, Any]] = {}
        todo = [m for m in self.live]
        for m in todo:
            chunks = self._top_up(m, target - self.t + self.options.tick_s)
            if chunks:
                self.backend.gather([self.backend.call(m.handle, "give", chunks)])
        while todo:
            pending = [self.backend.call(m.handle, "advance", target, self.queues[m.job].exhausted) for m in todo]
            results = self.backend.gather(pending)
            for m, r in zip(todo, results):
                if isinstance(r, WorkerLost):
                    self._lose(m, r.why)
            again = []
            for m, r in zip(todo, results):
                if isinstance(r, WorkerLost):
                    continue
                self._absorb(m, r, reports)
                if r["state"] == "dry":
                    # more chunks if any wait; else the worker's stream ends (its last batch runs) and it finishes
                    chunks = self._top_up(m, target - r["now"] + self.options.tick_s)
                    if chunks:
                        self.backend.gather([self.backend.call(m.handle, "give", chunks)])
                    again.append(m)
                elif r["state"] in ("done", "error"):
                    if r["state"] == "error":
                        self._lose(m, r["error"] or "error")
                    elif m.status != "finished":
                        m.status = "finished"
                        self._force_alloc = True
            todo = [m for m in again if m.status == "running"]
        return reports

    def _absorb(self, m: _Member, r: dict[str, Any], reports: dict[str, dict[str, Any]]) -> None:
        for c in self.queues[m.job].commit(m.cfg.name, r["done_cids"]):
            m.committed += len(c)
            self._emit("on_commit", m.cfg.name, m.job, c.ids)
        prev = reports.get(m.cfg.name)
        if prev is not None:  # a second report in the same tick (after a dry pause): keep every reading
            r = {**r, "samples": prev["samples"] + r["samples"], "true_samples": prev["true_samples"] + r["true_samples"]}
        reports[m.cfg.name] = r
        m.held_items = r["held_items"]
        m.settled = bool(r.get("settled", True))
        m.floor_w = max(m.floor_w, float(r.get("floor_w") or 0.0))
        if math.isfinite(r["throughput"]) and r["throughput"] > 0:
            m.throughput = r["throughput"]
        was = m.sensor_failed
        m.sensor_failed = bool(r["sensor_failed"])
        if m.sensor_failed != was:
            self._force_alloc = True
            if m.sensor_failed:
                self._event("sensor-failed", f"{m.cfg.name}: its power sensor failed; held at its lowest cap", worker=m.cfg.name)
            else:
                self._event("sensor-recovered", f"{m.cfg.name}: its power readings are back", worker=m.cfg.name)

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run the job to its end (every item done, every worker lost, or ``duration_s`` reached) and return its
        summary; ConfigError if a worker cannot start."""
        o = self.options
        self._budget_w = self.budget.cap_at(0.0)
        handles = [self.backend.start(cfg, None) for cfg in self.configs]
        infos = self.backend.gather([self.backend.call(h, "info") for h in handles])
        for cfg, h, info in zip(self.configs, handles, infos):
            if isinstance(info, WorkerLost):
                raise ConfigError("fleet", f"worker {cfg.name} could not start: {info.why}")
            m = _Member(cfg, h, info, job_key(cfg), info["min_w"])
            self.members.append(m)
            self.account.worker(cfg.name, info["idle_w"])
            self.true_account.worker(cfg.name, info["idle_w"])
        # the first split: nothing measured yet, so every allocator starts from its own rule
        first = allocate(
            "equal" if o.allocator == "marginal" else o.allocator,
            self._budget_w,
            self._views_plain(),
            o.reserve,
        )
        if first.infeasible:
            self._too_low(first)
        self._set_caps(first.caps)
        self._emit("on_allocation", 0.0, first, first.caps, {})
        self.allocations = 1
        self._next_alloc = o.period_s
        self._force_alloc = False
        stop_reason = "done"
        while True:
            if not self.live:
                stop_reason = "done" if all(q.done for q in self.queues.values()) else "all workers lost"
                break
            if o.duration_s is not None and self.t >= o.duration_s - 1e-9:
                stop_reason = "duration"
                break
            budget = self.budget.cap_at(self.t)
            if budget != self._budget_w:
                self._event("budget", f"budget changed from {self._budget_w:g} W to {budget:g} W", old=self._budget_w, new=budget)
                self._budget_w = budget
                self._force_alloc = True
            if self._force_alloc or self._due():
                self._reallocate()
            elif self._pending:
                self._apply_raises()
            target = self.t + o.tick_s
            if o.duration_s is not None:
                target = min(target, o.duration_s)
            reports = self._advance(target)
            self._account(self.t, target, reports)
            self.t = target
            for name, when in o.kills.items():
                m = next((x for x in self.members if x.cfg.name == name), None)
                if m is not None and m.status == "running" and when <= self.t + 1e-9:
                    self.backend.kill(m.handle)
                    self._event("kill", f"{name} killed at {self.t:.2f} s (fault injection)", worker=name)
                    self._lose(m, "killed")
            if self.on_tick is not None:
                self.on_tick(self, self.t)
        return self._finish(stop_reason)

    def _views_plain(self) -> list[WorkerView]:
        return [
            WorkerView(m.cfg.name, m.info["min_w"], m.info["max_w"], m.cfg.weight, m.info["board_w"])
            for m in self.members
        ]

    def _account(self, start: float, end: float, reports: dict[str, dict[str, Any]]) -> None:
        fixed, fixed_true = {}, {}
        for m in self.members:
            if m.status in ("finished", "lost") and m.cfg.name not in reports:
                fixed[m.cfg.name] = fixed_true[m.cfg.name] = m.info["idle_w"]
            elif m.sensor_failed:
                fixed[m.cfg.name] = m.cap_w
        samples = {n: r["samples"] for n, r in reports.items()}
        true = {n: r["true_samples"] for n, r in reports.items()}
        over = self.account.tick(start, end, self._budget_w, samples, fixed)
        true_over = self.true_account.tick(start, end, self._budget_w, true, fixed_true)
        caps = {m.cfg.name: m.cap_w for m in self.members if m.status == "running"}
        self._emit(
            "on_tick",
            end,
            {
                "start": start,
                "end": end,
                "budget_w": self._budget_w,
                "caps": caps,
                "cap_sum_w": sum(caps.values()),
                "sum_mean_w": self.account.last_mean_w,
                "sum_peak_w": self.account.last_peak_w,
                "power_w": dict(self.account.last_worker_mean_w),
                "true_sum_mean_w": self.true_account.last_mean_w,
                "over_s": over,
                "true_over_s": true_over,
                "committed": sum(q.committed_items for q in self.queues.values()),
                "status": {m.cfg.name: m.status for m in self.members},
            },
        )

    def _finish(self, stop_reason: str) -> dict[str, Any]:
        still = [m for m in self.members if m.status != "lost"]
        finals = self.backend.gather([self.backend.call(m.handle, "finish") for m in still])
        per = {}
        for m, f in zip(still, finals):
            per[m.cfg.name] = f if not isinstance(f, WorkerLost) else {"error": f.why}
        workers = {}
        for m in self.members:
            f = per.get(m.cfg.name, {})
            workers[m.cfg.name] = {
                "gpu": m.cfg.gpu,
                "model": m.cfg.model,
                "dataset": m.cfg.dataset,
                "weight": m.cfg.weight,
                "status": m.status,
                "sensor_failed": m.sensor_failed,
                "lost_at": m.lost_at,
                "why": m.why or None,
                "items_committed": m.committed,
                "summary": f.get("summary"),
                # a lost worker's own record went with it: the caps it confirmed, as the coordinator kept them
                "cap_over_time": f.get("cap_over_time") or [{"t": t, "cap_w": c} for t, c in m.caps],
                "error": f.get("error"),
            }
        duration = self.t
        items = sum(q.committed_items for q in self.queues.values())
        new_items = sum(m.committed for m in self.members)
        jobs = {
            job: {
                "committed_items": q.committed_items,
                "remaining_items": q.remaining_items,
                "returned_chunks": q.returned_chunks,
                "complete": q.done,
            }
            for job, q in self.queues.items()
        }
        return {
            "allocator": self.options.allocator,
            "budget": repr(self.budget),
            # the budget in watts where it is one constant (a schedule or a file: null, "budget" says it)
            "budget_w": self.budget.watts if isinstance(self.budget, ConstantCap) else None,
            "cap_rule": "peak" if self.options.rule_window_s <= 0 else f"avg:{self.options.rule_window_s:g}",
            "backend": getattr(self.backend, "name", "?"),
            "stop_reason": stop_reason,
            "duration_s": duration,
            "items": new_items,
            "throughput": new_items / duration if duration > 0 else 0.0,
            **self.account.to_dict(),
            "true_power": self.true_account.to_dict(),
            "allocations": self.allocations,
            "jobs": jobs,
            "events": self.events,
            "workers": workers,
            "total_committed_items": items,
        }


def job_key(cfg: WorkerConfig) -> str:
    """A worker's job (one queue of items): its ``job`` where given (``batchsizer fleet`` gives every worker
    one: its table, a TOML ``job``, or ``model@dataset``), else its model and data set, so that workers running
    the same model on the same data set share one."""
    return cfg.job or f"{cfg.model.lower()}@{cfg.dataset.lower()}"
