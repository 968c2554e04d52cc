"""The simulated GPU: the default device of ``batchsizer run``, calibrated to measured data.

For other code (the reproduction, new controllers, benchmarks):

* :func:`make_sim_device` ``(gpu, model, dataset, seed=0, **kw) -> SimDevice``: ``gpu`` one of
  :data:`GPU_NAMES` (``p40``, ``v100``, ``a100``, ``h100``), ``model`` one of :data:`MODEL_NAMES`
  (the paper's Table 1 abbreviations, any case, aliases such as ``resnet50``), ``dataset`` one of
  :data:`DATASET_NAMES`. Keyword options: ``host_scale`` (host-side cost multiplier, 1 = the
  paper's CPU-bound pipeline), ``sensor`` (``"default"``: what batchsizer's NVML meter reads, the
  instant field on the H100; ``"average"``: nvmlDeviceGetPowerUsage, a 1 s average on the H100; or a
  :class:`SensorSpec`),
  ``time_cv``/``power_cv``/``host_cv`` (per-batch variation), ``thermal`` (drift on/off).
* ``device.knobs.clock_levels_mhz``: the P40's are the paper's ten levels (544..1531 MHz); the
  others ten levels over their real range; the default clock is the top one.
* ``device.reference_meter``: the true power, for comparison with ``device.meter`` (the sensor).
* :func:`make_table_device` (``sim:zeus-v100:shufflenetv2``): the measured Zeus tables as the plant;
  :func:`batchsizer.sim.table_plant.open_table_device` (``table:PATH.csv[:SELECTOR]``) any measured
  table (docs/tables.md), with ``device.size_range`` and the table's clocks and power limits as knobs.
* :func:`batchsizer.sim.plant.steady_state`: noiseless throughput and power of a static setting.
"""

from __future__ import annotations

from typing import Any

from batchsizer.sim.gpus import GPUS, HOPPER_AVERAGE, HOPPER_INSTANT, GpuSpec, SensorSpec, get_gpu
from batchsizer.sim.models import DATASETS, MODELS, get_dataset, get_model
from batchsizer.sim.plant import ModelPlant, steady_state
from batchsizer.sim.sim_device import SimDevice

GPU_NAMES: tuple[str, ...] = tuple(GPUS)
MODEL_NAMES: tuple[str, ...] = tuple(m.abbr for m in MODELS.values())
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def make_sim_device(gpu: str, model: str, dataset: str, seed: int = 0, **kw: Any) -> SimDevice:
    """A simulated ``gpu`` running ``model`` on ``dataset`` (names checked, ConfigError otherwise)."""
    spec = get_gpu(gpu)
    plant = ModelPlant(spec, get_model(model), get_dataset(dataset), host_scale=float(kw.pop("host_scale", 1.0)))
    return SimDevice(spec, plant, seed=seed, name=kw.pop("name", f"sim:{gpu.strip().lower()}"), **kw)


def make_table_device(name: str, seed: int = 0, **kw: Any) -> SimDevice:
    """A device whose plant is a measured Zeus table; ``name`` like ``zeus-v100:shufflenetv2``."""
    from batchsizer.sim.table_plant import make_table_device as _make

    return _make(name, seed=seed, **kw)


__all__ = [
    "DATASET_NAMES",
    "GPU_NAMES",
    "HOPPER_AVERAGE",
    "HOPPER_INSTANT",
    "MODEL_NAMES",
    "GpuSpec",
    "SensorSpec",
    "SimDevice",
    "make_sim_device",
    "make_table_device",
    "steady_state",
]
