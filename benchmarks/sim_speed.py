"""Speed of the simulated GPU through the real control loop: simulated images per wall second.

Each case runs a whole job (``--items`` images) through :class:`batchsizer.core.loop.ControlLoop` on a
simulated device, and the same job on the analytic :class:`ScriptedDevice` as the baseline (the
loop's own cost with an almost free device), best of ``--rounds``. Target: a 10,000-image job on
sim:p40 in well under a second of wall time, even at batch size 1 (10,000 batches).

    .venv/bin/python benchmarks/sim_speed.py [--items 10000 --rounds 3 --json benchmarks/sim_speed.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _job(make_device, controller: str, cap: float, items: int, **opts):
    from batchsizer.core.batching import DynamicBatchStream
    from batchsizer.core.caps import ConstantCap
    from batchsizer.core.loop import ControlLoop, Window
    from batchsizer.policies import make_controller

    device = make_device()
    ctl = make_controller(controller, device.knobs, **opts)
    t = time.perf_counter()
    s = ControlLoop(device, ctl, ConstantCap(cap), Window(10)).run(DynamicBatchStream(range(items)))
    return time.perf_counter() - t, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/sim_speed.json"))
    args = ap.parse_args()

    from batchsizer.sim import make_sim_device
    from batchsizer.testing.scripted import ScriptedDevice

    def scripted():
        return ScriptedDevice(lambda b, c: 0.004 + 0.0012 * b, lambda b, c: 60.0 + 24.0 * b**0.5, prep_s=0.002)

    cases = [
        ("sim:p40 MobV2 caltech, static bs 1", lambda: make_sim_device("p40", "mobv2", "caltech"), "static", 200, {"batch_size": 1}),
        ("scripted (baseline), static bs 1", scripted, "static", 200, {"batch_size": 1}),
        ("sim:p40 Res101 caltech, batchsizer @200 W (default job)", lambda: make_sim_device("p40", "res101", "caltech"), "batchsizer", 200, {}),
        ("sim:p40 MobV2 imagenet, batchsizer @84 W", lambda: make_sim_device("p40", "mobv2", "imagenet"), "batchsizer", 84, {}),
        ("sim:p40 Res101 caltech, dvfs bs16 @200 W", lambda: make_sim_device("p40", "res101", "caltech"), "dvfs", 200, {}),
        ("sim:h100 Res101 caltech, batchsizer @500 W", lambda: make_sim_device("h100", "res101", "caltech"), "batchsizer", 500, {}),
    ]  # fmt: skip
    rows = []
    for name, make, ctl, cap, opts in cases:
        best, summary = min((_job(make, ctl, cap, args.items, **opts) for _ in range(args.rounds)), key=lambda r: r[0])
        rows.append(
            {
                "case": name,
                "items": summary.items,
                "batches": summary.batches,
                "wall_s": best,
                "sim_s": summary.duration_s,
                "images_per_wall_s": summary.items / best,
                "batches_per_wall_s": summary.batches / best,
                "sim_speedup": summary.duration_s / best,
            }
        )
    base = rows[1]["batches_per_wall_s"]
    print(f"{'case':58s} {'batches':>7s} {'wall s':>7s} {'img/wall s':>11s} {'sim s/wall s':>12s} {'vs scripted':>11s}")
    for r in rows:
        r["batches_per_s_vs_scripted"] = r["batches_per_wall_s"] / base
        print(
            f"{r['case']:58s} {r['batches']:7d} {r['wall_s']:7.3f} {r['images_per_wall_s']:11.0f} "
            f"{r['sim_speedup']:12.0f} {r['batches_per_s_vs_scripted']:11.2f}"
        )
    target = rows[0]["wall_s"] < 1.0
    print(
        f"target: 10,000 batches of 1 on sim:p40 in well under 1 s of wall time: {rows[0]['wall_s']:.3f} s -> {'met' if target else 'MISSED'}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"items": args.items, "rounds": args.rounds, "cases": rows, "target_met": target}, indent=1)
    )


if __name__ == "__main__":
    main()
