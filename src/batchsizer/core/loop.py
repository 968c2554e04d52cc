"""The one control loop, for every device: run a batch, measure, decide each period, apply.

The loop is device-agnostic: a real GPU and the simulator differ only in the :class:`Device` they
hand it (and the clock that device runs on), never in this code.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from batchsizer.core.batching import Batch, DynamicBatchStream
from batchsizer.core.cap_rule import PEAK, CapRule, judged
from batchsizer.core.cap_rule import over as over_cap
from batchsizer.core.caps import CapSchedule, CapSource, ConstantCap
from batchsizer.core.controller import Controller
from batchsizer.core.device import BatchOutcome, Device
from batchsizer.core.guard import CapWatch, TelemetryGuard
from batchsizer.core.summary import PowerAccounting, Summary
from batchsizer.core.telemetry import PowerSample, PowerWindow
from batchsizer.core.types import Decision, Observation, Setting
from batchsizer.errors import (
    ConfigError,
    DeviceError,
    OutOfMemoryError,
    PermissionDeniedError,
    TelemetryError,
    UnsupportedError,
)


@dataclass(frozen=True)
class Window:
    """A control period: ends after ``batches`` batches or ``seconds`` seconds, whichever first."""

    batches: int | None = 10
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.batches is None and self.seconds is None:
            raise ConfigError("window", "needs a number of batches or of seconds (e.g. 10 batches)")
        if self.batches is not None and (isinstance(self.batches, bool) or self.batches < 1):
            raise ConfigError("window", f"batches must be at least 1, got {self.batches}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError("window", f"seconds must be a positive number, got {self.seconds}")

    def closes(self, batches: int, elapsed_s: float) -> bool:
        if self.batches is not None and batches >= self.batches:
            return True
        return self.seconds is not None and elapsed_s >= self.seconds


@dataclass(frozen=True, slots=True)
class PeriodRecord:
    """One control period: what was measured and what was decided."""

    observation: Observation
    window: PowerWindow
    decision: Decision
    samples: Sequence[PowerSample]
    #: the series the cap rule constrains over the period (the readings, or their rolling mean)
    judged: Sequence[PowerSample] = ()

    def to_fields(self) -> dict[str, Any]:
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


def _check_interval(update_period_s: float | None) -> float | None:
    """How often to look for a reading over the cap: once per sensor update (none for a meter without one)."""
    if update_period_s is None or not math.isfinite(update_period_s) or update_period_s < 0:
        return None
    return update_period_s


def _settled_peak(samples: Sequence[PowerSample], after: float, end: float) -> float:
    """The highest reading published in (after, end]; NaN when there is none."""
    return max((s.watts for s in samples if after < s.t <= end), default=math.nan)


def _sensor_window(meter: Any) -> float:
    """How far back a reading looks (averaging window plus delay, s), as the meter says; 0 if it does not."""
    value = getattr(meter, "window_s", None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0.0


@dataclass
class _Period:
    """The control period in progress, and what the last decision asked of it."""

    start: float
    checked_to: float
    items: int = 0
    batches: int = 0
    #: a shorter period the controller asked for (Decision.window_batches); None: the window
    asked_batches: int | None = None
    #: Decision.stop_on_violation: end the period at the first reading over the cap
    watch: bool = False
    #: Decision.min_period_s: the window does not end the period before this long
    min_s: float = 0.0
    #: the period before this one read over its cap (by the rule)
    after_over: bool = False
    #: a reading over the cap was seen while watching
    stopped: bool = False

    def restart(self, now: float) -> None:
        self.start = self.checked_to = now
        self.items = self.batches = 0
        self.stopped = False


class LoopObserver:
    """Hooks for whatever watches a job (records, the live view, tests). All optional."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None: ...

    def on_period(self, record: PeriodRecord) -> None: ...

    def on_event(self, kind: str, message: str, **fields: Any) -> None: ...

    def on_end(self, summary: Summary) -> None: ...


class ControlLoop:
    """Runs a batch stream on a device under a cap, with a controller deciding each period."""

    def __init__(
        self,
        device: Device,
        controller: Controller,
        caps: CapSource,
        window: Window | None = None,
        observers: Sequence[LoopObserver] = (),
        stop_event: threading.Event | None = None,
        react_to_cap_change: bool = True,
        guard: TelemetryGuard | None = None,
        strict: bool = False,
        cap_rule: CapRule = PEAK,
    ) -> None:
        self.device = device
        self.controller = controller
        self.caps = caps
        self.window = window or Window()
        self.observers = list(observers)
        self.stop_event = stop_event or threading.Event()
        self.react_to_cap_change = react_to_cap_change
        self.setting: Setting | None = None
        #: checks readings before the controller sees them (see batchsizer.core.guard)
        self.guard = guard or TelemetryGuard.for_device(device)
        #: stop the job (summary.stop_reason "cap-not-met") when even the lowest setting is over the cap
        self.strict = strict
        self.cap_watch = CapWatch()
        #: what "under the cap" means: every reading (peak) or a rolling mean (avg:S)
        self.cap_rule = cap_rule
        #: clean readings of the last ``cap_rule.window_s`` seconds before the period, for the rolling mean
        self._history: list[PowerSample] = []
        self._update_period_s: float | None = None
        self._check_every: float | None = None
        #: the largest batch known to fit in the device's memory, once one did not (None: no limit seen)
        self.size_limit: int | None = None
        #: why the device refused to set a clock, once it did (the controller then runs without clocks)
        self.clocks_refused: str | None = None
        self._out_of_memory = 0

    def _emit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for obs in self.observers:
            getattr(obs, hook)(*args, **kwargs)

    def _as_run(self, setting: Setting) -> Setting:
        """``setting`` as the loop runs it: no larger than the batch known to fit, without a refused clock
        (observed as what really ran)."""
        if self.size_limit is not None and setting.batch_size > self.size_limit:
            setting = replace(setting, batch_size=self.size_limit)
        if self.clocks_refused is not None and setting.clock_mhz is not None:
            setting = replace(setting, clock_mhz=None)
        return setting

    def _apply(self, setting: Setting, stream: DynamicBatchStream[Any]) -> None:
        setting = self._as_run(setting)
        if setting != self.setting:
            try:
                self.device.apply(setting)
            except (PermissionDeniedError, UnsupportedError) as exc:
                if setting.clock_mhz is None or not self.controller.can_drop_clocks:
                    raise
                # the card will not take a clock (no permission, or no clock control on it):
                # the controller goes on with the batch size alone
                self.clocks_refused = str(exc)
                self.controller.drop_clocks()
                self._emit(
                    "on_event",
                    "clocks-refused",
                    f"{exc}; {self.controller.name} goes on with the batch size alone",
                )
                setting = replace(setting, clock_mhz=None)
                self.device.apply(setting)
            stream.batch_size = setting.batch_size
            self.setting = setting

    def _reading_over(self, meter: Any, since: float, now: float, cap_w: float) -> bool:
        """Whether a plausible reading published in (since, now], judged by the cap rule, is over ``cap_w``
        (the guard drops implausible ones)."""
        if since >= now:
            return False
        try:
            readings = meter.samples(since - self.cap_rule.window_s, now)
        except TelemetryError:
            return False  # the period's own read reports it
        limit = self.guard.max_plausible_w
        plausible = [s for s in readings if 0 < s.watts <= limit and math.isfinite(s.watts)]
        return any(s.t > since and over_cap(s.watts, cap_w) for s in judged(plausible, now, self.cap_rule))

    def run(self, stream: DynamicBatchStream[Any]) -> Summary:
        device, clock = self.device, self.device.clock
        summary = Summary()
        power = PowerAccounting(device.reference_meter, self.cap_rule)
        # read at the start: a real meter measures its sensor's update period when it opens
        self._update_period_s = getattr(device.meter, "update_period_s", None)
        self._check_every = _check_interval(self._update_period_s)
        self._sensor_window_s = _sensor_window(device.meter)
        self._apply(self.guard.start(self.controller), stream)
        job_start = clock.now()
        cap = self.caps.cap_at(0.0)
        self._emit("on_start", self._start_info(job_start))
        period = _Period(start=job_start, checked_to=job_start)
        try:
            for batch, outcome in self._outcomes(stream):
                summary.items += len(batch)
                summary.batches += 1
                period.items += len(batch)
                period.batches += 1
                assert self.setting is not None
                self._emit("on_batch", summary.batches - 1, batch, outcome, self.setting)
                now = outcome.end
                new_cap = self.caps.cap_at(now - job_start)
                cap_changed = new_cap != cap
                if cap_changed:
                    self._emit("on_event", "cap", f"cap changed from {cap:g} W to {new_cap:g} W", old=cap, new=new_cap)
                self._watch_for_violation(period, now, cap)
                if self._period_ends(period, now, cap_changed):
                    self._close_period(period, now, cap, new_cap, summary, power, stream, job_start=job_start)
                cap = new_cap
                if self._should_stop(summary):
                    break
        finally:
            stream.close() if hasattr(stream, "close") else None
        end = clock.now()
        if end > period.start:  # the last, partial period: accounted for, not decided on
            self._close_period(period, end, cap, cap, summary, power, stream, decide=False, job_start=job_start)
        summary.duration_s = end - job_start
        power.fill(summary)
        self._fill_faults(summary)
        self._emit("on_end", summary)
        return summary

    def _outcomes(self, stream: DynamicBatchStream[Any]) -> Iterator[tuple[Batch[Any], BatchOutcome]]:
        """Each batch of the stream run on the device, in order.

        A batch that does not fit in the device's memory is run again in halves (and those in
        halves, down to one item), so no item is lost or repeated; from then on no batch is larger
        than the largest that fitted: the controller's requests are capped there, and batches the
        stream formed ahead at the old size are split before they run."""
        for batch in stream:
            pending = [batch]
            while pending:
                piece = pending.pop(0)
                if self.size_limit is not None and len(piece) > self.size_limit:
                    pending[:0] = _split(piece, self.size_limit, stream.prepare)
                    continue
                try:
                    outcome = self.device.run_batch(piece)
                except OutOfMemoryError as exc:
                    if len(piece) == 1:
                        raise DeviceError(f"{exc}: not even one item fits; the model is too large for it") from None
                    message = str(exc)
                else:
                    yield piece, outcome
                    continue
                self.size_limit = len(piece) // 2
                self._out_of_memory += 1
                self._emit(
                    "on_event",
                    "out-of-memory",
                    f"{message}; running it in halves, and batches of at most {self.size_limit} from now on",
                    batch_size=len(piece),
                    limit=self.size_limit,
                )
                if self.setting is not None:
                    self._apply(self.setting, stream)
                pending.insert(0, piece)

    def _start_info(self, job_start: float) -> dict[str, Any]:
        return {
            "device": self.device.describe(),
            "controller": self.controller.describe(),
            "cap": repr(self.caps),
            "cap_rule": str(self.cap_rule),
            "window": {"batches": self.window.batches, "seconds": self.window.seconds},
            "start": job_start,
        }

    def _watch_for_violation(self, period: _Period, now: float, cap: float) -> None:
        """Decision.stop_on_violation: look at new readings at most once per sensor update."""
        every = self._check_every
        if not period.watch or every is None or now - period.checked_to < every:
            return
        # not the readings of the period's first sensor update: their window may still cover the
        # previous setting (the sensor's averaging window and delay). After a period over the cap, not
        # any reading that still averages it (a 1 s sensor, a rolling-mean rule): those show the setting
        # backed off from, not this one. After one under it, a mixed reading over the cap is this one's.
        settle = every + (self._sensor_window_s + self.cap_rule.window_s if period.after_over else 0.0)
        period.stopped = self._reading_over(self.device.meter, max(period.checked_to, period.start + settle), now, cap)
        period.checked_to = now

    def _period_ends(self, period: _Period, now: float, cap_changed: bool) -> bool:
        asked = period.asked_batches is not None and period.batches >= period.asked_batches
        long_enough = now - period.start >= period.min_s
        return (
            (long_enough and (self.window.closes(period.batches, now - period.start) or asked))
            or period.stopped
            or (cap_changed and self.react_to_cap_change)
        )

    def _close_period(
        self,
        period: _Period,
        now: float,
        cap: float,
        new_cap: float,
        summary: Summary,
        power: PowerAccounting,
        stream: DynamicBatchStream[Any],
        decide: bool = True,
        job_start: float = 0.0,
    ) -> None:
        """Measure the period just ended (against the cap in force during it), then let the controller
        decide under the cap in force now, and start the next period."""
        reading = self.guard.read(self.device.meter, period.start, now, self.setting)
        pw, samples = reading.window, reading.samples
        rule = self.cap_rule
        series = judged([*self._history, *samples], now, rule) if not rule.is_peak else list(samples)
        if not rule.is_peak:
            keep_from = now - rule.window_s
            joined = [*self._history, *(s for s in samples if not self._history or s.t > self._history[-1].t)]
            first = max((i for i, s in enumerate(joined) if s.t <= keep_from), default=0)
            self._history = joined[first:]
        power.add(pw, series, period.start, now, self._cap_function(cap, job_start))
        assert self.setting is not None
        every = self._check_every
        in_period = [s.watts for s in series if s.t > period.start]
        peak = pw.peak_w if rule.is_peak or not in_period else max(in_period)
        # a reading counts for this period's setting only once all it averages (the sensor's window
        # and delay, one update of phase, the rule's window) lies inside the period
        clean_after = period.start + (every or 0.0) + self._sensor_window_s + rule.window_s
        obs = Observation(
            period=summary.periods,
            start=period.start,
            end=now,
            cap_w=new_cap,
            peak_w=peak,
            mean_w=pw.mean_w,
            items=period.items,
            batches=period.batches,
            setting=self.setting,
            samples=pw.samples,
            update_period_s=self._update_period_s,
            stopped_on_violation=period.stopped,
            period_cap_w=cap,
            clean_peak_w=_settled_peak(series, clean_after, now) if pw.valid else math.nan,
            sensor_window_s=self._sensor_window_s,
            cap_rule_window_s=rule.window_s,
            size_limit=self.size_limit,
        )
        if decide:
            decision = self.guard.decide(self.controller, obs, reading, as_run=self._as_run)
            for kind, message, fields in self.guard.pop_events():
                self._emit("on_event", kind, message, **fields)
            cap_warning = self.cap_watch.observe(obs, decision)
            if cap_warning is not None:
                self._emit("on_event", "cap-not-met", cap_warning, **(self.cap_watch.result() or {}))
            self._emit("on_period", PeriodRecord(obs, pw, decision, samples, series))
            self._apply(decision.setting, stream)
            period.asked_batches = decision.window_batches
            period.watch = decision.stop_on_violation and every is not None
            period.min_s = decision.min_period_s or 0.0
            period.after_over = obs.valid and over_cap(obs.peak_w, cap)
            summary.periods += 1
        else:  # the job's tail: in the records and views too, with no decision (the setting stays)
            self._emit("on_period", PeriodRecord(obs, pw, Decision(self.setting, "end"), samples))
        period.restart(now)

    def _cap_function(self, cap: float, job_start: float) -> Any:
        """The cap as a function of device time over the period: exact for a constant or a schedule
        (a drop inside the last batch counts from when it happened), else the cap in force during it."""
        caps = self.caps
        if isinstance(caps, (ConstantCap, CapSchedule)):
            return lambda t: caps.cap_at(t - job_start)
        return lambda _t: cap

    def _should_stop(self, summary: Summary) -> bool:
        if self.stop_event.is_set():
            summary.interrupted = True
            summary.stop_reason = getattr(self.stop_event, "reason", None) or "interrupted"
            return True
        if self.strict and self.cap_watch.confirmed:
            summary.stop_reason = "cap-not-met"
            return True
        return False

    def _fill_faults(self, summary: Summary) -> None:
        """What the telemetry guard and the cap watch saw, into the summary."""
        for key, n in self.guard.counts.items():
            summary.counts[key] = summary.counts.get(key, 0) + n
        summary.notes.extend(self.guard.note_lines())
        if self.clocks_refused is not None:
            summary.notes.append(f"the clock could not be set ({self.clocks_refused}): only the batch size moved")
        if self.size_limit is not None:
            summary.counts["out_of_memory"] = self._out_of_memory
            summary.notes.append(
                f"batches of more than {self.size_limit} items did not fit in the device's memory: after the first "
                f"that failed, each ran in halves and no batch was larger (--sizes up to {self.size_limit} skips the tries)"
            )
        summary.cap_not_met = self.cap_watch.result()
        cap_note = self.cap_watch.note()
        if cap_note is not None:
            summary.notes.append(cap_note)


def _split(batch: Batch[Any], size: int, prepare: Any) -> list[Batch[Any]]:
    """``batch`` as consecutive batches of at most ``size`` items, each prepared anew."""
    pieces = []
    for k in range(0, len(batch), size):
        items = batch.items[k : k + size]
        pieces.append(Batch(batch.first_index + k, items, prepare(items) if prepare is not None else None))
    return pieces
