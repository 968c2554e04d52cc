"""One GPU of a fleet: the project's control loop, its own controller and device, paused at boundaries.

The device is a simulated GPU (``make_sim_device``) or a measured table played back as one
(``table:...``, ``sim:zeus-...``, opened as ``batchsizer run`` opens it); either runs on virtual time.

:class:`FleetWorker` is a plain class; the coordinator drives it in the same process or wrapped as
a Ray actor (``ray.remote(num_cpus=0)(FleetWorker)``), with the same calls. Its
:class:`~batchsizer.core.loop.ControlLoop` runs in a thread of the worker and pulls item ids from the
chunks leased to it. That item stream is the gate of the lockstep: before the first item of each
batch it looks at the device's virtual clock, and once the clock has reached the boundary the
coordinator set, the loop waits there until :meth:`FleetWorker.advance` moves the boundary on.
Its cap is a :class:`AllocatedCap` the coordinator sets between two advances; the loop sees it
change after its next batch, closes the period and lets its controller decide under it.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsizer.core.batching import Batch, DynamicBatchStream
from batchsizer.core.device import BatchOutcome
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.summary import Summary
from batchsizer.core.types import Setting
from batchsizer.fleet.allocator import Measured, cap_grid, measured_curve
from batchsizer.fleet.frontier import offered_curve, predicted_frontier
from batchsizer.fleet.queue import Chunk
from batchsizer.policies import make_controller

#: decisions the telemetry guard takes when the readings are bad
BAD_READING = ("hold-bad-reading", "fallback-bad-reading")
#: periods in a row with bad readings before a worker's sensor counts as failed
FAILED_AFTER = 2
#: a worker whose power stays this far under its cap is not held back by it
SLACK = 0.05
#: how far back the readings must be under a new cap for it to count as met (s)
CONFIRM_S = 0.5
#: periods kept per cap for the measured curve
KEEP_PER_CAP = 8
#: periods in a row its controller must keep its setting (under the cap in force) for a worker to
#: count as settled: its curve then says what it does under that cap, not where it is searching
SETTLED_PERIODS = 3


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to build its device and loop (picklable, for Ray)."""

    name: str
    #: the simulated GPU (``p40``), or for a table worker the device text as the user gave it
    gpu: str
    model: str
    dataset: str
    seed: int = 0
    weight: float = 1.0
    controller: str = "adaptive"
    controller_options: dict[str, Any] = field(default_factory=dict)
    window_batches: int = 10
    #: the cap rule's window (0: every reading; S: the S-second rolling mean)
    rule_window_s: float = 0.0
    #: virtual time at which the power sensor stops publishing readings (a fault), if any
    sensor_fails_at: float | None = None
    #: this worker's JSON Lines records (see batchsizer.io.records), if any
    records: str | None = None
    host_scale: float = 1.0
    #: the measured table this worker plays (``table:PATH.csv[:SELECTOR]``, ``sim:zeus-...``); empty: the
    #: simulated GPU ``gpu`` running ``model`` on ``dataset``
    device: str = ""
    #: its job (one queue of items); empty: ``model@dataset`` (see :func:`batchsizer.fleet.coordinator.job_key`)
    job: str = ""


class AllocatedCap:
    """The cap the fleet's allocator gave this worker; the loop reads it after every batch."""

    def __init__(self, watts: float) -> None:
        self.watts = float(watts)

    def cap_at(self, elapsed: float) -> float:
        """The cap now (W), whatever ``elapsed``: the coordinator moves it, not time."""
        return self.watts

    def __repr__(self) -> str:
        return f"fleet allocation (now {self.watts:g} W)"


class _Watch(LoopObserver):
    """Counts items per chunk, what each cap gave, and whether the sensor still works."""

    def __init__(self, worker: FleetWorker) -> None:
        self.w = worker

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        self.w._batch_done(len(batch), outcome.end)

    def on_period(self, record: PeriodRecord) -> None:
        self.w._period_done(record)


class FleetWorker:
    """A simulated GPU (or a measured table) running its share of a fleet job, one boundary at a time."""

    def __init__(self, cfg: WorkerConfig, initial_cap_w: float | None = None) -> None:
        self.cfg = cfg
        if cfg.device:
            from batchsizer.fleet.spec import open_table

            device = open_table(cfg.device, seed=cfg.seed)
        else:
            from batchsizer.sim import make_sim_device

            device = make_sim_device(cfg.gpu, cfg.model, cfg.dataset, seed=cfg.seed, host_scale=cfg.host_scale)
        self.gpu = device.gpu
        self.min_w, self.max_w = cap_range(device)
        if cfg.sensor_fails_at is not None:
            from batchsizer.testing.faults import FaultyMeter, Injection

            device.meter = FaultyMeter(device.meter, [Injection("dead", cfg.sensor_fails_at)])
        self.device = device
        self.cap = AllocatedCap(initial_cap_w if initial_cap_w is not None else self.min_w)
        controller = make_controller(cfg.controller, device.knobs, **cfg.controller_options)
        observers: list[LoopObserver] = [_Watch(self)]
        if cfg.records:
            from batchsizer.io.recorder import JobRecorder
            from batchsizer.io.records import RecordWriter

            Path(cfg.records).parent.mkdir(parents=True, exist_ok=True)
            observers.append(JobRecorder(RecordWriter(cfg.records), extra={"fleet_worker": cfg.name}))
        kwargs: dict[str, Any] = {}
        if cfg.rule_window_s > 0 and _loop_takes("cap_rule"):
            from batchsizer.core.cap_rule import CapRule  # type: ignore[import-not-found]

            kwargs["cap_rule"] = CapRule(cfg.rule_window_s)
        self.controller = controller
        self.loop = ControlLoop(device, controller, self.cap, Window(batches=cfg.window_batches), observers, **kwargs)
        self._cv = threading.Condition()
        self._state = "new"
        self._boundary = 0.0
        self._buffer: deque[int] = deque()
        self._open: deque[list[int]] = deque()  # [cid, items still to run], in lease order
        self._done_cids: list[int] = []
        self._no_more = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._summary: Summary | None = None
        self._error: str | None = None
        self._reported_to = 0.0
        self._true_reported_to = 0.0
        self.processed = 0
        self._bad_run = 0
        self._cap_since = 0.0  # when the current cap was set
        self._decided_at: float | None = None  # the loop's first decision under the current cap
        self._per_setting: dict[Setting, deque[tuple[float, float, float]]] = {}  # -> (items, seconds, power)
        self._recent: deque[tuple[float, float]] = deque(maxlen=3)  # (power by the rule, cap) of the last periods
        self.cap_history: list[tuple[float, float]] = []
        self._period_thr = math.nan
        #: the power this worker draws at the lowest setting its controller goes to, once a cap below it was seen
        self.floor_w = 0.0
        self._over_run = 0
        self._kept = 0  # periods in a row, under the cap in force, in which the controller kept its setting

    # -- what the coordinator calls -----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Fixed facts: name, GPU, model, dataset, weight; cap range, board limit, idle power (W); sensor period (s)."""
        return {
            "name": self.cfg.name,
            "gpu": self.cfg.gpu,
            "model": self.cfg.model,
            "dataset": self.cfg.dataset,
            "weight": self.cfg.weight,
            "min_w": self.min_w,
            "max_w": self.max_w,
            "board_w": float(self.gpu.board_limit_w),
            "idle_w": float(self.gpu.idle_w),
            "update_period_s": float(self.device.meter.update_period_s),
        }

    def set_cap(self, watts: float, t: float) -> float:
        """Apply a new cap (the loop sees it after its next batch); returns the cap now in force."""
        with self._cv:
            watts = min(max(float(watts), self.min_w), self.max_w)
            if watts != self.cap.watts or not self.cap_history:
                self.cap.watts = watts
                self._cap_since = t
                self._decided_at = None
                self._kept = 0
                self.cap_history.append((t, watts))
            return self.cap.watts

    def give(self, chunks: list[Chunk]) -> int:
        """Lease chunks to this worker; returns how many items it now holds unprocessed."""
        with self._cv:
            for c in chunks:
                self._buffer.extend(c.ids)
                self._open.append([c.cid, len(c)])
            return len(self._buffer)

    def advance(self, until: float, no_more: bool = False) -> dict[str, Any]:
        """Run until the virtual clock reaches ``until`` (or the leased items run out, or the job ends)."""
        with self._cv:
            self._boundary = until
            self._no_more = self._no_more or no_more
            if self._thread is None:
                self._state = "running"
                self._thread = threading.Thread(target=self._run, name=f"fleet-{self.cfg.name}", daemon=True)
                self._thread.start()
            elif self._state in ("boundary", "dry"):
                self._state = "running"
                self._cv.notify_all()
            while self._state == "running":
                self._cv.wait()
            return self._report(until)

    def idle_until(self, until: float) -> dict[str, Any]:
        """A worker with nothing to do waits (idle, its clock moving on) until ``until``."""
        with self._cv:
            if self._state == "dry":
                now = self.device.clock.now()
                if until > now:
                    self.device.clock.advance(until - now)
                self._state = "boundary"
            return self._report(until)

    def confirmed(self) -> bool:
        """Whether the current cap is met: the loop decided under it and the readings since are under it."""
        with self._cv:
            if self._state == "done":
                return True
            if self._decided_at is None:
                return False
            if self._bad_run >= FAILED_AFTER:
                return True  # held at the safe setting; no reading can say more
            if self.floor_w >= self.cap.watts:
                return True  # at its lowest setting: nothing lower to wait for
            now = self.device.clock.now()
            upd = float(self.device.meter.update_period_s)
            after = max(self._decided_at + upd, now - CONFIRM_S)
            if now - after < upd:
                return False
            try:
                readings = [s for s in self.device.meter.samples(after, now) if s.t > after]
            except Exception:
                return False
            if not readings:
                return False
            if self.cfg.rule_window_s > 0:
                value = sum(s.watts for s in readings) / len(readings)
            else:
                value = max(s.watts for s in readings)
            return value <= self.cap.watts + 1e-9

    def curve(self) -> dict[str, Any]:
        """The throughput curve for the allocator: the controller's frontier if it has one (past its highest
        measured point, the better of it and its model's prediction), else what this worker measured."""
        grid = cap_grid(self.min_w, self.max_w)
        try:
            front = self.controller.frontier(grid)
        except Exception:  # a frontier is advice; a failure falls back to what was measured
            front = []
        if front:
            pts = tuple((p.cap_w, p.throughput) for p in front if math.isfinite(p.throughput))
            pred = predicted_frontier(self.controller, grid)
            if pred:  # past the highest measured, what its model predicts (see fleet/frontier.py)
                return {"source": "frontier+model", "points": offered_curve(grid, pts, pred), "floor_w": self.floor_w}
            return {"source": "frontier", "points": pts, "floor_w": self.floor_w}
        measured = [
            Measured(max(p for _, _, p in q), sum(i for i, _, _ in q) / s, s)
            for q in self._per_setting.values()
            if (s := sum(sec for _, sec, _ in q)) > 0
        ]
        # not held back by its cap: the last periods all drew clearly less than it
        saturated = len(self._recent) == self._recent.maxlen and all(p < c * (1 - SLACK) for p, c in self._recent)
        pts = measured_curve(measured, self.min_w, self.max_w, float(self.gpu.idle_w), saturated)
        return {"source": "measured", "points": pts, "floor_w": self.floor_w}

    def finish(self) -> dict[str, Any]:
        """End the loop (if it still runs) and return the run summary, the cap over time and the totals."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        s = self._summary.to_dict() if self._summary is not None else None
        return {
            "name": self.cfg.name,
            "summary": s,
            "error": self._error,
            "cap_over_time": [{"t": t, "cap_w": c} for t, c in self.cap_history],
            "processed": self.processed,
            "end_s": self.device.clock.now(),
        }

    # -- the loop's side ----------------------------------------------------------------------
    def _run(self) -> None:
        stream = DynamicBatchStream(self._items())
        try:
            summary = self.loop.run(stream)
            with self._cv:
                self._summary = summary
        except BaseException as exc:  # reported to the coordinator, which ends the job with it
            with self._cv:
                self._error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._cv:
                self._state = "done" if self._error is None else "error"
                self._cv.notify_all()

    def _pause(self, why: str) -> None:
        self._state = why
        self._cv.notify_all()
        while self._state == why and not self._closing:
            self._cv.wait()

    def _items(self) -> Iterator[int]:
        clock = self.device.clock
        while True:
            with self._cv:
                while True:
                    if self._closing:
                        return
                    if clock.now() >= self._boundary:
                        self._pause("boundary")
                        continue
                    if self._buffer:
                        break
                    if self._no_more:
                        return
                    self._pause("dry")
                item = self._buffer.popleft()
            yield item

    def _batch_done(self, n: int, end: float) -> None:
        with self._cv:
            self.processed += n
            while n > 0 and self._open:
                head = self._open[0]
                take = min(n, head[1])
                head[1] -= take
                n -= take
                if head[1] == 0:
                    self._done_cids.append(head[0])
                    self._open.popleft()

    def _period_done(self, record: PeriodRecord) -> None:
        o, d = record.observation, record.decision
        with self._cv:
            if d.reason != "end":  # the job's last, partial period is reported but not decided on
                self._bad_run = self._bad_run + 1 if d.reason in BAD_READING else 0
            if o.cap_w == self.cap.watts and self._decided_at is None:
                self._decided_at = o.end
            if d.reason != "end":
                kept = o.cap_w == self.cap.watts and d.setting == o.setting and d.reason not in BAD_READING
                self._kept = self._kept + 1 if kept else 0
            self._period_thr = o.throughput
            # over the cap and the controller keeps its setting: it is at its lowest (the cap cannot be met)
            if o.valid and o.peak_w > o.cap_w and d.setting == o.setting:
                self._over_run += 1
                if self._over_run >= 2:
                    power = o.mean_w if self.cfg.rule_window_s > 0 else o.peak_w
                    self.floor_w = max(self.floor_w, power)
            else:
                self._over_run = 0
            # what each setting gave and drew, whatever the cap (the allocator's measured curve)
            if o.valid and o.duration_s > 0 and d.reason not in BAD_READING:
                power = o.mean_w if self.cfg.rule_window_s > 0 else o.peak_w
                q = self._per_setting.setdefault(o.setting, deque(maxlen=KEEP_PER_CAP))
                q.append((float(o.items), o.duration_s, power))
                self._recent.append((power, o.cap_w))

    def _report(self, until: float) -> dict[str, Any]:
        now = self.device.clock.now()
        upto = min(until, now) if self._state in ("boundary",) else now
        try:
            raw = self.device.meter.samples(self._reported_to, upto)
            samples = [(s.t, s.watts) for s in raw if s.t > self._reported_to]
        except Exception:
            samples = []
        # true power only where the device knows it (a simulator's reference meter); the budget's own
        # accounting is by the sensor samples above
        reference = getattr(self.device, "reference_meter", None)
        true = [(s.t, s.watts) for s in reference.samples(self._true_reported_to, upto)] if reference else []
        self._reported_to = max(self._reported_to, upto)
        self._true_reported_to = max(self._true_reported_to, upto)
        done, self._done_cids = self._done_cids, []
        return {
            "name": self.cfg.name,
            "state": self._state,
            "now": now,
            "upto": upto,
            "done_cids": done,
            "held_items": len(self._buffer),
            "processed": self.processed,
            "samples": samples,
            "true_samples": true,
            "sensor_failed": self._bad_run >= FAILED_AFTER,
            "cap_w": self.cap.watts,
            "floor_w": self.floor_w,
            "throughput": self._period_thr,
            "settled": self._kept >= SETTLED_PERIODS,
            "error": self._error,
        }


def cap_range(device: Any) -> tuple[float, float]:
    """The caps a worker may get (W): its board's power-limit range, ``gpu.min_limit_w`` to ``gpu.board_limit_w``.

    A measured table's range is what :class:`~batchsizer.sim.table_plant.TableDevice` synthesizes: its lowest
    and its board limit (its highest limit, or 1.1 times the highest power it measured if more). Its lowest is
    raised, where needed, to what it draws at its lowest-power setting (every measured clock, limit and batch
    size in range) plus :data:`TABLE_MARGIN`, so the lowest cap is one it can meet. A table without rows at two
    power limits has no settable limit, and its synthesized lowest is its board limit: its range starts at
    that lowest-power draw instead (plus the margin), where its controller can still get by the batch size.
    """
    from batchsizer.sim.table_plant import TablePlant

    lo, hi = float(device.gpu.min_limit_w), float(device.gpu.board_limit_w)
    plant = getattr(device, "plant", None)
    if not isinstance(plant, TablePlant):
        return lo, hi
    least = _lowest_power_w(plant) * TABLE_MARGIN
    lo = max(lo, least) if len(plant.limits) >= 2 else least
    return min(lo, hi), hi


#: a table worker's lowest cap is at least this much over what it draws at its lowest-power setting (as the
#: coordinator's FLOOR_MARGIN for a worker that cannot get under its lowest cap)
TABLE_MARGIN = 1.03


def _lowest_power_w(plant: Any) -> float:
    """The least peak power of a table plant over its measured settings and the batch sizes in its range."""
    lo, hi = plant.size_range
    sizes = sorted({lo, hi, *(b for b in plant.batch_sizes if lo <= b <= hi)})
    least = math.inf
    try:
        for clock in plant.clocks or (None,):
            plant.set_clock(clock)
            for limit in plant.limits or [None]:
                plant.set_power_limit(limit)
                least = min(least, *(plant.point(b).peak_w for b in sizes))
    finally:  # back to the table's defaults, as the device was opened
        plant.set_clock(None)
        plant.set_power_limit(None)
    return least


def _loop_takes(name: str) -> bool:
    import inspect

    return name in inspect.signature(ControlLoop.__init__).parameters
