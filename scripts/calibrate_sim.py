"""Re-run the simulator's calibration and print the fit errors: ``python scripts/calibrate_sim.py [--json OUT]``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from batchsizer.io.shared_data import DataUnavailable
from batchsizer.sim.calibrate import format_report, job_table, paper_checks, run_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    t = time.perf_counter()
    try:
        result = run_all()
    except DataUnavailable as exc:
        print(f"note: {exc}; printing only the checks against the paper", file=sys.stderr)
        result = {"paper": paper_checks(), "jobs": job_table()}
    print(format_report(result))
    print(f"({time.perf_counter() - t:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
