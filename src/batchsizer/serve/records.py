"""The records of ``batchsizer serve --records``: those of ``batchsizer run``, plus one ``requests``
line per control period with the latency of the requests answered in it, so the latency can be
drawn over time (``batchsizer plot``); the summary line also holds the job's latency figures.

A ``requests`` line, written right after its ``period`` line: ``start``, ``end`` (the period's, on
the device clock), ``ok`` (requests answered by the period's batches), ``rejected`` (requests
refused since the previous line: admission or a full queue), ``within_slo``, ``slo_ms``,
``p50_ms``, ``p99_ms``, ``max_ms`` (latency from arrival to the end of the request's batch; null
when none was answered), ``queue_p50_ms``, ``queue_p99_ms`` (arrival to the start of its batch),
``latency_bound_batches`` (the period's batches whose size cap was the latency limit rather than
the controller's size), and the size cap at the period's end: ``size_cap``, ``size_cap_why``
(``power`` or ``latency``), ``power_size``, ``latency_size``.
"""

from __future__ import annotations

from typing import Any

from batchsizer.core.batching import Batch
from batchsizer.core.device import BatchOutcome
from batchsizer.core.loop import PeriodRecord
from batchsizer.core.summary import Summary
from batchsizer.core.types import Setting
from batchsizer.io.recorder import JobRecorder
from batchsizer.serve.engine import ServingEngine, percentile


def _ms(sorted_s: list[float], q: float) -> float | None:
    return percentile(sorted_s, q) * 1000 if sorted_s else None


class ServeRecorder(JobRecorder):
    """The job's records with a ``requests`` line per period; ``engine`` is set once it exists."""

    engine: ServingEngine | None = None

    def __init__(self, writer: Any, **kw: Any) -> None:
        super().__init__(writer, **kw)
        self._latency: list[float] = []
        self._queue: list[float] = []
        self._latency_bound = 0
        self._rejected_before = 0

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        """Write the batch line, and keep the answered requests' latency and queue time for the period."""
        super().on_batch(index, batch, outcome, setting)
        # the engine's dispatcher, an earlier observer, has answered the batch's requests
        for r in batch.items:
            answer = getattr(r, "answer", None)
            if answer is not None and answer.ok:
                self._latency.append(answer.latency_s)
                self._queue.append(answer.queue_s)
        formed = self.engine.batcher.formed if self.engine is not None else None
        if formed is not None and formed.why == "latency":
            self._latency_bound += 1

    def on_period(self, record: PeriodRecord) -> None:
        """Write the period's lines, then a ``requests`` line: counts, latency percentiles, the size cap."""
        super().on_period(record)
        if self.engine is None:
            return
        batcher, slo_s = self.engine.batcher, self.engine.config.slo_s
        with batcher.lock:
            rejected = batcher.counts["rejected"]
        lat, queue = sorted(self._latency), sorted(self._queue)
        cap = batcher.cap_state
        obs = record.observation
        self.writer.write(
            "requests",
            start=obs.start,
            end=obs.end,
            ok=len(lat),
            rejected=rejected - self._rejected_before,
            within_slo=sum(1 for x in lat if x <= slo_s),
            slo_ms=slo_s * 1000,
            p50_ms=_ms(lat, 50),
            p99_ms=_ms(lat, 99),
            max_ms=lat[-1] * 1000 if lat else None,
            queue_p50_ms=_ms(queue, 50),
            queue_p99_ms=_ms(queue, 99),
            latency_bound_batches=self._latency_bound,
            size_cap=cap.size,
            size_cap_why=cap.why,
            power_size=cap.power_size,
            latency_size=cap.latency_size,
        )
        self._latency, self._queue, self._latency_bound = [], [], 0
        self._rejected_before = rejected

    def on_end(self, summary: Summary) -> None:
        """Write the summary with the server's latency figures, and close the file."""
        figures = self.engine.figures() if self.engine is not None else {}
        self.writer.write("summary", **summary.to_dict(), latency=figures)
        self.writer.close()
