"""The whole experiment: every chosen job, method and seed, with the job's sweep done once per job.

Jobs are independent, so they run in ``workers`` processes; each returns its profile and runs, and
the parent gathers them in job order, so the result does not depend on which process ran what.
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.repro.job_devices import get_factory, open_job_device
from batchsizer.repro.jobs import PAPER_ITEMS, Job, check_gpu, figure_jobs, jobs_for
from batchsizer.repro.methods import DEFAULT_METHODS, MethodContext, get_method, parse_methods
from batchsizer.repro.oracle import device_sizes
from batchsizer.repro.runner import RunResult, execute, score
from batchsizer.repro.sweep import Profile, SweepConfig, profile_job

#: the metrics aggregated over seeds (mean, spread) per job and method
METRICS: tuple[str, ...] = (
    "throughput",
    "oracle_fraction",
    "avg_batch_size",
    "energy_per_image_j",
    "over_cap_fraction",
    "worst_overshoot_w",
    "longest_violation_s",
    "longest_episode_s",
    "settle_s",
    "true_energy_per_image_j",
    "true_over_cap_fraction",
    "true_worst_overshoot_w",
)


@dataclass(frozen=True)
class ExperimentConfig:
    """What ``batchsizer reproduce`` runs: the GPU, jobs, methods, seeds, items per job and the sweep."""

    gpu: str = "p40"
    job_ids: tuple[int, ...] | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    #: the first seed (seeds run from here): held-out seeds for a controller tuned on 0..seeds-1
    seed_offset: int = 0
    items: int = PAPER_ITEMS
    workers: int = 2
    #: "sim" (the calibrated simulator) or "toy" (an analytic stand-in for harness checks)
    device: str = "sim"
    sweep: SweepConfig = field(default_factory=SweepConfig)
    #: a user's own jobs (``reproduce --job-table``, :mod:`batchsizer.repro.job_table`) instead of Table 2's
    jobs: tuple[Job, ...] | None = None

    def job_list(self) -> list[Job]:
        """The jobs to run: ``jobs`` where given, else the chosen Table 2 jobs scaled to ``gpu``."""
        if self.jobs is not None:
            return list(self.jobs)
        return jobs_for(self.gpu, self.job_ids, self.items)

    def checked(self) -> ExperimentConfig:
        """Validate everything before any run starts, so a mistake costs nothing."""
        check_gpu(self.gpu)
        get_factory(self.device)
        parse_methods(list(self.methods))
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError("seeds", f"must be a whole number, at least 1, got {self.seeds!r}")
        if isinstance(self.seed_offset, bool) or not isinstance(self.seed_offset, int) or self.seed_offset < 0:
            raise ConfigError("seed offset", f"must be a whole number, at least 0, got {self.seed_offset!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError("workers", f"must be a whole number, at least 1, got {self.workers!r}")
        if self.jobs is not None and (self.job_ids is not None or not self.jobs):
            raise ConfigError("job-table", "give a job table with at least one job, or Table 2 job ids, not both")
        self.job_list()
        return self

    @property
    def seed_list(self) -> list[int]:
        """The seeds each (job, method) runs with: ``seeds`` of them from ``seed_offset``."""
        return list(range(self.seed_offset, self.seed_offset + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values, for the experiment's result file."""
        return {
            "gpu": self.gpu,
            "jobs": list(self.job_ids) if self.job_ids else None,
            **({"job_table": [vars(j) for j in self.jobs]} if self.jobs is not None else {}),
            "methods": list(self.methods),
            "seeds": self.seed_list,
            "items": self.items,
            "workers": self.workers,
            "device": self.device,
            "sweep": self.sweep.to_dict(),
        }


@dataclass
class JobOutcome:
    """One job's results: its sweep's profile (None if no method needed one), its runs and their wall times."""

    job: Job
    profile: Profile | None
    runs: list[RunResult]
    wall_s: float
    sweep_wall_s: float


@dataclass
class ExperimentResult:
    """Every job's outcome in job order, with the configuration and the total wall time (s)."""

    config: ExperimentConfig
    outcomes: list[JobOutcome]
    wall_s: float

    @property
    def runs(self) -> list[RunResult]:
        """Every run of every job, in job order."""
        return [r for o in self.outcomes for r in o.runs]

    @property
    def jobs(self) -> list[Job]:
        """The jobs that ran, in order."""
        return [o.job for o in self.outcomes]


def run_job(cfg: ExperimentConfig, job: Job, keep_series: bool = False) -> JobOutcome:
    """Sweep one job if a method needs it, then run every method with every seed."""
    t0 = time.perf_counter()
    factory = get_factory(cfg.device)
    methods = [get_method(n) for n in parse_methods(list(cfg.methods))]
    probe = open_job_device(factory, job, cfg.seed_list[0])
    knobs, sizes = probe.knobs, device_sizes(probe)
    probe.close()
    profile = None
    if any(m.needs_profile for m in methods):
        profile = profile_job(factory, job, knobs.clock_levels_mhz, seed=cfg.seed_list[0], cfg=cfg.sweep)
    sweep_s = time.perf_counter() - t0
    runs: list[RunResult] = []
    for seed in cfg.seed_list:
        by_method: dict[str, RunResult] = {}
        for m in methods:
            if m.needs_clocks and not knobs.has_clocks:
                continue
            plan = m.build(MethodContext(job, knobs, profile if m.needs_profile else None, sizes))
            keep = keep_series and seed == cfg.seed_list[0]
            run = execute(open_job_device(factory, job, seed), plan, job.cap_w, job.items, keep_samples=keep)
            by_method[m.name] = score(job, m.name, seed, plan, run, keep)
        oracle = by_method.get("oracle")
        for r in by_method.values():
            if oracle is not None and oracle.throughput > 0:
                r.oracle_fraction = r.throughput / oracle.throughput
        runs.extend(by_method.values())
    return JobOutcome(job, profile, runs, time.perf_counter() - t0, sweep_s)


def _job_task(cfg: ExperimentConfig, job: Job, keep_series: bool) -> JobOutcome:
    return run_job(cfg, job, keep_series)


def run_experiment(cfg: ExperimentConfig, on_job_done: Callable[[JobOutcome], None] | None = None) -> ExperimentResult:
    """All jobs, in ``cfg.workers`` processes; ``on_job_done`` is told as each job finishes."""
    cfg = cfg.checked()
    t0 = time.perf_counter()
    jobs = cfg.job_list()
    series_jobs = set(figure_jobs([j.id for j in jobs]))
    outcomes: dict[int, JobOutcome] = {}
    if cfg.workers == 1 or len(jobs) == 1:
        for job in jobs:
            out = run_job(cfg, job, job.id in series_jobs)
            outcomes[job.id] = out
            if on_job_done:
                on_job_done(out)
    else:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(cfg.workers, len(jobs)), mp_context=ctx) as pool:
            futures = [pool.submit(_job_task, cfg, job, job.id in series_jobs) for job in jobs]
            for fut in as_completed(futures):
                out = fut.result()
                outcomes[out.job.id] = out
                if on_job_done:
                    on_job_done(out)
    ordered = [outcomes[j.id] for j in jobs]
    return ExperimentResult(cfg, ordered, time.perf_counter() - t0)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max of the finite values (NaN when none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
    }


def aggregate(result: ExperimentResult) -> list[dict[str, Any]]:
    """One row per (job, method): each metric's mean and spread over the seeds."""
    rows: list[dict[str, Any]] = []
    for out in result.outcomes:
        names = list(dict.fromkeys(r.method for r in out.runs))
        for name in names:
            runs = [r for r in out.runs if r.method == name]
            row: dict[str, Any] = {
                "job": out.job.id,
                "model": out.job.model,
                "dataset": out.job.dataset,
                "cap_w": out.job.cap_w,
                "method": name,
                "seeds": len(runs),
                "settled_runs": sum(r.settled for r in runs),
                "note": runs[0].note,
            }
            for metric in METRICS:
                for k, v in spread([getattr(r, metric) for r in runs]).items():
                    row[f"{metric}_{k}"] = v
            rows.append(row)
    return rows
