"""``cpu`` / ``cuda[:N]`` workloads: a PyTorch model over a folder of images or synthetic input."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from batchsizer.core.telemetry import PowerMeter
from batchsizer.core.workloads import Workload, WorkloadOptions
from batchsizer.errors import DeviceError
from batchsizer.hw.model_source import DEFAULT_INPUT_SIDE, load_model
from batchsizer.hw.torch_device import NoMeter, TorchDevice
from batchsizer.hw.torch_runner import TorchRunner, check_device_available, parse_device, torch_module

log = logging.getLogger(__name__)

#: synthetic input cycles through this many distinct random images
SYNTHETIC_POOL = 64


class SyntheticInput:
    """``prepare`` for synthetic items: a uint8 NCHW batch cut from a fixed pool of random images."""

    def __init__(self, side: int, seed: int = 0, pool: int = SYNTHETIC_POOL) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self.pool = rng.integers(0, 256, size=(pool, 3, side, side), dtype=np.uint8)

    def __call__(self, items: list[int]) -> Any:
        """The batch for these item indices: pool images by index modulo the pool size, uint8 NCHW."""
        import numpy as np

        idx = np.asarray(items, dtype=np.int64) % len(self.pool)
        return self.pool[idx]


def cpu_meter() -> PowerMeter:
    """RAPL where readable, else a :class:`NoMeter` carrying the reason."""
    from batchsizer.hw.rapl import RaplMeter

    try:
        return RaplMeter()
    except DeviceError as exc:
        log.info("cpu: no power meter: %s", exc)
        return NoMeter("cpu", str(exc))


def open_real_workload(opts: WorkloadOptions, model: Any = None, meter: PowerMeter | None = None) -> Workload:
    """A real workload. ``model`` (a ``torch.nn.Module``) overrides ``opts.model``; ``meter`` overrides the device's own."""
    torch_module()
    device_name = parse_device(opts.device)
    check_device_available(device_name)
    if opts.images is not None:  # a bad folder is reported before a model is built
        from batchsizer.hw.images import list_image_folder

        listed = list_image_folder(opts.images)
    side_asked = opts.input_size
    if model is None:
        loaded = load_model(
            opts.model,
            opts.checkpoint,
            side_asked,
            device=device_name,
            half=opts.half,
            channels_last=opts.channels_last,
        )
        model, model_name, side = loaded.module, loaded.name, loaded.side
    else:
        model_name = type(model).__name__
        side = int(side_asked or DEFAULT_INPUT_SIDE)
    runner = TorchRunner(model, device_name, half=opts.half, channels_last=opts.channels_last)
    closers: list[Callable[[], None]] = []
    info: dict[str, Any] = {
        "device": device_name,
        "model": model_name,
        "half": opts.half,
        "channels_last": opts.channels_last,
    }
    if opts.images is not None:
        from batchsizer.hw.images import ImageBatcher

        on_bad = opts.on_bad_image
        batcher = ImageBatcher(crop=side, resize=round(side * 256 / 224), workers=opts.workers, on_bad=on_bad)
        source, classes = listed
        prepare: Callable[[list[Any]], Any] = batcher
        closers.append(batcher.close)
        info.update(
            images=str(opts.images), items=len(source), classes=len(classes), workers=opts.workers, on_bad_image=on_bad
        )
        prefetch = 2
    else:
        source = range(opts.items)
        prepare = SyntheticInput(side, opts.seed)
        info.update(images=None, items=opts.items, input="synthetic")
        # a GPU waits for nothing while the next batch is cut ahead; on the CPU the thread's hand-offs
        # would cost the model more than cutting a batch from memory does (benchmarks/overhead.py)
        prefetch = 0 if device_name == "cpu" else 1
    try:
        device = _open_device(device_name, runner, meter, closers, read_only=opts.read_only)
    except BaseException:
        for close in closers:
            close()
        raise
    info["meter"] = device.meter.source
    return Workload(device, source, prepare, prefetch, info)


def _open_device(
    name: str, runner: TorchRunner, meter: PowerMeter | None, closers: list[Callable[[], None]], *, read_only: bool
) -> TorchDevice:
    if name == "cpu":
        return TorchDevice("cpu", runner, meter or cpu_meter(), closers=closers)
    from batchsizer.hw.gpu import CudaDevice, open_nvml_gpu

    nvml, gpu = open_nvml_gpu(int(name.split(":")[1]))
    try:
        allow = False if read_only else None  # None: if this process is permitted to
        return CudaDevice(name, runner, nvml, gpu, meter=meter, closers=closers, allow_changes=allow)  # type: ignore[arg-type]
    except BaseException:
        nvml.close()
        raise
