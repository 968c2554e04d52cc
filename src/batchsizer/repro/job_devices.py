"""Where the reproduction gets its devices: the simulated GPUs, or a small analytic stand-in.

Everything else in :mod:`batchsizer.repro` asks a :data:`DeviceFactory` for a fresh device per
run, so the experiment is the same code whichever device it drives. ``toy`` is an analytic
P40-like device (:class:`ToyGpu`) for quick checks of the harness itself; the reproduction proper
uses the calibrated simulator, :func:`batchsizer.sim.make_sim_device`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchsizer.core.device import Device
from batchsizer.errors import ConfigError
from batchsizer.repro.jobs import Job
from batchsizer.testing.scripted import ScriptedDevice

#: (gpu, model, dataset, seed) -> a fresh device
DeviceFactory = Callable[[str, str, str, int], Device]

P40_LEVELS_MHZ = (544, 632, 734, 835, 949, 1063, 1189, 1303, 1430, 1531)


def is_table_name(gpu: str) -> bool:
    """A job's ``gpu`` that names a measured table (``table:PATH.csv[:SELECTOR]``, ``sim:zeus-...``)."""
    text = gpu.strip().lower()
    return text.startswith("table:") or text.removeprefix("sim:").startswith("zeus-")


def sim_factory(gpu: str, model: str, dataset: str, seed: int) -> Device:
    """A simulated GPU (``batchsizer.sim``) on virtual time; a ``gpu`` naming a measured table
    (:func:`is_table_name`) plays that table instead, and ``model``/``dataset`` are only labels."""
    try:
        from batchsizer.sim import make_sim_device
    except ImportError as exc:  # the simulator is a separate module of this package
        raise ConfigError("gpu", f"the simulated GPU is not available ({exc})") from None
    if is_table_name(gpu):
        from batchsizer.sim.table_plant import open_table_device

        return open_table_device(gpu, seed=seed)
    return make_sim_device(gpu.strip().lower().removeprefix("sim:"), model, dataset, seed=seed)


class ToyGpu(ScriptedDevice):
    """A P40-shaped analytic device with a board power limit, for testing the harness quickly.

    Compute time per batch falls with the clock and rises with size, saturating near 128; power
    is idle plus a part that grows with utilisation and the clock squared. The power limit mode
    picks the highest clock level whose compute power stays under the limit, as the card's own
    controller would on average.
    """

    name = "toy"

    def __init__(self, model: str, dataset: str, seed: int = 0) -> None:
        weight = 1.0 + (sum(map(ord, model.lower())) % 7) / 3.0  # a stable per-model cost
        prep = 0.0015 if dataset == "imagenet" else 0.004
        self._limit: float | None = None
        self._requested: int | None = None

        def time_fn(size: int, mhz: int | None) -> float:
            scale = 1531 / (mhz or 1531)
            return (0.002 + 0.0009 * weight * size * (1 + 64 / (size + 64)) / 2) * scale

        def power_fn(size: int, mhz: int | None) -> float:
            f = (mhz or 1531) / 1531
            util = size / (size + 24)
            return min(250.0, 50.0 + (200.0 + 15.0 * size / 256) * util * f**2)

        super().__init__(
            time_fn, power_fn, idle_w=49.0, prep_s=prep * (1 + 0.1 * (seed % 3)), clock_levels_mhz=P40_LEVELS_MHZ
        )
        self._power_fn = power_fn

    def set_clock(self, mhz: int | None) -> None:
        """Set the clock and remember it as the ceiling the power-limit mode may pick under."""
        self._requested = mhz
        super().set_clock(mhz)

    def set_power_limit(self, watts: float | None) -> None:
        """Set the board limit (None: none) that :meth:`run_batch` enforces by picking a clock."""
        self._limit = watts

    def run_batch(self, batch: Any) -> Any:
        """Under a power limit, run at the highest allowed clock whose power fits it; then as ScriptedDevice."""
        if self._limit is not None:
            top = self._requested or self.knobs.clock_levels_mhz[-1]
            ok = [c for c in self.knobs.clock_levels_mhz if c <= top and self._power_fn(len(batch), c) <= self._limit]
            self.clock_mhz = ok[-1] if ok else self.knobs.clock_levels_mhz[0]
        return super().run_batch(batch)


def toy_factory(gpu: str, model: str, dataset: str, seed: int) -> Device:
    """A :class:`ToyGpu` for the job's model and data set (the GPU name is ignored)."""
    return ToyGpu(model, dataset, seed)


FACTORIES: dict[str, DeviceFactory] = {"sim": sim_factory, "toy": toy_factory}


def get_factory(name: str) -> DeviceFactory:
    """The device factory called ``name`` (``sim`` or ``toy``); ConfigError for another."""
    if name not in FACTORIES:
        raise ConfigError("device", f"unknown device kind {name!r}; choose one of {', '.join(FACTORIES)}")
    return FACTORIES[name]


def open_job_device(factory: DeviceFactory, job: Job, seed: int) -> Device:
    """A fresh device for ``job`` with ``seed``, from ``factory``."""
    return factory(job.gpu, job.model, job.dataset, seed)
