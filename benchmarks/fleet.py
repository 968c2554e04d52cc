"""Fleets of simulated GPUs under one power budget: marginal against equal, proportional and the best static split.

Every run is a real ``batchsizer fleet`` run (``batchsizer.fleet.Fleet``, the project's control loop
per GPU, the adaptive controller, lockstep virtual time) in this process, which is the same run as
on Ray (the lockstep makes it so; see docs/fleet.md). The upper bound is the best static split:
each GPU's best static throughput at every whole cap from the simulator's noiseless steady state
(every batch size 1..256 and clock level, compute-phase power at or under the cap), split
exhaustively (``batchsizer.fleet.oracle``). For budget steps it is the time-weighted bound of each
step. Throughput counts every item processed in the run's fixed duration (virtual seconds).

Then the allocator alone at 64, 256 and 4096 GPUs (no Ray, no simulation of the GPUs): its time per
decision, and the messages one allocation period needs.

    .venv/bin/python benchmarks/fleet.py [--full] [--duration 60] [--json benchmarks/fleet.json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from batchsizer.core.caps import CapSchedule, ConstantCap
from batchsizer.fleet.allocator import ALLOCATORS, WorkerView, allocate, cap_grid
from batchsizer.fleet.coordinator import Fleet, FleetOptions, job_key
from batchsizer.fleet.oracle import best_static_split, static_curve
from batchsizer.fleet.worker import WorkerConfig
from batchsizer.io.records import write_json_atomic
from batchsizer.sim.gpus import get_gpu

MODELS = {"light": "MobV2", "heavy": "Res101"}
#: the load of each GPU: one model for all, or "both": light and heavy alternating (two jobs)
LOADS = ("light", "heavy", "both")


def models_for(load: str, n: int) -> list[str]:
    if load == "both":
        return [MODELS["light"] if i % 2 == 0 else MODELS["heavy"] for i in range(n)]
    return [MODELS[load]] * n
FLEETS = {
    "mixed4": ["p40", "v100", "a100", "h100"],
    "uniform4": ["v100"] * 4,
    "mixed8": ["p40", "v100", "a100", "h100"] * 2,
    "uniform8": ["a100"] * 8,
}
#: budgets as a share of the way from the sum of the lowest caps to the sum of the board limits
BUDGETS = {"tight": 0.15, "mid": 0.35, "loose": 0.6}


def budget_w(gpus: list[str], share: float) -> float:
    lo = sum(get_gpu(g).min_limit_w for g in gpus)
    hi = sum(get_gpu(g).board_limit_w for g in gpus)
    return round(lo + share * (hi - lo))


def workers(gpus: list[str], models: list[str], seed: int) -> list[WorkerConfig]:
    return [WorkerConfig(f"{g}-{i}", g, m, "caltech", seed=seed * 100 + i) for i, (g, m) in enumerate(zip(gpus, models))]


def run_fleet(gpus: list[str], models: list[str], budget: Any, allocator: str, duration: float, seed: int) -> dict[str, Any]:
    ws = workers(gpus, models, seed)
    t0 = time.perf_counter()
    jobs = {job_key(w): 10**8 for w in ws}
    fleet = Fleet(ws, budget, jobs, FleetOptions(allocator=allocator, duration_s=duration, chunk=64))
    s = fleet.run()
    processed = sum((w["summary"] or {}).get("items", 0) for w in s["workers"].values())
    return {
        "allocator": allocator,
        "throughput": processed / s["duration_s"],
        "over_budget_fraction": s["over_budget_fraction"],
        "worst_overshoot_w": s["worst_overshoot_w"],
        "true_over_budget_fraction": s["true_power"]["over_budget_fraction"],
        "allocations": s["allocations"],
        "final_caps": {n: (w["cap_over_time"][-1]["cap_w"] if w["cap_over_time"] else None) for n, w in s["workers"].items()},
        "wall_s": time.perf_counter() - t0,
    }


def static_run(gpus: list[str], models: list[str], caps: list[int], duration: float, seed: int) -> float:
    """The best static split run by the real controllers: each GPU alone, its cap the split's, for the
    whole run (items/s summed). What a perfect static allocator gets with these controllers: the
    part of the gap to the bound that no split can recover (search, margin, noise)."""
    total = 0.0
    for w, cap in zip(workers(gpus, models, seed), caps):
        reserve = FleetOptions().reserve  # a fleet of one keeps the same reserve: its cap is the split's
        fleet = Fleet([w], ConstantCap(cap / (1 - reserve)), {job_key(w): 10**8}, FleetOptions(allocator="equal", duration_s=duration, chunk=64))
        s = fleet.run()
        total += sum((x["summary"] or {}).get("items", 0) for x in s["workers"].values()) / s["duration_s"]
    return total


def split_value(gpus: list[str], models: list[str], budget: float, allocator: str, curves: dict) -> float:
    """The oracle's throughput of the split ``equal`` or ``proportional`` makes (no noise, no search)."""
    views = [WorkerView(str(i), get_gpu(g).min_limit_w, get_gpu(g).board_limit_w, board_w=get_gpu(g).board_limit_w) for i, g in enumerate(gpus)]
    a = allocate(allocator, budget, views, FleetOptions().reserve)
    return sum(curves[(g, m)][int(a.caps[str(i)])] for i, (g, m) in enumerate(zip(gpus, models)))


def bound(gpus: list[str], models: list[str], steps: list[tuple[float, float]], duration: float, curves: dict) -> tuple[float, list[list[int]]]:
    """Time-weighted best static split over the budget's steps."""
    lows = [get_gpu(g).min_limit_w for g in gpus]
    cs = [curves[(g, m)] for g, m in zip(gpus, models)]
    total, splits = 0.0, []
    for k, (t, b) in enumerate(steps):
        end = steps[k + 1][0] if k + 1 < len(steps) else duration
        value, caps = best_static_split(cs, lows, b)
        total += value * (end - t)
        splits.append(caps)
    return total / duration, splits


def scenarios(full: bool) -> list[tuple[str, str, str, list[tuple[float, float]]]]:
    out = []
    fleets = list(FLEETS) if full else ["mixed4", "uniform4"]
    for fleet in fleets:
        gpus = FLEETS[fleet]
        for load in LOADS:
            budgets = BUDGETS if (full or fleet.endswith("4")) else {"mid": BUDGETS["mid"]}
            for name, share in budgets.items():
                out.append((fleet, load, name, [(0.0, budget_w(gpus, share))]))
    for fleet in (["mixed4", "mixed8"] if full else ["mixed4"]):
        gpus = FLEETS[fleet]
        for load in ("heavy", "both"):
            b = [budget_w(gpus, BUDGETS[k]) for k in ("mid", "tight", "loose")]
            out.append((fleet, load, "steps", [(0.0, b[0]), (0.3, b[1]), (0.6, b[2])]))
    if not full:  # one 8-GPU mixed fleet at the middle budget
        for load in ("heavy", "both"):
            out.append(("mixed8", load, "mid", [(0.0, budget_w(FLEETS["mixed8"], BUDGETS["mid"]))]))
    return out


def scale(counts: tuple[int, ...] = (64, 256, 4096), repeats: int = 5) -> list[dict[str, Any]]:
    """The allocators alone on synthetic concave curves: seconds per decision at each fleet size."""
    rng = random.Random(0)
    kinds = ["p40", "v100", "a100", "h100"]
    rows = []
    for n in counts:
        views = []
        for i in range(n):
            g = get_gpu(kinds[i % 4])
            k = rng.uniform(0.5, 2.0)
            pts = tuple((c, k * 100 * (c - g.idle_w) ** 0.5) for c in cap_grid(g.min_limit_w, g.board_limit_w))
            views.append(WorkerView(f"w{i}", g.min_limit_w, g.board_limit_w, 1.0, g.board_limit_w, pts))
        budget = sum(v.min_w for v in views) + 0.4 * sum(v.max_w - v.min_w for v in views)
        row: dict[str, Any] = {"gpus": n}
        for kind in ALLOCATORS:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                a = allocate(kind, budget, views)
                times.append(time.perf_counter() - t0)
            assert a.total_w <= budget + 1e-6
            row[f"{kind}_s"] = statistics.median(times)
        # per allocation period, per worker: one curve request and reply (marginal), one cap message
        # (two phases: lowered first), then per tick one advance and its report
        row["messages_per_period"] = {"curve": 2 * n, "caps": n, "per_tick": 2 * n}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="every fleet at every budget (about 20 min on 2 cores)")
    ap.add_argument("--duration", type=float, default=60.0, help="virtual seconds per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    curves: dict[tuple[str, str], Any] = {}
    for fleet in FLEETS.values():
        for g in fleet:
            for m in MODELS.values():
                if (g, m) not in curves:
                    curves[(g, m)] = static_curve(g, m, "caltech")
    rows = []
    print(f"{'fleet':9} {'load':5} {'budget':14} {'alloc':12} {'items/s':>8} {'/best':>6} {'/equal':>6} {'over%':>6} {'worst W':>7}")
    for fleet, load, bname, rel_steps in scenarios(args.full):
        gpus = FLEETS[fleet]
        model = models_for(load, len(gpus))
        steps = [(t * args.duration, b) for t, b in rel_steps]
        budget = ConstantCap(steps[0][1]) if len(steps) == 1 else CapSchedule(steps)
        best, splits = bound(gpus, model, steps, args.duration, curves)
        runs = {a: run_fleet(gpus, model, budget, a, args.duration, args.seed) for a in ALLOCATORS}
        eq = runs["equal"]["throughput"]
        # how much a split can gain at all here (the oracle's value of equal's split against the best), and
        # what the controllers reach at the best split (constant budgets only)
        equal_split = sum(split_value(gpus, model, b, "equal", curves) * ((steps[k + 1][0] if k + 1 < len(steps) else args.duration) - t)
                          for k, (t, b) in enumerate(steps)) / args.duration  # fmt: skip
        at_best = static_run(gpus, model, splits[0], args.duration, args.seed) if len(steps) == 1 else None
        label = bname if len(steps) == 1 else "steps " + "/".join(f"{b:g}" for _, b in steps)
        if len(steps) == 1:
            label = f"{bname} {steps[0][1]:g} W"
        for a, r in runs.items():
            r["share_of_best_static"] = r["throughput"] / best
            r["vs_equal"] = r["throughput"] / eq
            print(
                f"{fleet:9} {load:5} {label:14} {a:12} {r['throughput']:8.1f} {r['share_of_best_static']:6.3f} "
                f"{r['vs_equal']:6.3f} {100 * r['over_budget_fraction']:6.2f} {r['worst_overshoot_w']:7.1f}",
                flush=True,
            )
        ran = f"{at_best / best:6.3f}" if at_best is not None else "     -"
        print(f"{'':9} {'':5} {'':14} {'(split)':12} oracle of equal's split / best {equal_split / best:.3f}; "
              f"controllers at the best split / best {ran.strip()}", flush=True)  # fmt: skip
        rows.append(
            {
                "fleet": fleet,
                "gpus": gpus,
                "load": load,
                "model": model,
                "budget": bname,
                "steps": steps,
                "best_static_throughput": best,
                "best_static_caps": splits,
                "equal_split_share_of_best": equal_split / best,
                "best_split_run_throughput": at_best,
                "best_split_run_share_of_best": at_best / best if at_best is not None else None,
                "runs": runs,
            }
        )
    print("\nallocator alone (median of 5 decisions, synthetic concave curves):")
    sc = scale()
    for r in sc:
        print(
            f"  {r['gpus']:5d} GPUs: marginal {1e3 * r['marginal_s']:7.2f} ms, equal {1e3 * r['equal_s']:6.2f} ms, "
            f"proportional {1e3 * r['proportional_s']:6.2f} ms; messages/period {r['messages_per_period']}"
        )
    wall = time.perf_counter() - t_start
    print(f"\nwall time {wall:.0f} s")
    if args.json is not None:
        write_json_atomic(
            args.json,
            {
                "command": "benchmarks/fleet.py" + (" --full" if args.full else "") + f" --duration {args.duration:g} --seed {args.seed}",
                "duration_s": args.duration,
                "rows": rows,
                "scale": sc,
                "wall_s": wall,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
