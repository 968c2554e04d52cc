"""``batchsizer profile``: throughput and peak/mean power per batch size (and clock where permitted).

This is the offline profile the paper uses to skip batch sizes beyond throughput saturation, and
the table ``--device table:out.csv`` plays back (docs/tables.md). Each
(clock, batch size) runs ``warmup`` batches, then ``batches`` measured ones through the same
prefetching stream a job uses; power is the meter's window over the measured batches. Works on
every device, the simulated ones included.
"""

from __future__ import annotations

import contextlib
import csv
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from batchsizer.cli.options import (
    given_options,
    make_workload_options,
    parse_int_list,
    path_option,
    workload_options,
)
from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.clock import VirtualClock
from batchsizer.core.telemetry import measure
from batchsizer.core.workloads import Workload, open_workload, options_kind
from batchsizer.errors import ConfigError, OutOfMemoryError, PermissionDeniedError, UnsupportedError, describe_values
from batchsizer.io.paths import is_stdout
from batchsizer.io.records import write_json_atomic

#: seconds of nothing running over which a real device's idle power is measured (for --csv)
IDLE_S = 0.6
#: a batch size is "saturated" once it reaches this fraction of the best throughput at its clock
SATURATION = 0.95
FIELDS = [
    "clock_mhz",
    "batch_size",
    "items",
    "seconds",
    "throughput",
    "latency_s",
    "peak_w",
    "mean_w",
    "energy_per_item_j",
    "samples",
    "idle_w",
]


class _Cycle(Sequence[Any]):
    """``length`` items taken from ``source`` round and round, starting at ``offset``."""

    def __init__(self, source: Sequence[Any], offset: int, length: int) -> None:
        self.source, self.offset, self.length = source, offset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.length))]
        if not 0 <= i < self.length:
            raise IndexError(i)
        return self.source[(self.offset + i) % len(self.source)]


def profile_point(
    workload: Workload, size: int, batches: int, warmup: int, offset: int = 0, on_batch: Any = None
) -> dict[str, Any]:
    """Run ``warmup`` + ``batches`` batches of ``size`` and measure the last ``batches``;
    ``on_batch(items)`` is called after each (for a progress bar)."""
    source = workload.source if isinstance(workload.source, Sequence) else list(workload.source)
    if len(source) == 0:
        raise ConfigError("items", "the workload has no items to profile with")
    device = workload.device
    stream = DynamicBatchStream(
        _Cycle(source, offset, size * (warmup + batches)), size, prefetch=workload.prefetch, prepare=workload.prepare
    )
    start = None
    latencies: list[float] = []
    end = device.clock.now()
    try:
        for i, batch in enumerate(stream):
            outcome = device.run_batch(batch)
            if on_batch is not None:
                on_batch(len(batch))
            if i == warmup - 1:
                start = outcome.end
            elif i >= warmup:
                latencies.append(outcome.latency_s)
            end = outcome.end
    finally:
        stream.close()
    if start is None:  # no warm-up: measure from the first batch's start
        start = end - sum(latencies)
    items = size * batches
    seconds = end - start
    row: dict[str, Any] = {
        "batch_size": size,
        "items": items,
        "seconds": seconds,
        "throughput": items / seconds if seconds > 0 else math.nan,
        "latency_s": sum(latencies) / len(latencies) if latencies else math.nan,
        "peak_w": math.nan,
        "mean_w": math.nan,
        "energy_per_item_j": math.nan,
        "samples": 0,
    }
    if getattr(device.meter, "available", True):
        window, _ = measure(device.meter, start, end)
        if window.valid:
            row.update(
                peak_w=window.peak_w,
                mean_w=window.mean_w,
                energy_per_item_j=window.energy_j / items,
                samples=window.samples,
            )
    return row


def run_profile(
    workload: Workload,
    sizes: Sequence[int],
    *,
    batches: int = 20,
    warmup: int = 3,
    clocks: Sequence[int | None] = (None,),
    echo: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """The profile as a dict: rows per (clock, size), the saturation size per clock, and skipped clocks.

    ``progress`` (a :class:`ProfileProgress`) is told each point as it starts and each batch as it ends."""
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    too_large: list[dict[str, Any]] = []
    device = workload.device
    offset = 0
    try:
        for clock in clocks:
            if clock is not None:
                try:
                    device.set_clock(clock)
                except (PermissionDeniedError, UnsupportedError) as exc:
                    skipped.append({"clock_mhz": clock, "reason": str(exc)})
                    if echo:
                        echo(f"clock {clock} MHz skipped: {exc}")
                    continue
            for size in sizes:
                if progress is not None:
                    progress.point(size, clock)
                try:
                    point = profile_point(workload, size, batches, warmup, offset, progress and progress.advance)
                except OutOfMemoryError as exc:  # and so would every larger size: the profile ends here
                    too_large.append({"clock_mhz": clock, "batch_size": size, "reason": str(exc)})
                    if echo:
                        echo(f"batch {size}: {exc}; larger sizes not tried")
                    break
                row = {"clock_mhz": clock, **point}
                offset += size * (batches + warmup)
                rows.append(row)
                if echo:
                    echo(_line(row))
    finally:
        if any(c is not None for c in clocks):
            with contextlib.suppress(PermissionDeniedError, UnsupportedError):
                device.set_clock(None)
    return {"rows": rows, "saturation": saturation(rows), "skipped_clocks": skipped, "out_of_memory": too_large}


def idle_power(device: Any, described: dict[str, Any]) -> float | None:
    """The device's idle power (W): what a simulated or table device knows, or, on a real device,
    the meter's mean over the last two thirds of ``IDLE_S`` seconds with nothing running, just after
    the profile (the card still at its working clocks, as between batches; the first third lets the
    last busy reading age out). None where there is no meter."""
    known = described.get("idle_w")
    if isinstance(known, (int, float)) and math.isfinite(known):
        return float(known)
    if isinstance(device.clock, VirtualClock) or not getattr(device.meter, "available", True):
        return None
    start = device.clock.now() + IDLE_S / 3
    time.sleep(IDLE_S)
    window, _ = measure(device.meter, start, device.clock.now())
    return round(window.mean_w, 2) if window.valid else None


def saturation(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Per clock, the smallest batch size within ``SATURATION`` of that clock's best throughput."""
    out: dict[str, int] = {}
    for clock in {r["clock_mhz"] for r in rows}:
        mine = sorted((r for r in rows if r["clock_mhz"] == clock), key=lambda r: r["batch_size"])
        best = max((r["throughput"] for r in mine if math.isfinite(r["throughput"])), default=math.nan)
        for r in mine:
            if math.isfinite(best) and r["throughput"] >= SATURATION * best:
                out["default" if clock is None else str(clock)] = r["batch_size"]
                break
    return out


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _watts(v: Any) -> str:
    text = _fmt(v, "6.1f")
    return "   n/a  " if text == "-" else f"{text} W"


def _line(r: dict[str, Any]) -> str:
    clock = "default" if r["clock_mhz"] is None else f"{r['clock_mhz']} MHz"
    return (
        f"clock {clock:>8}  batch {r['batch_size']:>4}  {_fmt(r['throughput'], '9.1f')} items/s  "
        f"peak {_watts(r['peak_w'])}  mean {_watts(r['mean_w'])}  latency {_fmt(r['latency_s'] * 1000, '8.2f')} ms"
    )


def saturation_line(sat: dict[str, int]) -> str:
    """``throughput saturates ... at batch size 16`` (and per clock where clocks were swept)."""
    parts = [f"{size}" if clock == "default" else f"{size} at {clock} MHz" for clock, size in sat.items()]
    return f"throughput saturates (within {SATURATION:.0%} of the best) at batch size {', '.join(parts)}"


class ProfileProgress:
    """A bar over the items the profile will run, naming the point being measured, with a time estimate."""

    def __init__(self, sizes: Sequence[int], clocks: Sequence[int | None], batches: int, warmup: int, console: Any):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.total = len(clocks) * sum(size * (batches + warmup) for size in sizes)
        self._progress = Progress(
            TextColumn("[bold]profiling"),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("", total=self.total)

    def __enter__(self) -> ProfileProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def point(self, size: int, clock: int | None) -> None:
        """Name the point now measured (batch size, and clock when swept) on the bar."""
        at = "" if clock is None else f" at {clock} MHz"
        self._progress.update(self._task, description=f"batch size {size}{at}")

    def advance(self, items: int) -> None:
        """Move the bar on by ``items`` run (warm-up batches included)."""
        self._progress.advance(self._task, items)

    def echo(self, line: str) -> None:
        """Print ``line`` above the bar, as is (no rich markup)."""
        self._progress.console.print(line, markup=False, highlight=False)


def parse_clocks(text: str | None, levels: Sequence[int], withheld: str | None = None) -> list[int | None]:
    """The clocks to sweep (MHz): [None] (the device's own) when ``--clocks`` is not given, every level for ``all``,
    else those listed; ConfigError if the device has no settable clocks (``withheld`` says why) or one is not among
    its levels."""
    if text is None or text.strip() == "":
        return [None]
    if not levels:
        raise ConfigError("clocks", f"this device has no settable clocks{f' ({withheld})' if withheld else ''}")
    if text.strip().lower() == "all":
        return list(levels)
    values = parse_int_list(text, "clocks")
    bad = [c for c in values if levels and c not in levels]
    if bad:
        raise ConfigError("clocks", f"{bad} not among this device's levels {describe_values(levels)}")
    return list(values)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """The rows as CSV (``FIELDS``): to standard output for ``-``, else replacing ``path`` whole (via ``path.tmp``)."""
    if is_stdout(path):
        writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


@click.command()
@workload_options
@click.option("--sizes", default="1,2,4,8,16,32,64,128,256", help="Batch sizes to measure, ascending, comma separated.")
@click.option("--batches", default=20, type=int, help="Measured batches per point.")
@click.option("--warmup", default=3, type=int, help="Unmeasured batches before each point.")
@click.option(
    "--clocks",
    default=None,
    help="SM clocks in MHz to sweep too (comma separated, or 'all'); needs root on a GPU [default: none].",
)
@path_option("--json", "json_path", "Write the profile as JSON.", stdout_ok=True)
@path_option("--csv", "csv_path", "Write the rows as CSV.", stdout_ok=True)
def command(**kw: Any) -> None:
    """Measure throughput and peak/mean power for each batch size (the paper's offline profile).

    A progress bar (on a terminal) names the point being measured and estimates the time left.
    With --json - or --csv -, that goes to standard output and the lines per point to standard error.
    """
    sizes = parse_int_list(kw["sizes"], "sizes")
    if kw["batches"] < 1:
        raise ConfigError("batches", f"must be at least 1, got {kw['batches']}")
    if kw["warmup"] < 0:
        raise ConfigError("warmup", f"must be 0 or more, got {kw['warmup']}")
    if "items" in given_options() and options_kind(kw["device"]) in ("sim", "table"):
        raise ConfigError(
            "items",
            f"profile runs --batches {kw['batches']} batches (after --warmup {kw['warmup']}) at each size; "
            f"on {kw['device']} --items has nothing to set (on a real device it is the pool of synthetic images)",
        )
    err = is_stdout(kw["json_path"]) or is_stdout(kw["csv_path"])  # stdout carries the data
    console = Console(stderr=True)
    workload = open_workload(make_workload_options(**kw))
    with workload.device:
        knobs = workload.device.knobs
        clocks = parse_clocks(kw["clocks"], knobs.clock_levels_mhz, knobs.clocks_withheld)
        with ProfileProgress(sizes, clocks, kw["batches"], kw["warmup"], console) as bar:
            echo = bar.echo if console.is_terminal else lambda line: click.echo(line, err=err)
            result = run_profile(
                workload, sizes, batches=kw["batches"], warmup=kw["warmup"], clocks=clocks, echo=echo, progress=bar
            )
        device = workload.device.describe()
        # the idle power lets table:out.csv replay rows whose peak is above their mean (docs/tables.md)
        idle = idle_power(workload.device, device) if kw["csv_path"] is not None else None
    for row in result["rows"]:
        row["idle_w"] = "" if idle is None else idle
    if result["saturation"]:
        click.echo(saturation_line(result["saturation"]), err=err)
    else:
        click.echo("nothing was measured (every clock was skipped)", err=err)
    if kw["json_path"] is not None:
        write_json_atomic(kw["json_path"], {"workload": workload.info, "device": device, **result})
    if kw["csv_path"] is not None:
        write_csv(kw["csv_path"], result["rows"])


def _profile_items_help(cmd: click.Command) -> None:
    """profile's --items is the pool of synthetic images on a real device only (its points run --batches
    per size; sim and table devices refuse it): its help says so, not the workload's shared one."""
    for param in cmd.params:
        if param.name == "items" and isinstance(param, click.Option):
            param.help = ("Real devices with synthetic input: how many images the points cycle through (each point runs "
                          "--batches batches); refused on sim and table devices.")  # fmt: skip


_profile_items_help(command)
