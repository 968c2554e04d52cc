"""Measured sweeps for the baselines that need to know the job: the oracle and the best fixed sizes.

Every point is a short run of a static setting through the same control loop and sensor as the
real runs; nothing reads the simulator's formulas. One :class:`Profile` per job serves every seed.

The oracle is the fastest static (batch size, clock) whose sensor peak stays under the cap:

1. a grid of sizes (powers of two and their midpoints, 1..256) at each of the card's clock levels;
2. at each clock, a bisection over whole sizes between the largest grid size under the cap and
   the next one above it, so the oracle has every size a controller could pick (AIMD picks any);
   clocks whose next grid size is no faster than the best point found so far are skipped, since
   a smaller size at that clock cannot beat it either;
3. the candidates, fastest first, each run for the whole job (all its images): the first whose
   sensor reading never goes over the cap is the oracle. A short sweep sees fewer noise peaks
   and a cooler card than a whole job, so the short-run peak alone is not proof.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from batchsizer.errors import BatchSizerError
from batchsizer.policies.base import DEFAULT_BATCH_SIZES
from batchsizer.policies.static import Static
from batchsizer.repro.devices import DeviceFactory, open_job_device
from batchsizer.repro.jobs import Job
from batchsizer.repro.runner import Plan, execute

#: sizes the grid measures at every clock; the refinement fills in the whole numbers between
ORACLE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass(frozen=True)
class SweepConfig:
    """How long each sweep point runs: at least ``min_batches`` batches and ``min_seconds`` of device time."""

    min_batches: int = 20
    min_seconds: float = 1.0
    grid: tuple[int, ...] = ORACLE_GRID
    refine: bool = True
    #: how many candidates may be run whole before giving up on a clean one
    max_verify: int = 8


@dataclass(frozen=True)
class Point:
    """One measured static setting."""

    batch_size: int
    clock_mhz: int | None
    throughput: float
    peak_w: float
    mean_w: float
    power_limit_w: float | None = None

    def under(self, cap_w: float) -> bool:
        return math.isfinite(self.peak_w) and self.peak_w <= cap_w


@dataclass
class Profile:
    """What the sweeps found for one job (on one GPU, with one seed)."""

    job_id: int
    cap_w: float
    seed: int
    grid: list[Point] = field(default_factory=list)
    hw: list[Point] = field(default_factory=list)
    oracle: Point | None = None
    #: the oracle's whole-job check: (size, clock, throughput, seconds over the cap) per candidate tried
    verified: list[tuple[int, int | None, float, float]] = field(default_factory=list)
    oracle_clean: bool = False
    best_paper_size: int = 1
    best_hw_size: int = 1
    hw_limit_w: float | None = None
    hw_note: str = ""
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    factory: DeviceFactory,
    job: Job,
    seed: int,
    size: int,
    clock: int | None,
    cfg: SweepConfig,
    power_limit_w: float | None = None,
) -> Point:
    """A short static run at (size, clock), with the card's power limit if given."""
    device = open_job_device(factory, job, seed)
    plan = Plan(Static(size, clock), power_limit_w)
    run = execute(device, plan, job.cap_w, job.items, stop_after=(cfg.min_batches, cfg.min_seconds))
    periods = run.trace.periods
    peak = max((p.peak_w for p in periods if math.isfinite(p.peak_w)), default=math.nan)
    s = run.summary
    # the loop's last, partial period is not in the trace; its readings count through the summary's
    # worst overshoot, so take the larger of the two
    if s.worst_overshoot_w > 0:
        peak = max(peak, job.cap_w + s.worst_overshoot_w)
    mean = s.energy_j / s.duration_s if s.duration_s > 0 else math.nan
    return Point(size, clock, s.throughput, peak, mean, power_limit_w)


def hw_limit_for(job: Job) -> tuple[float, str]:
    """The power limit a user could set for the cap: the cap, clamped to the card's settable range."""
    try:
        from batchsizer.sim.gpus import get_gpu

        spec = get_gpu(job.gpu)
    except (ImportError, BatchSizerError):
        return job.cap_w, ""
    if job.cap_w < spec.min_limit_w:
        return spec.min_limit_w, f"cap below the card's lowest power limit; limit set to {spec.min_limit_w:g} W"
    if job.cap_w > spec.board_limit_w:
        return spec.board_limit_w, f"cap above the board limit; limit set to {spec.board_limit_w:g} W"
    return job.cap_w, ""


def _refine(
    factory: DeviceFactory,
    job: Job,
    seed: int,
    clock: int | None,
    lo: Point,
    hi: Point,
    cfg: SweepConfig,
    out: list[Point],
) -> None:
    """Bisect whole sizes between ``lo`` (under the cap) and ``hi`` (over it) at one clock."""
    a, b = lo.batch_size, hi.batch_size
    while b - a > 1:
        mid = (a + b) // 2
        p = measure(factory, job, seed, mid, clock, cfg)
        out.append(p)
        if p.under(job.cap_w):
            a = mid
        else:
            b = mid


def _best(points: list[Point], cap_w: float) -> Point | None:
    ok = [p for p in points if p.under(cap_w)]
    # fastest; among equals the smaller size and lower clock (less power for the same speed)
    return max(ok, key=lambda p: (round(p.throughput, 6), -p.batch_size, -(p.clock_mhz or 0)), default=None)


def profile_job(
    factory: DeviceFactory, job: Job, clock_levels: tuple[int, ...], seed: int = 0, cfg: SweepConfig | None = None
) -> Profile:
    """Sweep one job: the oracle's grid and check, the best paper size for DVFS, the best size under the power limit."""
    cfg = cfg or SweepConfig()
    prof = Profile(job.id, job.cap_w, seed)
    clocks: tuple[int | None, ...] = clock_levels or (None,)
    for clock in clocks:
        for size in cfg.grid:
            prof.grid.append(measure(factory, job, seed, size, clock, cfg))
    if cfg.refine:
        best = _best(prof.grid, job.cap_w)
        fronts = []
        for clock in clocks:
            row = sorted((p for p in prof.grid if p.clock_mhz == clock), key=lambda p: p.batch_size)
            for lo, hi in zip(row, row[1:]):
                if lo.under(job.cap_w) and not hi.under(job.cap_w) and hi.batch_size - lo.batch_size > 1:
                    fronts.append((lo, hi))
        for lo, hi in sorted(fronts, key=lambda f: -f[1].throughput):
            if best is not None and hi.throughput <= best.throughput:
                continue  # nothing between lo and hi can be faster than hi, which is no faster than best
            _refine(factory, job, seed, lo.clock_mhz, lo, hi, cfg, prof.grid)
            best = _best(prof.grid, job.cap_w)
    _verify_oracle(factory, job, seed, cfg, prof)
    paper = [p for p in prof.grid if p.batch_size in DEFAULT_BATCH_SIZES]
    best_paper = _best(paper, job.cap_w)
    prof.best_paper_size = best_paper.batch_size if best_paper else DEFAULT_BATCH_SIZES[0]
    prof.hw_limit_w, prof.hw_note = hw_limit_for(job)
    if clock_levels:
        for size in DEFAULT_BATCH_SIZES:
            prof.hw.append(measure(factory, job, seed, size, None, cfg, prof.hw_limit_w))
        fastest = max(prof.hw, key=lambda p: (round(p.throughput, 6), -p.batch_size))
        prof.best_hw_size = fastest.batch_size
    prof.runs = len(prof.grid) + len(prof.hw) + len(prof.verified)
    return prof


def _verify_oracle(factory: DeviceFactory, job: Job, seed: int, cfg: SweepConfig, prof: Profile) -> None:
    """Run the candidates whole, fastest first; the first that never reads over the cap is the oracle."""
    ok = sorted(
        (p for p in prof.grid if p.under(job.cap_w)),
        key=lambda p: (-round(p.throughput, 6), p.batch_size, p.clock_mhz or 0),
    )
    if not ok:  # nothing stays under the cap: the least power-hungry setting is the best one can do
        lowest = min(prof.grid, key=lambda p: p.peak_w if math.isfinite(p.peak_w) else math.inf)
        prof.oracle, prof.oracle_clean = lowest, False
        return
    tried: list[tuple[Point, float]] = []
    for cand in ok[: cfg.max_verify]:
        run = execute(
            open_job_device(factory, job, seed), Plan(Static(cand.batch_size, cand.clock_mhz)), job.cap_w, job.items
        )
        over = run.summary.over_cap_s
        prof.verified.append((cand.batch_size, cand.clock_mhz, run.summary.throughput, over))
        tried.append((cand, over))
        if over == 0:
            prof.oracle, prof.oracle_clean = cand, True
            return
    prof.oracle = min(tried, key=lambda t: t[1])[0]
    prof.oracle_clean = False
