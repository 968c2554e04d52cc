"""Figures of a job from its records: power against the cap, batch size and throughput over time.

Reads the JSON Lines that ``batchsizer run --records`` writes (see :mod:`batchsizer.records`):
sensor readings from ``power`` records, the cap and per-period numbers from ``period`` records,
batch sizes from ``batch`` records. Uses matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from batchsizer.errors import ConfigError  # noqa: E402
from batchsizer.records import read_records  # noqa: E402

FIGURES = ("power", "batch_size", "throughput", "overview")


@dataclass
class JobTrace:
    """The series a figure needs, on seconds since the job's start."""

    title: str
    power_t: list[float]
    power_w: list[float]
    cap_t: list[float]
    cap_w: list[float]
    batch_t: list[float]
    batch_size: list[int]
    period_t: list[float]
    period_peak_w: list[float | None]
    throughput: list[float]


def load_trace(path: str | os.PathLike[str]) -> JobTrace:
    """Read a records file; a clear ConfigError when it is missing, empty or not records."""
    p = Path(path)
    if not p.exists():
        raise ConfigError("records", f"{p} does not exist; write one with batchsizer run --records {p}")
    if p.is_file() and p.stat().st_size == 0:
        raise ConfigError("records", f"{p} is empty")
    try:
        rec = read_records(p)
    except UnicodeDecodeError:
        rec = {}
    if not rec.get("period") and not rec.get("batch"):
        raise ConfigError(
            "records",
            f"{p} holds no batch or period records; expected the JSON Lines written by batchsizer run --records",
        )
    job: dict[str, Any] = (rec.get("job") or [{}])[0]
    periods = rec.get("period", [])
    batches = rec.get("batch", [])
    t0 = job.get("start")
    if t0 is None:
        t0 = min([b["start"] for b in batches[:1]] + [q["start"] for q in periods[:1]] or [0.0])
    # a period's cap_w is the cap at its end (a cap change closes the period at once), so the
    # cap steps at period ends: [start_0, end_0) at cap_0, then cap_i from end_i on
    cap_t = [periods[0]["start"] - t0] + [q["end"] - t0 for q in periods] if periods else []
    cap_w = [periods[0]["cap_w"]] + [q["cap_w"] for q in periods] if periods else []
    device = job.get("device", {}).get("name", "?") if isinstance(job.get("device"), dict) else "?"
    ctrl = job.get("controller", {}).get("name", "?") if isinstance(job.get("controller"), dict) else "?"
    return JobTrace(
        title=f"{p.name}: {device}, controller {ctrl}",
        power_t=[s["t"] - t0 for s in rec.get("power", []) if s.get("w") is not None],
        power_w=[s["w"] for s in rec.get("power", []) if s.get("w") is not None],
        cap_t=cap_t,
        cap_w=cap_w,
        batch_t=[b["start"] - t0 for b in batches],
        batch_size=[b["size"] for b in batches],
        period_t=[q["end"] - t0 for q in periods],
        period_peak_w=[q.get("peak_w") for q in periods],
        throughput=[q.get("throughput") or 0.0 for q in periods],
    )


def _power(ax: Axes, tr: JobTrace) -> None:
    if tr.power_t:
        ax.step(tr.power_t, tr.power_w, where="post", lw=0.8, color="tab:blue", label="sensor power")
    pts = [(t, w) for t, w in zip(tr.period_t, tr.period_peak_w) if w is not None]
    if pts:
        ax.plot(*zip(*pts), "o", ms=3, color="tab:orange", label="window peak")
    capped = [(t, w) for t, w in zip(tr.cap_t, tr.cap_w) if w is not None and math.isfinite(w)]
    if capped:
        ax.step(*zip(*capped), where="post", color="tab:red", lw=1.8, label="cap")
    ax.set_ylabel("power (W)")
    if not tr.power_t and not pts:  # a device without a power meter, run uncapped
        ax.text(0.5, 0.5, "power not measured (no power meter): uncapped", ha="center", va="center",
                transform=ax.transAxes, color="0.4")  # fmt: skip
    else:
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def _batch(ax: Axes, tr: JobTrace) -> None:
    ax.step(tr.batch_t, tr.batch_size, where="post", color="tab:green", lw=1.2)
    if tr.batch_size and max(tr.batch_size) / max(1, min(tr.batch_size)) >= 16:
        ax.set_yscale("log", base=2)
    ax.set_ylabel("batch size")
    ax.grid(alpha=0.3)


def _throughput(ax: Axes, tr: JobTrace) -> None:
    ax.step(tr.period_t, tr.throughput, where="pre", color="tab:purple", lw=1.2)
    ax.set_ylabel("throughput (items/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def plot_records(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], dpi: int = 120) -> list[Path]:
    """Write power.png, batch_size.png, throughput.png and overview.png; returns their paths."""
    tr = load_trace(path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} is a file; give a folder for the figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("out", f"cannot create {out}: {exc.strerror or exc}") from None
    written: list[Path] = []
    for name, draw in (("power", _power), ("batch_size", _batch), ("throughput", _throughput)):
        fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
        draw(ax, tr)
        ax.set_xlabel("time since start (s)")
        ax.set_title(tr.title, fontsize=9)
        written.append(_save(fig, out / f"{name}.png", dpi))
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True, layout="constrained")
    for ax, draw in zip(axes, (_power, _batch, _throughput)):
        draw(ax, tr)
    axes[-1].set_xlabel("time since start (s)")
    axes[0].set_title(tr.title, fontsize=9)
    written.append(_save(fig, out / "overview.png", dpi))
    return written


def _save(fig: Any, path: Path, dpi: int) -> Path:
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)  # never half a PNG under the final name
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
