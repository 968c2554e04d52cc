"""``batchsizer calibrate``: re-run the simulator's calibration against the measured data and print the fit errors."""

from __future__ import annotations

import json
from pathlib import Path

import click

from batchsizer.cli.options import path_option


@click.command()
@path_option("--json", "json_path", "Also write the numbers as JSON.")
def command(json_path: Path | None) -> None:
    """Fit the simulated GPUs to ../shared/data (NVML sensor files, Zeus tables) and the paper; print the errors."""
    from batchsizer.io.shared_data import DataUnavailable
    from batchsizer.sim.calibrate import format_report, job_table, paper_checks, run_all

    try:
        result = run_all()
    except DataUnavailable as exc:
        click.echo(f"note: {exc}; showing only the checks against the paper", err=True)
        result = {"paper": paper_checks(), "jobs": job_table()}
    click.echo(format_report(result))
    if json_path is not None:
        from batchsizer.io.records import write_json_atomic

        write_json_atomic(json_path, json.loads(json.dumps(result, default=float)))
