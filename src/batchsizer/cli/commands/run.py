"""``batchsizer run``: one inference job under a power cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from batchsizer.batching import DynamicBatchStream
from batchsizer.cli.options import (
    cap_options,
    controller_kwargs,
    controller_options,
    make_cap_source,
    make_workload_options,
    workload_options,
)
from batchsizer.live import PlainLines, print_summary
from batchsizer.loop import ControlLoop, LoopObserver, Window
from batchsizer.policies import make_controller
from batchsizer.policies.base import check_alpha
from batchsizer.recorder import JobRecorder
from batchsizer.records import RecordWriter, write_json_atomic
from batchsizer.workloads import open_workload

DEFAULT_CAP_W = 200.0


@click.command()
@workload_options
@cap_options
@controller_options
@click.option("--window", "window_batches", type=int, default=10, help="Decide after this many batches.")
@click.option("--window-seconds", type=float, default=None, help="Decide after this many seconds (whichever first).")
@click.option("--records", type=click.Path(path_type=Path), default=None, help="Write JSON Lines records here.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary.")
def command(**kw: Any) -> None:
    """Run a job under a power cap, moving the batch size to stay fast and under the cap.

    With no options: 10,000 Caltech-256 images through ResNet-101 on a simulated Tesla P40 under a
    200 W cap, with the paper's controller.
    """
    opts = make_workload_options(**kw)
    caps = make_cap_source(kw["cap"], kw["cap_schedule"], kw["cap_file"], DEFAULT_CAP_W)
    window = Window(batches=kw["window_batches"], seconds=kw["window_seconds"])
    choices = controller_kwargs(**kw)  # checked before a device is opened
    check_alpha(choices["alpha"])
    workload = open_workload(opts)
    controller = make_controller(kw["controller"], workload.device.knobs, **choices)
    observers: list[LoopObserver] = []
    if not kw["quiet"]:
        observers.append(PlainLines())
    if kw["records"] is not None:
        observers.append(JobRecorder(RecordWriter(kw["records"]), extra={"workload": workload.info}))
    stream = DynamicBatchStream(workload.source, prefetch=workload.prefetch, prepare=workload.prepare)
    with workload.device:
        summary = ControlLoop(workload.device, controller, caps, window, observers).run(stream)
    print_summary(summary)
    if kw["json_path"] is not None:
        write_json_atomic(
            kw["json_path"], {"workload": workload.info, "controller": controller.describe(), **summary.to_dict()}
        )
