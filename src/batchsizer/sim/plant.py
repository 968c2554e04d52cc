"""The plant model: pure functions from (GPU, DNN, dataset, batch size, clock) to time and power.

One batch is three phases. The host prepares it (decode, resize; the paper's pipeline was
CPU-bound, so this is most of the time on the P40) while the GPU idles at ``idle_w``; it is copied
over PCIe; then the GPU computes it. Compute time is a fixed launch cost per kernel plus work
that needs ``batch + half`` image-slots of time (occupancy ``b/(b+half)``: efficiency rises with
the batch size and saturates), stretched past the contention batch (throughput flat or falling)
and scaled by the clock. Compute power is idle plus a dynamic part: the model's intensity times
``f*V(f)^2`` times an activity of SM occupancy and memory traffic; the memory term keeps
growing past SM saturation, so power still rises where throughput no longer does (the paper's
Fig. 1 and 2). It is clamped at the board limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchsizer.sim.gpus import GpuSpec
from batchsizer.sim.models import KERNEL_S, DatasetSpec, ModelSpec

#: share of the dynamic power that follows SM occupancy; the rest follows memory traffic
SM_SHARE = 0.75
MEM_SHARE = 1.0 - SM_SHARE
#: extra time per image per doubling of the batch past the contention batch
CONTENTION_PER_DOUBLING = 0.10
#: power drawn while the PCIe copy runs, above idle (W); 0 keeps one idle segment per batch (cheaper)
TRANSFER_EXTRA_W = 0.0


@dataclass(frozen=True, slots=True)
class BatchCost:
    """One batch, before variation: phase durations (s) and the compute phase's true power (W)."""

    host_s: float
    transfer_s: float
    compute_s: float
    compute_w: float
    transfer_w: float
    occupancy: float

    @property
    def total_s(self) -> float:
        """The batch's time in seconds: host, transfer and compute phases together."""
        return self.host_s + self.transfer_s + self.compute_s


def half_batch(gpu: GpuSpec, model: ModelSpec) -> float:
    """The batch size at which ``model`` fills half of ``gpu`` (the GPU's figure scaled by the model's)."""
    return gpu.half_batch * model.half_factor


def occupancy(gpu: GpuSpec, model: ModelSpec, batch: int) -> float:
    """Fraction of the SMs a batch keeps busy: b/(b+half)."""
    h = half_batch(gpu, model)
    return batch / (batch + h)


def memory_activity(gpu: GpuSpec, batch: int) -> float:
    """Memory traffic relative to its most, growing with log2(batch) up to 4x the contention batch."""
    return min(1.0, math.log2(1 + batch) / math.log2(1 + 4 * gpu.contention_batch))


def compute_time(gpu: GpuSpec, model: ModelSpec, batch: int, mhz: float) -> tuple[float, float]:
    """(launch time, work time) of one batch's GPU compute at ``mhz``, in seconds."""
    per_image = model.gflops * 1e9 / (gpu.peak_tflops * 1e12 * model.efficiency)
    work = (batch + half_batch(gpu, model)) * per_image
    if batch > gpu.contention_batch:
        work *= 1.0 + CONTENTION_PER_DOUBLING * math.log2(batch / gpu.contention_batch)
    work *= (gpu.top_clock_mhz / mhz) ** model.clock_beta
    return model.kernels * KERNEL_S, work


def compute_power(gpu: GpuSpec, model: ModelSpec, batch: int, mhz: float) -> float:
    """True board power while the batch computes (W), at most the board limit."""
    launch, work = compute_time(gpu, model, batch, mhz)
    busy = work / (launch + work)
    activity = SM_SHARE * occupancy(gpu, model, batch) * busy + MEM_SHARE * memory_activity(gpu, batch)
    watts = gpu.idle_w + gpu.dynamic_max_w * model.intensity * gpu.dynamic_scale(mhz) * activity
    return min(watts, gpu.board_limit_w)


def host_time(dataset: DatasetSpec, batch: int, host_scale: float = 1.0) -> float:
    """Host-side preparation of one batch (s); ``host_scale`` < 1 for a faster host pipeline."""
    return (dataset.batch_s + dataset.image_s * batch) * host_scale


def transfer_time(gpu: GpuSpec, model: ModelSpec, batch: int) -> float:
    """Copying the batch as float32 tensors over PCIe (s)."""
    return batch * 3 * model.input_px**2 * 4 / (gpu.pcie_gbps * 1e9)


def batch_cost(
    gpu: GpuSpec, model: ModelSpec, dataset: DatasetSpec, batch: int, mhz: float, host_scale: float = 1.0
) -> BatchCost:
    """Everything about one batch at a clock, before per-batch variation and thermal drift."""
    launch, work = compute_time(gpu, model, batch, mhz)
    return BatchCost(
        host_s=host_time(dataset, batch, host_scale),
        transfer_s=transfer_time(gpu, model, batch),
        compute_s=launch + work,
        compute_w=compute_power(gpu, model, batch, mhz),
        transfer_w=gpu.idle_w + TRANSFER_EXTRA_W,
        occupancy=occupancy(gpu, model, batch),
    )


@dataclass(frozen=True, slots=True)
class SteadyState:
    """A batch size held for ever: images/s, the compute-phase power (the spikes) and the mean power."""

    batch: int
    mhz: float
    throughput: float
    peak_w: float
    mean_w: float


def steady_state(
    gpu: GpuSpec, model: ModelSpec, dataset: DatasetSpec, batch: int, mhz: float | None = None, host_scale: float = 1.0
) -> SteadyState:
    """The noiseless steady state of a static batch size (for calibration and tables)."""
    f = float(gpu.top_clock_mhz if mhz is None else mhz)
    c = batch_cost(gpu, model, dataset, batch, f, host_scale)
    energy = gpu.idle_w * c.host_s + c.transfer_w * c.transfer_s + c.compute_w * c.compute_s
    return SteadyState(batch, f, batch / c.total_s, c.compute_w, energy / c.total_s)


class ModelPlant:
    """The analytic plant for one (GPU, DNN, dataset), with costs cached per (batch, clock)."""

    handles_power_limit = False

    def __init__(self, gpu: GpuSpec, model: ModelSpec, dataset: DatasetSpec, host_scale: float = 1.0) -> None:
        self.gpu, self.model, self.dataset, self.host_scale = gpu, model, dataset, host_scale
        self.idle_w = gpu.idle_w
        self._cache: dict[tuple[int, float], BatchCost] = {}

    def cost(self, batch: int, mhz: float) -> BatchCost:
        """The batch's phases and power at ``mhz``, before per-batch variation; cached per (batch, clock)."""
        key = (batch, mhz)
        c = self._cache.get(key)
        if c is None:
            c = batch_cost(self.gpu, self.model, self.dataset, batch, mhz, self.host_scale)
            if len(self._cache) < 4096:
                self._cache[key] = c
        return c

    def describe(self) -> dict[str, object]:
        """The workload this plant models (DNN, data set, host time scale), for the device's description."""
        return {"plant": "model", "model": self.model.abbr, "dataset": self.dataset.name, "host_scale": self.host_scale}
