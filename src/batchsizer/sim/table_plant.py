"""A measured table played back as the GPU: ``--device table:PATH.csv[:SELECTOR]`` and ``sim:zeus-...``.

:class:`TablePlant` turns the rows of a :class:`~batchsizer.sim.tables.MeasuredTable` into one
batch's phases for :class:`~batchsizer.sim.sim_device.SimDevice` (virtual time, the NVML-like sensor,
the true-power reference meter, per-batch variation), so a table device runs through the same loop
and records as every other device. A row is played as:

* a flat row (peak = mean, or no peak: the Zeus tables) computes at its mean power for its time per
  batch;
* a row with mean < peak computes at the peak power for a share ``(mean - idle) / (peak - idle)``
  of its time and idles for the rest, so both the mean and the spikes are what was measured;
* a host phase (``host_s`` column or ``--table-host-ms``), where given, is added to every batch at
  the idle power (the GPU waiting for the next batch): for tables measured with the GPU always busy.

Between measured batch sizes the time per item and the powers are interpolated linearly in
log2(batch size); between measured power limits linearly in the limit. Sizes outside the range
measured at every setting (:attr:`TablePlant.size_range`) cannot gain anything: a smaller batch
takes the smallest row's time and power (as if padded to it), a larger one the largest row's time
per item and power (as if split into batches of it). Clocks are the measured levels only.

The short names ``sim:zeus-<v100|a40>:<network>[@<dataset>][+<optimizer>]`` are table devices over
the shipped ``../shared/data/zeus-nsdi23`` files with that GPU's own sensor.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from batchsizer.core.types import DeviceKnobs, Setting
from batchsizer.errors import ConfigError, UnsupportedError
from batchsizer.io.shared_data import data_dir
from batchsizer.sim.gpus import GPUS, GpuSpec, SensorSpec
from batchsizer.sim.plant import BatchCost
from batchsizer.sim.sim_device import SimDevice
from batchsizer.sim.tables import SAMPLES_PER_EPOCH, MeasuredTable, TableRow, read_table

__all__ = [
    "A40",
    "SAMPLES_PER_EPOCH",
    "TABLE_GPUS",
    "TABLE_SENSOR",
    "TableDevice",
    "TablePlant",
    "make_table_device",
    "load_rows",
    "make_table_plant",
    "open_table_device",
    "parse_table_name",
]

#: the sensor of a ``table:`` device unless overridden: 20 ms updates of a 10 ms mean, 1 W noise
TABLE_SENSOR = SensorSpec(update_period_s=0.020, window_s=0.010, noise_w=1.0, kind="table default")

#: A40 (GA102): "other Ampere" sensor: nvmlDeviceGetPowerUsage is a 1 s average every 100 ms
A40 = GpuSpec(
    name="A40",
    family="Ampere GA102",
    board_limit_w=300.0,
    min_limit_w=100.0,
    idle_w=30.0,
    clock_levels_mhz=(210, 1740),
    peak_tflops=37.4,
    pcie_gbps=24.0,
    dynamic_max_w=270.0,
    volt_min=0.7,
    volt_max=1.05,
    half_batch=24.0,
    contention_batch=512.0,
    sensor=SensorSpec(update_period_s=0.100, window_s=1.0, noise_w=1.0, kind="1 s average"),
)
TABLE_GPUS: dict[str, GpuSpec] = {"v100": GPUS["v100"], "a40": A40}


@dataclass(frozen=True, slots=True)
class _SizeCost:
    """A setting at one batch size: seconds per batch, mean, peak and idle power, host phase."""

    batch_s: float
    mean_w: float
    peak_w: float
    idle_w: float | None
    host_s: float


def _mix(a: _SizeCost, b: _SizeCost, x: float) -> _SizeCost:
    def lerp(u: float, v: float) -> float:
        return u + x * (v - u)

    idle = None if a.idle_w is None or b.idle_w is None else lerp(a.idle_w, b.idle_w)
    return _SizeCost(lerp(a.batch_s, b.batch_s), lerp(a.mean_w, b.mean_w), lerp(a.peak_w, b.peak_w), idle,
                  lerp(a.host_s, b.host_s))


class TablePlant:
    """A measured table's (batch size, clock, power limit) -> one batch's phases, for SimDevice."""

    handles_power_limit = True

    def __init__(self, table: MeasuredTable, *, idle_w: float | None = None, host_s: float | None = None,
                 default_idle_w: float | None = None) -> None:
        """``idle_w``/``host_s``: options that replace the table's columns; ``default_idle_w``: the idle
        power where neither gives one (the GPU of a shipped Zeus file)."""
        self.table = table
        self.path = table.path
        self.network, self.dataset, self.optimizer = (*table.workload, "", "", "")[:3]
        rows = [self._resolve(r, idle_w, host_s, default_idle_w) for r in table.rows]
        self.groups: dict[tuple[int | None, float | None], list[TableRow]] = {}
        for r in sorted(rows, key=lambda r: r.batch):
            self.groups.setdefault((r.clock_mhz, r.power_limit_w), []).append(r)
        lo = max(g[0].batch for g in self.groups.values())
        hi = min(g[-1].batch for g in self.groups.values())
        if lo >= hi:
            raise ConfigError("device", f"{table.path}: no batch-size range is measured at every setting "
                              f"(the settings' smallest sizes reach {lo}, their largest only {hi})")
        self.size_range: tuple[int, int] = (lo, hi)
        #: measured clock levels (MHz, ascending) and power limits (W, ascending); empty where not a knob
        self.clocks: tuple[int, ...] = tuple(c for c in table.clocks if c is not None)
        self.limits: list[float] = [w for w in table.limits if w is not None]
        idles = [r.idle_w for r in rows if r.idle_w is not None]
        #: the idle power of host phases and of the trace before the first batch
        self.idle_w: float = min(idles) if idles else min(min(r.mean_w for r in rows), default_idle_w or math.inf)
        self.idle_known = bool(idles)
        self.peak_w = max(r.peak_w for r in rows)
        self.clock_mhz: int | None = None
        self.limit_w: float | None = self.limits[-1] if self.limits else None
        self._cache: dict[int, BatchCost] = {}

    def _resolve(self, r: TableRow, idle_w: float | None, host_s: float | None, default: float | None) -> TableRow:
        """The row with the options applied, checked to be playable."""
        idle = idle_w if idle_w is not None else r.idle_w if r.idle_w is not None else default
        host = host_s if host_s is not None else r.host_s or 0.0
        where = f"{self.table.path}: line {r.line}"
        if idle is None and (not r.flat or host > 0):
            why = "its peak_w is above its mean_w" if not r.flat else "a host phase is asked for"
            raise ConfigError("device", f"{where}: {why}, so the idle power is needed: add an idle_w column or give "
                              "--table-idle-w")
        if idle is not None and not r.flat and r.mean_w <= idle:
            raise ConfigError("device", f"{where}: mean_w {r.mean_w:g} W is not above the idle power {idle:g} W; "
                              "a row with peak above mean is played as compute at the peak and idle between")
        return replace(r, idle_w=idle, host_s=host)

    # knobs -------------------------------------------------------------------------------------
    @property
    def batch_sizes(self) -> list[int]:
        """Every batch size measured at any setting, ascending."""
        return sorted({r.batch for g in self.groups.values() for r in g})

    def set_clock(self, mhz: int | None) -> None:
        """Play the rows measured at ``mhz`` (None: the default); UnsupportedError for a clock not in the table."""
        if mhz is not None and mhz not in self.clocks:
            raise UnsupportedError(f"{mhz} MHz is not a clock level of {self.path}: {list(self.clocks)}")
        if mhz != self.clock_mhz:
            self.clock_mhz = mhz
            self._cache.clear()

    def set_power_limit(self, watts: float | None) -> None:
        """Play the rows measured at ``watts`` (None: the highest limit in the table)."""
        limit = (self.limits[-1] if self.limits else None) if watts is None else float(watts)
        if limit != self.limit_w:
            self.limit_w = limit
            self._cache.clear()

    # lookup ------------------------------------------------------------------------------------
    def _clock_key(self) -> int | None:
        have = {c for c, _ in self.groups}
        if self.clock_mhz is None:
            return None if None in have else self.clocks[-1]
        return self.clock_mhz

    def _in_group(self, rows: Sequence[TableRow], batch: int) -> _SizeCost:
        lo, hi = self.size_range
        b = min(max(batch, lo), hi)
        sizes = [r.batch for r in rows]
        i = bisect.bisect_left(sizes, b)
        if sizes[i] == b:
            p = _row_point(rows[i])
        else:
            a, c = rows[i - 1], rows[i]
            x = (math.log2(b) - math.log2(a.batch)) / (math.log2(c.batch) - math.log2(a.batch))
            per = a.batch_s / a.batch + x * (c.batch_s / c.batch - a.batch_s / a.batch)
            p = _mix(_row_point(a), _row_point(c), x)
            p = replace(p, batch_s=per * b)
        if batch > hi:  # as if split into batches of the largest size: its time per item, its power
            p = replace(p, batch_s=p.batch_s / hi * batch, host_s=p.host_s / hi * batch)
        return p  # below the range: the smallest row's batch, as if padded to it

    def point(self, batch: int) -> _SizeCost:
        """The current setting at ``batch``: interpolated in size, and in the limit between measured ones."""
        clock = self._clock_key()
        limits, lim = self.limits, self.limit_w
        if not limits or lim is None:
            return self._in_group(self.groups[(clock, None)], batch)
        if lim <= limits[0] or lim >= limits[-1]:
            return self._in_group(self.groups[(clock, limits[0] if lim <= limits[0] else limits[-1])], batch)
        j = bisect.bisect_left(limits, lim)
        if limits[j] == lim:
            return self._in_group(self.groups[(clock, lim)], batch)
        a = self._in_group(self.groups[(clock, limits[j - 1])], batch)
        c = self._in_group(self.groups[(clock, limits[j])], batch)
        return _mix(a, c, (lim - limits[j - 1]) / (limits[j] - limits[j - 1]))

    def lookup(self, batch: int) -> tuple[float, float]:
        """(seconds per item, mean watts) of the current setting at ``batch`` (host phase not included)."""
        p = self.point(batch)
        return p.batch_s / batch, p.mean_w

    def cost(self, batch: int, mhz: float) -> BatchCost:
        """One batch: the host phase (if any) and the idle share at idle, then compute at the peak."""
        c = self._cache.get(batch)
        if c is not None:
            return c
        p = self.point(batch)
        host, idle = p.host_s, self.idle_w if p.idle_w is None else p.idle_w
        if p.peak_w <= p.mean_w * 1.001 or p.idle_w is None:
            c = BatchCost(host, 0.0, p.batch_s, p.mean_w, idle, 1.0)
        else:
            share = min(1.0, max(0.0, (p.mean_w - idle) / (p.peak_w - idle)))
            c = BatchCost(host, (1.0 - share) * p.batch_s, share * p.batch_s, p.peak_w, idle, share)
        if len(self._cache) < 4096:
            self._cache[batch] = c
        return c

    def describe(self) -> dict[str, Any]:
        """The table played (file, format, size range, clocks, limits, current setting; Zeus workload)."""
        d: dict[str, Any] = {
            "plant": "measured table",
            "table": str(self.path),
            "table_format": self.table.format,
            "size_range": list(self.size_range),
            "clock_levels_mhz": list(self.clocks),
            "power_limits_w": list(self.limits),
            "table_limit_w": self.limit_w,
            "table_clock_mhz": self.clock_mhz,
        }
        if self.table.format == "zeus":
            d.update(network=self.network, dataset=self.dataset, optimizer=self.optimizer)
        return d


def _row_point(r: TableRow) -> _SizeCost:
    return _SizeCost(r.batch_s, r.mean_w, r.peak_w, r.idle_w, r.host_s or 0.0)


class TableDevice(SimDevice):
    """A SimDevice over a :class:`TablePlant`; its knobs are the table's clocks and power limits.

    ``size_range`` is the (smallest, largest) batch size measured at every setting: every whole size
    in it is a real choice; sizes outside gain nothing (see the module doc). ``read_only`` withholds
    the knobs as a real GPU opened ``--read-only`` does.
    """

    def __init__(self, plant: TablePlant, *, name: str, seed: int = 0, sensor: SensorSpec | None = None,
                 base: GpuSpec | None = None, read_only: bool = False, **kw: Any) -> None:
        board = max([plant.peak_w * 1.1, *plant.limits])
        fields: dict[str, Any] = dict(board_limit_w=board, min_limit_w=min(plant.limits) if plant.limits else board,
                                      idle_w=plant.idle_w, clock_levels_mhz=plant.clocks or (0,))
        if base is None:
            spec = GpuSpec(name=f"table {plant.path.name}", family="measured table", peak_tflops=1.0, pcie_gbps=1.0,
                           dynamic_max_w=board - plant.idle_w, volt_min=1.0, volt_max=1.0, half_batch=1.0,
                           contention_batch=1.0, sensor=sensor or TABLE_SENSOR, **fields)
        else:
            spec = replace(base, **fields)
        kw.setdefault("thermal", False)
        super().__init__(spec, plant, seed=seed, name=name, sensor=sensor, clocks=False, **kw)
        self.plant: TablePlant = plant
        self.read_only = read_only
        self._applying = False
        self._job_limit_w: float | None = None  # set by a direct set_power_limit (--power-limit)
        self.power_limit_w = plant.limit_w  # type: ignore[assignment]
        self.clock_mhz = plant.clocks[-1] if plant.clocks else None  # type: ignore[assignment]
        levels = plant.clocks
        limits = tuple(plant.limits) if len(plant.limits) > 1 else ()
        if read_only and (levels or limits):
            what = " and ".join(w for w, on in (("clocks", levels), ("power limits", limits)) if on)
            self.knobs = DeviceKnobs(
                clocks_withheld=f"{name}'s {what} are not offered: opened read-only", size_range=plant.size_range
            )
        else:
            self.knobs = DeviceKnobs(levels, levels[-1] if levels else None, power_limits_w=limits,
                                     default_power_limit_w=limits[-1] if limits else None,
                                     size_range=plant.size_range)  # fmt: skip

    @property
    def size_range(self) -> tuple[int, int]:
        """The (smallest, largest) batch size measured at every setting of the table."""
        return self.plant.size_range

    def _limiting(self) -> bool:
        return False  # the table's rows at each limit are the card's own limiter, measured

    def set_clock(self, mhz: int | None) -> None:
        """Play the table's rows at ``mhz`` (None: its top clock); UnsupportedError if read-only or no clocks."""
        if mhz is None:
            self.plant.set_clock(None)
            self.clock_mhz = self.plant.clocks[-1] if self.plant.clocks else None  # type: ignore[assignment]
            return
        if self.read_only:
            raise UnsupportedError(f"{self.name}'s clock: this device was opened read-only (settings may not be changed)")
        if not self.plant.clocks:
            raise UnsupportedError(f"{self.name} has no settable clock: its table has no clock_mhz column")
        self.plant.set_clock(mhz)
        self.clock_mhz = mhz

    def apply(self, setting: Setting) -> None:
        """Apply a controller's setting; a power limit set this way lasts one period (see :meth:`set_power_limit`)."""
        self._applying = True
        try:
            super().apply(setting)
        finally:
            self._applying = False

    def set_power_limit(self, watts: float | None) -> None:
        """Through :meth:`apply` (a controller's setting) the limit moves for one period; called
        directly (``--power-limit``, the hw-limit baseline) it is the job's limit, and the knob is
        no longer offered, so a controller's default setting does not undo it."""
        if watts is None:
            self.plant.set_power_limit(self._job_limit_w)
            self.power_limit_w = self.plant.limit_w  # type: ignore[assignment]
            return
        limits = self.plant.limits
        if self.read_only:
            raise ConfigError("power-limit", f"{self.name} was opened --read-only; its power limit is not changed")
        if len(limits) < 2:
            have = f" (its rows are all at {limits[0]:g} W)" if limits else ""
            raise ConfigError("power-limit", f"{self.name} has no settable power limit: its table has no rows at "
                              f"several power limits{have}")
        if not (isinstance(watts, (int, float)) and limits[0] <= watts <= limits[-1]):
            raise ConfigError("power-limit", f"{self.name}'s table measured {limits[0]:g} to {limits[-1]:g} W, got "
                              f"{watts!r}")
        self.plant.set_power_limit(float(watts))
        self.power_limit_w = float(watts)
        if not self._applying:
            self._job_limit_w = float(watts)
            self.knobs = replace(self.knobs, power_limits_w=(), default_power_limit_w=None)

    def describe(self) -> dict[str, Any]:
        """The SimDevice description plus the table setting in force, size range and read-only flag."""
        d = super().describe()
        d.update(clock_mhz=self.clock_mhz, power_limit_w=self.power_limit_w, size_range=list(self.size_range),
                 read_only=self.read_only)
        return d

    def close(self) -> None:
        """Nothing to restore; the table's setting goes back to its defaults."""
        self._job_limit_w = None
        self.set_clock(None)
        self.set_power_limit(None)


# names ---------------------------------------------------------------------------------------
def parse_table_name(name: str) -> tuple[Path, str | None]:
    """``table:PATH.csv[:SELECTOR]`` -> (path, selector). A colon splits off the selector only
    where what is before it names an existing file or ends in ``.csv``."""
    text = name.strip()
    if text.lower().startswith("table:"):
        text = text[6:]
    if not text.strip():
        raise ConfigError("device", "name a measured table as table:PATH.csv[:SELECTOR]")
    head, sep, tail = text.rpartition(":")
    if sep and head and not Path(text).exists() and (head.lower().endswith(".csv") or Path(head).is_file()):
        return Path(head), tail.strip() or None
    return Path(text), None


def absolute_table_name(text: str, base: Path | None = None) -> str:
    """``table:PATH[:SELECTOR]`` with PATH made absolute, a relative one taken from ``base`` (the folder
    of the file that named it: a fleet file, a ``--config`` file) or else the working folder; any other
    device name as it is."""
    if not text.strip().lower().startswith("table:"):
        return text.strip()
    path, selector = parse_table_name(text)
    if base is not None and not path.is_absolute():
        path = base / path
    return f"table:{path.resolve()}" + (f":{selector}" if selector else "")


def open_table_device(
    name: str,
    seed: int = 0,
    *,
    sensor: SensorSpec | None = None,
    idle_w: float | None = None,
    host_s: float | None = None,
    read_only: bool = False,
    **kw: Any,
) -> TableDevice:
    """The device ``table:PATH.csv[:SELECTOR]`` (or a ``sim:zeus-...`` short name)."""
    key = name.strip().lower()
    if key.startswith("sim:zeus-") or key.startswith("zeus-"):
        return make_table_device(name, seed, sensor=sensor, idle_w=idle_w, host_s=host_s, read_only=read_only, **kw)
    path, selector = parse_table_name(name)
    plant = TablePlant(read_table(path, selector), idle_w=idle_w, host_s=host_s)
    label = f"table:{path}" + (f":{selector}" if selector else "")
    return TableDevice(plant, name=label, seed=seed, sensor=sensor or TABLE_SENSOR, read_only=read_only, **kw)


def parse_name(name: str) -> tuple[str, str | None]:
    """``zeus-v100:shufflenetv2@cifar100+adam`` -> (gpu, selector)."""
    text = name.strip()
    if text.lower().startswith("sim:"):
        text = text[4:]
    head, _, spec = text.partition(":")
    gpu = head.lower().removeprefix("zeus-")
    if gpu not in TABLE_GPUS or not spec.strip():
        raise ConfigError(
            "device", f"measured tables are named sim:zeus-<{'|'.join(TABLE_GPUS)}>:<network>[@dataset], got {name!r}"
        )
    return gpu, spec.strip()


def zeus_path(gpu: str) -> Path:
    """The shipped Zeus summary of one GPU (DataUnavailable when the data folder is missing)."""
    return data_dir("zeus-nsdi23") / "zeus-nsdi23" / f"summary_power_{gpu}.csv"


def load_rows(gpu: str, path: Path | None = None) -> list[dict[str, str]]:
    """The raw rows of one GPU's shipped Zeus summary (for checks against the file itself)."""
    import csv

    with open(path or zeus_path(gpu), newline="") as f:
        return list(csv.DictReader(f))


def make_table_plant(name: str, path: Path | None = None, **kw: Any) -> TablePlant:
    """The plant of a ``sim:zeus-<gpu>:<selector>`` short name (``path``: another file in that format)."""
    gpu, selector = parse_name(name)
    plant = TablePlant(read_table(path or zeus_path(gpu), selector), default_idle_w=TABLE_GPUS[gpu].idle_w, **kw)
    plant.gpu = gpu  # type: ignore[attr-defined]
    return plant


def make_table_device(name: str, seed: int = 0, path: Path | None = None, *, sensor: SensorSpec | None = None,
                      idle_w: float | None = None, host_s: float | None = None, read_only: bool = False,
                      **kw: Any) -> TableDevice:
    """``sim:zeus-<gpu>:<network>[@dataset][+optimizer]``: a table device over the shipped Zeus file,
    with that GPU's sensor unless ``sensor`` is given."""
    plant = make_table_plant(name, path, idle_w=idle_w, host_s=host_s)
    gpu = plant.gpu  # type: ignore[attr-defined]
    base = TABLE_GPUS[gpu]
    return TableDevice(plant, name=f"sim:zeus-{gpu}:{plant.network}", seed=seed, sensor=sensor or base.sensor,
                       base=base, read_only=read_only, **kw)
