"""What the loop tells whatever watches a job: :class:`LoopObserver` hooks and the :class:`PeriodRecord`
of each control period. Records, views, outputs and the simulator's true-power accounting are observers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchsizer.core.telemetry import PowerSample, PowerWindow
from batchsizer.core.types import Decision, Observation, Setting

if TYPE_CHECKING:
    from batchsizer.core.batching import Batch
    from batchsizer.core.device import BatchOutcome
    from batchsizer.core.summary import Summary


@dataclass(frozen=True, slots=True)
class PeriodRecord:
    """One control period: what was measured and what was decided."""

    observation: Observation
    window: PowerWindow
    decision: Decision
    samples: Sequence[PowerSample]
    #: the series the cap rule constrains over the period (the readings, or their rolling mean)
    judged: Sequence[PowerSample] = ()
    #: the cap over the period as a function of device time (None: ``observation.period_cap_w`` throughout)
    cap_at: Callable[[float], float] | None = None

    def cap_function(self) -> Callable[[float], float]:
        """The cap over the period as a function of device time."""
        if self.cap_at is not None:
            return self.cap_at
        cap = self.observation.period_cap_w
        return lambda _t: cap

    def to_fields(self) -> dict[str, Any]:
        """The period as flat fields for a ``period`` record: what was measured, set, and decided next."""
        o, d = self.observation, self.decision
        return {
            "period": o.period,
            "start": o.start,
            "end": o.end,
            "cap_w": o.cap_w,
            "period_cap_w": o.period_cap_w,
            "peak_w": o.peak_w,
            "clean_peak_w": o.clean_peak_w,
            "mean_w": o.mean_w,
            "energy_j": self.window.energy_j,
            "samples": o.samples,
            "items": o.items,
            "batches": o.batches,
            "throughput": o.throughput,
            "batch_size": o.setting.batch_size,
            "clock_mhz": o.setting.clock_mhz,
            "next_batch_size": d.setting.batch_size,
            "next_clock_mhz": d.setting.clock_mhz,
            "reason": d.reason,
            "state": d.state,
            "stopped_on_violation": o.stopped_on_violation,
        }


class LoopObserver:
    """Hooks for whatever watches a job (records, the live view, tests). All optional."""

    def on_start(self, info: dict[str, Any]) -> None:
        """Called once before the first batch with the job's description (device, controller, cap...)."""

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        """Called after each batch with its index, the batch, its timing and the setting it ran at."""

    def on_period(self, record: PeriodRecord) -> None:
        """Called when a control period closes, with what was measured and decided."""

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        """Called for something worth telling (a cap change, a telemetry fault...); ``kind`` names it."""

    def on_end(self, summary: Summary) -> None:
        """Called once with the summary when the job ends, also when stopped early (not after an exception)."""
