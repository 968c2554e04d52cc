"""``batchsizer run``: one inference job under a power cap."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import click

from batchsizer.batching import DynamicBatchStream
from batchsizer.cap_rule import CapRule
from batchsizer.caps import CapSource, check_cap
from batchsizer.cli.options import (
    cap_options,
    controller_kwargs,
    controller_options,
    make_cap_source,
    make_workload_options,
    path_option,
    workload_options,
)
from batchsizer.config import config_option
from batchsizer.errors import BatchSizerError, ConfigError
from batchsizer.interrupt import StopOnSignal
from batchsizer.live import close_view, make_view, print_summary
from batchsizer.loop import ControlLoop, LoopObserver, Window
from batchsizer.outputs import PLACEHOLDER_KINDS, OutputWriter, cut_partial_line, job_identity, prepare_outputs
from batchsizer.policies import make_controller
from batchsizer.policies.base import Controller, check_alpha
from batchsizer.recorder import JobRecorder
from batchsizer.records import RecordWriter, write_json_atomic
from batchsizer.summary import Summary
from batchsizer.workloads import Workload, device_kind, open_workload

#: exit code when --strict stops a job whose cap cannot be met (130/143: stopped by SIGINT/SIGTERM)
EXIT_CAP_NOT_MET = 3

DEFAULT_CAP_W = 200.0
#: controllers that move a GPU's clock where the device offers clocks
CLOCK_USERS = ("adaptive", "dvfs")


@click.command()
@config_option
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
@path_option("--records", "records", "Write JSON Lines records here (see batchsizer plot).")
@path_option("--json", "json_path", "Write the summary as JSON.")
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
    """
    opts = make_workload_options(**kw)
    caps = make_cap_source(kw["cap"], kw["cap_schedule"], kw["cap_file"], DEFAULT_CAP_W, from_gpu=kw["cap_from_gpu"])
    if kw["cap_from_gpu"] and device_kind(kw["device"]) != "cuda":
        raise ConfigError(
            "cap-from-gpu", f"follows an NVIDIA GPU's power limit; give --device cuda[:N], not {kw['device']!r}"
        )
    window = Window(batches=kw["window_batches"], seconds=kw["window_seconds"])
    cap_rule = CapRule.parse(kw["cap_rule"])
    choices = controller_kwargs(**kw)  # checked before a device is opened
    check_alpha(choices["alpha"])
    identity = job_identity(**vars(opts))
    start = 0  # items already in the outputs file of a stopped run (--resume)
    if kw["save_outputs"] is not None:
        start = prepare_outputs(kw["save_outputs"], identity, kw["resume"])
    elif kw["resume"]:
        raise ConfigError("resume", "needs --save-outputs PATH, the outputs file of the job to continue")
    if kw["power_limit"] is not None:
        check_cap(kw["power_limit"], "power-limit")
    workload = open_workload(opts)
    try:  # whatever fails from here until the job runs closes the device (and puts back its settings)
        caps, unmetered, controller = _setup(kw, workload, caps, choices)
        total = len(workload.source) if hasattr(workload.source, "__len__") else None  # type: ignore[arg-type]
        nothing_to_do = total is not None and start >= total
        if not nothing_to_do:
            view = make_view(kw["quiet"], None if total is None else total - start)
            observers = _observers(kw, workload, opts.device, identity, start, unmetered, view)
    except BaseException:
        workload.device.close()
        raise
    if nothing_to_do:
        workload.device.close()
        click.echo(f"nothing to do: all {total} items are already in {kw['save_outputs']}")
        return
    stream = DynamicBatchStream(workload.source, prefetch=workload.prefetch, prepare=workload.prepare, start=start)
    stop = threading.Event()
    with workload.device, StopOnSignal(stop) as stopper:
        try:
            loop = ControlLoop(
                workload.device, controller, caps, window, observers, stop, strict=kw["strict"], cap_rule=cap_rule
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
        "cap": repr(caps),
        "power_limit_w": kw["power_limit"],
        "resumed_from": start,
    }
    _finish(kw, summary, about)
    if stopper.exit_code:
        click.get_current_context().exit(stopper.exit_code)


def _setup(
    kw: dict[str, Any], workload: Workload, caps: CapSource, choices: dict[str, Any]
) -> tuple[CapSource, str | None, Controller]:
    """What needs the open device: its power limit (--power-limit), the cap it gives (--cap-from-gpu),
    what a device without a power meter may run, and the controller for its knobs."""
    device = workload.device
    if kw["power_limit"] is not None:
        device.set_power_limit(kw["power_limit"])  # put back when the device closes
    if kw["cap_from_gpu"]:
        from batchsizer.hw.gpu_cap import GpuLimitCap

        caps = GpuLimitCap(device.gpu)  # type: ignore[attr-defined]
    unmetered = None
    if not getattr(device.meter, "available", True):  # a real CPU without readable RAPL
        from batchsizer.hw.device import Uncapped, uncapped_note

        cap_given = any(kw[k] is not None for k in ("cap", "cap_schedule", "cap_file"))
        unmetered = uncapped_note(device.meter, cap_given=cap_given, controller=kw["controller"])
        caps = Uncapped()
    controller = make_controller(kw["controller"], device.knobs, **choices)
    if device_kind(kw["device"]) == "cuda" and device.knobs.has_clocks and kw["controller"] in CLOCK_USERS:
        # a real card's clock will be locked while the job runs: say so before it happens
        click.echo(
            f"note: {kw['controller']} may lock {kw['device']}'s SM clock while it runs (put back when the job "
            "ends); --read-only leaves the card's settings alone",
            err=True,
        )
    return caps, unmetered, controller


def _observers(
    kw: dict[str, Any],
    workload: Workload,
    device: str,
    identity: dict[str, Any],
    start: int,
    unmetered: str | None,
    view: LoopObserver | None,
) -> list[LoopObserver]:
    """Who watches the job, in order: bad-image report and notes first (they feed the summary that
    the recorder writes), then the live view, the records and the outputs."""
    observers: list[LoopObserver] = []
    report = getattr(workload.prepare, "report", None)  # skipped unreadable images -> the summary
    if callable(report):
        observers.append(report())
    if unmetered is not None:
        observers.append(_Note(unmetered))
    if view is not None:
        observers.append(view)
    if kw["records"] is not None:
        appending = kw["resume"] and Path(kw["records"]).is_file()
        if appending:
            cut_partial_line(Path(kw["records"]))
        extra = {"workload": workload.info, "resumed_from": start}
        observers.append(JobRecorder(RecordWriter(kw["records"], append=appending), extra=extra))
    if kw["save_outputs"] is not None:
        placeholder = device_kind(device) in PLACEHOLDER_KINDS
        skipped = getattr(workload.prepare, "skipped", None)
        observers.append(OutputWriter(kw["save_outputs"], identity, start, placeholder=placeholder, skipped=skipped))
    return observers


def _finish(kw: dict[str, Any], summary: Summary, about: dict[str, Any]) -> None:
    """The summary on the terminal and in --json; exit code 3 when --strict found the cap unmeetable."""
    print_summary(summary)
    if kw["json_path"] is not None:
        write_json_atomic(kw["json_path"], {**about, **summary.to_dict()})
    if summary.stop_reason == "cap-not-met":
        click.echo(f"error: cap: not met and --strict was given; {summary.notes[-1]}", err=True)
        click.get_current_context().exit(EXIT_CAP_NOT_MET)


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
