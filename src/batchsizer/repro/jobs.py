"""The paper's workload: the 20 jobs of Table 2 (DNN, input set, power cap on the P40).

The caps were chosen on a P40 between 50 W (a loaded model at idle) and 250 W (the board limit).
:func:`jobs_for` keeps each cap's place in that range on another card, mapping 50..250 W onto the
card's idle..board-limit range, so the same 20 jobs are as tight or as relaxed on a V100, A100 or
H100 as on the P40.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from batchsizer.errors import ConfigError

#: images per job, as in the paper (10,000 images of each input set)
PAPER_ITEMS = 10_000

#: the P40 range the paper's caps were drawn from (W)
P40_RANGE_W = (50.0, 250.0)

#: idle power with a model loaded (context held) and the board power limit, per GPU (W), as in
#: ../shared/data/README.md; replaced by the simulator's own figures below when it is importable.
#: The P40 keeps the paper's 50..250 W so its caps are Table 2's exactly.
GPU_RANGE_W: dict[str, tuple[float, float]] = {
    "p40": P40_RANGE_W,
    "v100": (45.0, 300.0),
    "a100": (60.0, 400.0),
    "h100": (100.0, 700.0),
}
try:  # the simulated cards' own idle and board limit, so a scaled cap sits where it should
    from batchsizer.sim.gpus import GPUS as _SIM_GPUS

    for _name, _spec in _SIM_GPUS.items():
        if _name != "p40":
            GPU_RANGE_W[_name] = (float(_spec.idle_w), float(_spec.board_limit_w))
except ImportError:  # pragma: no cover - the simulator ships with the package
    pass


@dataclass(frozen=True)
class Job:
    """One job of Table 2, with its cap on the GPU it runs on."""

    id: int
    model: str
    dataset: str
    cap_w: float
    #: the cap the paper gave on the P40 (the same as ``cap_w`` on the P40)
    paper_cap_w: float
    gpu: str = "p40"
    items: int = PAPER_ITEMS

    @property
    def label(self) -> str:
        """A short label for tables and figures, e.g. ``19:Res101/CT@236W`` (IN: ImageNet, CT: Caltech-256)."""
        return f"{self.id}:{self.model}/{'IN' if self.dataset == 'imagenet' else 'CT'}@{self.cap_w:.0f}W"


_TABLE2: tuple[tuple[str, str, float], ...] = (
    ("IncV1", "imagenet", 191),
    ("IncV2", "imagenet", 123),
    ("IncV3", "imagenet", 228),
    ("MobV1", "imagenet", 195),
    ("MobV2", "imagenet", 84),
    ("NASNET", "imagenet", 159),
    ("PNASNET", "imagenet", 246),
    ("Res50", "imagenet", 143),
    ("Res101", "imagenet", 167),
    ("Res152", "imagenet", 218),
    ("IncV1", "caltech", 125),
    ("IncV2", "caltech", 192),
    ("IncV3", "caltech", 165),
    ("MobV1", "caltech", 98),
    ("MobV2", "caltech", 208),
    ("NASNET", "caltech", 135),
    ("PNASNET", "caltech", 136),
    ("Res50", "caltech", 198),
    ("Res101", "caltech", 236),
    ("Res152", "caltech", 188),
)

#: Table 2 as published, on the P40
PAPER_JOBS: tuple[Job, ...] = tuple(
    Job(i + 1, model, dataset, float(cap), float(cap)) for i, (model, dataset, cap) in enumerate(_TABLE2)
)


def check_gpu(gpu: str) -> str:
    """The GPU's key (``p40``; ``sim:`` prefix and case ignored) if jobs can be scaled to it; ConfigError else."""
    key = gpu.strip().lower().removeprefix("sim:")
    if key not in GPU_RANGE_W:
        raise ConfigError("gpu", f"unknown GPU {gpu!r}; choose one of {', '.join(GPU_RANGE_W)}")
    return key


def scale_cap(paper_cap_w: float, gpu: str) -> float:
    """The cap at the same place in ``gpu``'s idle..board-limit range as ``paper_cap_w`` in 50..250 W."""
    lo, hi = GPU_RANGE_W[check_gpu(gpu)]
    p_lo, p_hi = P40_RANGE_W
    fraction = (paper_cap_w - p_lo) / (p_hi - p_lo)
    return round(lo + fraction * (hi - lo), 1)


def jobs_for(gpu: str = "p40", ids: Iterable[int] | None = None, items: int = PAPER_ITEMS) -> list[Job]:
    """The chosen jobs of Table 2 (all by default) with caps scaled to ``gpu`` and ``items`` images each."""
    key = check_gpu(gpu)
    if isinstance(items, bool) or not isinstance(items, int) or items < 1:
        raise ConfigError("items", f"must be a whole number of images, at least 1, got {items!r}")
    wanted = select_ids(ids)
    return [
        replace(job, cap_w=scale_cap(job.paper_cap_w, key), gpu=key, items=items)
        for job in PAPER_JOBS
        if job.id in wanted
    ]


def select_ids(ids: Iterable[int] | None) -> list[int]:
    """Job ids in Table 2 order, checked to be 1..20 and without repeats."""
    if ids is None:
        return [job.id for job in PAPER_JOBS]
    chosen: list[int] = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= len(PAPER_JOBS):
            raise ConfigError("jobs", f"job ids are 1..{len(PAPER_JOBS)} (Table 2), got {i!r}")
        if i in chosen:
            raise ConfigError("jobs", f"job {i} is given twice")
        chosen.append(i)
    if not chosen:
        raise ConfigError("jobs", "choose at least one job, e.g. 1,5,19")
    return sorted(chosen)


def parse_job_ids(text: str) -> list[int]:
    """``"1,5,19"`` or ``"1-4,19"`` -> [1, 2, 3, 4, 19]."""
    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ConfigError("jobs", f"range {part!r} runs backwards; write it as {b}-{a}")
                ids.extend(range(a, b + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise ConfigError("jobs", f"give job ids 1..20 like 1,5,19 or 1-4; got {text!r}") from None
    return select_ids(ids)


def figure_jobs(available: Sequence[int]) -> list[int]:
    """The five jobs drawn over time: from the tightest cap to the most relaxed, both claims' jobs included."""
    preferred = [5, 14, 8, 13, 19]
    picked = [i for i in preferred if i in available]
    for i in available:
        if len(picked) >= 5:
            break
        if i not in picked:
            picked.append(i)
    return picked[:5]
