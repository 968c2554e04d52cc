"""The exact oracle: the fastest static setting that stays under the cap, over every setting a controller may choose.

Settings are every whole batch size in the device's range (1..256 on the simulator; a table
device's ``size_range``; see :func:`device_sizes`) times every clock level and every board power
limit the device offers as a knob (:class:`~batchsizer.policies.base.DeviceKnobs`): 2,560 on a
simulated GPU, 28,623 on the V100 Zeus table (4,089 sizes at 7 limits). Running each for a whole
job is too slow on two cores, so the search is ordered, not exhaustive:

1. every setting gets a noiseless estimate (:class:`Estimate`) of its throughput, compute-phase
   power and mean power from the device's own model (:func:`estimate_settings`: the plant's
   ``cost()`` of a simulated or table device, a scripted device's functions; a device without a
   model is measured instead, ``min_periods`` (50) control periods per setting);
2. settings are checked fastest estimate first, each by a static run of the whole job (the job's
   items and seed) through the real control loop, sensor and cap rule, which stops at the first
   control period with a judged reading over the cap: the setting is rejected;
3. the first setting whose whole job stays under the cap is the oracle, and that run is its job.

A check is the job itself, not a longer run: a controller holding a setting for the whole job
faces exactly those readings, and a longer check would be stricter than the job (more readings,
hence higher noise peaks, and a card heated for longer), rejecting settings a compliant controller
can use for the whole job, which would make the oracle beatable.

Why it is an upper bound under ``peak``, up to sensor noise. Every setting estimated faster than
the oracle was run for the whole job and read over the cap (or was skipped as sure to, below).
Every other setting is estimated no faster, and an estimate is the noiseless mean of what a run of
that setting measures, so none is faster than the oracle by more than the run-to-run noise of a
throughput (per-batch time variation averaged over the job). A switching controller runs a
sequence of batches at settings ``s_i``; its throughput, (sum of items) / (sum of batch times), is
at most the largest items/time among the settings it used (the mediant inequality), so it beats
the oracle only by using, for some batches, a setting the oracle rejected. Under ``peak`` each
batch whose compute phase spans a sensor window is read at its compute power (plus zero-mean
noise; a warm card draws more, not less), so it can do that without a reading over the cap only
while the noise stays low for the stretch it uses that setting: a setting within a few noise
standard deviations of the cap, worth the throughput between settings that close in power (the
tests measure exactly this tolerance). Two effects are not noise and are said here so nobody takes
them for a bug: a controller that reaches a setting with a card cooler than the static run's draws a
little less there (leakage: a few percent of the power as the simulated card warms, with a 60 s
thermal time constant); and a sensor whose window is longer than a batch (the 1 s averages)
averages neighbouring batches, so alternating settings can sit closer to the cap than any static
one. The limit for the latter, and for the ``avg:S`` rule, is the upper concave envelope of the
settings' (mean power, throughput) at the cap (:func:`upper_envelope`, :attr:`OracleResult.envelope`):
any controller's mean power and throughput are a time-weighted mix of its settings', which lies
under that envelope.

Which settings are skipped without a run (:func:`surely_over`): only where the simulator's
readings can be bounded (its sensor and per-batch variation are known). A compute phase of at
least a sensor window plus an update period holds the window of one reading per batch, read at
the compute power; shorter ones are bounded by the lowest mean of the periodic trace over a sensor
window. Each such reading is its bound plus zero-mean noise (the sensor's, and the per-batch power
variation), and a warm card draws more, so it is at or under the cap with probability at most
Phi((cap - bound)/sd); a setting is skipped when the whole job staying under the cap is less
likely than ``SKIP_CHANCE`` (1e-6). Everything else is run; a setting clearly over the cap costs a
control period or two, one borderline by noise a good part of a job.

Under ``avg:S`` the checks judge the trailing S-second mean (the loop's ``judged`` series), and
nothing is skipped.

API, for the reproduction and the benchmark (any device family: simulated GPUs, table devices,
scripted plants): :func:`find_oracle` ``(open_device, cap_w, items, *, sizes=None, rule="peak")
-> OracleResult``, where ``open_device()`` returns a fresh device with the job's seed; or
:class:`OracleSearch` (same arguments) and ``best(where=None)`` for several queries over one job
(the fastest paper size, the default power limit only) sharing the checks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchsizer.core.batching import DynamicBatchStream
from batchsizer.core.cap_rule import PEAK, CapRule
from batchsizer.core.cap_rule import over as over_cap
from batchsizer.core.caps import ConstantCap
from batchsizer.core.device import Device
from batchsizer.core.loop import ControlLoop, LoopObserver, PeriodRecord, Window
from batchsizer.core.types import Setting
from batchsizer.errors import ConfigError
from batchsizer.policies.static import Static
from batchsizer.testing.scripted import ScriptedDevice

#: the simulator's batch sizes: every whole number 1..256
SIM_SIZES: tuple[int, ...] = tuple(range(1, 257))
#: a measured probe (for a device without a model) lasts this many control periods
MIN_PERIODS = 50
#: a check looks at its readings every this many batches: it judges the same readings whatever the
#: period (a static setting never changes), but a short one stops a failing check sooner
CHECK_BATCHES = 2

OpenDevice = Callable[[], Device]


# -- the settings and their estimates ----------------------------------------------------------


def device_sizes(device: Device) -> tuple[int, ...]:
    """The whole batch sizes a controller may choose on ``device``.

    A device may say so with ``size_range`` (lo, hi), as a table device does; a plant with
    ``batch_sizes`` (its rows: every whole size between its smallest and largest); otherwise the
    simulator's 1..256."""
    rng = getattr(device, "size_range", None)
    if rng is not None:
        lo, hi = int(rng[0]), int(rng[1])
        return tuple(range(lo, hi + 1))
    rows = getattr(getattr(device, "plant", None), "batch_sizes", None)
    if rows:
        return tuple(range(min(rows), max(rows) + 1))
    return SIM_SIZES


def all_settings(device: Device, sizes: Sequence[int] | None = None) -> list[Setting]:
    """Every (size, clock, power limit) the device lets a controller set."""
    knobs = device.knobs
    clocks: tuple[int | None, ...] = knobs.clock_levels_mhz or (None,)
    limits: tuple[float | None, ...] = knobs.power_limits_w or (None,)
    return [Setting(b, c, w) for b in (sizes or device_sizes(device)) for c in clocks for w in limits]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A static setting held for ever, noiseless: items/s, compute-phase power and mean power (W).

    Powers are on the sensor's scale (the simulated sensor's gain applied) and for a cold card."""

    setting: Setting
    throughput: float
    peak_w: float
    mean_w: float
    #: one batch's compute phase (at ``peak_w``) and the rest of it (host, copy: at ``idle_w``), in s;
    #: NaN for a setting estimated by a measured run
    compute_s: float = math.nan
    idle_s: float = math.nan
    idle_w: float = math.nan


def _gain(device: Device) -> float:
    spec = getattr(device, "sensor_spec", None)
    return float(getattr(spec, "gain", 1.0) or 1.0)


def _model_estimate(device: Device, setting: Setting) -> Estimate | None:
    """From the device's model, with ``setting`` applied to it; None when it has none."""
    n = setting.batch_size
    if isinstance(device, ScriptedDevice):
        t, prep = device.time_fn(n, device.clock_mhz), device.prep_s
        p = device.power_fn(n, device.clock_mhz)
        mean = (p * t + device.idle_w * prep) / (t + prep)
        return Estimate(setting, n / (t + prep), p, mean, t, prep, device.idle_w)
    plant = getattr(device, "plant", None)
    if plant is None or not hasattr(plant, "cost"):
        return None
    mhz = getattr(device, "clock_mhz", None)
    c = plant.cost(n, mhz)
    total = c.host_s + c.transfer_s + c.compute_s
    idle = float(plant.idle_w)
    energy = idle * c.host_s + c.transfer_w * c.transfer_s + c.compute_w * c.compute_s
    g = _gain(device)
    return Estimate(setting, n / total, g * c.compute_w, g * energy / total, c.compute_s, total - c.compute_s, g * idle)


def estimate_settings(
    open_device: OpenDevice, settings: Sequence[Setting], probe_batches: int = MIN_PERIODS * 10
) -> list[Estimate]:
    """Noiseless estimates from the device's model; where it has none, a measured run of ``probe_batches``
    batches per setting (50 control periods of 10 batches by default, so even the largest size is seen
    over many periods)."""
    device = open_device()
    out: list[Estimate] = []
    try:
        for s in settings:
            device.apply(s)
            est = _model_estimate(device, s)
            if est is None:
                break
            out.append(est)
    finally:
        device.close()
    if len(out) == len(settings):
        return out
    measured = []  # no model: rank by a short run of each setting (slow, but any device works)
    for s in settings:
        chk = _run_check(open_device, s, math.inf, probe_batches * s.batch_size, PEAK, probe_batches, stop=False)
        measured.append(Estimate(s, chk.throughput, chk.peak_w, chk.mean_w))
    return measured


# -- settings that need no run -------------------------------------------------------------------

#: a setting is skipped only when a run would stay under the cap with less than this probability
SKIP_CHANCE = 1e-6
#: how far (in standard deviations) batch and host times may stray when bounding a reading
PHASE_SIGMAS = 5.0


@dataclass(frozen=True, slots=True)
class SensorModel:
    """What bounds a simulated card's readings: the sensor and the per-batch variation (SimDevice's)."""

    update_period_s: float
    window_s: float
    noise_w: float
    power_cv: float
    time_cv: float
    host_cv: float

    @classmethod
    def of(cls, device: Device) -> SensorModel | None:
        """The sensor and variation of a simulated ``device``; None for one without them (not a SimDevice)."""
        spec = getattr(device, "sensor_spec", None)
        try:
            return cls(
                float(spec.update_period_s),  # type: ignore[union-attr]
                float(spec.window_s),  # type: ignore[union-attr]
                float(spec.noise_w),  # type: ignore[union-attr]
                float(device.power_cv),  # type: ignore[attr-defined]
                float(device.time_cv),  # type: ignore[attr-defined]
                float(device.host_cv),  # type: ignore[attr-defined]
            )
        except (AttributeError, TypeError, ValueError):
            return None


def lowest_reading_w(est: Estimate, sensor: SensorModel) -> tuple[float, bool]:
    """A noiseless lower bound on the readings of a static setting, and whether it holds for one reading
    per batch only (True: a reading whose window lies inside a compute phase) or for every reading (False).

    A compute phase that lasts at least a sensor window plus an update period contains the window
    of at least one reading, which then reads the compute power. Otherwise every reading averages a
    window of the periodic trace (compute at ``peak_w``, the rest at ``idle_w`` or more) and is at
    least that trace's lowest mean over any window of that length, with the compute phase as short
    and the idle phase as long as the variation allows (``PHASE_SIGMAS``)."""
    c = est.compute_s * (1 - PHASE_SIGMAS * sensor.time_cv)
    h = est.idle_s * (1 + PHASE_SIGMAS * sensor.host_cv)
    if c >= sensor.window_s + sensor.update_period_s:
        return est.peak_w, True
    w = sensor.window_s
    if w <= 0 or c <= 0:
        return est.idle_w, False
    period = c + h
    k, r = divmod(w, period)
    energy = k * (c * est.peak_w + h * est.idle_w) + est.idle_w * min(r, h) + est.peak_w * max(0.0, r - h)
    return energy / w, False


def surely_over(est: Estimate, sensor: SensorModel | None, cap_w: float, items: int) -> bool:
    """Whether a whole-job check of ``est`` would read over the cap with probability above 1 - SKIP_CHANCE.

    Each bounded reading is its noiseless value plus zero-mean noise (the sensor's, and the per-batch
    power variation times the dynamic power), and a warm card only draws more, so a reading is at
    or under the cap with probability at most Phi((cap - bound) / sd). Readings a batch apart see
    different batches and independent sensor noise; the check is skipped when all ``n`` of them
    staying under the cap is less likely than ``SKIP_CHANCE`` (``n``: one per batch of the job for a
    long compute phase; one per sensor window of the job otherwise)."""
    if sensor is None or not math.isfinite(est.compute_s) or est.throughput <= 0:
        return False
    bound, per_batch = lowest_reading_w(est, sensor)
    if bound <= cap_w:
        return False
    sd = math.hypot(sensor.noise_w, sensor.power_cv * max(est.peak_w - est.idle_w, 0.0))
    if sd <= 0:
        return True
    p_under = 0.5 * math.erfc((bound - cap_w) / (sd * math.sqrt(2)))
    if per_batch:
        n = max(1, items // est.setting.batch_size)
    else:
        duration = items / est.throughput
        n = max(1, int(duration / max(sensor.window_s, sensor.update_period_s, est.compute_s + est.idle_s)))
    return n * math.log(max(p_under, 1e-300)) < math.log(SKIP_CHANCE)


# -- checking one setting ------------------------------------------------------------------------


class _Judge(LoopObserver):
    """Stops a check after the first control period with a judged value over the cap, and keeps the highest.

    It reads what the loop judged (``PeriodRecord.judged``: the readings under ``peak``, their
    trailing mean under ``avg:S``, by :func:`batchsizer.core.cap_rule.judged`), so the check and the
    summary cannot disagree; each value counts where its hold overlaps the period, as the summary's."""

    def __init__(self, cap_w: float, rule: CapRule, stop: threading.Event | None) -> None:
        self.cap_w, self.rule, self.stop = cap_w, rule, stop
        self.highest = -math.inf
        self.over = False

    def on_period(self, record: PeriodRecord) -> None:
        o = record.observation
        # a record without the judged series (the job's tail) is left to the summary's account
        series = list(record.samples if self.rule.is_peak else record.judged)
        for k, smp in enumerate(series):
            end = series[k + 1].t if k + 1 < len(series) else o.end
            if min(end, o.end) <= max(smp.t, o.start) or not math.isfinite(smp.watts):
                continue
            self.highest = max(self.highest, smp.watts)
            self.over = self.over or over_cap(smp.watts, self.cap_w)
        if self.over and self.stop is not None:
            self.stop.set()


@dataclass(frozen=True, slots=True)
class Check:
    """One setting's run: whether it stayed under the cap, and what it measured until it stopped."""

    setting: Setting
    estimate: float
    items: int
    compliant: bool
    throughput: float
    #: the highest reading (peak) or trailing mean (avg) the run saw
    peak_w: float
    mean_w: float
    duration_s: float


def _run_check(
    open_device: OpenDevice,
    setting: Setting,
    cap_w: float,
    items: int,
    rule: CapRule,
    window_batches: int,
    stop: bool = True,
    estimate: float = math.nan,
) -> Check:
    device = open_device()
    event = threading.Event()
    judge = _Judge(cap_w, rule, event if stop else None)
    ctrl = Static(setting.batch_size, setting.clock_mhz, setting.power_limit_w)
    try:
        window = Window(batches=window_batches)
        loop = ControlLoop(device, ctrl, ConstantCap(cap_w), window, [judge], event, cap_rule=rule)
        summary = loop.run(DynamicBatchStream(range(items)))
    finally:
        device.close()
    # the job's last, partial period is accounted in the summary but not shown to observers
    over = judge.over or summary.over_cap_s > 0
    if summary.worst_overshoot_w > 0:
        judge.highest = max(judge.highest, cap_w + summary.worst_overshoot_w)
    mean = summary.energy_j / summary.duration_s if summary.duration_s > 0 else math.nan
    return Check(
        setting, estimate, summary.items, not over, summary.throughput, judge.highest, mean, summary.duration_s
    )


# -- the envelope --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """The best a controller alternating settings can do when only the mean power counts.

    ``throughput`` is the upper concave envelope of the settings' (mean power, throughput) at the
    cap: ``share_low`` of the time at ``low`` and the rest at ``high`` (the same setting twice when
    one alone is best). NaN and no settings when even the lowest mean power is over the cap."""

    cap_w: float
    throughput: float
    low: Estimate | None
    high: Estimate | None
    share_low: float


def upper_envelope(estimates: Sequence[Estimate], cap_w: float) -> Envelope:
    """The upper concave envelope of (mean power, throughput) evaluated at ``cap_w``."""
    pts = sorted(estimates, key=lambda e: (e.mean_w, e.throughput))
    pts = [e for e in pts if math.isfinite(e.mean_w) and math.isfinite(e.throughput)]
    if not pts or over_cap(pts[0].mean_w, cap_w):
        return Envelope(cap_w, math.nan, None, None, math.nan)
    hull: list[Estimate] = []
    for e in pts:  # monotone chain, upper hull
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (b.mean_w - a.mean_w) * (e.throughput - a.throughput) - (b.throughput - a.throughput) * (
                e.mean_w - a.mean_w
            )
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(e)
    top = max(hull, key=lambda e: e.throughput)
    if top.mean_w <= cap_w:  # the fastest hull point already fits: no need to alternate
        return Envelope(cap_w, top.throughput, top, top, 1.0)
    for a, b in zip(hull, hull[1:]):
        if a.mean_w <= cap_w < b.mean_w:
            share = (b.mean_w - cap_w) / (b.mean_w - a.mean_w)
            return Envelope(cap_w, share * a.throughput + (1 - share) * b.throughput, a, b, share)
    return Envelope(cap_w, hull[0].throughput, hull[0], hull[0], 1.0)  # pragma: no cover - cap below hull[1]


# -- the search ----------------------------------------------------------------------------------


@dataclass
class OracleResult:
    """The oracle of one job: its setting, the job's measured throughput there, and how it was found."""

    cap_w: float
    rule: str
    #: the fastest compliant static setting; when none is, the one that went over the cap latest
    setting: Setting | None
    #: the whole job's measured throughput at ``setting`` (the job's seed)
    throughput: float
    #: the noiseless estimate of ``setting``'s throughput
    estimate: float
    #: whether ``setting`` stayed under the cap (False: no setting did)
    clean: bool
    peak_w: float
    mean_w: float
    #: every check made, in order
    checks: list[Check] = field(default_factory=list)
    settings: int = 0
    #: settings not run because a run would surely read over the cap (see :func:`surely_over`)
    skipped: int = 0
    envelope: Envelope | None = None
    wall_s: float = 0.0

    @property
    def runs(self) -> int:
        """How many device runs the search took: each check, and the final whole-job run if a setting was found."""
        return len(self.checks) + (1 if self.setting is not None else 0)


class OracleSearch:
    """One job's oracle search; checks are kept, so several queries (all settings, the paper's sizes) share them."""

    def __init__(
        self,
        open_device: OpenDevice,
        cap_w: float,
        items: int,
        *,
        sizes: Sequence[int] | None = None,
        rule: CapRule | str | None = "peak",
        min_periods: int = MIN_PERIODS,
        window_batches: int = 10,
    ) -> None:
        if isinstance(items, bool) or not isinstance(items, int) or items < 1:
            raise ConfigError("items", f"must be a whole number of images, at least 1, got {items!r}")
        if min_periods < 1 or window_batches < 1:
            raise ConfigError("oracle", "min_periods and window_batches must be at least 1")
        self.open_device, self.cap_w, self.items = open_device, float(cap_w), items
        self.rule = CapRule.parse(rule)
        self.min_periods, self.window_batches = min_periods, window_batches
        t0 = time.perf_counter()
        probe = open_device()
        try:
            self.settings = all_settings(probe, sizes)
            #: None where the readings cannot be bounded (only the simulator's can): nothing is skipped
            self.sensor = SensorModel.of(probe) if self.rule.is_peak else None
        finally:
            probe.close()
        self.estimates = estimate_settings(open_device, self.settings, min_periods * window_batches)
        self._order = sorted(self.estimates, key=lambda e: (-round(e.throughput, 9), e.peak_w, e.setting.batch_size))
        self._checks: dict[Setting, Check] = {}
        self.log: list[Check] = []
        #: runs made so far (checks, and whole jobs re-run where no setting was compliant)
        self.runs = 0
        self.wall_s = time.perf_counter() - t0

    def check(self, est: Estimate) -> Check:
        """Run ``est``'s setting for the whole job, stopping at a reading over the cap (once; later calls reuse it)."""
        s = est.setting
        if s not in self._checks:
            chk = _run_check(
                self.open_device, s, self.cap_w, self.items, self.rule, CHECK_BATCHES, estimate=est.throughput
            )
            self._checks[s] = chk
            self.log.append(chk)
            self.runs += 1
        return self._checks[s]

    def best(self, where: Callable[[Setting], bool] | None = None) -> OracleResult:
        """The fastest compliant static setting among those ``where`` accepts (all by default)."""
        t0 = time.perf_counter()
        first = len(self.log)
        pool = [e for e in self._order if where is None or where(e.setting)]
        chosen: Check | None = None
        skipped = 0
        for est in pool:
            if est.setting not in self._checks and surely_over(est, self.sensor, self.cap_w, self.items):
                skipped += 1
                continue
            if self.check(est).compliant:
                chosen = self._checks[est.setting]
                break
        if chosen is None and pool:  # nothing stays under the cap: the setting whose judged power was lowest
            tried = [self._checks[e.setting] for e in pool if e.setting in self._checks]
            if not tried:  # every one was skipped: the lowest estimated power
                tried = [self.check(min(pool, key=lambda e: (e.peak_w, -e.throughput)))]
            lowest = min(tried, key=lambda c: (c.peak_w, -c.throughput))
            chosen = self._whole_job(lowest)
        wall = time.perf_counter() - t0 + (self.wall_s if first == 0 else 0.0)
        return OracleResult(
            cap_w=self.cap_w,
            rule=str(self.rule),
            setting=None if chosen is None else chosen.setting,
            throughput=math.nan if chosen is None else chosen.throughput,
            estimate=math.nan if chosen is None else chosen.estimate,
            clean=chosen is not None and chosen.compliant,
            peak_w=math.nan if chosen is None else chosen.peak_w,
            mean_w=math.nan if chosen is None else chosen.mean_w,
            checks=self.log[first:],
            settings=len(pool),
            skipped=skipped,
            envelope=upper_envelope(pool, self.cap_w),
            wall_s=wall,
        )

    def _whole_job(self, chk: Check) -> Check:
        """``chk``'s setting run for the whole job without stopping (for the fallback when none is compliant)."""
        self.runs += 1
        return _run_check(self.open_device, chk.setting, self.cap_w, self.items, self.rule, CHECK_BATCHES,
                          stop=False, estimate=chk.estimate)  # fmt: skip


def find_oracle(open_device: OpenDevice, cap_w: float, items: int, **options: Any) -> OracleResult:
    """The exact oracle of a job: see the module's docstring. ``open_device()`` gives a fresh device (job's seed);
    ``options`` are :class:`OracleSearch`'s keywords (``sizes``, ``rule``, ``min_periods``, ``window_batches``)."""
    return OracleSearch(open_device, cap_w, items, **options).best()
