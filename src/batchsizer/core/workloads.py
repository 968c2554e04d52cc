"""From a device name to a ready workload: the device, the items to process, how to prepare them.

``sim:<gpu>`` opens the simulated GPU (the default, no hardware needed); ``cuda[:N]`` and ``cpu``
open real PyTorch inference (the ``torch`` extra); ``table:PATH.csv`` replays a measured table
(docs/tables.md); ``scripted`` is a tiny analytic device for tests. Each kind lives in its own
module, imported only when named, so the core needs no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsizer.core.device import Device
from batchsizer.errors import ConfigError

DEFAULT_DEVICE = "sim:p40"


@dataclass
class WorkloadOptions:
    """What the user asked for; each device kind reads the fields that apply to it."""

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
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Workload:
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


def device_kind(name: str) -> str:
    return name.split(":", 1)[0].strip().lower()


def open_workload(opts: WorkloadOptions) -> Workload:
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
