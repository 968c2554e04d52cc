"""One run: a job under its cap, driven by one method's controller through the real control loop.

Every method, the sweeps behind the oracle included, goes through :class:`~batchsizer.core.loop.ControlLoop`
on a fresh device, with the same sensor and the same cap, and is scored from what the loop saw.

Metrics (all on the device's virtual clock):

* ``throughput``: images / job duration.
* ``avg_batch_size``: images / batches.
* ``energy_per_image_j``: the sensor's energy (held readings integrated over time) / images;
  ``true_energy_per_image_j`` from the simulator's true power.
* ``over_cap_fraction``: share of the job's time the held sensor reading was above the cap;
  ``worst_overshoot_w``: the highest reading minus the cap; ``longest_violation_s``; the same from
  the true power under ``true_*``.
* ``longest_episode_s``: the longest run of consecutive control periods whose highest sensor
  reading is above the cap (a controller can only react once per period, so this is how long a
  violation lasts in the paper's sense, where ``longest_violation_s`` is one contiguous spike).
* ``settle_s``: see :func:`settle_time`.
* ``oracle_fraction``: throughput / the oracle's throughput in the same job and seed (set by the
  experiment).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from batchsizer.core.batching import Batch, DynamicBatchStream
from batchsizer.core.cap_rule import PEAK, CapRule
from batchsizer.core.cap_rule import over as over_cap
from batchsizer.core.caps import ConstantCap
from batchsizer.core.controller import Controller
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.summary import Summary
from batchsizer.core.types import Setting
from batchsizer.repro.jobs import Job

#: a period is "in band" when its throughput is within this fraction of the steady throughput
SETTLE_TOLERANCE = 0.10
#: the steady throughput is measured over this last share of the job
STEADY_SHARE = 0.25
#: the paper decides every 10 batches
PAPER_WINDOW = Window(batches=10)


@dataclass(frozen=True)
class Plan:
    """What a method sets up for a run: a controller, and the card's power limit if it uses one."""

    controller: Controller
    power_limit_w: float | None = None
    note: str = ""
    #: the control period this method decides on (None: the paper's 10 batches)
    window: Window | None = None


@dataclass(frozen=True, slots=True)
class PeriodTrace:
    """One control period, as kept for settle time and the figures."""

    start: float
    end: float
    items: int
    batches: int
    batch_size: int
    clock_mhz: int | None
    peak_w: float
    mean_w: float

    @property
    def throughput(self) -> float:
        """Items per second over the period (0 for an empty one)."""
        d = self.end - self.start
        return self.items / d if d > 0 else 0.0


class TraceObserver(LoopObserver):
    """Keeps each period and, when asked, every sensor sample, relative to the job's start."""

    def __init__(self, keep_samples: bool = False) -> None:
        self.keep_samples = keep_samples
        self.start = 0.0
        self.periods: list[PeriodTrace] = []
        self.samples: list[tuple[float, float]] = []
        self.settings: set[Setting] = set()
        #: the longest contiguous sensor span over the cap divided by the length of the control
        #: period in force when it began (over 1: a violation outlasted one control period)
        self.worst_span_ratio = 0.0
        #: the most control periods in a row whose highest reading was over the cap
        self.most_periods_over = 0
        self._span: tuple[float, float] | None = None  # (start of the open span, its period's length)
        self._over_run = 0

    def on_start(self, info: dict[str, Any]) -> None:
        """Note the job's start, to keep times relative to it."""
        self.start = float(info["start"])

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        """Remember the setting the batch ran at (the run's settings used)."""
        self.settings.add(setting)

    def on_period(self, record: PeriodRecord) -> None:
        """Keep the period, track spans over the cap, and keep new sensor samples when asked."""
        o = record.observation
        self.periods.append(
            PeriodTrace(
                o.start - self.start,
                o.end - self.start,
                o.items,
                o.batches,
                o.setting.batch_size,
                o.setting.clock_mhz,
                o.peak_w,
                o.mean_w,
            )
        )
        self._track_spans(record)
        if self.keep_samples:
            last = self.samples[-1][0] if self.samples else -math.inf
            for s in record.samples:
                t = s.t - self.start
                if t > last:
                    self.samples.append((t, s.watts))
                    last = t

    def _track_spans(self, record: PeriodRecord) -> None:
        o = record.observation
        length = o.end - o.start
        # judged against the cap in force during the period (the cap_w it carries is the next one's)
        cap = o.period_cap_w if math.isfinite(o.period_cap_w) else o.cap_w
        over = math.isfinite(o.peak_w) and over_cap(o.peak_w, cap)
        self._over_run = self._over_run + 1 if over else 0
        self.most_periods_over = max(self.most_periods_over, self._over_run)
        samples = list(record.judged or record.samples)
        for i, smp in enumerate(samples):
            a = max(smp.t, o.start)
            b = min(samples[i + 1].t if i + 1 < len(samples) else o.end, o.end)
            if b <= a:
                continue
            if over_cap(smp.watts, cap):
                if self._span is None:
                    self._span = (a, length)
                start, in_force = self._span
                if in_force > 0:
                    self.worst_span_ratio = max(self.worst_span_ratio, (b - start) / in_force)
            else:
                self._span = None


class StopAfter(LoopObserver):
    """Stops a sweep run once it has seen ``batches`` batches and ``seconds`` of device time."""

    def __init__(self, device: Device, event: threading.Event, batches: int, seconds: float) -> None:
        self.device, self.event, self.batches, self.seconds = device, event, batches, seconds
        self.t0 = 0.0

    def on_start(self, info: dict[str, Any]) -> None:
        """Note the job's start on the device clock."""
        self.t0 = float(info["start"])

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        """Set the stop event once both ``batches`` batches and ``seconds`` seconds have run."""
        if index + 1 >= self.batches and outcome.end - self.t0 >= self.seconds:
            self.event.set()


@dataclass
class Execution:
    """The loop's summary and trace of one run."""

    summary: Summary
    trace: TraceObserver


def execute(
    device: Device,
    plan: Plan,
    cap_w: float,
    items: int,
    *,
    keep_samples: bool = False,
    stop_after: tuple[int, float] | None = None,
    cap_rule: CapRule = PEAK,
) -> Execution:
    """Run ``items`` images on ``device`` under ``cap_w`` with ``plan``; closes the device."""
    trace = TraceObserver(keep_samples)
    observers: list[LoopObserver] = [trace]
    stop = threading.Event()
    if stop_after is not None:
        observers.append(StopAfter(device, stop, *stop_after))
    try:
        if plan.power_limit_w is not None:
            device.set_power_limit(plan.power_limit_w)
        window = plan.window or PAPER_WINDOW
        loop = ControlLoop(device, plan.controller, ConstantCap(cap_w), window, observers, stop, cap_rule=cap_rule)
        summary = loop.run(DynamicBatchStream(range(items)))
    finally:
        device.close()
    return Execution(summary, trace)


def settle_time(periods: Sequence[PeriodTrace], cap_w: float, duration_s: float) -> tuple[float, bool]:
    """When the job reached its steady state, and whether it did before its last period.

    The steady throughput is the throughput over the periods that start in the last quarter of
    the job. A period is out of band when its throughput differs from it by more than 10% or its
    highest sensor reading is above the cap. The settle time is the end of the last out-of-band
    period (0 when none is); the job settled when that period is not its last one.
    """
    if not periods:
        return math.nan, False
    tail = [p for p in periods if p.start >= (1 - STEADY_SHARE) * duration_s] or [periods[-1]]
    steady = sum(p.items for p in tail) / max(sum(p.end - p.start for p in tail), 1e-12)
    last_out: int | None = None
    for i, p in enumerate(periods):
        off = steady > 0 and abs(p.throughput / steady - 1) > SETTLE_TOLERANCE
        if off or (math.isfinite(p.peak_w) and p.peak_w > cap_w):
            last_out = i
    if last_out is None:
        return 0.0, True
    return periods[last_out].end, last_out < len(periods) - 1


def longest_episode(periods: Sequence[PeriodTrace], cap_w: float) -> float:
    """The longest span of consecutive periods with a sensor reading above the cap (s)."""
    best = run = 0.0
    for p in periods:
        if math.isfinite(p.peak_w) and p.peak_w > cap_w:
            run += p.end - p.start
            best = max(best, run)
        else:
            run = 0.0
    return best


@dataclass
class RunResult:
    """The metrics of one (job, method, seed), and what the figures need of its trace."""

    job_id: int
    method: str
    seed: int
    gpu: str
    items: int
    duration_s: float
    throughput: float
    avg_batch_size: float
    energy_per_image_j: float
    over_cap_fraction: float
    over_cap_s: float
    violations: int
    longest_violation_s: float
    worst_overshoot_w: float
    longest_episode_s: float
    settle_s: float
    settled: bool
    setting_changes: int
    periods: int
    #: longest contiguous sensor span over the cap / length of the control period in force when it began
    span_period_ratio: float = 0.0
    #: most consecutive control periods with a sensor reading over the cap
    periods_over_in_row: int = 0
    true_energy_per_image_j: float = math.nan
    true_over_cap_fraction: float = math.nan
    true_worst_overshoot_w: float = math.nan
    true_longest_violation_s: float = math.nan
    oracle_fraction: float = math.nan
    batch_sizes_used: list[int] = field(default_factory=list)
    clocks_used: list[int | None] = field(default_factory=list)
    power_limit_w: float | None = None
    note: str = ""
    #: (t, batch size, clock) per period and (t, W) sensor samples, kept only for figure jobs
    period_series: list[tuple[float, int, int | None, float]] | None = None
    power_series: list[tuple[float, float]] | None = None

    def metrics(self) -> dict[str, Any]:
        """The scalar metrics, without the series."""
        d = asdict(self)
        d.pop("period_series")
        d.pop("power_series")
        return d


def score(job: Job, method: str, seed: int, plan: Plan, run: Execution, keep_series: bool) -> RunResult:
    """The run's :class:`RunResult` from its summary and trace; the series for figures only if ``keep_series``."""
    s, trace = run.summary, run.trace
    settle, settled = settle_time(trace.periods, job.cap_w, s.duration_s)
    changes = sum(
        1
        for a, b in zip(trace.periods, trace.periods[1:])
        if (a.batch_size, a.clock_mhz) != (b.batch_size, b.clock_mhz)
    )
    true = s.true_power or {}
    result = RunResult(
        job_id=job.id,
        method=method,
        seed=seed,
        gpu=job.gpu,
        items=s.items,
        duration_s=s.duration_s,
        throughput=s.throughput,
        avg_batch_size=s.avg_batch_size,
        energy_per_image_j=s.energy_per_item_j,
        over_cap_fraction=s.over_cap_fraction,
        over_cap_s=s.over_cap_s,
        violations=s.violations,
        longest_violation_s=s.longest_violation_s,
        worst_overshoot_w=s.worst_overshoot_w,
        longest_episode_s=longest_episode(trace.periods, job.cap_w),
        settle_s=settle,
        settled=settled,
        setting_changes=changes,
        periods=s.periods,
        span_period_ratio=trace.worst_span_ratio,
        periods_over_in_row=trace.most_periods_over,
        true_energy_per_image_j=true.get("energy_j", math.nan) / s.items if s.items else math.nan,
        true_over_cap_fraction=true.get("over_cap_s", math.nan) / s.duration_s if s.duration_s > 0 else math.nan,
        true_worst_overshoot_w=true.get("worst_overshoot_w", math.nan),
        true_longest_violation_s=true.get("longest_violation_s", math.nan),
        batch_sizes_used=sorted({st.batch_size for st in trace.settings}),
        clocks_used=sorted({st.clock_mhz for st in trace.settings}, key=lambda c: -1 if c is None else c),
        power_limit_w=plan.power_limit_w,
        note=plan.note,
    )
    if keep_series:
        result.period_series = [(p.start, p.batch_size, p.clock_mhz, p.peak_w) for p in trace.periods]
        result.power_series = list(trace.samples)
    return result
