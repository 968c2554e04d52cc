"""Controllers on families of plants, against the exact oracle (``batchsizer.repro.oracle``), tune and
test kept apart.

Families (each its own table): ``paper`` (Table 2's jobs on the simulated GPUs), ``random-caps``
(random model, input and cap over each card's range, tight caps included), ``zeus`` (every workload
of the measured V100 and A40 tables at caps drawn over each workload's power range, played as table
devices, each job about TABLE_JOB_S long; skipped when ../shared/data is absent), ``synthetic``
(scripted plants with drawn parameters: hump, dip, flat and falling power), ``sensors`` (P40 jobs seen
by a 100 ms / 25 ms sensor and by a 1 s average), ``new-gpus`` (GPU specs drawn by a seeded generator
around the four families).

Which is which: every family has a tune split (``--split tune``: its own fixed draw, device seed 0;
the paper's jobs on the P40 and A100 only, the V100 Zeus table only, other P40 jobs for the sensors)
and a test split (the default: drawn from ``--draw-seed`` at device ``--seed``, with the V100 and
H100 paper jobs and the A40 table never tuned on). Design on the tune split; draw a new test split
after the design is frozen (docs/controllers.md says which draws were reported).

    .venv/bin/python benchmarks/families.py [--split test|tune] [--draw-seed N] [--seed N] [--families paper,...]
        [--controllers adaptive,batchsizer,...] [--per-family N] [--items N] [--rule peak|avg:1]
        [--json benchmarks/families.json]

Prints one row per (family, controller): mean and worst share of the oracle over runs where some
setting meets the cap, the mean share over each job's last quarter (``late``: what it settled on, the
cost of exploring left out), time over the cap by the sensor and by true power, the longest violation in
control periods, and energy above the cap (under ``avg:S`` also ``/env``: the mean share of the
envelope, the limit of a controller that alternates two settings); writes every run as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.cap_rule import CapRule
from batchsizer.core.caps import ConstantCap
from batchsizer.core.device import Device
from batchsizer.core.loop import ControlLoop, Window
from batchsizer.core.observer import LoopObserver, PeriodRecord
from batchsizer.errors import BatchSizerError
from batchsizer.policies import make_controller
from batchsizer.repro.jobs import jobs_for
from batchsizer.repro.oracle import find_oracle
from batchsizer.sim import make_sim_device
from batchsizer.sim.gpus import GPUS, HOPPER_AVERAGE, get_gpu, override_sensor
from batchsizer.sim.models import DATASETS, MODELS
from batchsizer.sim.plant import ModelPlant
from batchsizer.sim.sim_device import SimDevice
from batchsizer.testing.scripted import ScriptedDevice

CONTROLLERS = ("adaptive", "batchsizer", "batchdvfs", "dvfs", "aimd")
FAMILIES = ("paper", "random-caps", "zeus", "synthetic", "sensors", "new-gpus")
WINDOW = Window(batches=10)


@dataclasses.dataclass(frozen=True)
class Case:
    """One job of a family: how to open its device (a fresh one per run), its cap and length."""

    family: str
    name: str
    cap_w: float
    items: int
    spec: dict[str, Any]


def open_case(case: Case) -> Device:
    s = case.spec
    kind = s["kind"]
    if kind == "sim":
        return make_sim_device(s["gpu"], s["model"], s["dataset"], seed=s["seed"], sensor=s.get("sensor"))
    if kind == "gen":
        spec = dataclasses.replace(GPUS[s["base"]], **s["changes"])
        plant = ModelPlant(spec, MODELS[s["model"]], DATASETS[s["dataset"]])
        return SimDevice(spec, plant, seed=s["seed"], name=f"gen:{s['base']}")
    if kind == "zeus":
        from batchsizer.sim.table_plant import make_table_device

        return make_table_device(s["name"], seed=s["seed"])
    if kind == "scripted":
        power, time = synthetic_plant(s["shape"], s["params"])
        return ScriptedDevice(time, power, idle_w=50.0, prep_s=0.004)
    raise ValueError(kind)


def synthetic_plant(shape: str, q: dict[str, float]) -> tuple[Callable[[int, int | None], float], Callable[[int, int | None], float]]:
    """(power of batch size, time of batch size) of a synthetic shape with parameters ``q``."""

    def time(b: int, c: int | None) -> float:
        return q["t0"] + q["per_item"] * b

    def bump(b: int) -> float:
        return math.exp(-((math.log2(b) - q["centre"]) ** 2) / q["width"])

    shapes: dict[str, Callable[[int, int | None], float]] = {
        "hump": lambda b, c: q["base"] + q["height"] * bump(b) + q["slope"] * b,
        "dip": lambda b, c: q["base"] - q["height"] * bump(b) + q["slope"] * b,
        "flat": lambda b, c: q["base"] + 0.01 * b,
        "falling": lambda b, c: q["base"] - q["height"] * math.log2(b),
    }
    return shapes[shape], time


#: the shapes of the synthetic family and the ranges their parameters are drawn from
SYNTHETIC_SHAPES: dict[str, dict[str, tuple[float, float]]] = {
    "hump": {"base": (60, 100), "height": (80, 160), "centre": (2, 6), "width": (2, 6), "slope": (0, 0.3)},
    "dip": {"base": (180, 230), "height": (60, 110), "centre": (3, 6), "width": (2, 5), "slope": (0, 0.2)},
    "flat": {"base": (100, 200)},
    "falling": {"base": (230, 280), "height": (10, 22)},
}

#: a run is stopped once it has taken this many times the oracle's job time (its share is then under
#: 1/TIME_LIMIT_FACTOR either way); a baseline held at batch 1 on a 100,000 items/s table otherwise runs a
#: day of simulated time, hours of wall time under ``avg:S``
TIME_LIMIT_FACTOR = 20.0

#: a measured table's job lasts about this long at its fastest row (the paper's jobs last about as long)
TABLE_JOB_S = 50.0


def _table_items(name: str, items: int) -> int:
    """Items for a table job: at least ``items``, and enough for TABLE_JOB_S at the table's fastest row
    (10,000 items of a table that runs 5,000 items/s is a two-second job: too short to control)."""
    from batchsizer.sim.table_plant import make_table_plant

    rows = make_table_plant(name).table.rows
    fastest = max(r.batch / r.batch_s for r in rows if r.batch_s > 0)
    return max(items, round(TABLE_JOB_S * fastest))


def cases(family: str, split: str, draw_seed: int, per_family: int, items: int, seed: int = 1) -> list[Case]:
    """The jobs of one family. The tune split draws from its own fixed stream at device seed 0; the test
    split from ``draw_seed`` at device seed ``seed``, drawn after the design was frozen."""
    tune = split == "tune"
    seed = 0 if tune else seed
    rng = random.Random(f"{family}:tune" if tune else f"{family}:{draw_seed}")
    out: list[Case] = []
    if family == "paper":
        gpus = ("p40", "a100") if tune else ("p40", "v100", "a100", "h100")
        for gpu in gpus:
            for j in jobs_for(gpu):
                spec = {"kind": "sim", "gpu": gpu, "model": j.model, "dataset": j.dataset, "seed": seed}
                out.append(Case(family, f"{gpu}/job{j.id}", j.cap_w, items, spec))
    elif family == "random-caps":
        for gpu in GPUS:
            g = get_gpu(gpu)
            for _ in range(per_family):
                m, d = rng.choice(sorted(MODELS)), rng.choice(sorted(DATASETS))
                cap = round(rng.uniform(g.idle_w + 10, g.board_limit_w), 1)
                out.append(Case(family, f"{gpu}/{m}@{d}", cap, items, {"kind": "sim", "gpu": gpu, "model": m, "dataset": d, "seed": seed}))
    elif family == "zeus":
        # tune: the V100 table at two caps per workload; test: the V100 and the A40 (never tuned on),
        # three caps per workload, each drawn between 30% and 90% of the workload's power range
        try:
            from batchsizer.sim.table_plant import load_rows
        except ImportError:
            return []
        for gpu in ("v100",) if tune else ("v100", "a40"):
            try:
                rows = load_rows(gpu)
            except (OSError, BatchSizerError):
                print(f"families: zeus skipped: no measured tables ({gpu})", file=sys.stderr)
                return []
            combos = sorted({(r["network"], r["dataset"], r["optimizer"]) for r in rows})
            for net, ds, opt in combos:
                watts = [float(r["average_power"]) for r in rows if (r["network"], r["dataset"], r["optimizer"]) == (net, ds, opt)]
                lo, hi = min(watts), max(watts)
                name = f"zeus-{gpu}:{net}@{ds}+{opt}"
                n = _table_items(name, items)
                for _ in range(2 if tune else 3):
                    share = rng.uniform(0.3, 0.9)
                    cap = round(lo + share * (hi - lo), 1)
                    out.append(Case(family, f"{name} {share:.0%}", cap, n, {"kind": "zeus", "name": name, "seed": seed}))
    elif family == "synthetic":
        # every shape with its parameters drawn, and caps drawn over the shape's range of power
        for shape, ranges in SYNTHETIC_SHAPES.items():
            for _ in range(2 if tune else 3):
                params = {k: rng.uniform(lo, hi) for k, (lo, hi) in ranges.items()}
                params.update(t0=rng.uniform(0.002, 0.008), per_item=rng.uniform(0.0005, 0.0015))
                power = synthetic_plant(shape, params)[0]
                watts = [power(b, None) for b in range(1, 257)]
                cap = round(rng.uniform(min(watts) + 5, max(watts)), 1)
                spec = {"kind": "scripted", "shape": shape, "params": params}
                out.append(Case(family, f"{shape}@{cap:g}", cap, items, spec))
    elif family == "sensors":
        sparse = override_sensor(get_gpu("p40").sensor, update_ms=100, window_ms=25)
        jobs = jobs_for("p40")
        picked = jobs[-per_family:] if tune else jobs[:per_family]
        for label, sensor in (("100ms/25ms", sparse), ("1s-average", HOPPER_AVERAGE)):
            for j in picked:
                spec = {"kind": "sim", "gpu": "p40", "model": j.model, "dataset": j.dataset, "seed": seed, "sensor": sensor}
                out.append(Case(family, f"{label}/job{j.id}", j.cap_w, items, spec))
    elif family == "new-gpus":
        for i in range(per_family):
            base = rng.choice(sorted(GPUS))
            g = GPUS[base]
            f = lambda lo, hi: rng.uniform(lo, hi)  # noqa: E731
            changes = {
                "idle_w": g.idle_w * f(0.7, 1.4),
                "dynamic_max_w": g.dynamic_max_w * f(0.7, 1.3),
                "half_batch": g.half_batch * f(0.5, 2.0),
                "contention_batch": g.contention_batch * f(0.5, 2.0),
                "peak_tflops": g.peak_tflops * f(0.6, 1.6),
                "sensor": override_sensor(g.sensor, update_ms=rng.choice((20, 50, 100)), window_ms=rng.choice((10, 25))),
            }
            board = g.board_limit_w
            m, d = rng.choice(sorted(MODELS)), rng.choice(sorted(DATASETS))
            cap = round(rng.uniform(changes["idle_w"] + 15, board), 1)
            spec = {"kind": "gen", "base": base, "changes": changes, "model": m, "dataset": d, "seed": seed}
            out.append(Case(family, f"gen{i}:{base}/{m}@{d}", cap, items, spec))
    return out


class JobWatch(LoopObserver):
    """Stops a job (``stop_reason`` "time-limit") once its device time passes ``limit_s``, and keeps
    each period's span and items, for the throughput of the job's last quarter."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.stop_event = threading.Event()
        self.stop_event.reason = "time-limit"  # type: ignore[attr-defined]  # the loop records it
        self.periods: list[tuple[float, float, int]] = []

    def on_period(self, record: PeriodRecord) -> None:
        o = record.observation
        self.periods.append((o.start, o.end, o.items))
        if o.end - self.periods[0][0] > self.limit_s:
            self.stop_event.set()

    def late_throughput(self) -> float:
        """Items per second over the periods that began in the job's last quarter (what it settled on,
        with the cost of exploring left out); NaN for a job of no periods."""
        if not self.periods:
            return math.nan
        start, end = self.periods[0][0], self.periods[-1][1]
        late = [p for p in self.periods if p[0] >= start + 0.75 * (end - start)] or self.periods[-1:]
        span = sum(b - a for a, b, _ in late)
        return sum(n for _, _, n in late) / span if span > 0 else math.nan


def run_case(args: tuple[Case, tuple[str, ...], str]) -> list[dict[str, Any]]:
    case, controllers, rule_text = args
    rule = CapRule.parse(rule_text)
    oracle = find_oracle(lambda: open_case(case), case.cap_w, case.items, rule=rule)
    envelope = oracle.envelope.throughput if rule.window_s > 0 and oracle.envelope is not None else math.nan
    rows = []
    for name in controllers:
        device = open_case(case)
        try:
            ctrl = make_controller(name, device.knobs)
        except BatchSizerError:
            continue  # e.g. dvfs on a device without clocks
        watch = JobWatch(TIME_LIMIT_FACTOR * case.items / oracle.throughput if oracle.throughput > 0 else math.inf)
        loop = ControlLoop(device, ctrl, ConstantCap(case.cap_w), WINDOW, [watch], watch.stop_event, cap_rule=rule)
        summary = loop.run(DynamicBatchStream(range(case.items)))
        device.close()
        true = summary.true_power or {}
        period_s = summary.duration_s / max(summary.periods, 1)
        rows.append(
            {
                "family": case.family,
                "case": case.name,
                "cap_w": case.cap_w,
                "controller": name,
                "rule": str(rule),
                "throughput": summary.throughput,
                "oracle": oracle.throughput,
                "oracle_clean": oracle.clean,
                "fraction": summary.throughput / oracle.throughput if oracle.throughput > 0 else math.nan,
                # the last quarter of the job: the setting it settled on, the cost of exploring left out
                "late_fraction": watch.late_throughput() / oracle.throughput if oracle.throughput > 0 else math.nan,
                # under avg:S, the limit of a controller that alternates two settings (the upper concave
                # envelope of the settings' mean power and throughput at the cap); NaN under peak
                "envelope": envelope,
                "fraction_envelope": summary.throughput / envelope if envelope > 0 else math.nan,
                "over_pct": 100 * summary.over_cap_fraction,
                "true_over_pct": 100 * true.get("over_cap_s", 0.0) / summary.duration_s if summary.duration_s else 0.0,
                "longest_periods": summary.longest_violation_s / period_s if period_s > 0 else 0.0,
                "energy_over_j": summary.energy_over_cap_j,
                # "time-limit": stopped after TIME_LIMIT_FACTOR times the oracle's job time
                "stopped": summary.stop_reason,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["family"], r["controller"]) for r in rows}, key=lambda k: (FAMILIES.index(k[0]), k[1]))
    for fam, ctrl in keys:
        rs = [r for r in rows if r["family"] == fam and r["controller"] == ctrl]
        fr = [r["fraction"] for r in rs if r["oracle_clean"] and math.isfinite(r["fraction"])]
        fe = [r["fraction_envelope"] for r in rs if r["oracle_clean"] and math.isfinite(r.get("fraction_envelope", math.nan))]
        fl = [r["late_fraction"] for r in rs if r["oracle_clean"] and math.isfinite(r.get("late_fraction", math.nan))]
        out.append(
            {
                "family": fam,
                "controller": ctrl,
                "runs": len(rs),
                "mean": statistics.fmean(fr) if fr else math.nan,
                "worst": min(fr) if fr else math.nan,
                "mean_envelope": statistics.fmean(fe) if fe else math.nan,
                "mean_late": statistics.fmean(fl) if fl else math.nan,
                "over_pct": statistics.fmean(r["over_pct"] for r in rs),
                "true_over_pct": statistics.fmean(r["true_over_pct"] for r in rs),
                "longest_periods": max(r["longest_periods"] for r in rs),
                "energy_over_j": statistics.fmean(r["energy_over_j"] for r in rs),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("test", "tune"), default="test")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--controllers", default=",".join(CONTROLLERS))
    ap.add_argument("--per-family", type=int, default=6)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rule", default="peak")
    ap.add_argument("--draw-seed", type=int, default=2027)
    ap.add_argument("--seed", type=int, default=2, help="device seed of the test split (the tune split uses 0)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    CapRule.parse(a.rule)
    fams = [f for f in a.families.split(",") if f]
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        print(f"error: families: unknown {bad}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    controllers = tuple(c for c in a.controllers.split(",") if c)
    todo = [c for f in fams for c in cases(f, a.split, a.draw_seed, a.per_family, a.items, a.seed)]
    rows: list[dict[str, Any]] = []
    # each case's rows as it ends, to JSON Lines beside --json: a run stopped part-way keeps what it did
    partial = open(a.json + ".partial.jsonl", "w") if a.json else None  # noqa: SIM115
    with ProcessPoolExecutor(a.workers) as ex:
        for i, rs in enumerate(ex.map(run_case, [(c, controllers, a.rule) for c in todo]), 1):
            rows.extend(rs)
            print(f"  case {i}/{len(todo)} {rs[0]['family'] if rs else ''} {rs[0]['case'] if rs else ''}", file=sys.stderr,
                  flush=True)  # fmt: skip
            if partial is not None:
                for r in rs:
                    partial.write(json.dumps(r) + "\n")
                partial.flush()
    if partial is not None:
        partial.close()
    summary = table(rows)
    print(f"split {a.split}, rule {a.rule}, {len(todo)} jobs")
    env = CapRule.parse(a.rule).window_s > 0
    print(f"{'family':12} {'controller':11} {'runs':>4} {'mean':>6} {'worst':>6} {'late':>6} {'over%':>6} {'true%':>6} {'long':>5} {'E>cap J':>8}"
          + (f" {'/env':>6}" if env else ""))  # fmt: skip
    for s in summary:
        print(f"{s['family']:12} {s['controller']:11} {s['runs']:4d} {s['mean']:6.3f} {s['worst']:6.3f} {s['mean_late']:6.3f} {s['over_pct']:6.2f} "
              f"{s['true_over_pct']:6.2f} {s['longest_periods']:5.1f} {s['energy_over_j']:8.1f}"
              + (f" {s['mean_envelope']:6.3f}" if env else ""))  # fmt: skip
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "summary": summary, "runs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
