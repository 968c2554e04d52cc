#!/usr/bin/env python3
"""Everything that needs a real NVIDIA GPU, in one run of under 8 minutes on an H100.

1. The GPU, driver, power sensor and its update period (measured idle at start, and as seen
   in the samples under load).
2. A profile of three models over batch sizes: throughput, peak and mean power.
3. BatchSizer under two software caps, about 60% and 85% of the peak seen, each against the best
   static batch size under the same cap (from the profile), for the same time: throughput ratio
   and time over the cap. Both controllers run: the paper's Algorithm 1 (``batchsizer``) and the
   default (``adaptive``).
JSON goes to --json; a short table is printed last. It NEVER changes the card's clocks or power
limit (the device is opened read-only). ``--dry-run`` runs the same code on the CPU with a fake
NVML and tiny settings, to check the script without a GPU (its numbers mean nothing).

    python scripts/gpu_check.py --device cuda:0 --json gpu_check.json
    python scripts/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import batchsizer  # noqa: F401
except ModuleNotFoundError:  # a bare checkout (the lent GPU machine installs nothing): use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


#: settings of a real run, and of a dry run (CPU + fake NVML): what the command line leaves unset
PRESETS = {
    False: {"device": "cuda:0", "models": "resnet50,mobilenet_v2,googlenet", "sizes": "1,2,4,8,16,32,64,128,256",
            "batches": 10, "warmup": 3, "run_s": 40.0, "window_s": 1.0},
    True: {"device": "cpu", "models": "squeezenet1_1,mobilenet_v3_small,resnet18", "sizes": "1,2,4,8",
           "batches": 3, "warmup": 1, "run_s": 3.0, "window_s": 0.3},
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="BatchSizer's GPU check (read-only: never changes clocks or power limits)")
    real = PRESETS[False]
    ap.add_argument("--device", help=f"[default: {real['device']}]")
    ap.add_argument("--models", help=f"[default: {real['models']}]")
    ap.add_argument("--sizes", help=f"[default: {real['sizes']}]")
    ap.add_argument("--batches", type=int, help=f"measured batches per profile point [default: {real['batches']}]")
    ap.add_argument("--warmup", type=int, help=f"[default: {real['warmup']}]")
    ap.add_argument("--run-s", type=float, help=f"seconds per capped run [default: {real['run_s']:g}]")
    ap.add_argument(
        "--window-s", type=float, help=f"control period: at most this many seconds [default: {real['window_s']:g}]"
    )
    ap.add_argument("--controllers", default="batchsizer,adaptive", help="controllers to run under each cap")
    ap.add_argument("--half", action="store_true", help="run the models in float16")
    ap.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--dry-run", action="store_true", help="CPU + fake NVML + tiny settings, to test this script")
    args = ap.parse_args(argv)
    for key, value in PRESETS[args.dry_run].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def open_workload(args: argparse.Namespace, model: str, meter: Any) -> Any:
    from batchsizer.core.workloads import WorkloadOptions
    from batchsizer.hw.workload import open_real_workload

    # read-only: this script must never change the card's settings (controllers move the batch size only)
    opts = WorkloadOptions(device=args.device, model=model, items=10**9, half=args.half, read_only=True)
    return open_real_workload(opts, meter=meter)


def close_keeping_meter(w: Any) -> None:
    """Close a workload's device (its NVML handle, the model's memory) but not the meter the check shares."""
    from batchsizer.hw.torch_device import NoMeter

    w.device.meter = NoMeter(w.device.name, "detached: the check's shared meter stays open")
    w.device.close()


def seen_update_period(samples: list[Any]) -> float | None:
    """Median time between changes of the reading, from the meter's own samples under load."""
    times = [b.t for a, b in zip(samples, samples[1:]) if b.watts != a.watts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) if len(gaps) >= 3 else None


def capped_run(
    w: Any, controller_name: str, cap: float, seconds: float, window_s: float, **opts: Any
) -> dict[str, Any]:
    from batchsizer import ConstantCap, ControlLoop, DynamicBatchStream, Window, make_controller

    controller = make_controller(controller_name, w.device.knobs, **opts)
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    stream = DynamicBatchStream(w.source, prefetch=w.prefetch, prepare=w.prepare)
    sizes: list[int] = []

    class Sizes:
        def on_start(self, info: Any) -> None: ...
        def on_batch(self, index: int, batch: Any, outcome: Any, setting: Any) -> None:
            sizes.append(len(batch))

        def on_period(self, record: Any) -> None: ...
        def on_event(self, kind: str, message: str, **fields: Any) -> None: ...
        def on_end(self, summary: Any) -> None: ...

    timer.start()
    try:
        s = ControlLoop(
            w.device, controller, ConstantCap(cap), Window(batches=None, seconds=window_s), [Sizes()], stop
        ).run(stream)
    finally:
        timer.cancel()
    return {
        "controller": controller_name,
        "cap_w": cap,
        "seconds": s.duration_s,
        "items": s.items,
        "throughput": s.items / s.duration_s if s.duration_s > 0 else math.nan,
        "over_cap_s": s.over_cap_s,
        "over_cap_fraction": s.over_cap_s / s.duration_s if s.duration_s > 0 else math.nan,
        "violations": s.violations,
        "worst_overshoot_w": s.worst_overshoot_w,
        "last_batch_size": sizes[-1] if sizes else None,
        "median_batch_size": statistics.median(sizes) if sizes else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from batchsizer.cli.commands.profile import run_profile
    from batchsizer.cli.options import parse_int_list
    from batchsizer.hw.gpu import gpu_info
    from batchsizer.hw.nvml import Nvml
    from batchsizer.hw.nvml_meter import NvmlMeter

    if args.dry_run:
        from batchsizer.testing.fake_nvml import FakeGpu, FakeNvml, install_fake_nvml

        fake_gpu = FakeGpu(update_period_s=0.02)
        install_fake_nvml(FakeNvml([fake_gpu]))
    import torch

    from batchsizer.errors import BatchSizerError, ConfigError
    from batchsizer.hw.torch_runner import resolve_name
    from batchsizer.io.paths import check_output_file
    from batchsizer.io.records import write_json_atomic
    from batchsizer.policies import CONTROLLERS

    try:  # every mistake in the settings is found now, not minutes into the run
        sizes = parse_int_list(args.sizes, "sizes")
        models = [resolve_name(m.strip()) for m in args.models.split(",") if m.strip()]
        controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
        unknown = [c for c in controllers if c not in CONTROLLERS or c == "static"]
        if unknown:
            raise ConfigError("controllers", f"unknown {unknown}; choose from {sorted(set(CONTROLLERS) - {'static'})}")
        check_output_file(args.json, "json")
    except BatchSizerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    index = 0 if args.device == "cpu" else int(args.device.split(":")[1]) if ":" in args.device else 0
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with Nvml() as nvml:
        gpu = nvml.gpu(index)
        report["driver"] = nvml.driver_version()
        report["gpu"] = gpu_info(gpu).to_dict()
        meter = NvmlMeter(gpu, probe_s=1.0)
        report["sensor"] = meter.describe()
        print(
            f"GPU {report['gpu']['name']} ({report['gpu']['architecture']}), driver {report['driver']}; "
            f"sensor {meter.source}, update period {meter.update_period_s * 1000:.1f} ms (idle probe)",
            flush=True,
        )
        try:
            profiles: dict[str, Any] = {}
            for model in models:
                w = open_workload(args, model, meter)
                t0 = meter.clock.now()
                profiles[model] = run_profile(
                    w,
                    sizes,
                    batches=args.batches,
                    warmup=args.warmup,
                    echo=lambda s, m=model: print(f"{m}: {s}", flush=True),
                )
                seen = seen_update_period(meter.samples(t0, meter.clock.now()))
                profiles[model]["update_period_seen_s"] = seen
                close_keeping_meter(w)
                del w  # the model's memory is freed here
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            report["profiles"] = profiles
            write_json_atomic(args.json, report)  # what is measured is kept, whatever happens next
            seen_all = [p["update_period_seen_s"] for p in profiles.values() if p["update_period_seen_s"]]
            report["sensor"]["update_period_seen_under_load_s"] = statistics.median(seen_all) if seen_all else None

            # caps from the first model's measured range
            rows = profiles[models[0]]["rows"]
            peak = max((r["peak_w"] for r in rows if math.isfinite(r["peak_w"])), default=math.nan)
            if not math.isfinite(peak):
                raise SystemExit("no power readings during the profile; cannot choose caps")
            w = open_workload(args, models[0], meter)
            runs = []
            for frac in (0.60, 0.85):
                cap = round(frac * peak, 1)
                under = [r for r in rows if math.isfinite(r["peak_w"]) and r["peak_w"] <= cap]
                best = max(under, key=lambda r: r["throughput"])["batch_size"] if under else sizes[0]
                print(
                    f"cap {cap:g} W ({frac:.0%} of {peak:.0f} W): {', '.join(controllers)}, then static batch {best}",
                    flush=True,
                )
                ours = {name: capped_run(w, name, cap, args.run_s, args.window_s, sizes=sizes) for name in controllers}
                static = capped_run(w, "static", cap, args.run_s, args.window_s, batch_size=best)
                runs.append(
                    {
                        "cap_fraction": frac,
                        "cap_w": cap,
                        "best_static_batch_size": best,
                        **ours,
                        "static": static,
                        "throughput_ratio": {
                            name: r["throughput"] / static["throughput"] if static["throughput"] else math.nan
                            for name, r in ours.items()
                        },
                    }
                )
                report["capped"] = {"peak_seen_w": peak, "model": models[0], "runs": runs}
                write_json_atomic(args.json, report)
            close_keeping_meter(w)
        finally:
            meter.close()
    if args.dry_run:  # the fake records every call that would change the card: there must be none
        report["settings_changed"] = list(fake_gpu.calls)
    report["wall_s"] = time.monotonic() - t_start
    write_json_atomic(args.json, report)

    print(f"\n== GPU check{' (DRY RUN: CPU + fake NVML, numbers mean nothing)' if args.dry_run else ''} ==")
    seen = report["sensor"].get("update_period_seen_under_load_s")
    print(
        f"{report['gpu']['name']}  driver {report['driver']}  sensor {report['sensor']['source']}  "
        f"update {report['sensor']['update_period_s'] * 1000:.1f} ms idle, "
        f"{'-' if seen is None else f'{seen * 1000:.1f} ms'} under load"
    )
    print(f"{'model':<20}{'sat. batch':>11}{'best items/s':>14}{'peak W':>9}")
    for model, p in report["profiles"].items():
        best_row = max(p["rows"], key=lambda r: r["throughput"])
        print(
            f"{model:<20}{p['saturation'].get('default', '-'):>11}{best_row['throughput']:>14.1f}"
            f"{max(r['peak_w'] for r in p['rows']):>9.1f}"
        )
    print(
        f"{'cap W':>7}{'controller':>12}{'items/s':>9}{'median bs':>10}{'over %':>8}{'vs static':>10}"
        f"{'static bs':>10}{'static it/s':>12}{'static over %':>14}"
    )
    for r in runs:
        st = r["static"]
        for name in controllers:
            c = r[name]
            print(
                f"{r['cap_w']:>7.1f}{name:>12}{c['throughput']:>9.1f}{c['median_batch_size'] or 0:>10g}"
                f"{100 * c['over_cap_fraction']:>8.1f}{r['throughput_ratio'][name]:>10.3f}"
                f"{r['best_static_batch_size']:>10}{st['throughput']:>12.1f}{100 * st['over_cap_fraction']:>14.1f}"
            )
    if args.dry_run:
        print(f"settings changed on the (fake) GPU: {report['settings_changed'] or 'none'}")
    print(f"wall {report['wall_s']:.0f} s -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
