"""A measured-table plant: the Zeus NSDI'23 traces (``shared/data/zeus-nsdi23``) served as the GPU.

Each row of ``summary_power_{v100,a40}.csv`` is one (workload, batch size, power limit), measured
in steady state: time per epoch and average power. The plant turns it into one batch's compute
time (``time_per_epoch / samples_per_epoch * batch``) at that row's average power, interpolating
linearly in log2(batch size) and in the power limit between measured rows (and holding the edge
rows outside them). Shapes are whatever was measured, non-monotone power included, so controllers
meet real plants, not only the analytic model's. There is no host phase (training kept the GPU
busy) and no clock knob; ``set_power_limit`` picks the rows for that limit.

Device names: ``sim:zeus-<v100|a40>:<network>[@<dataset>][+<optimizer>]``, e.g.
``sim:zeus-v100:shufflenetv2`` or ``sim:zeus-a40:bert_base_uncased@squad``.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.shared_data import data_dir
from batchsizer.sim.device import SimDevice
from batchsizer.sim.gpus import GPUS, GpuSpec, SensorSpec
from batchsizer.sim.plant import BatchCost

#: public training-set sizes (samples per epoch) of the Zeus workloads
SAMPLES_PER_EPOCH: dict[str, int] = {
    "cifar100": 50_000,
    "imagenet": 1_281_167,
    "librispeech": 281_241,
    "movielens-1m": 1_000_209,
    "squad": 87_599,
    "sentiment140": 1_600_000,
}

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


@dataclasses.dataclass(frozen=True)
class Row:
    batch: int
    limit_w: float
    time_per_epoch_s: float
    power_w: float


def load_rows(gpu: str, path: Path | None = None) -> list[dict[str, str]]:
    """The raw rows of one GPU's Zeus summary (DataUnavailable when the data folder is missing)."""
    p = path or data_dir("zeus-nsdi23") / "zeus-nsdi23" / f"summary_power_{gpu}.csv"
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


class TablePlant:
    """One Zeus workload's measured (batch size, power limit) -> (seconds per sample, watts)."""

    handles_power_limit = True

    def __init__(self, gpu: str, network: str, dataset: str, optimizer: str, rows: list[Row], idle_w: float) -> None:
        self.gpu, self.network, self.dataset, self.optimizer = gpu, network, dataset, optimizer
        self.idle_w = idle_w
        self.samples = SAMPLES_PER_EPOCH[dataset]
        by_limit: dict[float, dict[int, Row]] = defaultdict(dict)
        for r in rows:
            by_limit[r.limit_w][r.batch] = r
        self.limits = sorted(by_limit)
        self.table = by_limit
        self.limit_w = self.limits[-1]
        self._cache: dict[int, BatchCost] = {}

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({b for rows in self.table.values() for b in rows})

    def set_power_limit(self, watts: float | None) -> None:
        self.limit_w = self.limits[-1] if watts is None else float(watts)
        self._cache.clear()

    def _at_limit(self, limit: float, batch: int) -> tuple[float, float]:
        """(seconds per sample, watts) at a measured limit, interpolated in log2(batch)."""
        rows = self.table[limit]
        sizes = sorted(rows)
        if batch <= sizes[0] or batch >= sizes[-1]:
            r = rows[sizes[0] if batch <= sizes[0] else sizes[-1]]
            return r.time_per_epoch_s / self.samples, r.power_w
        i = bisect.bisect_left(sizes, batch)
        lo, hi = rows[sizes[i - 1]], rows[sizes[i]]
        if sizes[i] == batch:
            return hi.time_per_epoch_s / self.samples, hi.power_w
        x = (math.log2(batch) - math.log2(lo.batch)) / (math.log2(hi.batch) - math.log2(lo.batch))
        per = (lo.time_per_epoch_s + x * (hi.time_per_epoch_s - lo.time_per_epoch_s)) / self.samples
        return per, lo.power_w + x * (hi.power_w - lo.power_w)

    def lookup(self, batch: int) -> tuple[float, float]:
        """(seconds per sample, watts) at the current power limit."""
        limits, lim = self.limits, self.limit_w
        if lim <= limits[0] or lim >= limits[-1]:
            return self._at_limit(limits[0] if lim <= limits[0] else limits[-1], batch)
        j = bisect.bisect_left(limits, lim)
        if limits[j] == lim:
            return self._at_limit(lim, batch)
        (t0, p0), (t1, p1) = self._at_limit(limits[j - 1], batch), self._at_limit(limits[j], batch)
        x = (lim - limits[j - 1]) / (limits[j] - limits[j - 1])
        return t0 + x * (t1 - t0), p0 + x * (p1 - p0)

    def cost(self, batch: int, mhz: float) -> BatchCost:
        c = self._cache.get(batch)
        if c is None:
            per, watts = self.lookup(batch)
            c = BatchCost(0.0, 0.0, per * batch, watts, self.idle_w, 1.0)
            self._cache[batch] = c
        return c

    def describe(self) -> dict[str, Any]:
        return {
            "plant": "zeus table",
            "table_gpu": self.gpu,
            "network": self.network,
            "dataset": self.dataset,
            "optimizer": self.optimizer,
            "power_limit_w": self.limit_w,
        }


def parse_name(name: str) -> tuple[str, str, str | None, str | None]:
    """``zeus-v100:shufflenetv2@cifar100+adam`` -> (gpu, network, dataset, optimizer)."""
    text = name.strip().lower()
    if text.startswith("sim:"):
        text = text[4:]
    head, _, spec = text.partition(":")
    gpu = head.removeprefix("zeus-")
    if gpu not in TABLE_GPUS or not spec:
        raise ConfigError(
            "device", f"measured tables are named sim:zeus-<{'|'.join(TABLE_GPUS)}>:<network>[@dataset], got {name!r}"
        )
    spec, _, optimizer = spec.partition("+")
    network, _, dataset = spec.partition("@")
    return gpu, network, dataset or None, optimizer or None


def make_table_plant(name: str, path: Path | None = None) -> TablePlant:
    gpu, network, dataset, optimizer = parse_name(name)
    raw = load_rows(gpu, path)
    combos = sorted({(r["network"], r["dataset"], r["optimizer"]) for r in raw})
    chosen = [c for c in combos if c[0] == network and (dataset is None or c[1] == dataset)]
    if optimizer is not None:
        chosen = [c for c in chosen if c[2] == optimizer]
    if not chosen or len({c[1] for c in chosen}) > 1:
        allowed = ", ".join(f"{n}@{d}+{o}" for n, d, o in combos)
        problem = "is ambiguous; add @dataset" if chosen else "is not in the table"
        raise ConfigError("device", f"{network!r} {problem}; {gpu} has {allowed}")
    net, ds, opt = chosen[0]  # first optimizer alphabetically unless one was named
    rows = [
        Row(int(r["batch_size"]), float(r["power_limit"]), float(r["time_per_epoch"]), float(r["average_power"]))
        for r in raw
        if (r["network"], r["dataset"], r["optimizer"]) == (net, ds, opt)
    ]
    return TablePlant(gpu, net, ds, opt, rows, TABLE_GPUS[gpu].idle_w)


def make_table_device(name: str, seed: int = 0, path: Path | None = None, **kw: Any) -> SimDevice:
    """A SimDevice (sensor, virtual time, variation) whose plant is the named measured table."""
    plant = make_table_plant(name, path)
    spec = dataclasses.replace(TABLE_GPUS[plant.gpu], board_limit_w=max(plant.limits), min_limit_w=min(plant.limits))
    kw.setdefault("thermal", False)
    return SimDevice(spec, plant, seed=seed, name=f"sim:zeus-{plant.gpu}:{plant.network}", clocks=False, **kw)
