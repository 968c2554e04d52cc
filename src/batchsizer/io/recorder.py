"""Writes a job's records as it runs (see :mod:`batchsizer.io.records` for the format)."""

from __future__ import annotations

import math
from typing import Any

from batchsizer.core.batching import Batch
from batchsizer.core.caps import CapFile, CapSchedule, CapSource, ConstantCap
from batchsizer.core.device import BatchOutcome
from batchsizer.core.loop import LoopObserver, PeriodRecord
from batchsizer.core.summary import Summary
from batchsizer.core.types import Setting
from batchsizer.io.records import RecordWriter


def describe_cap(caps: CapSource) -> dict[str, Any]:
    """The cap of a job for its records and ``--json``, numbers as numbers: ``cap_w`` (the cap at the
    start; null when uncapped), ``cap_source`` and, for a schedule or a file, its steps or path."""
    try:
        first: float | None = caps.cap_at(0.0)
    except Exception:  # a source that cannot tell before the job runs
        first = None
    if first is not None and not math.isfinite(first):
        first = None
    out: dict[str, Any] = {"cap_w": first}
    if isinstance(caps, ConstantCap):
        out["cap_source"] = "constant"
    elif isinstance(caps, CapSchedule):
        out["cap_source"] = "schedule"
        out["cap_schedule"] = [{"t_s": t, "cap_w": w} for t, w in caps.steps]
    elif isinstance(caps, CapFile):
        out["cap_source"] = "file"
        out["cap_file"] = str(caps.path)
    elif type(caps).__name__ == "GpuLimitCap":
        out["cap_source"] = "gpu-limit"
    elif first is None:
        out["cap_source"] = "none"
    else:
        out["cap_source"] = type(caps).__name__
    return out


class JobRecorder(LoopObserver):
    """Batch, period, power-sample and event lines, flushed as they happen; the summary last.

    ``caps`` puts the cap into the job line as numbers (:func:`describe_cap`) instead of the loop's
    text; ``clock`` (the device's) stamps event lines with their time ``t``, else the end of the
    last batch is used."""

    def __init__(
        self,
        writer: RecordWriter,
        *,
        power_samples: bool = True,
        extra: dict[str, Any] | None = None,
        caps: CapSource | None = None,
        clock: Any = None,
    ) -> None:
        self.writer = writer
        self.power_samples = power_samples
        self.extra = extra or {}
        self.caps = caps
        self.clock = clock
        self._last_sample_t = float("-inf")
        self._t: float | None = None

    def on_start(self, info: dict[str, Any]) -> None:
        """Write the ``job`` line: the loop's description, the cap as numbers if ``caps``, and ``extra``."""
        self._t = info.get("start")
        fields = dict(info)
        if self.caps is not None:
            fields.pop("cap", None)
            fields.update(describe_cap(self.caps))
        self.writer.write("job", **{**fields, **self.extra})

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        """Write a ``batch`` line: index, first item, size, times, latency and clock."""
        self._t = outcome.end
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
        """Write the period's new ``power`` samples (if kept) and its ``period`` line, then sync to disk."""
        if self.power_samples:
            for s in record.samples:
                if s.t > self._last_sample_t:
                    self.writer.write("power", t=s.t, w=s.watts)
                    self._last_sample_t = s.t
        self.writer.write("period", **record.to_fields())
        self.writer.sync()

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        """Write an ``event`` line stamped with the device clock's time (or the last batch's end)."""
        t = self.clock.now() if self.clock is not None else self._t
        self.writer.write("event", **{"t": t, "kind": kind, "message": message, **fields})

    def on_end(self, summary: Summary) -> None:
        """Write the ``summary`` line and close the file."""
        self.writer.write("summary", **summary.to_dict())
        self.writer.close()
