"""Overhead of BatchSizer's loop against a plain static PyTorch loop, on the CPU, same batch size.

Both loops run the same model on the same uint8 images, already in memory (sliced from one tensor,
normalised the same way), at the same fixed batch size, in one process. Ours adds what ``batchsizer
run`` adds: the dynamic batch stream (with a prefetch thread only if ``--prefetch`` > 0: ``batchsizer
run`` prefetches decoded ``--images`` batches, not in-memory input, where a thread only costs), the controller (Algorithm 1, held at
that size by giving it one size), the control loop with its telemetry guard and per-period power
window, the model runner, and an NVML meter's sampler thread (over a fake NVML: no GPU here).

Fairness: both loops are warmed up twice, then alternate A/B (order flipped every round) for many
rounds, so drift and other processes hit both alike. The headline is the median of the per-round
ratios ours/plain, with a bootstrap 95% interval; the ratio of the best runs and the per-round
ratio of process CPU time (all threads: our prefetch and sampler threads count against us) are
shown too, and the minor page faults of each loop. By default glibc is told to keep freed memory
(``batchsizer.hw.memory``, as ``batchsizer run`` does on real devices; it is process-wide, so the
plain loop gets it too). ``--allocator default`` leaves glibc's defaults: then each loop's speed
depends on how its frees happen to line up with heap trimming, and the ratio swings run to run.
Target: ours at most 1% slower (median ratio <= 1.01).

    .venv/bin/python benchmarks/overhead.py [--items 256 --batch-size 32 --rounds 201 --allocator retain]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET = 1.01


def small_model(torch: Any) -> tuple[Any, str]:
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


def bootstrap_median_ci(values: list[float], n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the median by resampling the per-round ratios."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arr = np.asarray(values)
    meds = np.median(rng.choice(arr, size=(n, len(arr)), replace=True), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def timed(fn: Callable[[], int]) -> tuple[float, float, int, int]:
    """(wall s, process CPU s, minor page faults, items) of one run."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    items = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--side", type=int, default=112, help="input image side in pixels")
    ap.add_argument("--rounds", type=int, default=201)
    ap.add_argument("--interleaved-rounds", type=int, default=40, help="runs of the batch-interleaved phase")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps the timing steady)")
    ap.add_argument("--allocator", choices=("retain", "default"), default="retain")
    ap.add_argument(
        "--prefetch",
        type=int,
        default=0,
        help="batches our stream prepares ahead in a thread (batchsizer run: 0 for in-memory input, 2 for --images)",
    )
    ap.add_argument("--json", type=Path, default=Path("benchmarks/overhead.json"))
    args = ap.parse_args()

    import torch

    from batchsizer import ConstantCap, ControlLoop, DynamicBatchStream, Window, make_controller
    from batchsizer.core.loop import LoopObserver
    from batchsizer.hw.memory import retain_freed_memory
    from batchsizer.hw.nvml import Nvml
    from batchsizer.hw.nvml_meter import NvmlMeter
    from batchsizer.hw.torch_device import NoMeter, TorchDevice
    from batchsizer.hw.torch_runner import TorchRunner, normalize
    from batchsizer.testing.fake_nvml import FakeGpu, FakeNvml, install_fake_nvml

    retain = args.allocator == "retain"
    retained = retain_freed_memory() if retain else False
    load_start = _loadavg()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, model_name = small_model(torch)
    model.eval()
    data = torch.randint(0, 256, (args.items, 3, args.side, args.side), dtype=torch.uint8)
    bs = args.batch_size

    # time inside the model section of each batch (input conversion to argmax: what TorchRunner times)
    model_s: dict[str, list[float]] = {"plain": [], "plain+sampler": [], "ours": []}

    plain_between: list[float] = []  # from the end of one model section to the start of the next

    def plain(name: str = "plain") -> int:
        n = 0
        last_end = None
        with torch.inference_mode():
            for i in range(0, args.items, bs):
                t0 = time.monotonic()
                predicted = model(normalize(data[i : i + bs].to(torch.float32))).argmax(dim=1)
                t1 = time.monotonic()
                model_s[name].append(t1 - t0)
                if name == "plain" and last_end is not None:
                    plain_between.append(t0 - last_end)
                last_end = t1
                n += len(predicted.tolist())
        return n

    batch_marks: list[tuple[float, float]] = []  # (start, end) of each of the current job's model sections

    class ModelTime(LoopObserver):
        def on_batch(self, index: int, batch: Any, outcome: Any, setting: Any) -> None:
            model_s["ours"].append(outcome.end - outcome.start)
            batch_marks.append((outcome.start, outcome.end))

    # per whole job of ours (monotonic clock, like the batch marks): where its time outside the model goes
    job_costs: dict[str, list[float]] = {
        k: [] for k in ("open_meter", "to_first_batch", "between_batches", "after_last_batch", "close_meter")
    }

    install_fake_nvml(FakeNvml([FakeGpu(update_period_s=0.02)]))
    nvml = Nvml()
    device = TorchDevice("cpu", TorchRunner(model, "cpu", retain_memory=retain), NoMeter("cpu", "not started"))

    def ours(prepare: Callable[[Any], Any] | None = None) -> int:
        """One job through our loop; its power sampler thread lives only as long as the job, so it counts."""
        batch_marks.clear()
        t0 = time.monotonic()
        device.meter = NvmlMeter(nvml.gpu(0), update_period_s=0.02)
        t1 = time.monotonic()
        try:
            controller = make_controller("batchsizer", device.knobs, sizes=(bs,))
            stream = DynamicBatchStream(
                range(args.items),
                bs,
                prefetch=args.prefetch,
                prepare=prepare or (lambda items: data[items[0] : items[-1] + 1]),
            )
            loop = ControlLoop(device, controller, ConstantCap(1000.0), Window(batches=10), [ModelTime()])
            items = loop.run(stream).items
        finally:
            t2 = time.monotonic()
            device.meter.close()
            t3 = time.monotonic()
        if prepare is None and batch_marks:
            job_costs["open_meter"].append(t1 - t0)
            job_costs["to_first_batch"].append(batch_marks[0][0] - t1)
            job_costs["between_batches"] += [b[0] - a[1] for a, b in zip(batch_marks, batch_marks[1:])]
            job_costs["after_last_batch"].append(t2 - batch_marks[-1][1])
            job_costs["close_meter"].append(t3 - t2)
        return items

    def interleaved() -> tuple[list[float], list[float]]:
        """Steady state, batch by batch: a plain batch on the same images just before each of ours.

        The plain batch runs (timed) inside our stream's ``prepare`` hook; ours is the time from the end
        of one plain batch to the start of the next: running the batch, the controller, the period's
        power window, and drawing the next batch. Pairs 30 ms apart see the same machine, so the
        per-pair ratios are far less noisy than whole runs; the run's start and end are left out."""
        plain_s: list[float] = []
        marks: list[tuple[float, float]] = []

        def prepare(items: Any) -> Any:
            x = data[items[0] : items[-1] + 1]
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(normalize(x.to(torch.float32))).argmax(dim=1).tolist()
            t1 = time.perf_counter()
            plain_s.append(t1 - t0)
            marks.append((t0, t1))
            return x

        ours(prepare)
        ours_s = [b[0] - a[1] for a, b in zip(marks, marks[1:])]
        return plain_s[1:], ours_s

    def plain_sampled() -> int:
        """The plain loop while our power sampler polls beside it: what the sampler alone costs."""
        meter = NvmlMeter(nvml.gpu(0), update_period_s=0.02)
        try:
            return plain("plain+sampler")
        finally:
            meter.close()

    loops: dict[str, Callable[[], int]] = {"plain": plain, "plain+sampler": plain_sampled, "ours": ours}
    names = list(loops)
    for _ in range(2):  # warm up both (allocator, oneDNN primitives, threads)
        for fn in loops.values():
            fn()
    for times in (*model_s.values(), *job_costs.values(), plain_between):
        times.clear()
    runs: dict[str, dict[str, list[float]]] = {k: {"wall_s": [], "cpu_s": [], "minor_faults": []} for k in loops}
    for r in range(args.rounds):
        order = names[r % 3 :] + names[: r % 3]  # each loop first, middle and last equally often
        for name in order if r % 2 == 0 else order[::-1]:
            wall, cpu, faults, items = timed(loops[name])
            assert items == args.items, (name, items)
            runs[name]["wall_s"].append(wall)
            runs[name]["cpu_s"].append(cpu)
            runs[name]["minor_faults"].append(faults)
    pair_ratios: list[float] = []
    for _ in range(args.interleaved_rounds):
        plain_s, ours_s = interleaved()
        pair_ratios += [o / p for o, p in zip(ours_s, plain_s)]
    device.close()
    nvml.close()

    wall = {k: v["wall_s"] for k, v in runs.items()}
    per_round = [o / p for o, p in zip(wall["ours"], wall["plain"])]
    shares = {}  # the headline ratio split: the sampler thread alone, and the rest of our loop
    for label, a, b in (("sampler", "plain+sampler", "plain"), ("loop_without_sampler", "ours", "plain+sampler")):
        ratios = [x / y for x, y in zip(wall[a], wall[b])]
        shares[label] = {"median": statistics.median(ratios), "ci95": list(bootstrap_median_ci(ratios))}
    median_ratio = statistics.median(per_round)
    lo, hi = bootstrap_median_ci(per_round)
    q1, _, q3 = statistics.quantiles(per_round, n=4)
    best_ratio = min(wall["ours"]) / min(wall["plain"])
    cpu_per_round = [o / p for o, p in zip(runs["ours"]["cpu_s"], runs["plain"]["cpu_s"])]
    cpu_ratio = statistics.median(cpu_per_round)
    cpu_lo, cpu_hi = bootstrap_median_ci(cpu_per_round)
    # where the time goes: the model section (same work in both) and everything around it, per batch
    batches = -(-args.items // bs)
    outside_us: dict[str, float] = {}
    for name in loops:
        inside = [sum(model_s[name][r * batches : (r + 1) * batches]) for r in range(args.rounds)]
        outside = [w - m for w, m in zip(wall[name], inside)]
        outside_us[name] = statistics.median(outside) / batches * 1e6
    model_ratio = statistics.median(
        [
            sum(model_s["ours"][r * batches : (r + 1) * batches])
            / sum(model_s["plain"][r * batches : (r + 1) * batches])
            for r in range(args.rounds)
        ]
    )
    added_fraction = (outside_us["ours"] - outside_us["plain"]) * batches / 1e6 / statistics.median(wall["plain"])
    sampler_model_ratio = statistics.median(
        [
            sum(model_s["plain+sampler"][r * batches : (r + 1) * batches])
            / sum(model_s["plain"][r * batches : (r + 1) * batches])
            for r in range(args.rounds)
        ]
    )
    pair_median = statistics.median(pair_ratios)
    pair_lo, pair_hi = bootstrap_median_ci(pair_ratios)
    passed = median_ratio <= TARGET
    resolved = hi <= TARGET or lo > TARGET
    result = {
        "model": model_name,
        "items": args.items,
        "batch_size": bs,
        "side": args.side,
        "threads": args.threads,
        "rounds": args.rounds,
        "allocator": args.allocator,
        "prefetch": args.prefetch,
        "retained_freed_memory": retained,
        "runs": runs,
        "per_round_ratio": per_round,
        "ratio_median_per_round": median_ratio,
        "ratio_median_ci95": [lo, hi],
        "ratio_per_round_quartiles": [q1, q3],
        "ratio_best_runs": best_ratio,
        "ratio_cpu_time_median_per_round": cpu_ratio,
        "ratio_cpu_time_ci95": [cpu_lo, cpu_hi],
        "outside_model_us_per_batch": outside_us,
        "added_outside_model_fraction": added_fraction,
        "model_time_ratio_median_per_round": model_ratio,
        "model_time_ratio_sampler_only": sampler_model_ratio,
        "ratio_split": shares,
        "interleaved_rounds": args.interleaved_rounds,
        "interleaved_pairs": len(pair_ratios),
        "interleaved_ratio_median": pair_median,
        "interleaved_ratio_ci95": [pair_lo, pair_hi],
        "ours_job_costs_median_us": {k: statistics.median(v) * 1e6 for k, v in job_costs.items()},
        "plain_between_batches_median_us": statistics.median(plain_between) * 1e6,
        "items_per_s_best": {k: args.items / min(v) for k, v in wall.items()},
        "load_average": {"start": load_start, "end": _loadavg()},
        "target_ratio": TARGET,
        "pass": passed,
        "resolved_at_this_noise": resolved,
        "torch": torch.__version__,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{model_name}, {args.items} images of {args.side}x{args.side}, batch {bs}, {args.threads} thread(s), "
        f"{args.rounds} rounds, allocator {args.allocator}, prefetch {args.prefetch}, "
        f"load average {load_start} -> {_loadavg()}"
    )
    print(f"{'loop':<14}{'best s':>9}{'items/s':>10}{'median s':>10}{'max s':>9}{'cpu s':>8}{'faults':>9}")
    for k, v in runs.items():
        print(
            f"{k:<14}{min(v['wall_s']):>9.3f}{args.items / min(v['wall_s']):>10.1f}{statistics.median(v['wall_s']):>10.3f}"
            f"{max(v['wall_s']):>9.3f}{statistics.median(v['cpu_s']):>8.3f}{statistics.median(v['minor_faults']):>9.0f}"
        )
    print(
        f"ours/plain: median per-round {median_ratio:.4f} (95% CI {lo:.4f}-{hi:.4f}, quartiles {q1:.4f}-{q3:.4f}); "
        f"best runs {best_ratio:.4f}; CPU time median per-round {cpu_ratio:.4f} (95% CI {cpu_lo:.4f}-{cpu_hi:.4f})"
    )
    print(
        f"per batch outside the model: plain {outside_us['plain']:.0f} us, ours {outside_us['ours']:.0f} us "
        f"(+{100 * added_fraction:.2f}% of the plain loop's time); model section ours/plain: median per-round "
        f"{model_ratio:.4f}"
    )
    print(
        f"split: plain+sampler/plain {shares['sampler']['median']:.4f} "
        f"(95% CI {shares['sampler']['ci95'][0]:.4f}-{shares['sampler']['ci95'][1]:.4f}; model section "
        f"{sampler_model_ratio:.4f}), ours/(plain+sampler) {shares['loop_without_sampler']['median']:.4f} "
        f"(95% CI {shares['loop_without_sampler']['ci95'][0]:.4f}-{shares['loop_without_sampler']['ci95'][1]:.4f})"
    )
    costs = {k: statistics.median(v) * 1e6 for k, v in job_costs.items()}
    print(
        "ours, median us: opening the meter {open_meter:.0f}, to the first batch {to_first_batch:.0f}, "
        "between batches {between_batches:.0f} (plain: {plain_between:.0f}), after the last batch {after_last_batch:.0f}, "
        "closing the meter {close_meter:.0f}".format(**costs, plain_between=statistics.median(plain_between) * 1e6)
    )
    print(
        f"steady state, batch-interleaved ({len(pair_ratios)} pairs): ours/plain per batch median {pair_median:.4f} "
        f"(95% CI {pair_lo:.4f}-{pair_hi:.4f})"
    )
    noise = "" if resolved else f"; NOT resolved: the 95% interval straddles {TARGET} at this noise"
    print(f"target median ratio <= {TARGET}: {'PASS' if passed else 'FAIL'}{noise}  -> {args.json}")


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
