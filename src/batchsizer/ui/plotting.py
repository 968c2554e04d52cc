"""Figures of a job from its records: power against the cap, batch size and throughput over time,
and for a server the requests' latency against the SLO.

Reads the JSON Lines that ``batchsizer run --records`` and ``batchsizer serve --records`` write (see
:mod:`batchsizer.io.records`, :mod:`batchsizer.serve.records`): sensor readings from ``power``
records, the cap and per-period numbers from ``period`` records, batch sizes from ``batch``
records, the latency per period from ``requests`` records. A fleet's records are drawn by
:mod:`batchsizer.ui.plotting_fleet`; :func:`records_kind` tells the two apart. Uses matplotlib's Agg
backend, so no display is needed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from batchsizer.core.cap_rule import CapRule, judged
from batchsizer.core.telemetry import PowerSample  # noqa: E402
from batchsizer.errors import ConfigError
from batchsizer.io.records import iter_numbered_records  # noqa: E402

#: more sensor readings than this in a figure are drawn as a min-max band per column of pixels
MAX_POWER_POINTS = 4000
#: columns of that band (about the plot area's width in pixels at 120 dpi)
BAND_COLUMNS = 900
#: --dpi bounds: below, text is unreadable; above, the 9 x 8 inch overview is over 26 million pixels
DPI_RANGE = (10, 600)

NAN = float("nan")


@dataclass
class JobTrace:
    """The series a figure needs, on seconds since the job's start. A file with several runs (a job
    stopped and resumed) continues the time axis at each run's end; NaN separates the runs' lines."""

    title: str
    power_t: list[float]
    power_w: list[float]
    cap_t: list[float]
    cap_w: list[float]
    batch_t: list[float]
    batch_size: list[float]
    period_t: list[float]
    period_peak_w: list[float | None]
    throughput: list[float]
    #: each period's (start, end) and throughput as a step line: start, end, start, end, ...
    throughput_t: list[float] = field(default_factory=list)
    throughput_y: list[float] = field(default_factory=list)
    #: where a resumed run begins on the time axis
    resumes: list[float] = field(default_factory=list)
    #: the cap rule the job ran under ("peak" or "avg:SECONDS"); under avg the figure adds the rolling mean
    cap_rule: str = "peak"
    #: a server's job (its job record has ``serve``): its figures include the latency
    serve: bool = False
    #: per period, from ``requests`` records, as step lines like ``throughput_t``: latency (ms) of the
    #: requests answered in the period, answered and refused requests per second
    latency_t: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    max_ms: list[float] = field(default_factory=list)
    ok_rate: list[float] = field(default_factory=list)
    rejected_rate: list[float] = field(default_factory=list)
    #: the server's latency SLO (ms), None when the records do not say
    slo_ms: float | None = None


class _Bad(Exception):
    pass


def _number(rec: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    """``rec[key]`` as a float; None where it may be missing or null; else _Bad saying what is wrong."""
    if key not in rec or (rec[key] is None and optional):
        if optional:
            return None
        raise _Bad(f"has no {key!r} field")
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"field {key!r} must be a number, got {json.dumps(value)}")
    return float(value)


#: the fields a figure reads, per record type: (name, may be null)
FIELDS = {
    "job": (("start", True),),
    "batch": (("start", False), ("end", True), ("size", False)),
    "period": (("start", False), ("end", False), ("cap_w", True), ("peak_w", True), ("throughput", True)),
    "power": (("t", False), ("w", True)),
    "requests": tuple((k, False) for k in ("start", "end", "ok", "rejected"))
    + tuple((k, True) for k in ("p50_ms", "p99_ms", "max_ms", "slo_ms")),
}


def _read_runs(p: Path) -> list[dict[str, list[dict[str, Any]]]]:
    """The file's records as runs (a ``job`` line starts one), each record's fields checked."""
    runs: list[dict[str, list[dict[str, Any]]]] = []
    for n, rec in iter_numbered_records(p):
        kind = rec["type"]
        if kind == "job" or not runs:
            runs.append({})
        if kind not in FIELDS:
            continue
        clean: dict[str, Any] = {}
        if kind == "job":
            clean = {k: rec.get(k) for k in ("device", "controller", "cap_rule", "serve")}
        for key, optional in FIELDS[kind]:
            try:
                clean[key] = _number(rec, key, optional=optional)
            except _Bad as exc:
                raise ConfigError("records", f"{p}, line {n}: a {kind} record {exc}") from None
        runs[-1].setdefault(kind, []).append(clean)
    return runs


#: record types that make a file a fleet's records, and those that make it a job's (run or serve)
FLEET_TYPES = frozenset({"fleet", "tick", "allocation"})
JOB_TYPES = frozenset({"job", "batch", "period"})
NEITHER = (
    "holds no batch or period records (batchsizer run or serve --records FILE) nor fleet tick records "
    "(batchsizer fleet --records DIR writes DIR/fleet.jsonl)"
)


def records_file(path: str | os.PathLike[str]) -> Path:
    """The records file to draw: ``path``, or the ``fleet.jsonl`` in a fleet's records folder; a clear
    ConfigError when it is missing, a folder without one, or empty."""
    p = Path(path)
    if p.is_dir():
        if (p / "fleet.jsonl").is_file():
            return p / "fleet.jsonl"
        raise ConfigError("records", f"{p} is a folder without fleet.jsonl; give a records file")
    if not p.exists():
        raise ConfigError("records", f"{p} does not exist; write one with batchsizer run, serve or fleet --records")
    if p.is_file() and p.stat().st_size == 0:
        raise ConfigError("records", f"{p} is empty")
    return p


def records_kind(path: str | os.PathLike[str]) -> str:
    """``"job"`` (``batchsizer run`` or ``serve`` records) or ``"fleet"`` (``fleet.jsonl``), from the
    record types in the file; a ConfigError for a file that holds neither."""
    p = records_file(path)
    for _, rec in iter_numbered_records(p):
        if rec["type"] in FLEET_TYPES:
            return "fleet"
        if rec["type"] in JOB_TYPES:
            return "job"
    raise ConfigError("records", f"{p} {NEITHER}")


def plot_file(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], dpi: int = 120) -> list[Path]:
    """The figures of any records file, of the kind its content says (:func:`records_kind`)."""
    check_dpi(dpi)
    p = records_file(path)
    if records_kind(p) == "fleet":
        from batchsizer.ui.plotting_fleet import plot_fleet_records

        return plot_fleet_records(p, out_dir, dpi)
    return plot_records(p, out_dir, dpi)


def load_trace(path: str | os.PathLike[str]) -> JobTrace:
    """Read a records file; a clear ConfigError when it is missing, empty or not records, naming
    the line and the field of a record whose field is not what the figures need."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("records", f"{p} does not exist; write one with batchsizer run --records {p}")
    if p.is_file() and p.stat().st_size == 0:
        raise ConfigError("records", f"{p} is empty")
    try:
        runs = _read_runs(p)
    except UnicodeDecodeError:
        runs = []
    if not any(r.get("period") or r.get("batch") for r in runs):
        raise ConfigError("records", f"{p} {NEITHER}")
    first_job: dict[str, Any] = next((r["job"][0] for r in runs if r.get("job")), {})
    device = first_job["device"].get("name", "?") if isinstance(first_job.get("device"), dict) else "?"
    ctrl = first_job["controller"].get("name", "?") if isinstance(first_job.get("controller"), dict) else "?"
    runs = [r for r in runs if r.get("period") or r.get("batch") or r.get("power")]
    tr = JobTrace(f"{p.name}: {device}, controller {ctrl}", [], [], [], [], [], [], [], [], [])
    rule = first_job.get("cap_rule")
    if isinstance(rule, str):
        with contextlib.suppress(ConfigError):  # a rule this version does not know: the readings alone
            tr.cap_rule = str(CapRule.parse(rule))
    tr.serve = isinstance(first_job.get("serve"), dict)
    slo = first_job["serve"].get("slo_ms") if tr.serve else None
    if isinstance(slo, (int, float)) and not isinstance(slo, bool) and math.isfinite(slo):
        tr.slo_ms = float(slo)
    if len(runs) > 1:
        tr.title += f" ({len(runs)} runs: stopped and resumed)"
    offset = 0.0
    for k, run in enumerate(runs):
        periods, batches, power = run.get("period", []), run.get("batch", []), run.get("power", [])
        t0 = (run.get("job") or [{}])[0].get("start")
        if t0 is None:
            t0 = min([b["start"] for b in batches[:1]] + [q["start"] for q in periods[:1]] + [s["t"] for s in power[:1]])
        shift = offset - t0
        if k > 0:
            tr.resumes.append(offset)
            for series in (tr.power_t, tr.power_w, tr.cap_t, tr.cap_w, tr.batch_t, tr.batch_size):
                series.append(NAN)  # no line joins one run to the next
            for series in (tr.throughput_t, tr.throughput_y, tr.latency_t, tr.p50_ms, tr.p99_ms, tr.max_ms):
                series.append(NAN)
            tr.ok_rate.append(NAN)
            tr.rejected_rate.append(NAN)
        for s in power:
            if s["w"] is not None:
                tr.power_t.append(s["t"] + shift)
                tr.power_w.append(s["w"])
        if periods:
            # a period's cap_w is the cap at its end (a cap change closes the period at once), so the
            # cap steps at period ends: [start_0, end_0) at cap_0, then cap_i from end_i on
            tr.cap_t += [periods[0]["start"] + shift] + [q["end"] + shift for q in periods]
            tr.cap_w += [periods[0]["cap_w"]] + [q["cap_w"] for q in periods]
        for q in periods:
            tr.period_t.append(q["end"] + shift)
            tr.period_peak_w.append(q["peak_w"])
            tput = q["throughput"] or 0.0
            tr.throughput.append(tput)
            tr.throughput_t += [q["start"] + shift, q["end"] + shift]
            tr.throughput_y += [tput, tput]
        for q in run.get("requests", []):
            _add_requests(tr, q, shift)
        if batches:
            tr.batch_t += [b["start"] + shift for b in batches]
            tr.batch_size += [b["size"] for b in batches]
            last = batches[-1]
            tr.batch_t.append((last["end"] if last["end"] is not None else last["start"]) + shift)
            tr.batch_size.append(last["size"])  # the last batch's step reaches its end
        ends = [b["end"] for b in batches if b["end"] is not None] + [q["end"] for q in periods]
        ends += [s["t"] for s in power]
        offset = max(ends, default=t0) + shift
    return tr


def _add_requests(tr: JobTrace, q: dict[str, Any], shift: float) -> None:
    """One period's ``requests`` record as flat lines from its start to its end."""
    span = q["end"] - q["start"]
    tr.latency_t += [q["start"] + shift, q["end"] + shift]
    for series, key in ((tr.p50_ms, "p50_ms"), (tr.p99_ms, "p99_ms"), (tr.max_ms, "max_ms")):
        value = q[key] if q[key] is not None else NAN  # no request answered in the period: a gap
        series += [value, value]
    for series, key in ((tr.ok_rate, "ok"), (tr.rejected_rate, "rejected")):
        rate = q[key] / span if span > 0 else NAN
        series += [rate, rate]
    if tr.slo_ms is None and q["slo_ms"] is not None:
        tr.slo_ms = q["slo_ms"]


def _segments(t: list[float], y: list[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The runs of a series, split at its NaN times."""
    tt, yy = np.asarray(t, dtype=float), np.asarray([NAN if v is None else v for v in y], dtype=float)
    cuts = np.flatnonzero(np.isnan(tt))
    out, start = [], 0
    for c in [*cuts, len(tt)]:
        if c > start:
            out.append((tt[start:c], yy[start:c]))
        start = c + 1
    return out


def _band(t: np.ndarray, w: np.ndarray, width: float) -> tuple[np.ndarray, ...]:
    """Per column of ``width`` seconds: its start, lowest, mean and highest reading (columns without
    readings dropped)."""
    col = np.floor((t - t[0]) / width).astype(np.int64)
    starts, idx, counts = np.unique(col, return_index=True, return_counts=True)
    lo = np.minimum.reduceat(w, idx)
    hi = np.maximum.reduceat(w, idx)
    mean = np.add.reduceat(w, idx) / counts
    return t[0] + starts * width, lo, mean, hi


def _resumes(ax: Axes, tr: JobTrace, label: bool) -> None:
    for k, t in enumerate(tr.resumes):
        ax.axvline(t, color="0.45", ls=":", lw=1, label="resumed" if label and k == 0 else None)


def _power(ax: Axes, tr: JobTrace) -> None:
    n = sum(1 for t in tr.power_t if t == t)
    if n > MAX_POWER_POINTS:  # a long job: one min-max band per pixel column keeps every peak visible
        span = max(t for t in tr.power_t if t == t) - min(t for t in tr.power_t if t == t)
        width = max(span / BAND_COLUMNS, 1e-9)
        for k, (t, w) in enumerate(_segments(tr.power_t, tr.power_w)):
            x, lo, mean, hi = _band(t, w, width)
            x = np.append(x, x[-1] + width)
            lo, mean, hi = np.append(lo, lo[-1]), np.append(mean, mean[-1]), np.append(hi, hi[-1])
            ax.fill_between(x, lo, hi, step="post", color="tab:blue", alpha=0.35, lw=0,
                            label="sensor power, min-max per column" if k == 0 else None)  # fmt: skip
            ax.step(x, hi, where="post", color="tab:blue", lw=0.6)  # the peaks, sharp
            ax.step(x, mean, where="post", color="navy", lw=0.8, label="mean per column" if k == 0 else None)
    elif n:
        ax.step(tr.power_t, tr.power_w, where="post", lw=0.8, color="tab:blue", label="sensor power")
    rule = CapRule.parse(tr.cap_rule)
    if not rule.is_peak and n:  # what the rule judges: the rolling mean of the readings
        for k, (t, w) in enumerate(_segments(tr.power_t, tr.power_w)):
            mean = judged([PowerSample(float(a), float(b)) for a, b in zip(t, w)], float(t[-1]), rule)
            ax.step([m.t for m in mean], [m.watts for m in mean], where="post", color="tab:green", lw=1.2,
                    label=f"rolling mean ({rule}), what the cap rule judges" if k == 0 else None)  # fmt: skip
    pts = [(t, w) for t, w in zip(tr.period_t, tr.period_peak_w) if w is not None]
    if pts:
        label = "window peak" if rule.is_peak else f"window peak by {rule}"
        ax.plot(*zip(*pts), "o", ms=3, color="tab:orange", label=label)
    capped = [(t, w if w is not None and math.isfinite(w) else NAN) for t, w in zip(tr.cap_t, tr.cap_w)]
    if any(w == w for _, w in capped):
        ax.step(*zip(*capped), where="post", color="tab:red", lw=1.8, label="cap")
    _resumes(ax, tr, label=True)
    ax.set_ylabel("power (W)")
    if not n and not pts:  # a device without a power meter, run uncapped
        ax.text(0.5, 0.5, "power not measured (no power meter): uncapped", ha="center", va="center",
                transform=ax.transAxes, color="0.4")  # fmt: skip
    else:
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def _batch(ax: Axes, tr: JobTrace) -> None:
    ax.step(tr.batch_t, tr.batch_size, where="post", color="tab:green", lw=1.2)
    sizes = [b for b in tr.batch_size if b == b]
    if sizes and max(sizes) / max(1, min(sizes)) >= 16:
        ax.set_yscale("log", base=2)
    _resumes(ax, tr, label=False)
    ax.set_ylabel("batch size")
    ax.grid(alpha=0.3)


def _throughput(ax: Axes, tr: JobTrace) -> None:
    # each period a flat line from its start to its end: one period is a line too, not an empty panel
    ax.plot(tr.throughput_t, tr.throughput_y, color="tab:purple", lw=1.2)
    _resumes(ax, tr, label=False)
    ax.set_ylabel("throughput (items/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _slo(ax: Axes, tr: JobTrace) -> None:
    if tr.slo_ms is not None:
        ax.axhline(tr.slo_ms, color="tab:red", lw=1.8, label=f"SLO {tr.slo_ms:g} ms")


def _latency(ax: Axes, tr: JobTrace) -> None:
    """The latency of the requests answered in each period (arrival to the end of their batch)."""
    ax.plot(tr.latency_t, tr.max_ms, color="0.6", lw=0.8, label="max")
    ax.plot(tr.latency_t, tr.p99_ms, color="tab:orange", lw=1.4, label="p99")
    ax.plot(tr.latency_t, tr.p50_ms, color="tab:blue", lw=1.4, label="p50")
    _slo(ax, tr)
    _resumes(ax, tr, label=False)
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    ax.grid(alpha=0.3)


def _requests(ax: Axes, tr: JobTrace) -> None:
    """Requests per second per period: answered, and refused (admission, a full queue)."""
    ax.plot(tr.latency_t, tr.ok_rate, color="tab:purple", lw=1.2, label="answered")
    ax.plot(tr.latency_t, tr.rejected_rate, color="tab:red", lw=1.2, label="refused (503)")
    _resumes(ax, tr, label=False)
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)


def check_dpi(dpi: int) -> int:
    """``dpi`` if within ``DPI_RANGE``; ConfigError otherwise."""
    low, high = DPI_RANGE
    if not low <= dpi <= high:
        raise ConfigError("dpi", f"must be between {low} and {high}, got {dpi}")
    return dpi


def plot_records(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], dpi: int = 120) -> list[Path]:
    """Write power.png, batch_size.png, throughput.png and overview.png, and for a server's records
    latency.png (latency per period against the SLO, requests/s answered and refused), also in the
    overview; returns their paths."""
    check_dpi(dpi)
    tr = load_trace(path)
    out = make_out_dir(out_dir)
    written: list[Path] = []
    for name, draw in (("power", _power), ("batch_size", _batch), ("throughput", _throughput)):
        fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
        draw(ax, tr)
        ax.set_xlabel("time since start (s)")
        ax.set_title(tr.title, fontsize=9)
        written.append(save_figure(fig, out / f"{name}.png", dpi))
    panels = [_power, _batch, _throughput]
    if tr.latency_t:
        fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, layout="constrained")
        _latency(axes[0], tr)
        _requests(axes[1], tr)
        axes[-1].set_xlabel("time since start (s)")
        axes[0].set_title(tr.title, fontsize=9)
        written.append(save_figure(fig, out / "latency.png", dpi))
        panels.append(_latency)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 8 if len(panels) == 3 else 10), sharex=True,
                             layout="constrained")  # fmt: skip
    for ax, draw in zip(axes, panels):
        draw(ax, tr)
    axes[-1].set_xlabel("time since start (s)")
    axes[0].set_title(tr.title, fontsize=9)
    written.append(save_figure(fig, out / "overview.png", dpi))
    return written


def make_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The figures' folder, made if missing; a clear ConfigError for a file or one that cannot be made."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} is a file; give a folder for the figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("out", f"cannot create {out}: {exc.strerror or exc}") from None
    return out


def save_figure(fig: Any, path: Path, dpi: int) -> Path:
    """Save ``fig`` as a PNG through a temporary name, and close it."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)  # never half a PNG under the final name
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
