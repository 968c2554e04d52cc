"""Overhead of BatchSizer's loop against a plain static PyTorch loop, on the CPU, same batch size.

Both loops run the same model on the same uint8 images (sliced from one tensor, normalised in the
model runner), at the same fixed batch size. Ours adds the dynamic batch stream (with its prefetch
thread), the controller (Algorithm 1, held at that size by giving it one size), the control loop
with its per-period power window, and an NVML meter's sampler thread (a fake NVML here: no GPU).
The runs alternate A/B for many short rounds in one process. On a shared machine wall time is
noisy, so three ratios are reported: of the fastest run of each (the headline: each loop's best
case, least disturbed by other processes), the median of the per-round ratios, and of the process
CPU time (all threads, so our prefetch and sampler threads count against us).
Target: ours at most 1% slower (ratio <= 1.01).

    .venv/bin/python benchmarks/overhead.py [--items 512 --batch-size 32 --rounds 15 --json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def small_model(torch):
    """A small real model: torchvision's MobileNetV3-small if installed, else a small CNN."""
    try:
        from torchvision.models import mobilenet_v3_small

        return mobilenet_v3_small(weights=None), "mobilenet_v3_small"
    except ImportError:
        nn = torch.nn
        layers = [nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU()]
        for c in (32, 64, 128):
            layers += [nn.Conv2d(c, c * 2 if c < 128 else c, 3, 2, 1), nn.ReLU()]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 1000)), "small_cnn"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--side", type=int, default=112, help="input image side in pixels")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps the timing steady)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/overhead.json"))
    args = ap.parse_args()

    import torch

    from batchsizer import ConstantCap, ControlLoop, DynamicBatchStream, Window, make_controller
    from batchsizer.hw.device import TorchDevice
    from batchsizer.hw.fake_nvml import FakeGpu, FakeNvml, install_fake_nvml
    from batchsizer.hw.nvml import Nvml
    from batchsizer.hw.nvml_meter import NvmlMeter
    from batchsizer.hw.torch_runner import TorchRunner, normalize

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, model_name = small_model(torch)
    data = torch.randint(0, 256, (args.items, 3, args.side, args.side), dtype=torch.uint8)
    bs = args.batch_size

    def plain() -> tuple[float, float, int]:
        model.eval()
        n = 0
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for i in range(0, args.items, bs):
                x = normalize(data[i : i + bs].to(torch.float32))
                n += len(model(x).argmax(dim=1).tolist())
        return time.perf_counter() - t0, time.process_time() - c0, n

    install_fake_nvml(FakeNvml([FakeGpu(update_period_s=0.02)]))
    nvml = Nvml()
    meter = NvmlMeter(nvml.gpu(0), update_period_s=0.02)
    device = TorchDevice("cpu", TorchRunner(model, "cpu"), meter)

    def ours() -> tuple[float, float, int]:
        controller = make_controller("batchsizer", device.knobs, sizes=(bs,))
        stream = DynamicBatchStream(
            range(args.items), bs, prefetch=1, prepare=lambda items: data[items[0] : items[-1] + 1]
        )
        t0, c0 = time.perf_counter(), time.process_time()
        summary = ControlLoop(device, controller, ConstantCap(1000.0), Window(batches=10)).run(stream)
        return time.perf_counter() - t0, time.process_time() - c0, summary.items

    plain(), ours()  # warm up both (allocator, threads)
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    cpu: dict[str, list[float]] = {"plain": [], "ours": []}
    for r in range(args.rounds):
        for name, fn in (("plain", plain), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("plain", plain)):
            seconds, cpu_s, items = fn()
            assert items == args.items, (name, items)
            times[name].append(seconds)
            cpu[name].append(cpu_s)
    device.close()
    nvml.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    ratio = best["ours"] / best["plain"]
    paired = statistics.median(o / p for o, p in zip(times["ours"], times["plain"]))
    cpu_ratio = statistics.median(cpu["ours"]) / statistics.median(cpu["plain"])
    result = {
        "model": model_name,
        "items": args.items,
        "batch_size": bs,
        "side": args.side,
        "threads": args.threads,
        "rounds": args.rounds,
        "seconds": times,
        "cpu_seconds": cpu,
        "best_s": best,
        "median_s": med,
        "items_per_s_best": {k: args.items / v for k, v in best.items()},
        "ratio_ours_over_plain": ratio,
        "ratio_median_paired": paired,
        "ratio_cpu_time": cpu_ratio,
        "load_average_at_end": _loadavg(),
        "target_ratio": 1.01,
        "meets_target": ratio <= 1.01,
        "torch": torch.__version__,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{model_name}, {args.items} images of {args.side}x{args.side}, batch {bs}, {args.threads} thread(s), {args.rounds} rounds"
    )
    print(f"{'loop':<8}{'best s':>9}{'items/s':>10}{'median s':>10}{'max s':>9}{'cpu s':>8}")
    for k in ("plain", "ours"):
        print(
            f"{k:<8}{best[k]:>9.3f}{args.items / best[k]:>10.1f}{med[k]:>10.3f}{max(times[k]):>9.3f}"
            f"{statistics.median(cpu[k]):>8.3f}"
        )
    print(f"median per-round ratio {paired:.4f}; CPU-time ratio {cpu_ratio:.4f}; load average {_loadavg()}")
    print(
        f"ratio ours/plain (best runs) = {ratio:.4f}  (target <= 1.01: {'met' if ratio <= 1.01 else 'NOT met'})  -> {args.json}"
    )


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
