"""``batchsizer run``'s options as one typed value, built once from the command line.

The helpers of ``run`` take a :class:`RunOptions` rather than click's dict of keywords, so a field
misspelt is a type error and not a ``KeyError`` at the end of a job. ``given`` keeps which options the
user set (not defaults), for the check of options nothing reads (:mod:`batchsizer.cli.option_check`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsizer.cli.options import parse_int_list
from batchsizer.core.workloads import DEFAULT_DEVICE, WorkloadOptions
from batchsizer.policies import DEFAULT_CONTROLLER


@dataclass(frozen=True)
class RunOptions:
    """Everything ``batchsizer run`` was asked, by its click parameter names, with the CLI's defaults."""

    # where and what: the workload (each device kind reads some of these, core.workloads.DEVICE_OPTIONS)
    device: str = DEFAULT_DEVICE
    model: str = "res101"
    input_size: int | None = None
    dataset: str = "caltech"
    items: int = 10_000
    images: Path | None = None
    seed: int = 0
    sim_sensor: str = "default"
    sensor_update_ms: float | None = None
    sensor_window_ms: float | None = None
    sensor_noise_w: float | None = None
    table_idle_w: float | None = None
    table_host_ms: float | None = None
    workers: int = 2
    on_bad_image: str = "skip"
    half: bool = False
    channels_last: bool = False
    read_only: bool = False
    checkpoint: Path | None = None
    # the cap (one of cap, cap_schedule, cap_file, cap_from_gpu; none: the default 200 W)
    cap: float | None = None
    cap_schedule: str | None = None
    cap_file: Path | None = None
    cap_from_gpu: bool = False
    # the controller (each reads some of these, Controller.accepts); sizes None: the controller's own
    controller: str = DEFAULT_CONTROLLER
    sizes: tuple[int, ...] | None = None
    alpha: float = 0.8
    initial: int | None = None
    batch_size: int | None = None
    clock_mhz: int | None = None
    # the job
    window_batches: int = 10
    window_seconds: float | None = None
    records: Path | None = None
    json_path: Path | None = None
    quiet: bool = False
    save_outputs: Path | None = None
    resume: bool = False
    power_limit: float | None = None
    cap_rule: str = "peak"
    strict: bool = False
    #: the options the user set (command line, environment, --config), by parameter name
    given: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], given: frozenset[str] = frozenset()) -> RunOptions:
        """From click's parameter values (``--sizes`` parsed and checked: ConfigError); a parameter
        that is not a field is a programming error."""
        names = {f.name for f in dataclasses.fields(cls)} - {"given"}
        unknown = sorted(set(params) - names)
        if unknown:
            raise TypeError(f"RunOptions has no field for {', '.join(unknown)}")
        values = dict(params)
        if values.get("sizes") is not None:
            values["sizes"] = parse_int_list(values["sizes"], "sizes")
        return cls(**values, given=frozenset(given))

    @property
    def cap_given(self) -> bool:
        """Whether any cap was asked for (a constant, a schedule or a file)."""
        return any(v is not None for v in (self.cap, self.cap_schedule, self.cap_file))

    def controller_choices(self) -> dict[str, Any]:
        """The controller options as ``make_controller`` takes them."""
        return {"sizes": self.sizes, "alpha": self.alpha, "initial": self.initial, "batch_size": self.batch_size,
                "clock_mhz": self.clock_mhz}

    def workload_fields(self) -> dict[str, Any]:
        """The fields :class:`WorkloadOptions` has, with their values here."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(WorkloadOptions) if hasattr(self, f.name)}
