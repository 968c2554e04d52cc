"""The request queue and the batch sources the control loop iterates.

:class:`Batcher` holds the waiting requests, decides admission and the current size cap
(min(the power controller's size, the latency limit)), and forms a batch when the cap is reached or
the oldest request has waited ``max_wait_s``. Two sources feed its batches to
:class:`batchsizer.core.loop.ControlLoop`, which iterates them like a
:class:`~batchsizer.core.batching.DynamicBatchStream` and sets their ``batch_size`` to the controller's
size: :class:`RealtimeSource` blocks on a condition until a batch forms (the HTTP server), and
:class:`VirtualSource` plays a list of arrival times on a simulated device's virtual clock (the
benchmark), so both run the same queue, admission and size-cap code.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchsizer.core.batching import Batch, check_batch_size
from batchsizer.core.clock import Clock
from batchsizer.errors import ConfigError
from batchsizer.serve.admission import Verdict, admit, predict_latency
from batchsizer.serve.latency import RateEstimate, ServiceModel, latency_limit

#: how often (device seconds) the latency limit is recomputed; the rate estimate moves on ~1 s
LIMIT_EVERY_S = 0.05


@dataclass(slots=True)
class Answer:
    """What a request gets back: its outputs, or why it failed; times in the device's seconds."""

    ok: bool
    output: Any = None
    batch_size: int = 0
    queue_s: float = 0.0
    run_s: float = 0.0
    latency_s: float = 0.0
    error: str | None = None


@dataclass(eq=False, slots=True)
class Request:
    """One accepted request: its payload, arrival time (device clock), and where its answer goes."""

    payload: Any
    arrival: float
    rid: int = 0
    on_answer: Callable[[Request, Answer], None] | None = None
    answer: Answer | None = None
    started: float = math.nan

    def settle(self, answer: Answer) -> bool:
        """Give the request its one answer; False (and nothing done) if it already has one."""
        if self.answer is not None:
            return False
        self.answer = answer
        if self.on_answer is not None:
            self.on_answer(self, answer)
        return True


@dataclass
class PeriodStats:
    """What ran since the controller last decided: the largest batch, busy time, batch count."""

    max_size: int = 0
    busy_s: float = 0.0
    batches: int = 0


@dataclass
class BatcherConfig:
    """The serving limits: latency SLO (s), longest wait before a batch leaves (s), the sizes, admission, queue bound.

    Checked when built (ConfigError naming the option): the SLO positive, the wait under it, every size at least 1.
    """

    slo_s: float
    max_wait_s: float
    sizes: Sequence[int]
    admission: bool = True
    latency_cap: bool = True
    max_queue: int = 100_000
    #: admission and the latency limit aim at this share of the SLO (the predictions are not exact)
    headroom: float = 0.9

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slo_s) and self.slo_s > 0):
            raise ConfigError("slo-ms", f"must be a positive number of milliseconds, got {self.slo_s * 1000:g}")
        if not (math.isfinite(self.max_wait_s) and 0 <= self.max_wait_s < self.slo_s):
            raise ConfigError(
                "max-wait-ms",
                f"must be 0 or more and less than the SLO ({self.slo_s * 1000:g} ms), got {self.max_wait_s * 1000:g}",
            )
        if not self.sizes:
            raise ConfigError("sizes", "must hold at least one size")
        self.sizes = tuple(sorted(check_batch_size(s, "sizes") for s in self.sizes))


@dataclass
class CapState:
    """The size cap in force and why: "power" (the controller's size) or "latency" (the SLO's limit)."""

    size: int
    why: str
    power_size: int
    latency_size: int
    predicted_p99_s: float | None = None


class Batcher:
    """The waiting requests, admission, the size cap and batch formation (thread-safe)."""

    def __init__(self, config: BatcherConfig, model: ServiceModel | None = None) -> None:
        self.config = config
        self.model = model or ServiceModel()
        self.rate = RateEstimate(1.0)
        self.queue: deque[Request] = deque()
        self.lock = threading.RLock()
        self._ids = itertools.count()
        self._power_size = config.sizes[0]
        self._cap = CapState(config.sizes[0], "power", config.sizes[0], config.sizes[-1])
        self._limit_at = -math.inf
        self.period = PeriodStats()
        #: the size cap the last batch was formed under (what its size was bounded by)
        self.formed: CapState | None = None
        #: the batch on the device: (start on the device clock, size), None when idle
        self.in_service: tuple[float, int] | None = None
        self.counts = {"accepted": 0, "rejected": 0}

    # the power controller's size (ControlLoop sets it through the source's batch_size) --------
    @property
    def power_size(self) -> int:
        """The batch size the power controller chose (the cap's power part); set by ControlLoop."""
        return self._power_size

    @power_size.setter
    def power_size(self, value: int) -> None:
        self._power_size = check_batch_size(value)
        self._limit_at = -math.inf  # recompute the cap now

    def size_cap(self, now: float) -> CapState:
        """min(the power controller's size, the latency limit), recomputed at most every LIMIT_EVERY_S."""
        with self.lock:
            if now - self._limit_at < LIMIT_EVERY_S:
                return self._cap
            self._limit_at = now
            cfg = self.config
            lat, p99 = cfg.sizes[-1], None
            if cfg.latency_cap:
                lat, p99 = latency_limit(
                    self.model, cfg.sizes, self.rate.rate(now), cfg.max_wait_s, cfg.slo_s * cfg.headroom
                )
            power = self._power_size
            size, why = (power, "power") if power <= lat else (lat, "latency")
            self._cap = CapState(size, why, power, lat, p99)
            return self._cap

    @property
    def cap_state(self) -> CapState:
        """The size cap last computed, without recomputing it (a reader must not move its timing)."""
        with self.lock:
            return self._cap

    # arrivals ----------------------------------------------------------------------------------
    def offer(
        self, payload: Any, now: float, on_answer: Callable[[Request, Answer], None] | None = None
    ) -> tuple[Verdict, Request | None]:
        """Admit a request arriving at ``now`` or refuse it (then it is not queued)."""
        with self.lock:
            self.rate.add(now)
            cap = self.size_cap(now).size
            verdict = Verdict(True, math.nan)
            if len(self.queue) >= self.config.max_queue:
                verdict = Verdict(False, math.inf, 1)
            elif self.config.admission:
                busy = 0.0
                if self.in_service is not None:
                    start, size = self.in_service
                    busy = max((self.model.mean(size) or 0.0) - (now - start), 0.0)
                head_age = now - self.queue[0].arrival if self.queue else 0.0
                predicted = predict_latency(
                    self.model,
                    depth=len(self.queue),
                    busy_s=busy,
                    cap=cap,
                    rate=self.rate.rate(now),
                    max_wait_s=self.config.max_wait_s,
                    head_age_s=head_age,
                )
                verdict = admit(predicted, self.config.slo_s * self.config.headroom)
            if not verdict.accept:
                self.counts["rejected"] += 1
                return verdict, None
            request = Request(payload, now, next(self._ids), on_answer)
            self.queue.append(request)
            self.counts["accepted"] += 1
            return verdict, request

    # batches ------------------------------------------------------------------------------------
    def due(self, now: float, flush: bool = False) -> list[Request] | None:
        """The next batch if one should leave now (cap reached, oldest waited out, or ``flush``)."""
        with self.lock:
            n = len(self.queue)
            if n == 0:
                return None
            state = self.size_cap(now)
            cap = state.size
            if n >= cap or flush or now - self.queue[0].arrival >= self.config.max_wait_s - 1e-12:
                self.formed = state
                items = [self.queue.popleft() for _ in range(min(cap, n))]
                for r in items:
                    r.started = now
                self.in_service = (now, len(items))
                return items
            return None

    def next_deadline(self) -> float:
        """When the oldest waiting request runs out of wait (inf with none waiting)."""
        with self.lock:
            return self.queue[0].arrival + self.config.max_wait_s if self.queue else math.inf

    def ran(self, size: int, start: float, end: float) -> None:
        """A batch ran: learn its service time, count it for the period."""
        with self.lock:
            self.model.observe(size, end - start)
            self.in_service = None
            p = self.period
            p.max_size = max(p.max_size, size)
            p.busy_s += end - start
            p.batches += 1

    def pop_period(self) -> PeriodStats:
        """What ran since the last call (largest batch, busy time, count), and start a new period."""
        with self.lock:
            p, self.period = self.period, PeriodStats()
            return p

    def take_all(self) -> list[Request]:
        """Every waiting request (to fail them when the device is gone)."""
        with self.lock:
            items = list(self.queue)
            self.queue.clear()
            return items

    @property
    def depth(self) -> int:
        """How many requests are waiting."""
        return len(self.queue)


class PowerSizedSource:
    """A batch stream's ``batch_size`` as ControlLoop sets it: the batcher's power size; and ``close``.
    :meth:`size_set` runs after each new size (nothing here; a stream that must pass it on overrides it)."""

    batcher: Batcher

    @property
    def batch_size(self) -> int:
        """The batcher's power size, which the loop sets after each decision."""
        return self.batcher.power_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.batcher.power_size = value
        self.size_set()

    def size_set(self) -> None:
        """Called after the controller set a new batch size."""

    def close(self) -> None:  # called by ControlLoop when the run ends
        """Nothing to release here; ControlLoop calls it when the run ends."""
        pass


class _SourceBase(PowerSizedSource):
    """What ControlLoop needs of a batch stream: ``batch_size`` (the controller's size), ``prepare``,
    iteration, ``close``."""

    def __init__(self, batcher: Batcher, prepare: Callable[[list[Any]], Any] | None = None) -> None:
        self.batcher = batcher
        self.prepare: Callable[[list[Any]], Any] | None = None
        self._prepare_payloads = prepare
        if prepare is not None:
            # ControlLoop re-prepares the pieces of a batch split after running out of memory
            self.prepare = lambda items: prepare([r.payload for r in items])
        self._index = 0

    def _batch(self, items: list[Request]) -> Batch[Request]:
        first = self._index
        self._index += len(items)
        prepared = self.prepare(items) if self.prepare is not None else None
        return Batch(first, items, prepared)


class RealtimeSource(_SourceBase):
    """Batches of requests as they arrive (the server): blocks until a batch is due; after
    :meth:`drain` it sends what is queued without waiting, then ends."""

    def __init__(
        self,
        batcher: Batcher,
        clock: Clock,
        prepare: Callable[[list[Any]], Any] | None = None,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(batcher, prepare)
        self.clock = clock
        self.time_scale = time_scale
        self.cond = threading.Condition(batcher.lock)
        self._draining = False

    def offer(
        self, payload: Any, on_answer: Callable[[Request, Answer], None] | None = None
    ) -> tuple[Verdict, Request | None]:
        """Admit a request at the clock's now and wake the loop; refused (retry in 1 s) once draining."""
        with self.cond:
            if self._draining:
                return Verdict(False, math.inf, 1), None
            verdict, request = self.batcher.offer(payload, self.clock.now(), on_answer)
            if request is not None:
                self.cond.notify()
            return verdict, request

    def drain(self) -> None:
        """Stop accepting; what is queued still runs."""
        with self.cond:
            self._draining = True
            self.cond.notify_all()

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called: no new requests, the queue runs out."""
        return self._draining

    def __iter__(self) -> Iterator[Batch[Request]]:
        while True:
            with self.cond:
                while True:
                    now = self.clock.now()
                    items = self.batcher.due(now, flush=self._draining)
                    if items is not None:
                        break
                    if self._draining and self.batcher.depth == 0:
                        return
                    deadline = self.batcher.next_deadline()
                    wait = 0.5 if math.isinf(deadline) else max(deadline - now, 0.0) * self.time_scale
                    self.cond.wait(max(wait, 1e-4))
            yield self._batch(items)


@dataclass
class Arrival:
    """One request of a simulated load: when it arrives (device seconds) and its payload."""

    t: float
    payload: Any = None
    verdict: Verdict | None = field(default=None, repr=False)


class VirtualSource(_SourceBase):
    """A list of arrivals played on a simulated device's virtual clock (the benchmark).

    Before each batch, the arrivals up to the device's time are admitted in order, each against the
    state it would have met (the queue then, and what was left of the batch in service); the device
    idles to the next arrival or deadline when no batch is due. ``idle(seconds)`` moves the device's
    clock while it waits (``SimDevice.idle``)."""

    def __init__(
        self, batcher: Batcher, clock: Clock, arrivals: Sequence[Arrival], idle: Callable[[float], None]
    ) -> None:
        super().__init__(batcher)
        self.clock = clock
        self.arrivals = sorted(arrivals, key=lambda a: a.t)
        self.idle = idle
        self._next = 0
        self.rejected: list[Arrival] = []
        self.accepted: list[tuple[Arrival, Request]] = []
        self._busy_until = -math.inf
        self._last_start = -math.inf
        self._last_size = 0

    def _admit_until(self, now: float) -> None:
        b = self.batcher
        while self._next < len(self.arrivals) and self.arrivals[self._next].t <= now:
            a = self.arrivals[self._next]
            self._next += 1
            # the batch in service when it arrived, if any, as the batcher would have seen it live
            b.in_service = (self._last_start, self._last_size) if a.t < self._busy_until else None
            verdict, request = b.offer(a.payload, a.t)
            a.verdict = verdict
            if request is None:
                self.rejected.append(a)
            else:
                self.accepted.append((a, request))
        b.in_service = None

    def note_ran(self, start: float, end: float, size: int) -> None:
        """Remember the batch that just ran, so arrivals during it see it in service."""
        self._last_start, self._busy_until, self._last_size = start, end, size

    def __iter__(self) -> Iterator[Batch[Request]]:
        b = self.batcher
        while True:
            now = self.clock.now()
            self._admit_until(now)
            items = b.due(now)
            if items is not None:
                b.in_service = None
                yield self._batch(items)
                continue
            nxt = self.arrivals[self._next].t if self._next < len(self.arrivals) else math.inf
            deadline = b.next_deadline()
            t = min(nxt, deadline)
            if math.isinf(t):
                return
            if t > now:
                self.idle(t - now)
            elif deadline <= now:  # rounding: the oldest request is due now
                items = b.due(now, flush=True)
                if items is not None:
                    b.in_service = None
                    yield self._batch(items)
