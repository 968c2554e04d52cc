"""Wall time of the whole reproduction (20 jobs, all methods, 3 seeds, 10,000 images, oracle sweeps).

Target: under 60 s on 2 cores with ``--workers 2``. The baseline, measured in the same run, is the
same reproduction in one process; the ratio says what the second process buys. It also counts the
oracle's sweep points against an exhaustive sweep of every whole batch size 1..256 at each of the
ten clocks (2,560 points per job), which the grid + bisection replaces.

    .venv/bin/python benchmarks/reproduce_speed.py [--seeds 3] [--items 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import time

from rich.console import Console
from rich.table import Table

from batchsizer.io.records import write_json_atomic
from batchsizer.repro.experiment import ExperimentConfig, run_experiment

TARGET_S = 60.0
FULL_GRID_POINTS = 256 * 10


def timed(workers: int, seeds: int, items: int) -> dict[str, float]:
    t0 = time.perf_counter()
    result = run_experiment(ExperimentConfig(seeds=seeds, items=items, workers=workers))
    wall = time.perf_counter() - t0
    points = sum(o.profile.runs for o in result.outcomes if o.profile)
    return {
        "workers": workers,
        "wall_s": wall,
        "runs": len(result.runs),
        "sweep_points": points,
        "sweep_s_sum": sum(o.sweep_wall_s for o in result.outcomes),
        "job_s_sum": sum(o.wall_s for o in result.outcomes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--json", default="out/reproduce_speed.json")
    args = ap.parse_args()
    two = timed(2, args.seeds, args.items)
    one = timed(1, args.seeds, args.items)
    t = Table(title=f"batchsizer reproduce: 20 jobs, {args.seeds} seeds, {args.items} images ({os.cpu_count()} CPUs)")
    for col in ("workers", "wall s", "runs", "sweep points", "sweep share of work"):
        t.add_column(col, justify="right")
    for r in (one, two):
        t.add_row(
            str(r["workers"]),
            f"{r['wall_s']:.1f}",
            str(r["runs"]),
            str(r["sweep_points"]),
            f"{100 * r['sweep_s_sum'] / r['job_s_sum']:.0f}%",
        )
    console = Console()
    console.print(t)
    speedup = one["wall_s"] / two["wall_s"]
    points_ratio = two["sweep_points"] / (20 * FULL_GRID_POINTS)
    verdict = "meets" if two["wall_s"] < TARGET_S else "MISSES"
    console.print(
        f"2 workers: {two['wall_s']:.1f} s ({verdict} the {TARGET_S:.0f} s target); "
        f"1 worker / 2 workers = {speedup:.2f}x; "
        f"sweep points / exhaustive integer sweep = {points_ratio:.3f}"
    )
    write_json_atomic(
        args.json,
        {
            "target_s": TARGET_S,
            "two_workers": two,
            "one_worker": one,
            "speedup": speedup,
            "sweep_points_vs_exhaustive": points_ratio,
        },
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
