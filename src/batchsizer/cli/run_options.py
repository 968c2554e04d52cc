"""``batchsizer run``'s options as one typed value, built once from the command line.

The helpers of ``run`` take a :class:`RunOptions` rather than click's dict of keywords, so a field
misspelt is a type error and not a ``KeyError`` at the end of a job. What to run on is one
:class:`~batchsizer.core.workloads.WorkloadOptions` (``workload``), the same value ``serve`` and
``profile`` open, so its fields are declared once. ``given`` keeps which options the user set (not
defaults), for the check of options nothing reads (:mod:`batchsizer.cli.option_check`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsizer.cli.options import parse_int_list
from batchsizer.core.workloads import WorkloadOptions
from batchsizer.policies import DEFAULT_CONTROLLER


@dataclass(frozen=True)
class RunOptions:
    """Everything ``batchsizer run`` was asked, by its click parameter names, with the CLI's defaults."""

    # where and what: the workload (each device kind reads some of its fields, core.workloads.DEVICE_OPTIONS)
    workload: WorkloadOptions = field(default_factory=WorkloadOptions)
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
    #: simulated and table devices: real seconds per simulated second (None: as fast as the CPU runs)
    time_scale: float | None = None
    cap_rule: str = "peak"
    strict: bool = False
    #: the options the user set (command line, environment, --config), by parameter name
    given: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], given: frozenset[str] = frozenset()) -> RunOptions:
        """From click's parameter values: the workload's into ``workload``, the rest into their fields
        (``--sizes`` parsed and checked: ConfigError); a parameter that is neither is a programming error."""
        workload_names = {f.name for f in dataclasses.fields(WorkloadOptions)}
        names = {f.name for f in dataclasses.fields(cls)} - {"given", "workload"}
        unknown = sorted(set(params) - names - workload_names)
        if unknown:
            raise TypeError(f"RunOptions has no field for {', '.join(unknown)}")
        values = {k: v for k, v in params.items() if k in names}
        if values.get("sizes") is not None:
            values["sizes"] = parse_int_list(values["sizes"], "sizes")
        return cls(workload=WorkloadOptions.from_params(params), **values, given=frozenset(given))

    @property
    def cap_given(self) -> bool:
        """Whether any cap was asked for (a constant, a schedule or a file)."""
        return any(v is not None for v in (self.cap, self.cap_schedule, self.cap_file))

    def controller_choices(self) -> dict[str, Any]:
        """The controller options as ``make_controller`` takes them."""
        return {"sizes": self.sizes, "alpha": self.alpha, "initial": self.initial, "batch_size": self.batch_size,
                "clock_mhz": self.clock_mhz}
