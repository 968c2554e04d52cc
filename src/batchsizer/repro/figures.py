"""PNG figures in the spirit of the paper's Fig. 5-8, drawn with matplotlib's Agg backend (no display).

* ``fig5_throughput.png``: BatchSizer against DVFS per job (images/s), the oracle marked, and
  BatchSizer's gain over DVFS;
* ``fig5b_oracle_share.png``: every method's throughput as a share of the oracle, per job;
* ``fig6_batch_size.png``: BatchSizer's average batch size per job against DVFS's 16;
* ``fig7_power.png``: sensor power over time against the cap, BatchSizer and DVFS, five jobs;
* ``fig8_batch_size_over_time.png``: BatchSizer's batch size over time in the same five jobs,
  with AIMD's where it ran.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from batchsizer.repro.experiment import ExperimentResult, aggregate  # noqa: E402
from batchsizer.repro.jobs import Job, figure_jobs  # noqa: E402
from batchsizer.repro.methods import get_method  # noqa: E402
from batchsizer.repro.report import gains  # noqa: E402
from batchsizer.repro.runner import RunResult  # noqa: E402

COLORS = {
    "batchsizer": "#1f77b4",
    "dvfs": "#ff7f0e",
    "dvfs-best-batch": "#d62728",
    "hw-limit": "#9467bd",
    "aimd": "#2ca02c",
    "oracle": "#333333",
}


def _color(method: str) -> str:
    return COLORS.get(method, "#8c564b")


def _labels(result: ExperimentResult) -> list[str]:
    return [f"{j.id}\n{j.model}\n{'IN' if j.dataset == 'imagenet' else 'CT'}\n{j.cap_w:g}W" for j in result.jobs]


def _save(fig: plt.Figure, path: Path) -> Path:
    """Through a temporary file and a rename, so a reader never sees half a PNG."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def fig_throughput(result: ExperimentResult, path: Path) -> Path:
    """Fig. 5: BatchSizer and DVFS throughput per job with the oracle marked, and BatchSizer's gain; the path."""
    rows = {(r["job"], r["method"]): r for r in aggregate(result)}
    ids = [j.id for j in result.jobs]
    x = np.arange(len(ids))
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(max(8, 0.7 * len(ids) + 3), 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    width = 0.38
    for k, m in enumerate(("batchsizer", "dvfs")):
        vals = [rows[(i, m)]["throughput_mean"] if (i, m) in rows else np.nan for i in ids]
        errs = [rows[(i, m)]["throughput_std"] if (i, m) in rows else 0 for i in ids]
        ax.bar(x + (k - 0.5) * width, vals, width, yerr=errs, label=get_method(m).label, color=_color(m))
    orc = [rows[(i, "oracle")]["throughput_mean"] if (i, "oracle") in rows else np.nan for i in ids]
    ax.scatter(x, orc, marker="_", s=400, color=_color("oracle"), zorder=3, label="Oracle (best static)")
    ax.set_ylabel("throughput (images/s)")
    ax.set_title(
        f"Throughput per job, BatchSizer vs DVFS (sim:{result.config.gpu}, "
        f"{'seed 0' if result.config.seeds == 1 else f'mean of {result.config.seeds} seeds'})"
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    g = gains(result)
    vals = [100 * g.get(i, np.nan) for i in ids]
    ax2.bar(x, vals, 0.6, color=["#2ca02c" if v >= 0 else "#d62728" for v in vals])
    ax2.axhline(0, color="black", lw=0.8)
    # the paper's two claims as lines, their labels in the right margin (never over bars, never cut)
    finite = [v for v in vals if math.isfinite(v)]
    ax2.set_ylim(min([-14.0, *finite]) - 3, max([33.0, *finite]) + 3)
    for level, text in ((29, "paper: +29%\n(job 19)"), (-8, "paper: -8%\n(job 5)")):
        ax2.axhline(level, color="gray", ls=":", lw=1)
        ax2.annotate(text, (1.005, level), xycoords=("axes fraction", "data"), fontsize=7, va="center",
                     ha="left", color="gray", annotation_clip=False)  # fmt: skip
    ax2.set_ylabel("BatchSizer over DVFS (%)")
    ax2.set_xticks(x, _labels(result), fontsize=7)
    ax2.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def fig_oracle_share(result: ExperimentResult, path: Path) -> Path:
    """Every method's throughput per job as a percentage of the oracle, as a heat map; the path written."""
    rows = {(r["job"], r["method"]): r for r in aggregate(result)}
    ids = [j.id for j in result.jobs]
    methods = [m for m in dict.fromkeys(r.method for r in result.runs) if m != "oracle"]
    grid = np.array([[rows.get((i, m), {}).get("oracle_fraction_mean", np.nan) for i in ids] for m in methods])
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(ids) + 3), 0.6 * len(methods) + 2.2))
    im = ax.imshow(100 * grid, cmap="RdYlGn", vmin=40, vmax=110, aspect="auto")
    for a in range(len(methods)):
        for b in range(len(ids)):
            v = grid[a, b]
            if math.isfinite(v):
                ax.text(b, a, f"{100 * v:.0f}", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(methods)), [get_method(m).label for m in methods])
    ax.set_xticks(range(len(ids)), [f"{i}" for i in ids])
    ax.set_xlabel("job (Table 2)")
    ax.set_title(
        "Throughput as % of the oracle (over 100: faster than the best static setting under the cap, by going over it)",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="% of oracle")
    return _save(fig, path)


def fig_batch_size(result: ExperimentResult, path: Path) -> Path:
    """Fig. 6: BatchSizer's average batch size per job against DVFS's 16 and the oracle's; the path."""
    rows = {(r["job"], r["method"]): r for r in aggregate(result)}
    ids = [j.id for j in result.jobs]
    x = np.arange(len(ids))
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(ids) + 3), 4.5))
    vals = [rows[(i, "batchsizer")]["avg_batch_size_mean"] if (i, "batchsizer") in rows else np.nan for i in ids]
    ax.bar(x, vals, 0.6, color=_color("batchsizer"), label="BatchSizer (images per batch, mean)")
    ax.axhline(16, color=_color("dvfs"), ls="--", label="DVFS (fixed 16)")
    orc = [rows[(i, "oracle")]["avg_batch_size_mean"] if (i, "oracle") in rows else np.nan for i in ids]
    ax.scatter(x, orc, marker="D", color=_color("oracle"), zorder=3, s=18, label="Oracle's size")
    ax.set_yscale("log", base=2)
    ax.set_ylim(0.8, 2048)
    ax.set_ylabel("average batch size")
    ax.set_xticks(x, _labels(result), fontsize=7)
    ax.set_title("Average batch size BatchSizer used per job")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _series_runs(result: ExperimentResult, method: str) -> dict[int, RunResult]:
    return {r.job_id: r for r in result.runs if r.method == method and r.power_series is not None}


def _per_job_panels(result: ExperimentResult, draw: Callable[[Any, Job], None], title: str, path: Path) -> Path:
    """One panel per figure job (Fig. 7/8 style), stacked, sharing the time axis's label."""
    chosen = figure_jobs([j.id for j in result.jobs])
    jobs = {j.id: j for j in result.jobs}
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.1 * len(chosen) + 0.5), squeeze=False)
    legend: dict[str, Any] = {}
    for ax, jid in zip(axes[:, 0], chosen):
        draw(ax, jobs[jid])
        ax.set_title(f"job {jobs[jid].label}", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    axes[-1, 0].set_xlabel("time (s, simulated)")
    fig.suptitle(title, fontsize=10)
    # one legend for all panels, in its own strip under the title: it covers no data
    top = 1 - 0.6 / fig.get_figheight()
    fig.legend(legend.values(), legend.keys(), loc="lower center", bbox_to_anchor=(0.5, top), ncol=len(legend),
               fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, top))
    return _save(fig, path)


def fig_power(result: ExperimentResult, path: Path) -> Path:
    """Fig. 7: sensor power over time against the cap for BatchSizer and DVFS (seed 0); the path."""
    bs, dv = _series_runs(result, "batchsizer"), _series_runs(result, "dvfs")

    def draw(ax: Any, job: Job) -> None:
        jid = job.id
        for runs, m in ((dv, "dvfs"), (bs, "batchsizer")):
            r = runs.get(jid)
            if r is not None and r.power_series:
                t, w = zip(*r.power_series)
                ax.plot(t, w, lw=0.6, color=_color(m), label=get_method(m).label, drawstyle="steps-post")
        ax.axhline(job.cap_w, color="red", ls="--", lw=1, label="cap")
        ax.set_ylabel("W (sensor)")

    return _per_job_panels(result, draw, "Power over time against the cap (what the sensor read, seed 0)", path)


def fig_batch_over_time(result: ExperimentResult, path: Path) -> Path:
    """Fig. 8: the batch size each period for BatchSizer and AIMD, the oracle's size marked; the path."""

    def draw(ax: Any, job: Job) -> None:
        jid = job.id
        for m in ("aimd", "batchsizer"):
            r = _series_runs(result, m).get(jid)
            if r is None or not r.period_series:
                continue
            t = [p[0] for p in r.period_series]
            b = [p[1] for p in r.period_series]
            ax.step(
                t, b, where="post", color=_color(m), lw=1.2 if m == "batchsizer" else 0.8, label=get_method(m).label
            )
        orc = _series_runs(result, "oracle").get(jid)
        if orc is not None and orc.period_series:
            ax.axhline(orc.period_series[0][1], color=_color("oracle"), ls=":", lw=1, label="oracle size")
        ax.set_yscale("log", base=2)
        ax.set_ylim(0.8, 400)
        ax.set_ylabel("batch size")

    return _per_job_panels(result, draw, "Batch size over time (each control period, seed 0)", path)


def write_figures(result: ExperimentResult, out: Path) -> dict[str, Path]:
    """All figures the methods that ran allow; returns what was written."""
    methods = {r.method for r in result.runs}
    files: dict[str, Path] = {}
    if {"batchsizer", "dvfs"} <= methods:
        files["fig5"] = fig_throughput(result, out / "fig5_throughput.png")
        files["fig7"] = fig_power(result, out / "fig7_power.png")
    files["fig5b"] = fig_oracle_share(result, out / "fig5b_oracle_share.png")
    if "batchsizer" in methods:
        files["fig6"] = fig_batch_size(result, out / "fig6_batch_size.png")
        files["fig8"] = fig_batch_over_time(result, out / "fig8_batch_size_over_time.png")
    return files
