"""Options shared by several subcommands, and their parsing into library objects."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from batchsizer.cli.option_check import check_options_used, option_flags
from batchsizer.core.caps import CapFile, CapSchedule, CapSource, ConstantCap
from batchsizer.core.workloads import DEFAULT_DEVICE, WorkloadOptions, device_kind, options_kind
from batchsizer.errors import ConfigError
from batchsizer.hw.model_source import is_model_reference
from batchsizer.io.paths import check_output_file, is_stdout
from batchsizer.policies import CONTROLLERS, DEFAULT_CONTROLLER
from batchsizer.policies.base import check_sizes

F = TypeVar("F", bound=Callable[..., Any])


def _stack(f: F, decorators: list[Callable[[F], F]]) -> F:
    """Apply click option decorators so they show in --help in the order listed."""
    for d in reversed(decorators):
        f = d(f)
    return f


def path_option(flag: str, dest: str, what: str, *, stdout_ok: bool = False) -> Callable[[F], F]:
    """An optional output file (``--json``, ``--csv``, ``--records``...), off unless given; with
    ``stdout_ok``, ``-`` means standard output.

    Checked for writability when the command line is read, before any work is done."""

    def check(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        if value is not None and is_stdout(value) and not stdout_ok:
            raise ConfigError(flag.lstrip("-"), "needs a file path; it cannot be - (standard output)")
        return None if value is None else check_output_file(value, flag.lstrip("-"))

    dash = "; - for standard output" if stdout_ok else ""
    return click.option(
        flag,
        dest,
        type=click.Path(path_type=Path),
        default=None,
        callback=check,
        help=f"{what.rstrip('.')}{dash} [default: none].",
    )


def given_options(ctx: click.Context | None = None) -> set[str]:
    """The parameters the user set (on the command line, in the environment or in --config), not defaults."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return set()
    return {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    }


def warn(message: str) -> None:
    """A warning on stderr, shown with --quiet too."""
    click.echo(f"warning: {message}", err=True)


def parse_int_list(text: str, field: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` -> (1, 2, 4, 8), with a message naming the field when it is not that."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing comma is no missing value
    if not all(parts):
        raise ConfigError(field, f"has an empty value between commas; give whole numbers like 1,2,4,8, got {text!r}")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(field, f"must be whole numbers separated by commas, like 1,2,4,8; got {text!r}") from None
    return check_sizes(values, field)


def workload_options(f: F) -> F:
    """--device, --model, --input-size, --dataset, --items, --images, --seed, --sim-sensor, --sensor-*,
    --table-*, --workers, --on-bad-image, --half, --channels-last, --read-only, --checkpoint."""
    return _stack(f, [option for _, option in _workload_option_list()])


#: the workload options ``serve`` leaves out: it runs the requests that arrive, not items or an image folder
NOT_SERVED = frozenset({"items", "images", "workers", "on_bad_image"})


def serve_workload_options(f: F) -> F:
    """The workload options but those of :data:`NOT_SERVED`: ``serve`` takes only what it honours."""
    return _stack(f, [option for name, option in _workload_option_list() if name not in NOT_SERVED])


def _workload_option_list() -> list[tuple[str, Callable[[F], F]]]:
    """The workload options, by parameter name, in the order --help shows them."""
    decorators = [
        click.option(
            "--device",
            default=DEFAULT_DEVICE,
            help="Where to run: sim:p40, sim:v100, sim:a100, sim:h100 (simulated), table:PATH.csv[:SELECTOR] "
            "(a measured table played back, see docs/tables.md), cuda[:N] or cpu (real).",
        ),
        click.option(
            "--model",
            default="res101",
            help="DNN: the paper's IncV1, IncV2, IncV3, MobV1, MobV2, NASNET, PNASNET, Res50, Res101, Res152 on "
            "sim; on real devices a torchvision name (resnet50, googlenet, ...), a TorchScript file, or your "
            "own code as FILE.py:NAME or package.module:NAME (an nn.Module, or what makes one).",
        ),
        click.option(
            "--input-size",
            type=int,
            default=None,
            help="Side of the square input images, real devices [default: the model's own: 299 for "
            "inception_v3, else 224].",
        ),
        click.option("--dataset", default="caltech", help="Input set on sim: imagenet or caltech."),
        click.option(
            "--items", default=10_000, type=int, help="Number of images to process (sim, or synthetic input)."
        ),
        click.option(
            "--images",
            type=click.Path(path_type=Path),
            default=None,
            help="Folder of images (ImageFolder layout) for real devices [default: none, synthetic tensors].",
        ),
        click.option("--seed", default=0, type=int, help="Seed for the simulator's noise and variation."),
        click.option(
            "--sim-sensor",
            type=click.Choice(["default", "instant", "average"]),
            default="default",
            help="The simulated power sensor: what BatchSizer's NVML meter reads (default: the instant field "
            "where the GPU has one), or nvmlDeviceGetPowerUsage ('average': a 1 s average on the H100), "
            "to see what a GPU without the instant field does to a cap.",
        ),
        click.option(
            "--sensor-update-ms",
            type=float,
            default=None,
            help="Simulated and table devices: the power sensor publishes a reading every this many ms "
            "[default: the GPU family's; 20 on table devices].",
        ),
        click.option(
            "--sensor-window-ms",
            type=float,
            default=None,
            help="Simulated and table devices: each reading is the mean power over this many ms (0: instantaneous) "
            "[default: the GPU family's; 10 on table devices].",
        ),
        click.option(
            "--sensor-noise-w",
            type=float,
            default=None,
            help="Simulated and table devices: Gaussian noise of the readings (W) [default: the GPU family's; 1 on "
            "table devices].",
        ),
        click.option(
            "--table-idle-w",
            type=float,
            default=None,
            help="Table devices: the GPU's idle power (W), replacing the table's idle_w column; needed where rows "
            "have peak above mean power and the table gives none [default: the column].",
        ),
        click.option(
            "--table-host-ms",
            type=float,
            default=None,
            help="Table devices: a host phase added to every batch at idle power (ms), replacing the host_s "
            "column, for tables measured with the GPU always busy [default: the column, else 0].",
        ),
        click.option(
            "--workers",
            default=2,
            type=int,
            help="Processes decoding --images (0: decode in the job's own process).",
        ),
        click.option(
            "--on-bad-image",
            type=click.Choice(["skip", "stop"]),
            default="skip",
            help="An --images file that cannot be decoded: skip it (counted in the summary, marked in "
            "--save-outputs) or stop the job with an error naming it.",
        ),
        click.option(
            "--half", is_flag=True, help="Run the model in float16 (cuda devices only) [default: off, float32]."
        ),
        click.option(
            "--channels-last",
            is_flag=True,
            help="Run the model in the channels-last memory layout (real devices) [default: off, contiguous NCHW].",
        ),
        click.option(
            "--read-only",
            is_flag=True,
            help="Never change the GPU's clocks or power limit: controllers move the batch size only; on table "
            "devices the table's clocks and power limits are withheld the same way "
            "[default: off; clocks are offered to controllers where this process may change them (root or "
            "CAP_SYS_ADMIN)].",
        ),
        click.option(
            "--checkpoint",
            type=click.Path(path_type=Path),
            default=None,
            help="Model weights as a PyTorch state dict file (real devices) [default: none, random weights].",
        ),
    ]
    return [(_param_name(d), d) for d in decorators]


def _param_name(decorator: Callable[[F], F]) -> str:
    """The parameter name a click option decorator declares (``--sensor-noise-w`` -> ``sensor_noise_w``)."""

    def probe() -> None: ...

    decorator(probe)  # type: ignore[arg-type]
    return str(probe.__click_params__[-1].name)  # type: ignore[attr-defined]


#: device kinds that run a real PyTorch model
REAL_KINDS = ("cpu", "cuda")


def is_table_device(name: str) -> bool:
    """``table:...`` or a ``sim:zeus-...`` short name: a measured table played back."""
    return options_kind(name) == "table"


#: the most items a job may ask for (a bound that keeps lengths within what Python's ranges hold)
MAX_ITEMS = 10**12


def make_workload_options(**kw: Any) -> WorkloadOptions:
    """The workload the options ask for (``serve``, ``profile``): first the options given that the
    device does not read are refused (:func:`check_options_used`), then the values are checked."""
    ctx = click.get_current_context(silent=True)
    flags = option_flags(ctx.command) if ctx is not None else {}
    check_options_used(given_options(ctx), kw["device"], None, flags)
    return workload_from(kw, given_options(ctx))


def workload_from(kw: Mapping[str, Any], given: Collection[str] = ()) -> WorkloadOptions:
    """:func:`check_workload` of the :class:`WorkloadOptions` fields in a command's keywords ``kw``."""
    return check_workload(WorkloadOptions.from_params(kw), given)


def check_workload(opts: WorkloadOptions, given: Collection[str] = ()) -> WorkloadOptions:
    """Check the workload options' values (which options the device reads was checked before) and
    return them ready to open; ``given`` names the options the user set. ConfigError names the first
    value that is not allowed, before anything is opened."""
    items = opts.items
    if items is not None and not 1 <= items <= MAX_ITEMS:
        raise ConfigError("items", f"must be at least 1 and at most {MAX_ITEMS:,}, got {items}")
    kind = device_kind(opts.device)
    images, workers, checkpoint = opts.images, opts.workers, opts.checkpoint
    if workers < 0:
        raise ConfigError("workers", f"must be 0 or more, got {workers}")
    side = opts.input_size
    if side is not None and not 8 <= side <= 4096:
        raise ConfigError("input-size", f"must be between 8 and 4096 pixels, got {side}")
    for name in ("table_idle_w", "table_host_ms"):
        value = getattr(opts, name)
        if value is not None and (not (math.isfinite(value) and value >= 0) or (name == "table_idle_w" and value <= 0)):
            raise ConfigError(name.replace("_", "-"), f"must be {'above 0' if name == 'table_idle_w' else '0 or more'}"
                              f", got {value!r}")
    if kind == "sim" and is_model_reference(opts.model):
        from batchsizer.sim.models import MODELS

        raise ConfigError(
            "model",
            f"{opts.model!r} is a model file or code, which runs on real devices (cpu, cuda[:N]); "
            f"{opts.device!r} simulates the paper's DNNs: {', '.join(m.abbr for m in MODELS.values())}",
        )
    if images is not None and not Path(images).is_dir():
        what = "a file" if Path(images).exists() else "it does not exist"
        raise ConfigError("images", f"{images} is not a folder ({what}); give a folder of images, one subfolder per class")
    if images is not None and "items" in given:
        warn(f"--items {items} is not used: with --images the job runs every image in {images}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        what = "a folder" if Path(checkpoint).is_dir() else "missing"
        raise ConfigError("checkpoint", f"{checkpoint} is {what}; give a PyTorch state dict file (.pt, .pth)")
    return dataclasses.replace(
        opts,
        half=bool(opts.half),
        channels_last=bool(opts.channels_last),
        read_only=bool(opts.read_only),
        on_bad_image=opts.on_bad_image or "skip",
        sim_sensor=opts.sim_sensor or "default",
    )


def cap_options(f: F) -> F:
    """--cap, --cap-schedule, --cap-file (one of them)."""
    decorators = [
        click.option("--cap", type=float, default=None, help="Power cap in watts [default: 200 on the default job]."),
        click.option(
            "--cap-schedule",
            default=None,
            help="Cap steps as SECONDS:WATTS,... from the job's start, e.g. 0:200,40:150,80:200 [default: none, the constant --cap].",
        ),
        click.option(
            "--cap-file",
            type=click.Path(path_type=Path),
            default=None,
            help="File holding the cap in watts, re-read while the job runs; bad content keeps the last cap "
            "[default: none, the constant --cap].",
        ),
        click.option(
            "--cap-from-gpu",
            is_flag=True,
            help="The cap is the power limit set on the GPU (by nvidia-smi -pl, NVML or a data-centre power "
            "manager), followed as it changes; cuda devices [default: off].",
        ),
    ]
    return _stack(f, decorators)


def make_cap_source(
    cap: float | None, cap_schedule: str | None, cap_file: Path | None, default: float, *, from_gpu: bool = False,
    names: tuple[str, ...] = ("--cap", "--cap-schedule", "--cap-file", "--cap-from-gpu"),
) -> CapSource:
    """The cap source the options ask for; with ``from_gpu`` a placeholder until the device is open
    (:func:`batchsizer.hw.gpu_cap.GpuLimitCap` then takes its place). ``names``: the options as the
    command calls them (the fleet's ``--budget...``), for the message when more than one is given."""
    values = (cap, cap_schedule, cap_file, True if from_gpu else None)
    given = [name for name, v in zip(names, values) if v is not None]
    if len(given) > 1:
        raise ConfigError("cap", f"give only one of {', '.join(names)} (got {', '.join(given)})")
    if cap_schedule is not None:
        return CapSchedule.parse(cap_schedule)
    if cap_file is not None:
        return CapFile(cap_file)
    return ConstantCap(default if cap is None else cap)


def controller_options(f: F) -> F:
    """--controller, --sizes, --alpha, --initial, --batch-size, --clock."""
    decorators = [
        click.option(
            "--controller",
            default=DEFAULT_CONTROLLER,
            help=f"Policy: {', '.join(sorted(CONTROLLERS))}.",
        ),
        click.option(
            "--sizes",
            default=None,
            help="Batch sizes the controller may choose, ascending, comma separated [default: each controller's "
            "own: the paper's 1,2,4,...,256 for batchsizer and aimd, every whole size 1..256 for adaptive, "
            "1..255 for batchdvfs].",
        ),
        click.option("--alpha", type=float, default=0.8, help="Lower edge of the hold band, as a fraction of the cap."),
        click.option("--initial", type=int, default=None, help="Starting batch size [default: the smallest size]."),
        click.option(
            "--batch-size", type=int, default=None, help="Fixed batch size for static and dvfs [default: 16]."
        ),
        click.option(
            "--clock",
            "clock_mhz",
            type=int,
            default=None,
            help="Fixed SM clock in MHz for static [default: none, the device's own clock].",
        ),
    ]
    return _stack(f, decorators)


def controller_kwargs(**kw: Any) -> dict[str, Any]:
    """The controller options as ``make_controller`` takes them (``--sizes`` parsed)."""
    return {
        "sizes": parse_int_list(kw["sizes"], "sizes") if kw["sizes"] is not None else None,
        "alpha": kw["alpha"],
        "initial": kw["initial"],
        "batch_size": kw["batch_size"],
        "clock_mhz": kw["clock_mhz"],
    }
