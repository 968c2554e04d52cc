"""What the baselines that need to know the job are given: the exact oracle, the best paper size, the hw-limit size.

One :class:`Profile` per job serves every method and seed. The oracle is
:mod:`batchsizer.repro.oracle`'s: the fastest static (batch size, clock, power limit) over every
setting a controller may choose whose whole job stays under the cap, checked fastest first through
the same control loop and sensor as the real runs. The best paper size (for ``dvfs-best-batch``) is
the same search restricted to the paper's nine sizes, sharing its checks. The hardware-limit
baseline's size is the fastest of the paper's sizes in a short run under the card's power limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from batchsizer.core.cap_rule import CapRule
from batchsizer.core.types import Setting
from batchsizer.errors import BatchSizerError
from batchsizer.policies.base import DEFAULT_BATCH_SIZES
from batchsizer.policies.static import Static
from batchsizer.repro.job_devices import DeviceFactory, open_job_device
from batchsizer.repro.jobs import Job
from batchsizer.repro.oracle import OracleResult, OracleSearch
from batchsizer.repro.runner import Plan, execute


@dataclass(frozen=True)
class SweepConfig:
    """How a job is profiled: the oracle's sizes and cap rule, and the hw-limit baseline's short runs.

    ``sizes`` None: every whole size the device offers (1..256 on the simulator). ``rule``: ``peak``
    or ``avg:SECONDS``. Each hw-limit point runs at least ``min_batches`` batches and ``min_seconds``
    of device time."""

    sizes: tuple[int, ...] | None = None
    rule: str = "peak"
    min_batches: int = 20
    min_seconds: float = 1.0

    def __post_init__(self) -> None:
        CapRule.parse(self.rule)  # a bad rule fails here, before anything runs

    def to_dict(self) -> dict[str, Any]:
        """The sweep's settings as JSON-ready values (``sizes`` ``all`` when not restricted)."""
        return {
            "sizes": list(self.sizes) if self.sizes else "all",
            "rule": str(self.rule),
            "min_batches": self.min_batches,
            "min_seconds": self.min_seconds,
        }


@dataclass(frozen=True)
class MeasuredSetting:
    """One measured static setting."""

    batch_size: int
    clock_mhz: int | None
    throughput: float
    peak_w: float
    mean_w: float
    power_limit_w: float | None = None

    def under(self, cap_w: float) -> bool:
        """Whether the setting's measured peak is at or under ``cap_w`` (never for a NaN peak)."""
        return math.isfinite(self.peak_w) and self.peak_w <= cap_w


@dataclass
class Profile:
    """What was found for one job (on one GPU, with one seed)."""

    job_id: int
    cap_w: float
    seed: int
    #: the oracle's setting, with the whole job's measured throughput, highest judged reading and mean power
    oracle: MeasuredSetting | None = None
    oracle_clean: bool = False
    #: the oracle setting's noiseless throughput estimate
    oracle_estimate: float = math.nan
    #: the cap rule the oracle was judged by, and the alternating-settings limit under it (see oracle.upper_envelope)
    rule: str = "peak"
    envelope_throughput: float = math.nan
    #: settings the oracle could choose from, and how many it ran (fastest estimate first) before one passed
    oracle_settings: int = 0
    oracle_checks: int = 0
    oracle_wall_s: float = 0.0
    best_paper_size: int = 1
    hw: list[MeasuredSetting] = field(default_factory=list)
    best_hw_size: int = 1
    hw_limit_w: float | None = None
    hw_note: str = ""
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The profile as nested dicts, for the result files."""
        return asdict(self)


def measure(
    factory: DeviceFactory,
    job: Job,
    seed: int,
    size: int,
    clock: int | None,
    cfg: SweepConfig,
    power_limit_w: float | None = None,
) -> MeasuredSetting:
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
    return MeasuredSetting(size, clock, s.throughput, peak, mean, power_limit_w)


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


def oracle_point(result: OracleResult) -> MeasuredSetting | None:
    """The oracle's setting with its whole-job measurements; None when the oracle found no setting."""
    s: Setting | None = result.setting
    if s is None:
        return None
    return MeasuredSetting(s.batch_size, s.clock_mhz, result.throughput, result.peak_w, result.mean_w, s.power_limit_w)


def profile_job(
    factory: DeviceFactory, job: Job, clock_levels: tuple[int, ...], seed: int = 0, cfg: SweepConfig | None = None
) -> Profile:
    """One job's oracle, best paper size for DVFS, and best size under the power limit (``clock_levels``:
    the device's, whether the hw-limit baseline applies)."""
    cfg = cfg or SweepConfig()
    prof = Profile(job.id, job.cap_w, seed)
    t0 = time.perf_counter()
    search = OracleSearch(lambda: open_job_device(factory, job, seed), job.cap_w, job.items, sizes=cfg.sizes,
                          rule=cfg.rule)  # fmt: skip
    best = search.best()
    prof.oracle, prof.oracle_clean, prof.oracle_estimate = oracle_point(best), best.clean, best.estimate
    prof.rule = best.rule
    prof.envelope_throughput = best.envelope.throughput if best.envelope else math.nan
    prof.oracle_settings, prof.oracle_checks = best.settings, len(best.checks)
    paper = search.best(lambda s: s.batch_size in DEFAULT_BATCH_SIZES)
    prof.best_paper_size = paper.setting.batch_size if paper.setting and paper.clean else DEFAULT_BATCH_SIZES[0]
    prof.oracle_wall_s = time.perf_counter() - t0
    prof.hw_limit_w, prof.hw_note = hw_limit_for(job)
    if clock_levels:
        for size in DEFAULT_BATCH_SIZES:
            prof.hw.append(measure(factory, job, seed, size, None, cfg, prof.hw_limit_w))
        fastest = max(prof.hw, key=lambda p: (round(p.throughput, 6), -p.batch_size))
        prof.best_hw_size = fastest.batch_size
    prof.runs = search.runs + len(prof.hw)
    return prof
