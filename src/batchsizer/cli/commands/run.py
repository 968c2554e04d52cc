"""``batchsizer run``: one inference job under a power cap."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import click

from batchsizer.cli.interrupt import StopOnSignal
from batchsizer.cli.option_check import check_options_used, option_flags
from batchsizer.cli.options import (
    REAL_KINDS,
    cap_options,
    check_workload,
    controller_options,
    given_options,
    make_cap_source,
    path_option,
    warn,
    workload_options,
)
from batchsizer.cli.run_options import RunOptions
from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.cap_rule import CapRule
from batchsizer.core.caps import CapFile, CapSource, check_cap
from batchsizer.core.controller import Controller
from batchsizer.core.guard import board_limit_w
from batchsizer.core.loop import ControlLoop, LoopObserver, Window
from batchsizer.core.summary import Summary
from batchsizer.core.types import DeviceKnobs, Setting
from batchsizer.core.workloads import Workload, device_kind, open_workload
from batchsizer.errors import BatchSizerError, ConfigError
from batchsizer.io.config import config_option
from batchsizer.io.outputs import PLACEHOLDER_KINDS, OutputWriter, cut_partial_line, job_identity, prepare_outputs
from batchsizer.io.paths import is_stdout
from batchsizer.io.recorder import JobRecorder, describe_cap
from batchsizer.io.records import RecordWriter, write_json_atomic
from batchsizer.policies import make_controller
from batchsizer.policies.base import check_alpha
from batchsizer.sim.realtime import RealtimeSimDevice, check_time_scale
from batchsizer.ui.live import close_view, make_view, print_summary

#: exit code when --strict stops a job whose cap cannot be met (130/143: stopped by SIGINT/SIGTERM)
EXIT_CAP_NOT_MET = 3

DEFAULT_CAP_W = 200.0


@click.command()
@config_option("cap = 150")
@workload_options
@cap_options
@controller_options
@click.option("--window", "window_batches", type=int, default=10, help="Decide after this many batches.")
@click.option(
    "--window-seconds",
    type=float,
    default=None,
    help="Decide after this many seconds, whichever comes first [default: none, batches only].",
)
@path_option(
    "--records",
    "records",
    "Write JSON Lines records here (see batchsizer plot); an existing file is replaced, or appended to with --resume",
    stdout_ok=True,
)
@path_option("--json", "json_path", "Write the summary as JSON.", stdout_ok=True)
@click.option(
    "--quiet", "-q", is_flag=True, help="Print only the summary [default: off, a live view or a line per period]."
)
@path_option(
    "--save-outputs",
    "save_outputs",
    "Write each item's prediction with its id here (JSON Lines) as the job runs; --resume continues from it.",
)
@click.option(
    "--resume", is_flag=True, help="Continue the stopped job whose --save-outputs file is given [default: off]."
)
@click.option(
    "--time-scale",
    type=float,
    default=None,
    help="Simulated and table devices: run in real time, this many real seconds (1 or more) per simulated second "
    "(1: as long as on the card, so a --cap-file can be edited while it runs) [default: none, as fast as the CPU runs].",
)
@click.option(
    "--power-limit",
    type=float,
    default=None,
    help="Set the GPU's own board power limit for the job, put back at the end: the hardware-limit "
    "baseline (e.g. --controller static --batch-size 64 --power-limit 200 --cap 200); needs "
    "CAP_SYS_ADMIN on a real GPU [default: leave it].",
)
@click.option(
    "--cap-rule",
    "cap_rule",
    default="peak",
    show_default=True,
    help="What under the cap means: peak (every sensor reading at or under it, the paper's) or "
    "avg:SECONDS (the rolling mean over that window, e.g. avg:1, what GPU and RAPL limiters enforce).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Stop with exit code 3 when even the lowest setting draws more than the cap [default: off, run on].",
)
def command(**kw: Any) -> None:
    """Run a job under a power cap, moving the batch size to stay fast and under the cap.

    With no options: 10,000 Caltech-256 images through ResNet-101 on a simulated Tesla P40 under a
    200 W cap, with the default controller (adaptive; --controller batchsizer is the paper's).

    With --records - or --json -, that goes to standard output and the live view and summary to
    standard error. Exit codes: 0 done, 2 bad input, 3 cap not met with --strict, 130/143 stopped
    by Ctrl-C/SIGTERM (records and outputs flushed).
    """
    ctx = click.get_current_context()
    run_job(RunOptions.from_params(kw, frozenset(given_options(ctx))))


def run_job(o: RunOptions) -> None:
    """The job ``o`` asks for: every option checked before a device is opened, then run to the end."""
    # an option given that neither the device nor the controller reads: an error for device options
    # (--power-limit and --cap-from-gpu among them), a warning (shown once every value is checked) for
    # controller options
    unused = check_options_used(o.given, o.workload.device, o.controller, option_flags(command))
    opts = check_workload(o.workload, o.given)
    caps = make_cap_source(o.cap, o.cap_schedule, o.cap_file, DEFAULT_CAP_W, from_gpu=o.cap_from_gpu)
    window = Window(batches=o.window_batches, seconds=o.window_seconds)
    cap_rule = CapRule.parse(o.cap_rule)
    choices = o.controller_choices()  # checked before a device is opened
    check_alpha(choices["alpha"])
    identity = job_identity(**vars(opts))
    start = 0  # items already in the outputs file of a stopped run (--resume)
    if o.save_outputs is not None:
        start = prepare_outputs(o.save_outputs, identity, o.resume)
    elif o.resume:
        raise ConfigError("resume", "needs --save-outputs PATH, the outputs file of the job to continue")
    if o.power_limit is not None:
        check_cap(o.power_limit, "power-limit")
    if o.time_scale is not None:
        check_time_scale(o.time_scale)
        if o.time_scale < 1:  # the host's time between batches would count 1/scale times as the card's idle time
            raise ConfigError("time-scale", f"run takes 1 or more (1: real time; without it the job runs as fast as "
                              f"the CPU allows), got {o.time_scale:g}: below 1 the time between batches would "
                              "count many times over as idle time on the simulated card")  # fmt: skip
    _check_meter_first(o)
    if is_stdout(o.records) and is_stdout(o.json_path):
        raise ConfigError("json", "--records - and --json - would write JSON Lines and a JSON document into one stream; "
                          "send one of them to a file")  # fmt: skip
    for line in unused:  # every value checked: now what will not be used
        warn(line)
    human_err = is_stdout(o.records) or is_stdout(o.json_path)  # stdout carries the data
    if device_kind(o.workload.device) in REAL_KINDS and not o.quiet:
        click.echo(f"loading {opts.model} on {o.workload.device}…", err=True)  # seconds before the first batch
    workload = open_workload(opts)
    try:  # whatever fails from here until the job runs closes the device (and puts back its settings)
        if o.time_scale is not None:
            workload = dataclasses.replace(workload, device=RealtimeSimDevice(workload.device, o.time_scale))
        caps, unmetered, controller = _setup(o, workload, caps, choices)
        check_first_setting(controller.initial(), workload.device.knobs)  # before any file is opened
        total = len(workload.source) if hasattr(workload.source, "__len__") else None  # type: ignore[arg-type]
        nothing_to_do = total is not None and start >= total
        if not nothing_to_do:
            view = make_view(o.quiet, None if total is None else total - start, err=human_err)
            observers = _observers(o, workload, identity, start, unmetered, view, caps)
    except BaseException:
        workload.device.close()
        raise
    if nothing_to_do:
        workload.device.close()
        click.echo(f"nothing to do: all {total} items are already in {o.save_outputs}", err=human_err)
        return
    stream = DynamicBatchStream(workload.source, prefetch=workload.prefetch, prepare=workload.prepare, start=start)
    stop = threading.Event()
    with workload.device, StopOnSignal(stop) as stopper:
        try:
            loop = ControlLoop(
                workload.device, controller, caps, window, observers, stop, strict=o.strict, cap_rule=cap_rule
            )
            summary = loop.run(stream)
        except BatchSizerError as exc:  # e.g. --on-bad-image stop: say why in the records, close the files
            _record_error(observers, exc)
            raise
        finally:
            close_view(view)
    if stopper.reason is not None:
        summary.stop_reason = stopper.reason
    about = {
        "workload": workload.info,
        "controller": controller.describe(),
        **describe_cap(caps),
        "power_limit_w": o.power_limit,
        "time_scale": o.time_scale,
        "resumed_from": start,
    }
    _finish(o, summary, about, human_err)
    if stopper.exit_code:
        click.get_current_context().exit(stopper.exit_code)


def _check_meter_first(o: RunOptions) -> None:
    """On a CPU, whether RAPL can be read, before the model loads: a controller that needs power
    readings cannot run without it, and that should not take a model load to find out."""
    if device_kind(o.workload.device) != "cpu":
        return
    from batchsizer.hw.rapl import rapl_status
    from batchsizer.hw.torch_device import NoMeter, uncapped_note

    _, reason = rapl_status()
    if reason is None:
        return
    try:
        uncapped_note(NoMeter("cpu", reason), cap_given=o.cap_given, controller=o.controller)
    except ConfigError as exc:
        raise ConfigError(
            exc.field,
            f"{exc.problem}; or give it a meter: RAPL readable under /sys/class/powercap (as root, or with read "
            "permission on its energy_uj files)",
        ) from None


def _setup(
    o: RunOptions, workload: Workload, caps: CapSource, choices: dict[str, Any]
) -> tuple[CapSource, str | None, Controller]:
    """What needs the open device: its power limit (--power-limit), the cap it gives (--cap-from-gpu),
    what a device without a power meter may run, and the controller for its knobs."""
    device = workload.device
    if o.power_limit is not None:
        device.set_power_limit(o.power_limit)  # put back when the device closes
    if o.cap_from_gpu:
        from batchsizer.hw.gpu_cap import GpuLimitCap

        caps = GpuLimitCap(device.gpu)  # type: ignore[attr-defined]
    unmetered = None
    if not getattr(device.meter, "available", True):  # a real CPU without readable RAPL
        from batchsizer.hw.torch_device import Uncapped, uncapped_note

        unmetered = uncapped_note(device.meter, cap_given=o.cap_given, controller=o.controller)
        caps = Uncapped()
    controller = make_controller(o.controller, device.knobs, **choices)
    if device_kind(o.workload.device) == "cuda" and device.knobs.has_clocks and controller.moves_clock:
        # a real card's clock will be locked while the job runs: say so before it happens
        click.echo(
            f"note: {o.controller} may lock {o.workload.device}'s SM clock while it runs (put back when the job "
            "ends); --read-only leaves the card's settings alone",
            err=True,
        )
    return caps, unmetered, controller


def _observers(
    o: RunOptions,
    workload: Workload,
    identity: dict[str, Any],
    start: int,
    unmetered: str | None,
    view: LoopObserver | None,
    caps: CapSource,
) -> list[LoopObserver]:
    """Who watches the job, in order: bad-image report and notes first (they feed the summary that
    the recorder writes), then the live view, the records and the outputs."""
    observers: list[LoopObserver] = []
    limit = board_limit_w(workload.device)
    if o.power_limit is not None:
        limit = o.power_limit if limit is None else min(limit, o.power_limit)
    if limit is not None:
        observers.append(_CapAboveLimit(caps, limit, o.workload.device))
    report = getattr(workload.prepare, "report", None)  # skipped unreadable images -> the summary
    if callable(report):
        observers.append(report())
    if unmetered is not None:
        observers.append(_Note(unmetered))
    if view is not None:
        observers.append(view)
    if o.records is not None:
        appending = o.resume and Path(o.records).is_file()
        if appending:
            cut_partial_line(Path(o.records))
        extra = {"workload": workload.info, "resumed_from": start}
        recorder = JobRecorder(
            RecordWriter(o.records, append=appending), extra=extra, caps=caps, clock=workload.device.clock
        )
        observers.append(recorder)
    if o.save_outputs is not None:
        placeholder = device_kind(o.workload.device) in PLACEHOLDER_KINDS
        skipped = getattr(workload.prepare, "skipped", None)
        observers.append(OutputWriter(o.save_outputs, identity, start, placeholder=placeholder, skipped=skipped))
    if isinstance(caps, CapFile):  # rejected content: an event, on the terminal and in the records
        observers.insert(0, _CapFileRejects(caps, observers))
    return observers


def _finish(o: RunOptions, summary: Summary, about: dict[str, Any], human_err: bool = False) -> None:
    """The summary on the terminal and in --json; exit code 3 when --strict found the cap unmeetable."""
    print_summary(summary, err=human_err)
    if o.json_path is not None:
        write_json_atomic(o.json_path, {**about, **summary.to_dict()})
    if summary.stop_reason == "cap-not-met":
        click.echo(f"error: cap: not met and --strict was given; {summary.notes[-1]}", err=True)
        click.get_current_context().exit(EXIT_CAP_NOT_MET)


def check_first_setting(setting: Setting, knobs: DeviceKnobs) -> None:
    """ConfigError for a first setting the device cannot take (a clock it has not, a power limit it does
    not offer), so that the mistake is one line before any output is opened, not an error mid-job."""
    if setting.clock_mhz is not None:
        levels = knobs.clock_levels_mhz
        if not levels:
            why = f" ({knobs.clocks_withheld})" if knobs.clocks_withheld else ""
            raise ConfigError("clock", f"this device has no settable clock{why}; leave --clock out")
        if setting.clock_mhz not in levels:
            raise ConfigError("clock", f"{setting.clock_mhz} MHz is not a clock level of this device; choose one of "
                              f"{levels[0]}..{levels[-1]}: {', '.join(map(str, levels))}")  # fmt: skip
    if setting.power_limit_w is not None and knobs.power_limits_w and setting.power_limit_w not in knobs.power_limits_w:
        raise ConfigError("power-limit", f"{setting.power_limit_w:g} W is not a power limit of this device; choose one "
                          f"of {', '.join(f'{w:g}' for w in knobs.power_limits_w)}")  # fmt: skip


def _record_error(observers: list[LoopObserver], exc: BaseException) -> None:
    """A job stopped by an error: an event line in the records, then records and outputs closed.

    Every line before it was already flushed, so a --resume continues after the last complete batch.
    """
    for obs in observers:
        try:
            if isinstance(obs, JobRecorder):
                obs.on_event("error", str(exc))
                obs.writer.close()
            elif isinstance(obs, OutputWriter):
                obs.close()
        except Exception:  # closing after an error: the error itself is what the user must see
            pass


class _Note(LoopObserver):
    """Adds a line to the summary's notes before the recorder writes it."""

    def __init__(self, note: str) -> None:
        self.note = note

    def on_end(self, summary: Summary) -> None:
        summary.notes.append(self.note)


class _CapAboveLimit(LoopObserver):
    """Warns when the cap is above what the board can draw at all: such a cap never binds."""

    def __init__(self, caps: CapSource, limit_w: float, device: str) -> None:
        self.caps, self.limit_w, self.device = caps, limit_w, device
        self.warned = False

    def _check(self, cap_w: float) -> None:
        import math

        if self.warned or not math.isfinite(cap_w) or cap_w <= self.limit_w:
            return
        self.warned = True
        warn(
            f"cap: {cap_w:g} W is above {self.device}'s board power limit of {self.limit_w:g} W; the board never "
            "draws more than its limit, so this cap does not constrain the job (it runs as if uncapped)"
        )

    def on_start(self, info: dict[str, Any]) -> None:
        self._check(self.caps.cap_at(0.0))

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        if kind == "cap" and isinstance(fields.get("new"), (int, float)):
            self._check(float(fields["new"]))

    def on_end(self, summary: Summary) -> None:
        if self.warned:
            summary.notes.append(f"the cap was above the board power limit ({self.limit_w:g} W) for part of the job")


class _CapFileRejects(LoopObserver):
    """Turns content of the --cap-file that was rejected (the job kept its cap) into events for the others."""

    def __init__(self, caps: CapFile, observers: list[LoopObserver]) -> None:
        self.caps, self.observers = caps, observers
        self.seen = len(caps.rejected)

    def _forward(self) -> None:
        while self.seen < len(self.caps.rejected):
            message = f"rejected: {self.caps.rejected[self.seen]}"
            self.seen += 1
            for obs in self.observers:
                obs.on_event("cap-file", message, path=str(self.caps.path))

    def on_batch(self, index: int, batch: Any, outcome: Any, setting: Any) -> None:
        self._forward()

    def on_end(self, summary: Summary) -> None:
        self._forward()
