"""The serving engine: the one control loop (:class:`batchsizer.core.loop.ControlLoop`) iterating a
request queue, with the power controller's size bounded by the latency limit.

The loop is used as it is: its batch source is a :class:`~batchsizer.serve.batcher.RealtimeSource`
(or, in the benchmark, a :class:`~batchsizer.serve.batcher.VirtualSource`), it builds each period's
:class:`~batchsizer.policies.base.Observation` from the device's meter as for any job, and it sets the
source's ``batch_size`` to the controller's size. Two things differ from a batch job, and
:class:`ServingController` handles both between the loop and the controller it wraps:

* batches may leave below the size cap (the wait timeout ran out first, at light load): the
  controller is told the largest batch that really ran, and the busy time of the period rather than
  its length (idle gaps are not slowness), so it learns power and speed of what ran;
* the size cap may not drift up while batches do not reach it: the controller's size is held to at
  most ``growth`` times the largest batch that ran in the period, so a sudden burst does not run at a
  size whose power was never seen;
* with the latency limit on, the controller is told how long a batch may take
  (``Observation.batch_time_limit_s``) and the largest size the limit lets run at the setting that
  ran (``Observation.latency_size_limit``): a controller with a model of time per batch at each
  knob level keeps off settings whose batches the latency limit would cut, instead of asking for a
  size that never runs (and so is never measured).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from batchsizer.core.batching import Batch
from batchsizer.core.cap_rule import CapJudge
from batchsizer.core.caps import CapSource, check_cap
from batchsizer.core.controller import Controller
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.summary import Summary
from batchsizer.core.types import Decision, Observation, Setting
from batchsizer.serve.batcher import Answer, Batcher, BatcherConfig, RealtimeSource, Request

#: the controller's size may be at most this many times the largest batch that ran in the period
GROWTH = 2.0


class ManagedCap:
    """A cap source a power manager may override at run time (``PUT /v1/cap``); until then, or after
    :meth:`clear`, the configured source (constant, schedule, file, the GPU's limit)."""

    def __init__(self, base: CapSource) -> None:
        self.base = base
        self.override_w: float | None = None

    def set(self, watts: float) -> float:
        """Override the cap with ``watts`` (checked; ConfigError otherwise) until :meth:`clear`; returns it."""
        self.override_w = check_cap(watts)
        return self.override_w

    def clear(self) -> None:
        """Drop the override: the configured source gives the cap again."""
        self.override_w = None

    def cap_at(self, elapsed: float) -> float:
        """The override where one is set, else the configured source's cap at ``elapsed``."""
        return self.override_w if self.override_w is not None else self.base.cap_at(elapsed)

    def __repr__(self) -> str:
        return repr(self.base) + (f" (set to {self.override_w:g} W by the power manager)" if self.override_w else "")


class ServingController(Controller):
    """Wraps a power controller for a request queue: tells it what really ran, holds its size near it."""

    def __init__(self, inner: Controller, batcher: Batcher, growth: float = GROWTH) -> None:
        self.inner = inner
        self.batcher = batcher
        self.growth = growth
        self.name = inner.name
        self.last: Decision | None = None

    @property
    def can_drop_clocks(self) -> bool:  # type: ignore[override]
        """The wrapped controller's: whether it can go on without clocks."""
        return self.inner.can_drop_clocks

    def drop_clocks(self) -> None:
        """Pass on to the wrapped controller."""
        self.inner.drop_clocks()

    def initial(self) -> Setting:
        """The wrapped controller's first setting."""
        return self.inner.initial()

    def decide(self, obs: Observation) -> Decision:
        """The wrapped controller's decision on what really ran, its size held to ``growth`` x the largest batch.

        The observation is rewritten to the largest batch that ran and the time the device was busy, so a
        controller is not misled by idle time or by a size the queue never filled.
        """
        ran = self.batcher.pop_period()
        seen = obs
        if ran.batches > 0 and ran.max_size > 0:
            busy = min(max(ran.busy_s, 1e-9), obs.duration_s) if obs.duration_s > 0 else ran.busy_s
            seen = replace(obs, setting=replace(obs.setting, batch_size=ran.max_size), end=obs.start + busy)
        if self.batcher.config.latency_cap:
            state = self.batcher.cap_state
            seen = replace(
                seen, batch_time_limit_s=batch_time_limit(self.batcher.config), latency_size_limit=state.latency_size
            )
        decision = self.inner.decide(seen)
        limit = math.inf if math.isinf(self.growth) else max(1, math.floor(self.growth * max(ran.max_size, 1)))
        if decision.setting.batch_size > limit:
            decision = replace(
                decision,
                setting=replace(decision.setting, batch_size=int(limit)),
                reason=f"{decision.reason}; held at {limit} (batches reached {ran.max_size})",
            )
        self.last = decision
        return decision

    def describe(self) -> dict[str, Any]:
        """The wrapped controller's description plus the growth limit."""
        return {**self.inner.describe(), "serving": {"growth": self.growth}}


def batch_time_limit(config: BatcherConfig) -> float:
    """The longest one batch may take for the p99 to meet the SLO the latency limit aims at: the batch
    ahead of a request, its own batch's wait, and its own batch (see :func:`~batchsizer.serve.latency.
    predicted_p99`), with the wait at its longest. Told to the power controller, so that it does not
    choose a setting (a slow clock) under which only the smallest batches could run."""
    return max((config.slo_s * config.headroom - config.max_wait_s) / 2, 0.0)


class LatencyStats:
    """Latencies of answered requests (a bounded recent window for percentiles) and outcome counts."""

    def __init__(self, keep: int = 200_000) -> None:
        self.recent: deque[float] = deque(maxlen=keep)
        self.outcomes: dict[str, int] = {"ok": 0, "rejected": 0, "failed": 0, "bad_request": 0}
        self.within_slo = 0
        self.lock = threading.Lock()

    def add(self, outcome: str, latency_s: float | None = None, slo_s: float = math.inf) -> None:
        """Count one outcome (``ok``, ``rejected``, ``failed``, ``bad_request``) and keep its latency, noting if within ``slo_s``."""
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if latency_s is not None:
                self.recent.append(latency_s)
                if latency_s <= slo_s:
                    self.within_slo += 1

    def percentiles(self, qs: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
        """The recent latencies' percentiles in ms, keyed ``p50_ms``...; None before any answer."""
        with self.lock:
            values = sorted(self.recent)
        return {f"p{q:g}_ms": (percentile(values, q) * 1000 if values else None) for q in qs}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of already sorted values."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


class _Dispatcher(LoopObserver):
    """After each batch: every request in it gets its answer; the service model learns the batch."""

    def __init__(self, engine: ServingEngine) -> None:
        self.engine = engine

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        e = self.engine
        e.batcher.ran(len(batch), outcome.start, outcome.end)
        note = getattr(e.source, "note_ran", None)
        if note is not None:
            note(outcome.start, outcome.end, len(batch))
        outputs = outcome.outputs
        run_s = outcome.end - outcome.start
        for i, r in enumerate(batch.items):
            out = outputs[i] if outputs is not None and i < len(outputs) else None
            latency = outcome.end - r.arrival
            answer = Answer(True, out, len(batch), max(r.started - r.arrival, 0.0), run_s, latency)
            if r.settle(answer):
                e.latency.add("ok", latency, e.config.slo_s)
        e.batches_by_size[len(batch)] = e.batches_by_size.get(len(batch), 0) + 1

    def on_period(self, record: PeriodRecord) -> None:
        e = self.engine
        e.last_period = record
        obs = record.observation
        e.energy_j += record.window.energy_j if math.isfinite(record.window.energy_j) else 0.0
        cap = obs.period_cap_w if math.isfinite(obs.period_cap_w) else obs.cap_w  # the cap during the period
        e.over_cap.feed(list(record.judged or record.samples), obs.start, obs.end, lambda _t: cap)
        e.observed_s += obs.duration_s


class ServingEngine:
    """Runs :class:`ControlLoop` over a request queue in a worker thread; :meth:`offer` from any thread."""

    def __init__(
        self,
        device: Device,
        controller: Controller,
        caps: CapSource,
        config: BatcherConfig,
        *,
        window: Window | None = None,
        observers: Sequence[LoopObserver] = (),
        prepare: Callable[[list[Any]], Any] | None = None,
        time_scale: float = 1.0,
        growth: float = GROWTH,
        source: Any = None,
    ) -> None:
        self.device = device
        self.config = config
        self.caps = caps if isinstance(caps, ManagedCap) else ManagedCap(caps)
        self.batcher = Batcher(config)
        self.controller = ServingController(controller, self.batcher, growth)
        self.source = source if source is not None else RealtimeSource(self.batcher, device.clock, prepare, time_scale)
        if source is not None:
            source.batcher = self.batcher
        self.latency = LatencyStats()
        self.batches_by_size: dict[int, int] = {}
        self.last_period: PeriodRecord | None = None
        self.energy_j = 0.0
        self.over_cap = CapJudge()
        self.observed_s = 0.0
        self.stop_event = threading.Event()
        self.loop = ControlLoop(
            device,
            self.controller,
            self.caps,
            window or Window(batches=10, seconds=1.0),
            [_Dispatcher(self), *observers],
            self.stop_event,
        )
        #: the job's start on the device clock (a cap schedule counts from it)
        self.t0 = device.clock.now()
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self._thread: threading.Thread | None = None

    # running -----------------------------------------------------------------------------------
    def run(self) -> Summary:
        """Run the loop in this thread until the source ends (drained, or arrivals played out)."""
        self.t0 = self.device.clock.now()
        self.started.set()
        try:
            self.summary = self.loop.run(self.source)
        except BaseException as exc:
            self.error = exc
            self._fail_pending(f"the device failed: {exc}")
            raise
        self._fail_pending("the server stopped before this request ran")
        return self.summary

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a daemon thread (its error kept in ``error``); waits up to 5 s for it to start."""

        def target() -> None:
            with contextlib.suppress(BaseException):  # kept in self.error; the server reports it
                self.run()

        self._thread = threading.Thread(target=target, name="batchsizer-serve-loop", daemon=True)
        self._thread.start()
        self.started.wait(5)
        return self._thread

    def drain(self, timeout: float | None = None) -> Summary | None:
        """Stop accepting, run everything queued, stop the loop; the job's summary."""
        drain = getattr(self.source, "drain", None)
        if drain is not None:
            drain()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.summary

    @property
    def running(self) -> bool:
        """Whether the loop's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _fail_pending(self, why: str) -> None:
        for r in self.batcher.take_all():
            if r.settle(Answer(False, error=why)):
                self.latency.add("failed")

    # requests ----------------------------------------------------------------------------------
    def offer(
        self, payload: Any, on_answer: Callable[[Request, Answer], None] | None = None
    ) -> tuple[Any, Request | None]:
        """Admit a request (its answer goes to ``on_answer`` from the loop's thread) or refuse it."""
        if self.error is not None or (self._thread is not None and not self._thread.is_alive()):
            from batchsizer.serve.admission import Verdict

            return Verdict(False, math.inf, 1), None
        verdict, request = self.source.offer(payload, on_answer)
        if request is None:
            self.latency.add("rejected")
        return verdict, request

    def bad_request(self) -> None:
        """Count a request refused as malformed (400, 413, 415), which never reached the queue."""
        self.latency.add("bad_request")

    # figures -----------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """Latency and outcome figures (added to the job's summary for --json)."""
        answered = self.latency.outcomes.get("ok", 0)
        return {
            "requests": dict(self.latency.outcomes),
            "within_slo": self.latency.within_slo,
            "slo_ms": self.config.slo_s * 1000,
            "max_wait_ms": self.config.max_wait_s * 1000,
            **self.latency.percentiles(),
            "energy_per_request_j": self.energy_j / answered if answered else None,
            "batches_by_size": {str(k): v for k, v in sorted(self.batches_by_size.items())},
        }
