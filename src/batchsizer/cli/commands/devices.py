"""``batchsizer devices``: the NVIDIA GPUs NVML sees (with their power sensor and knobs) and the CPU's RAPL meter."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import click

from batchsizer.cli.options import path_option
from batchsizer.errors import DeviceError
from batchsizer.io.records import write_json_atomic

SIM_DEVICES = "sim:p40, sim:v100, sim:a100, sim:h100"


def _clock_text(clocks: list[int]) -> str:
    if not clocks:
        return "unknown"
    return f"{len(clocks)} levels, {clocks[0]}-{clocks[-1]} MHz"


def list_gpus() -> tuple[list[dict[str, Any]], str | None, str | None]:
    """(GPU facts, driver version, why there are none) without needing any permission."""
    from batchsizer.hw.gpu import gpu_info
    from batchsizer.hw.nvml import Nvml

    try:
        with Nvml() as nvml:
            driver = nvml.driver_version()
            return [gpu_info(nvml.gpu(i)).to_dict() for i in range(nvml.count())], driver, None
    except DeviceError as exc:
        return [], None, str(exc)


def list_rapl(root: Path | None = None) -> dict[str, Any]:
    """The CPU's RAPL domains under ``root`` (None: the powercap folder), whether they can be read, and if not, why."""
    from batchsizer.hw.rapl import POWERCAP, rapl_status

    domains, problem = rapl_status(root or POWERCAP)
    return {
        "domains": [{"name": d.name, "path": str(d.path)} for d in domains],
        "usable": problem is None,
        "problem": problem,
    }


@click.command()
@path_option("--json", "json_path", "Also write the facts as JSON.")
def command(json_path: Path | None) -> None:
    """List the devices a job can run on: NVIDIA GPUs (via NVML), the CPU (RAPL), and the simulated GPUs."""
    from batchsizer.hw.actuators import settings_permission

    gpus, driver, gpu_problem = list_gpus()
    rapl = list_rapl()
    permission = settings_permission()
    click.echo("NVIDIA GPUs:")
    if gpu_problem is not None:
        click.echo(f"  none: {gpu_problem}")
    elif not gpus:
        click.echo("  none: NVML sees no GPU")
    else:
        click.echo(f"  driver {driver}")
    for g in gpus:
        limits = g["power_limits"]
        limit_text = (
            f"limit {limits['current_w']:g} W (default {limits['default_w']:g}, settable {limits['min_w']:g}-{limits['max_w']:g})"
            if limits
            else "power limit unknown"
        )
        click.echo(f"  cuda:{g['index']}  {g['name']}  ({g['architecture']})  {limit_text}")
        click.echo(
            f"          SM clocks: {_clock_text(g['sm_clocks_mhz'])}; power sensor: {g['power_source']}; "
            f"energy counter: {'yes' if g['energy_counter'] else 'no'}"
        )
        if not g["power_source"].startswith("instant"):
            click.echo("          note: without the instant field, Ampere (except A100) and newer report a 1 s average")
    if gpus:
        click.echo(
            "  clocks and power limits: "
            + ("this process may change them" if permission is None else f"read-only here ({permission})")
        )
    click.echo("CPU:")
    names = ", ".join(d["name"] for d in rapl["domains"]) or "none"
    click.echo(
        f"  cpu  RAPL domains: {names}; "
        + ("power meter usable" if rapl["usable"] else f"no power meter: {rapl['problem']}")
    )
    if importlib.util.find_spec("torch") is None:
        click.echo("  note: real inference (cpu, cuda) needs PyTorch: pip install 'batchsizer[vision]'")
    click.echo(f"Simulated GPUs (no hardware needed): {SIM_DEVICES}")
    click.echo("Measured tables played back as a GPU: table:PATH.csv[:SELECTOR] (see docs/tables.md)")
    if json_path is not None:
        write_json_atomic(
            json_path,
            {
                "driver": driver,
                "gpus": gpus,
                "gpu_problem": gpu_problem,
                "gpu_settings_changeable": permission is None,
                "gpu_settings_problem": permission,
                "cpu": {"rapl": rapl},
            },
        )
