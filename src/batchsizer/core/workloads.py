"""From a device name to a ready workload: the device, the items to process, how to prepare them.

``sim:<gpu>`` opens the simulated GPU (the default, no hardware needed); ``cuda[:N]`` and ``cpu``
open real PyTorch inference (the ``torch`` extra); ``table:PATH.csv`` replays a measured table
(docs/tables.md); ``scripted`` is a tiny analytic device for tests. Each kind lives in its own
module, imported only when named, so the core needs no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsizer.core.device import Device
from batchsizer.errors import ConfigError

DEFAULT_DEVICE = "sim:p40"


@dataclass(frozen=True)
class WorkloadOptions:
    """What the user asked for; each device kind reads the fields that apply to it (``DEVICE_OPTIONS``).

    The one description of a workload: ``run`` holds it in its :class:`~batchsizer.cli.run_options.RunOptions`,
    ``serve`` in its ``ServeOptions``, and :func:`open_workload` turns it into a device for both."""

    device: str = DEFAULT_DEVICE
    model: str = "res101"
    dataset: str = "caltech"
    items: int = 10_000
    images: Path | None = None
    seed: int = 0
    half: bool = False
    channels_last: bool = False
    checkpoint: Path | None = None
    workers: int = 2
    #: real devices: the side of the square input images (None: the model's own)
    input_size: int | None = None
    #: real devices with ``images``: ``"skip"`` an undecodable file or ``"stop"`` the job
    on_bad_image: str = "skip"
    #: real and table devices: never offer clocks or power limits to the controller
    read_only: bool = False
    #: simulated GPUs: which family sensor (``"default"``, ``"instant"``, ``"average"``)
    sim_sensor: str = "default"
    #: simulated and table devices: the sensor's fields replaced (None: the family's or the table's)
    sensor_update_ms: float | None = None
    sensor_window_ms: float | None = None
    sensor_noise_w: float | None = None
    #: table devices: the idle power and per-batch host phase replacing the table's columns
    table_idle_w: float | None = None
    table_host_ms: float | None = None
    #: simulated GPUs: host-side cost per batch relative to the paper's CPU-bound pipeline (``serve``'s
    #: --sim-host-scale; 1 for ``run``, whose host phase is the paper's)
    sim_host_scale: float = 1.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> WorkloadOptions:
        """The fields named in ``params`` (a command's parameters; those that are no field are the
        command's own and left out), the others at their defaults. Values are not checked here
        (:func:`batchsizer.cli.options.check_workload` does)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})


@dataclass
class Workload:
    """An opened workload: the device, the items to run through it, how to prepare a batch of them
    (None: the items are the input), how many batches to cut ahead, and its description for records."""

    device: Device
    source: Sequence[Any] | Iterable[Any]
    prepare: Callable[[list[Any]], Any] | None = None
    prefetch: int = 0
    info: dict[str, Any] = field(default_factory=dict)


#: device-name prefix -> "module:function" building a Workload; imported on first use
DEVICE_KINDS: dict[str, str] = {
    "scripted": "batchsizer.testing.scripted:open_scripted_workload",
    "sim": "batchsizer.sim.workload:open_sim_workload",
    "table": "batchsizer.sim.workload:open_table_workload",
    "cuda": "batchsizer.hw.workload:open_real_workload",
    "cpu": "batchsizer.hw.workload:open_real_workload",
}


_SENSOR = frozenset({"sensor_update_ms", "sensor_window_ms", "sensor_noise_w"})
_REAL = frozenset({"model", "items", "seed", "input_size", "images", "workers", "on_bad_image", "channels_last",
                   "checkpoint"})
#: command options (not ``WorkloadOptions`` fields) that only some kinds honour: ``run``'s --power-limit
#: (the board's own limit: the simulated limiter, a table's rows at several limits, NVML) and
#: --cap-from-gpu (NVML's limit), ``serve``'s --time-scale (the simulated clock against the wall clock)
_LIMIT = frozenset({"power_limit"})
_SIMULATED = frozenset({"time_scale"})

#: the options (by their CLI parameter names: ``WorkloadOptions`` fields and the command options
#: above) each device kind reads; "table" is both ``table:...`` and the ``sim:zeus-...`` tables. A
#: kind without an entry is not checked.
DEVICE_OPTIONS: dict[str, frozenset[str]] = {
    "scripted": frozenset({"items"}),
    "sim": frozenset({"model", "dataset", "items", "seed", "sim_sensor", "sim_host_scale"}) | _SENSOR | _LIMIT | _SIMULATED,
    "table": frozenset({"items", "seed", "read_only", "table_idle_w", "table_host_ms"}) | _SENSOR | _LIMIT | _SIMULATED,
    "cuda": _REAL | _LIMIT | {"half", "read_only", "cap_from_gpu"},
    "cpu": _REAL,
}

#: how each kind in ``DEVICE_OPTIONS`` is named to the user
DEVICE_LABELS: dict[str, str] = {
    "scripted": "the scripted test device",
    "sim": "simulated GPUs (sim:p40, sim:v100, sim:a100, sim:h100)",
    "table": "table devices (table:PATH.csv, sim:zeus-...)",
    "cuda": "cuda devices (cuda[:N])",
    "cpu": "the cpu device",
}


def device_kind(name: str) -> str:
    """The device name's prefix: ``sim``, ``table``, ``cuda``, ``cpu``, ``scripted``."""
    return name.split(":", 1)[0].strip().lower()


def options_kind(name: str) -> str:
    """The kind whose options a device reads: ``device_kind``, except that ``sim:zeus-...`` is a table."""
    text = name.strip().lower()
    return "table" if text.startswith("sim:zeus-") else device_kind(text)


def open_workload(opts: WorkloadOptions) -> Workload:
    """The workload ``opts`` names, opened by its kind's module (``DEVICE_KINDS``): the one way from
    options to a device, for ``run``, ``profile`` and ``serve`` alike; ConfigError for an unknown kind
    or one whose extra is not installed."""
    kind = device_kind(opts.device)
    target = DEVICE_KINDS.get(kind)
    if target is None:
        raise ConfigError(
            "device",
            f"unknown device {opts.device!r}; use sim:p40, sim:v100, sim:a100, sim:h100, table:PATH.csv[:SELECTOR], "
            "cuda, cuda:N or cpu",
        )
    module_name, func = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a module"
        raise ConfigError(
            "device", f"{opts.device!r} needs {missing}, which is not installed; try pip install 'batchsizer[torch]'"
        ) from None
    return getattr(module, func)(opts)
