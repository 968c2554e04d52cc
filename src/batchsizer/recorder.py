"""Writes a job's records as it runs (see :mod:`batchsizer.records` for the format)."""

from __future__ import annotations

from typing import Any

from batchsizer.batching import Batch
from batchsizer.devices import BatchOutcome
from batchsizer.loop import LoopObserver, PeriodRecord
from batchsizer.policies.base import Setting
from batchsizer.records import RecordWriter
from batchsizer.summary import Summary


class JobRecorder(LoopObserver):
    """Batch, period, power-sample and event lines, flushed as they happen; the summary last."""

    def __init__(
        self, writer: RecordWriter, *, power_samples: bool = True, extra: dict[str, Any] | None = None
    ) -> None:
        self.writer = writer
        self.power_samples = power_samples
        self.extra = extra or {}
        self._last_sample_t = float("-inf")

    def on_start(self, info: dict[str, Any]) -> None:
        self.writer.write("job", **info, **self.extra)

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        self.writer.write(
            "batch",
            i=index,
            first=batch.first_index,
            size=len(batch),
            start=outcome.start,
            end=outcome.end,
            latency_s=outcome.latency_s,
            clock_mhz=setting.clock_mhz,
        )

    def on_period(self, record: PeriodRecord) -> None:
        if self.power_samples:
            for s in record.samples:
                if s.t > self._last_sample_t:
                    self.writer.write("power", t=s.t, w=s.watts)
                    self._last_sample_t = s.t
        self.writer.write("period", **record.to_fields())
        self.writer.sync()

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        self.writer.write("event", kind=kind, message=message, **fields)

    def on_end(self, summary: Summary) -> None:
        self.writer.write("summary", **summary.to_dict())
        self.writer.close()
