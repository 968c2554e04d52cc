"""Serving under a power cap: ``serve``'s engine against static batching, on simulated GPUs.

Every run plays the same Poisson arrivals through the engine of ``batchsizer serve`` (the request
queue, the wait timeout, and the one control loop with the device's meter) on the simulator's
virtual time, so a minute of serving costs about a second here; no HTTP (``batchsizer load`` against
``batchsizer serve`` measures that path, see docs/serving.md). Per scenario (GPU, model, cap, arrival
rate) it runs:

* ``static-N``: a fixed size cap N in 1, 2, 4, ..., 256 with the same wait timeout, every request
  queued (what Triton or TorchServe users configure);
* ``limit-N``: the same with the card's own power limiter set to the cap (``nvidia-smi -pl``);
* ``alg1``: Algorithm 1 (``--controller batchsizer``) driving the size cap, with serve's latency
  limit and admission;
* ``serve``: the default controller (``adaptive``) driving the size cap, latency limit, admission.

Figures per run: goodput (answers within the SLO per second of arrivals), p99 latency of answered
requests, time over the cap (the sensor's readings, as ``run`` counts it), energy per answered
request. A configuration *meets* the SLO when its p99 <= SLO and the cap when it is over it at most
0.5% of the time. Targets checked per scenario: where some static configuration meets both,
``serve`` does too with goodput >= 0.95 of the best such static one; where none does (overload),
``serve`` sheds (503) with p99 within the SLO and at most 0.5% over the cap.

    .venv/bin/python benchmarks/serving.py [--quick] [--seconds 30] [--workers 2] [--json benchmarks/serving.json]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from batchsizer.core.caps import ConstantCap
from batchsizer.io.records import write_json_atomic
from batchsizer.policies import make_controller
from batchsizer.serve.batcher import Arrival, BatcherConfig, VirtualSource
from batchsizer.serve.engine import ServingEngine
from batchsizer.sim import make_sim_device

SLO_S = 0.1
MAX_WAIT_S = 0.005
HOST_SCALE = 0.1  # the server decodes images in its handlers: a tenth of the paper's CPU-bound pipeline
STATIC = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MEET_OVER_CAP = 0.005
#: (gpu, model, caps in W): a light and a heavy model on a small and a large card, caps tight and loose
SCENARIOS = (
    ("p40", "mobv2", (110.0, 140.0)),
    ("p40", "res152", (140.0, 200.0)),
    ("a100", "mobv2", (150.0, 220.0)),
    ("a100", "res152", (180.0, 300.0)),
)
#: arrival rates as fractions of the card's SLO-bound capacity with no cap (light .. beyond capacity)
LOADS = (0.2, 0.5, 0.8, 1.5)


def capacity(gpu: str, model: str) -> float:
    """Requests/s the card serves with no cap at the largest static size whose two batch times fit the SLO."""
    d = make_sim_device(gpu, model, "imagenet", host_scale=HOST_SCALE)
    best = 0.0
    for b in STATIC:
        s = d.plant.cost(b, d.clock_mhz).total_s
        if 2 * s + MAX_WAIT_S <= SLO_S:
            best = max(best, b / s)
    return best


def arrivals(rate: float, seconds: float, seed: int) -> list[Arrival]:
    rng = random.Random(seed)
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        out.append(Arrival(t))


def one_run(task: tuple[str, str, float, float, float, str, int]) -> dict[str, Any]:
    gpu, model, cap, rate, seconds, method, seed = task
    device = make_sim_device(gpu, model, "imagenet", seed=seed, host_scale=HOST_SCALE)
    plays = arrivals(rate, seconds, seed)
    kind, _, size = method.partition("-")
    serving = kind in ("serve", "alg1")
    config = BatcherConfig(SLO_S, MAX_WAIT_S, STATIC, admission=serving, latency_cap=serving)
    limit_set = None
    if kind == "limit":
        limit_set = min(max(cap, device.gpu.min_limit_w), device.gpu.board_limit_w)
        device.set_power_limit(limit_set)
    if serving:
        controller = make_controller("adaptive" if kind == "serve" else "batchsizer", device.knobs)
        growth = 2.0
    else:
        controller = make_controller("static", device.knobs, batch_size=int(size))
        growth = math.inf
    source = VirtualSource(None, device.clock, plays, device.idle)  # type: ignore[arg-type]
    engine = ServingEngine(device, controller, ConstantCap(cap), config, source=source, growth=growth)
    t0 = time.perf_counter()
    summary = engine.run()
    ok = engine.latency.outcomes["ok"]
    lat = engine.latency.percentiles((50, 99))
    return {
        "gpu": gpu,
        "model": model,
        "cap_w": cap,
        "rate": round(rate, 1),
        "method": method,
        "sent": len(plays),
        "ok": ok,
        "rejected": len(source.rejected),
        "goodput": engine.latency.within_slo / seconds,
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "over_cap_fraction": summary.over_cap_fraction,
        "energy_per_request_j": summary.energy_j / ok if ok else None,
        "avg_batch": summary.avg_batch_size,
        "power_limit_w": limit_set,
        "wall_s": time.perf_counter() - t0,
    }


def meets(r: dict[str, Any]) -> bool:
    return r["p99_ms"] is not None and r["p99_ms"] <= SLO_S * 1000 and r["over_cap_fraction"] <= MEET_OVER_CAP


def judge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets for one scenario's rows."""
    by = {r["method"]: r for r in rows}
    statics = [r for r in rows if r["method"].startswith(("static", "limit"))]
    feasible = [r for r in statics if meets(r)]
    serve = by["serve"]
    out: dict[str, Any] = {"serve_meets": meets(serve)}
    if feasible:
        best = max(feasible, key=lambda r: r["goodput"])
        out.update(
            case="feasible",
            best_static=best["method"],
            best_goodput=best["goodput"],
            ratio=serve["goodput"] / best["goodput"] if best["goodput"] > 0 else math.nan,
        )
        out["met"] = out["serve_meets"] and out["ratio"] >= 0.95
    else:
        out.update(case="overload", best_static=None, best_goodput=None, ratio=None)
        out["met"] = (
            serve["rejected"] > 0
            and serve["p99_ms"] is not None
            and serve["p99_ms"] <= SLO_S * 1000
            and serve["over_cap_fraction"] <= MEET_OVER_CAP
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds of arrivals per run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="one scenario per GPU, 15 s runs")
    ap.add_argument("--json", default=None, help="write every run and the verdicts here")
    args = ap.parse_args(argv)
    scenarios = SCENARIOS[::2] if args.quick else SCENARIOS
    seconds = 15.0 if args.quick else args.seconds
    methods = [f"static-{b}" for b in STATIC] + [f"limit-{b}" for b in STATIC] + ["alg1", "serve"]
    tasks, keys = [], []
    for gpu, model, caps in scenarios:
        cap_rps = capacity(gpu, model)
        for cap in caps:
            for load in LOADS:
                rate = load * cap_rps
                keys.append((gpu, model, cap, round(rate, 1), load))
                tasks.extend((gpu, model, cap, rate, seconds, m, args.seed) for m in methods)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = list(pool.map(one_run, tasks, chunksize=4))
    wall = time.perf_counter() - t0
    verdicts = []
    print(f"{'gpu':5} {'model':7} {'cap':>5} {'rate':>7} {'load':>5} | {'best static':>11} {'goodput':>8} | "
          f"{'serve':>7} {'ratio':>6} {'p99':>6} {'over%':>6} {'shed%':>6} {'J/req':>6} | {'alg1':>7} {'p99':>6} {'over%':>6} | met")  # fmt: skip
    for gpu, model, cap, rate, load in keys:
        rows = [r for r in results if (r["gpu"], r["model"], r["cap_w"], r["rate"]) == (gpu, model, cap, rate)]
        v = judge(rows)
        by = {r["method"]: r for r in rows}
        s, a = by["serve"], by["alg1"]
        v.update(gpu=gpu, model=model, cap_w=cap, rate=rate, load=load)
        v["serve"] = {
            k: s[k] for k in ("goodput", "p99_ms", "over_cap_fraction", "rejected", "sent", "energy_per_request_j")
        }
        v["alg1"] = {
            k: a[k] for k in ("goodput", "p99_ms", "over_cap_fraction", "rejected", "sent", "energy_per_request_j")
        }
        verdicts.append(v)
        best = f"{v['best_static'] or '-':>11} {v['best_goodput'] or 0:8.1f}"
        ratio = "-" if v["ratio"] is None else f"{v['ratio']:.3f}"
        print(
            f"{gpu:5} {model:7} {cap:5.0f} {rate:7.1f} {load:5.1f} | {best} | {s['goodput']:7.1f} {ratio:>6} "
            f"{_ms(s['p99_ms']):>6} {100 * s['over_cap_fraction']:6.2f} {100 * s['rejected'] / max(s['sent'], 1):6.1f} "
            f"{s['energy_per_request_j'] or 0:6.3f} | {a['goodput']:7.1f} {_ms(a['p99_ms']):>6} "
            f"{100 * a['over_cap_fraction']:6.2f} | {'yes' if v['met'] else 'NO'}"
        )
    met = sum(v["met"] for v in verdicts)
    print(
        f"targets met in {met} of {len(verdicts)} scenarios; {len(results)} runs of {seconds:g} simulated s in {wall:.0f} s"
    )
    if args.json:
        write_json_atomic(
            args.json,
            {
                "slo_ms": SLO_S * 1000,
                "max_wait_ms": MAX_WAIT_S * 1000,
                "host_scale": HOST_SCALE,
                "seconds": seconds,
                "seed": args.seed,
                "command": "benchmarks/serving.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "wall_s": wall,
                "verdicts": verdicts,
                "runs": results,
            },
        )
    return 0


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


if __name__ == "__main__":
    sys.exit(main())
