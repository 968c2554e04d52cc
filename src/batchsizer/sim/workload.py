"""``sim:*`` device names to a ready :class:`~batchsizer.workloads.Workload` on the simulated GPU.

``sim:p40`` (also ``sim:v100``, ``sim:a100``, ``sim:h100``; bare ``sim`` is the P40) runs
``opts.model`` on ``opts.dataset`` through the analytic plant; ``sim:zeus-v100:shufflenetv2``
(``sim:zeus-<v100|a40>:<network>[@<dataset>]``) serves a measured Zeus table instead, and ignores
the model and dataset. The items are just indices: the simulator needs no data. ``opts.extra["sensor"]``
may pick ``"average"`` (the H100's 1 s nvmlDeviceGetPowerUsage) instead of the default sensor.
"""

from __future__ import annotations

from batchsizer.errors import ConfigError
from batchsizer.sim import GPU_NAMES, make_sim_device
from batchsizer.workloads import Workload, WorkloadOptions


def open_sim_workload(opts: WorkloadOptions) -> Workload:
    """The simulated device named by ``opts.device`` and ``opts.items`` indices to run through it."""
    parts = opts.device.strip().split(":", 1)
    rest = parts[1].strip().lower() if len(parts) > 1 and parts[1].strip() else "p40"
    if opts.items < 1:
        raise ConfigError("items", f"must be at least 1, got {opts.items}")
    if rest.startswith("zeus-"):
        from batchsizer.sim.table_plant import make_table_device

        device = make_table_device(rest, seed=opts.seed)
        info = {"device": f"sim:{rest}", "plant": "measured table", **device.plant.describe(), "seed": opts.seed}
        return Workload(device, range(opts.items), info=info)
    if rest not in GPU_NAMES:
        raise ConfigError(
            "device",
            f"unknown simulated GPU {opts.device!r}; use one of {', '.join('sim:' + g for g in GPU_NAMES)} "
            "or a measured table such as sim:zeus-v100:shufflenetv2",
        )
    device = make_sim_device(rest, opts.model, opts.dataset, seed=opts.seed, sensor=opts.extra.get("sensor"))
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
