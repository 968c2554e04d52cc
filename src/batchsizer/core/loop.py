"""The one control loop, for every device: run a batch, measure, decide each period, apply.

The loop is device-agnostic: a real GPU and the simulator differ only in the :class:`Device` they
hand it (and the clock that device runs on), never in this code. Each job of the loop is a part of
its own, tested alone: :class:`~batchsizer.core.batch_runner.BatchRunner` (running a batch:
out-of-memory halving, a refused clock), :class:`~batchsizer.core.period_timer.PeriodTimer` (when a
period ends: window, early stop, cap change), :class:`~batchsizer.core.period_measure.PeriodMeasure`
(the observation, by the cap rule), :class:`~batchsizer.core.guard.TelemetryGuard` (filtered readings
and a safe fallback around the controller). What a device attaches to a job (the simulator's own
accounting) is an observer like any other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from batchsizer.core.batch_runner import BatchRunner
from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.cap_rule import PEAK, CapRule
from batchsizer.core.cap_rule import over as over_cap
from batchsizer.core.cap_watch import CapWatch, often_over_note
from batchsizer.core.caps import CapSchedule, CapSource, ConstantCap
from batchsizer.core.controller import Controller
from batchsizer.core.device import Device
from batchsizer.core.guard import TelemetryGuard
from batchsizer.core.observer import LoopObserver, PeriodRecord
from batchsizer.core.period_measure import PeriodMeasure
from batchsizer.core.period_timer import PeriodTimer, SensorTiming, Window
from batchsizer.core.summary import PowerAccounting, Summary
from batchsizer.core.types import Decision, Setting

__all__ = ["ControlLoop", "LoopObserver", "PeriodRecord", "Window"]


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
        #: checks readings before the controller sees them (see batchsizer.core.guard)
        self.guard = guard or TelemetryGuard.for_device(device)
        #: stop the job (summary.stop_reason "cap-not-met") when even the lowest setting is over the cap
        self.strict = strict
        self.cap_watch = CapWatch()
        #: what "under the cap" means: every reading (peak) or a rolling mean (avg:S)
        self.cap_rule = cap_rule
        #: runs the batches and applies settings (out-of-memory halving, a refused clock)
        self.runner = BatchRunner(device, controller, self._event)
        #: this run's observers: the device's, then the job's
        self._listeners: list[LoopObserver] = list(self.observers)

    @property
    def setting(self) -> Setting | None:
        """The setting applied now (as run)."""
        return self.runner.setting

    @property
    def size_limit(self) -> int | None:
        """The largest batch known to fit in the device's memory, once one did not (None: no limit seen)."""
        return self.runner.size_limit

    @property
    def clocks_refused(self) -> str | None:
        """Why the device refused to set a clock, once it did (the controller then runs without clocks)."""
        return self.runner.clocks_refused

    def _emit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for obs in self._listeners:
            getattr(obs, hook)(*args, **kwargs)

    def _event(self, kind: str, message: str, **fields: Any) -> None:
        self._emit("on_event", kind, message, **fields)

    def run(self, stream: DynamicBatchStream[Any]) -> Summary:
        """Run every batch of ``stream``, closing and deciding each period, and return the job's summary.

        Stops early when ``stop_event`` is set, or with ``strict`` once the cap is confirmed unreachable.
        """
        device, clock, runner = self.device, self.device.clock, self.runner
        self._listeners = [*device.loop_observers(self.cap_rule), *self.observers]
        summary = Summary()
        power = PowerAccounting(self.cap_rule)
        # read at the start: a real meter measures its sensor's update period when it opens
        timing = SensorTiming.of(device.meter)
        measure = PeriodMeasure(self.cap_rule, timing)
        runner.apply(self.guard.start(self.controller), stream)
        job_start = clock.now()
        cap = self.caps.cap_at(0.0)
        self._emit("on_start", self._start_info(job_start))
        period = PeriodTimer(
            self.window,
            job_start,
            timing=timing,
            cap_rule=self.cap_rule,
            max_plausible_w=self.guard.max_plausible_w,
            react_to_cap_change=self.react_to_cap_change,
        )

        def close(now: float, cap: float, new_cap: float, decide: bool = True) -> None:
            self._close_period(period, measure, now, cap, new_cap, summary, power, stream, job_start, decide)

        try:
            for batch, outcome in runner.outcomes(stream):
                summary.items += len(batch)
                summary.batches += 1
                period.count(len(batch))
                assert runner.setting is not None
                self._emit("on_batch", summary.batches - 1, batch, outcome, runner.setting)
                now = outcome.end
                new_cap = self.caps.cap_at(now - job_start)
                cap_changed = new_cap != cap
                if cap_changed:
                    self._event("cap", f"cap changed from {cap:g} W to {new_cap:g} W", old=cap, new=new_cap)
                period.watch_for_violation(device.meter, now, cap)
                if period.ends(now, cap_changed):
                    close(now, cap, new_cap)
                cap = new_cap
                if self._should_stop(summary):
                    break
        finally:
            stream.close() if hasattr(stream, "close") else None
        end = clock.now()
        if end > period.start and period.batches:  # the last, partial period: accounted for, not decided on
            close(end, cap, cap, decide=False)
        summary.duration_s = end - job_start
        power.fill(summary)
        self._fill_faults(summary)
        self._emit("on_end", summary)
        return summary

    def _start_info(self, job_start: float) -> dict[str, Any]:
        return {
            "device": self.device.describe(),
            "controller": self.controller.describe(),
            "cap": repr(self.caps),
            "cap_rule": str(self.cap_rule),
            "window": {"batches": self.window.batches, "seconds": self.window.seconds},
            "start": job_start,
        }

    def _close_period(
        self,
        period: PeriodTimer,
        measure: PeriodMeasure,
        now: float,
        cap: float,
        new_cap: float,
        summary: Summary,
        power: PowerAccounting,
        stream: DynamicBatchStream[Any],
        job_start: float,
        decide: bool,
    ) -> None:
        """Measure the period just ended (against the cap in force during it), then let the controller
        decide under the cap in force now, and start the next period."""
        runner = self.runner
        setting = runner.setting
        assert setting is not None
        reading = self.guard.read(self.device.meter, period.start, now, setting)
        series = measure.judged(reading.samples, now)
        cap_at = self._cap_function(cap, job_start)
        power.add(reading.window, series, period.start, now, cap_at)
        obs = measure.observe(
            summary.periods,
            period,
            now,
            reading,
            series,
            setting,
            period_cap_w=cap,
            next_cap_w=new_cap,
            size_limit=runner.size_limit,
        )
        pw, samples = reading.window, reading.samples
        if decide:
            decision = self.guard.decide(self.controller, obs, reading, as_run=runner.as_run)
            for kind, message, fields in self.guard.pop_events():
                self._event(kind, message, **fields)
            cap_warning = self.cap_watch.observe(obs, decision)
            if cap_warning is not None:
                self._event("cap-not-met", cap_warning, **(self.cap_watch.result() or {}))
            self._emit("on_period", PeriodRecord(obs, pw, decision, samples, series, cap_at))
            runner.apply(decision.setting, stream)
            period.arm(decision, obs.valid and over_cap(obs.peak_w, cap))
            summary.periods += 1
        else:  # the job's tail: in the records and views too, with no decision (the setting stays)
            self._emit("on_period", PeriodRecord(obs, pw, Decision(setting, "end"), samples, cap_at=cap_at))
        period.restart(now)

    def _cap_function(self, cap: float, job_start: float) -> Callable[[float], float]:
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
        """What the telemetry guard, the batch runner and the cap watch saw, into the summary."""
        for key, n in self.guard.counts.items():
            summary.counts[key] = summary.counts.get(key, 0) + n
        summary.notes.extend(self.guard.note_lines())
        self.runner.fill(summary)
        summary.cap_not_met = self.cap_watch.result()
        cap_note = self.cap_watch.note()
        if cap_note is None and summary.power_measured:
            cap_note = often_over_note(summary.over_cap_fraction, summary.violations, self.controller.name,
                                       summary.periods)  # fmt: skip
        if cap_note is not None:
            summary.notes.append(cap_note)
