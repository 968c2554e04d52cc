"""``sim:*`` device names to a ready :class:`~batchsizer.core.workloads.Workload` on the simulated GPU.

``sim:p40`` (also ``sim:v100``, ``sim:a100``, ``sim:h100``; bare ``sim`` is the P40) runs
``opts.model`` on ``opts.dataset`` through the analytic plant; ``sim:zeus-v100:shufflenetv2``
(``sim:zeus-<v100|a40>:<network>[@<dataset>]``) serves a measured Zeus table instead, and ignores
the model and dataset. The items are just indices: the simulator needs no data. ``opts.sim_sensor``
may pick ``"average"`` (the H100's 1 s nvmlDeviceGetPowerUsage) instead of the default sensor;
``sensor_update_ms``/``sensor_window_ms``/``sensor_noise_w`` override the sensor's fields, and
``sim_host_scale`` scales the host phase (``serve``'s, whose request handlers decode the images).
``table:PATH.csv[:SELECTOR]`` (:func:`open_table_workload`) plays any measured table (docs/tables.md),
with ``opts.table_idle_w``/``opts.table_host_ms`` and ``opts.read_only``.
"""

from __future__ import annotations

from typing import Any

from batchsizer.core.workloads import Workload, WorkloadOptions
from batchsizer.errors import ConfigError
from batchsizer.sim import GPU_NAMES, make_sim_device
from batchsizer.sim.gpus import override_sensor


def sensor_overrides(opts: WorkloadOptions) -> dict[str, float | None]:
    """The ``--sensor-*`` options given (None where not)."""
    return {"update_ms": opts.sensor_update_ms, "window_ms": opts.sensor_window_ms, "noise_w": opts.sensor_noise_w}


def _table_device(name: str, opts: WorkloadOptions) -> Any:
    """A table device (``table:...`` or ``sim:zeus-...``) with the table and sensor options applied."""
    from batchsizer.sim.table_plant import TABLE_GPUS, TABLE_SENSOR, open_table_device, parse_name

    base = TABLE_GPUS[parse_name(name)[0]].sensor if name.lower().startswith("sim:zeus-") else TABLE_SENSOR
    host_ms = opts.table_host_ms
    return open_table_device(
        name,
        seed=opts.seed,
        sensor=override_sensor(base, **sensor_overrides(opts)),
        idle_w=opts.table_idle_w,
        host_s=None if host_ms is None else host_ms / 1000.0,
        read_only=opts.read_only,
    )


def open_table_workload(opts: WorkloadOptions) -> Workload:
    """``table:PATH.csv[:SELECTOR]``: a measured table played back as the GPU, ``opts.items`` indices."""
    if opts.items < 1:
        raise ConfigError("items", f"must be at least 1, got {opts.items}")
    device = _table_device(opts.device, opts)
    info = {"device": device.name, **device.plant.describe(), "items": opts.items, "seed": opts.seed,
            "sensor": device.sensor_spec.kind}
    return Workload(device, range(opts.items), info=info)


def open_sim_workload(opts: WorkloadOptions) -> Workload:
    """The simulated device named by ``opts.device`` and ``opts.items`` indices to run through it."""
    parts = opts.device.strip().split(":", 1)
    rest = parts[1].strip().lower() if len(parts) > 1 else "p40"
    if opts.items < 1:
        raise ConfigError("items", f"must be at least 1, got {opts.items}")
    if rest.startswith("zeus-"):
        device = _table_device(f"sim:{rest}", opts)
        info = {"device": f"sim:{rest}", **device.plant.describe(), "seed": opts.seed, "sensor": device.sensor_spec.kind}
        return Workload(device, range(opts.items), info=info)
    if rest not in GPU_NAMES:
        raise ConfigError(
            "device",
            f"unknown simulated GPU {opts.device!r}; use one of {', '.join('sim:' + g for g in GPU_NAMES)} "
            "or a measured table such as sim:zeus-v100:shufflenetv2",
        )
    from batchsizer.sim.gpus import get_gpu, sensor_for

    sensor = override_sensor(sensor_for(get_gpu(rest), opts.sim_sensor), **sensor_overrides(opts))
    device = make_sim_device(rest, opts.model, opts.dataset, seed=opts.seed, sensor=sensor, host_scale=opts.sim_host_scale)
    plant = device.plant
    info = {
        "device": f"sim:{rest}",
        "gpu": device.gpu.name,
        "model": plant.model.abbr,  # type: ignore[attr-defined]
        "dataset": plant.dataset.name,  # type: ignore[attr-defined]
        "items": opts.items,
        "seed": opts.seed,
        "sensor": device.sensor_spec.kind,
    }
    return Workload(device, range(opts.items), info=info)
