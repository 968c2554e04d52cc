"""The methods compared, by name: each turns a job (and, if it needs one, the job's sweep) into a plan.

``batchsizer`` and ``dvfs`` are the paper's; ``batchdvfs`` is the authors' successor; the rest are
the baselines the paper left out. The ablation runs Algorithm 1 and ``adaptive`` on the same knobs:
``batchsizer`` and ``adaptive-paper`` on the paper's nine sizes without the clock, then
``batchsizer-full`` (every whole size; Algorithm 1 has no clock knob) and ``adaptive`` (every whole
size and the clock where the device has one), so a table shows what the algorithm earns and what
the extra knobs earn. Any controller
registered in :mod:`batchsizer.policies` that is not listed here can be named too: it runs with the
paper's sizes and alpha and no profile (so a new controller joins the comparison by registering
itself, nothing here changes). :func:`register_method` adds a method that needs more than that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from batchsizer.core.types import DeviceKnobs
from batchsizer.errors import ConfigError
from batchsizer.policies import CONTROLLERS, DEFAULT_BATCH_SIZES, make_controller
from batchsizer.policies.aimd import Aimd
from batchsizer.policies.static import Static
from batchsizer.repro.jobs import Job
from batchsizer.repro.runner import Plan
from batchsizer.repro.sweep import Profile

#: the paper's configuration (Section 4.2 and 5.1)
PAPER_ALPHA = 0.8
PAPER_DVFS_BATCH = 16
#: the full size set of the ablation on the simulator: every whole size 1..256
FULL_SIZES: tuple[int, ...] = tuple(range(1, 257))


@dataclass(frozen=True)
class MethodContext:
    """What a method may look at to set up a run."""

    job: Job
    knobs: DeviceKnobs
    #: the job's sweep, given only to methods that declare ``needs_profile``
    profile: Profile | None = None
    #: every whole size the device offers (the full set of the ablation)
    sizes: tuple[int, ...] = field(default=FULL_SIZES)


@dataclass(frozen=True)
class Method:
    """A method of the reproduction: its name, label, how it builds a run's plan, and what it needs."""

    name: str
    label: str
    description: str
    build: Callable[[MethodContext], Plan]
    needs_profile: bool = False
    needs_clocks: bool = False


def _profile(ctx: MethodContext) -> Profile:
    if ctx.profile is None:  # the experiment sweeps before building a method that needs it
        raise ConfigError("method", "this method needs the job's sweep, which was not run")
    return ctx.profile


def _batchsizer(ctx: MethodContext) -> Plan:
    return Plan(make_controller("batchsizer", ctx.knobs, sizes=DEFAULT_BATCH_SIZES, alpha=PAPER_ALPHA, initial=1))


def _dvfs(ctx: MethodContext) -> Plan:
    return Plan(make_controller("dvfs", ctx.knobs, batch_size=PAPER_DVFS_BATCH, alpha=PAPER_ALPHA))


def _dvfs_best_batch(ctx: MethodContext) -> Plan:
    size = _profile(ctx).best_paper_size
    return Plan(make_controller("dvfs", ctx.knobs, batch_size=size, alpha=PAPER_ALPHA), note=f"batch {size}")


def _hw_limit(ctx: MethodContext) -> Plan:
    prof = _profile(ctx)
    note = f"batch {prof.best_hw_size}, limit {prof.hw_limit_w:g} W" + (f" ({prof.hw_note})" if prof.hw_note else "")
    return Plan(Static(prof.best_hw_size, None), power_limit_w=prof.hw_limit_w, note=note)


def _aimd(ctx: MethodContext) -> Plan:
    # every whole size up to the paper's largest, as the released baseline, whatever the device's range
    return Plan(Aimd(initial=1, max_batch_size=max(DEFAULT_BATCH_SIZES)))


def _batchdvfs(ctx: MethodContext) -> Plan:
    return Plan(make_controller("batchdvfs", ctx.knobs, alpha=PAPER_ALPHA))


def _batchsizer_full(ctx: MethodContext) -> Plan:
    sizes = ctx.sizes
    return Plan(make_controller("batchsizer", ctx.knobs, sizes=sizes, alpha=PAPER_ALPHA, initial=sizes[0]))


def _adaptive_paper(ctx: MethodContext) -> Plan:
    return Plan(make_controller("adaptive", DeviceKnobs(), sizes=DEFAULT_BATCH_SIZES))


def _adaptive_full(ctx: MethodContext) -> Plan:
    return Plan(make_controller("adaptive", ctx.knobs, sizes=ctx.sizes))


def _oracle(ctx: MethodContext) -> Plan:
    prof = _profile(ctx)
    assert prof.oracle is not None
    o = prof.oracle
    at = f" at {o.clock_mhz} MHz" if o.clock_mhz is not None else ""
    limit = f", limit {o.power_limit_w:g} W" if o.power_limit_w is not None else ""
    note = f"batch {o.batch_size}{at}{limit}" + ("" if prof.oracle_clean else " (no setting stays under the cap)")
    return Plan(Static(o.batch_size, o.clock_mhz, o.power_limit_w), note=note)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> None:
    """Add (or replace) a method the reproduction can name."""
    METHODS[method.name] = method


for _m in (
    Method("batchsizer", "BatchSizer", "Algorithm 1: sizes 1..256 (powers of two), alpha 0.8, start at 1", _batchsizer),
    Method("dvfs", "DVFS", "the paper's DVFS: band search over the clock levels at batch 16", _dvfs, needs_clocks=True),
    Method(
        "dvfs-best-batch",
        "DVFS best batch",
        "the paper's DVFS search at the job's best paper batch size (by sweep)",
        _dvfs_best_batch,
        needs_profile=True,
        needs_clocks=True,
    ),
    Method(
        "hw-limit",
        "HW power limit",
        "the card's own power limit set to the cap (nvidia-smi -pl), default clocks, best fixed batch size",
        _hw_limit,
        needs_profile=True,
        needs_clocks=True,
    ),
    Method("aimd", "AIMD", "Clipper-style on power: +4 per decision under the cap, -10% over it", _aimd),
    Method(
        "batchdvfs",
        "BatchDVFS",
        "the authors' TPDS'22 successor: band search over sizes 1..255, a clock step when pinned at an end, "
        "decisions every 3 s on the max reading",
        _batchdvfs,
    ),
    Method(
        "batchsizer-full",
        "BatchSizer (all sizes)",
        "Algorithm 1 over every whole size the device offers (1..256), no clock: the ablation's full set",
        _batchsizer_full,
    ),
    Method(
        "adaptive-paper",
        "adaptive (paper's sizes)",
        "adaptive on Algorithm 1's knobs: the paper's nine sizes, no clock",
        _adaptive_paper,
    ),
    Method(
        "adaptive",
        "adaptive",
        "the default controller with every whole size the device offers and the clock where it has one",
        _adaptive_full,
    ),
    Method(
        "oracle",
        "Oracle",
        "the fastest static setting (every size, clock and power limit) whose whole job stays under the cap",
        _oracle,
        needs_profile=True,
    ),
):
    register_method(_m)

DEFAULT_METHODS: tuple[str, ...] = (
    "batchsizer",
    "dvfs",
    "dvfs-best-batch",
    "hw-limit",
    "aimd",
    "batchdvfs",
    "adaptive",
    "oracle",
)
#: the ablation of part 5: Algorithm 1 and adaptive on the same knobs (paper's sizes no clock; the full set)
ABLATION_METHODS: tuple[str, ...] = ("batchsizer", "adaptive-paper", "batchsizer-full", "adaptive", "oracle")


def _from_controller(name: str) -> Method:
    def build(ctx: MethodContext) -> Plan:
        return Plan(make_controller(name, ctx.knobs, sizes=DEFAULT_BATCH_SIZES, alpha=PAPER_ALPHA))

    return Method(name, name, f"the registered controller {name!r} with the paper's sizes and alpha", build)


def get_method(name: str) -> Method:
    """A method by name: one of :data:`METHODS`, or any registered controller."""
    if name in METHODS:
        return METHODS[name]
    if name in CONTROLLERS:
        return _from_controller(name)
    raise ConfigError("methods", f"unknown method {name!r}; choose from {', '.join(available_methods())}")


def available_methods() -> list[str]:
    """The reproduction's own methods, then every other registered controller by name."""
    extra = sorted(n for n in CONTROLLERS if n not in METHODS)
    return list(METHODS) + extra


def parse_methods(text: str | Sequence[str] | None) -> list[str]:
    """Method names from ``"batchsizer,dvfs"`` (the oracle always runs: the others are scored against it)."""
    if text is None:
        names = list(DEFAULT_METHODS)
    else:
        parts = text.split(",") if isinstance(text, str) else list(text)
        names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise ConfigError("methods", f"choose at least one of {', '.join(available_methods())}")
    seen: list[str] = []
    for n in names:
        get_method(n)
        if n not in seen:
            seen.append(n)
    if "oracle" not in seen:
        seen.append("oracle")
    return seen
