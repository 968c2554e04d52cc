"""What the reproduction shows and writes: a progress bar, terminal tables, CSV and JSON files."""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchsizer.errors import ConfigError
from batchsizer.io.paths import check_output_folder, umask_mode
from batchsizer.io.records import write_json_atomic
from batchsizer.repro.experiment import ExperimentResult, JobOutcome, aggregate, spread


@contextmanager
def progress_bar(total: int, console: Console) -> Iterator[Any]:
    """A bar over jobs; yields the callback the experiment calls as each job finishes."""
    with Progress(
        TextColumn("[bold]reproducing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("jobs"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=total)

        def done(out: JobOutcome) -> None:
            progress.update(task, advance=1, description=f"last: job {out.job.label} ({out.wall_s:.1f} s)")

        yield done


def _fmt(v: float, digits: int = 0) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:,.{digits}f}"


def _pct(v: float, digits: int = 0) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def _index(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    return {(r["job"], r["method"]): r for r in rows}


def gains(result: ExperimentResult) -> dict[int, float]:
    """BatchSizer's throughput over DVFS's per job, as a mean over seeds of the per-seed ratio, minus 1."""
    out: dict[int, float] = {}
    for o in result.outcomes:
        bs = {r.seed: r.throughput for r in o.runs if r.method == "batchsizer"}
        dv = {r.seed: r.throughput for r in o.runs if r.method == "dvfs"}
        ratios = [bs[s] / dv[s] - 1 for s in bs if s in dv and dv[s] > 0]
        if ratios:
            out[o.job.id] = spread(ratios)["mean"]
    return out


SHORT = {"batchsizer": "BS", "dvfs": "DVFS", "dvfs-best-batch": "DVFS*", "hw-limit": "HW-PL", "aimd": "AIMD",
         "batchdvfs": "BDVFS", "batchsizer-full": "BS-all", "adaptive-paper": "AD-paper"}  # fmt: skip


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


#: (header, justify, cells per row, priority): the table drops the highest priority numbers first
Column = tuple[str, str, list[str], int]


def fit_table(title: str, caption: str | None, columns: list[Column], width: int | None, what: str) -> Table:
    """A table of ``columns`` no wider than ``width`` characters: the least important columns are
    left out until the rest fit whole (rich would otherwise cut every cell to ``91.…``), and the
    caption names them and where they are (``what``)."""
    kept = list(columns)

    def build(cols: list[Column], note: str | None) -> Table:
        t = Table(title=title, caption=" ".join(c for c in (caption, note) if c) or None)
        for head, justify, cells, _ in cols:
            # the header wrapped to its cells' width (at least its longest word): narrow columns
            wide = max([len(x) for x in cells] + [len(w) for w in head.split()])
            header = "\n".join(textwrap.wrap(head, width=wide))
            t.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for r in range(len(cols[0][2]) if cols else 0):
            t.add_row(*(c[2][r] for c in cols))
        return t

    def too_wide(t: Table) -> bool:
        if width is None:
            return False
        console = Console(width=10_000)
        return t.__rich_measure__(console, console.options).maximum > width

    table = build(kept, None)
    while too_wide(table):
        droppable = [k for k, c in enumerate(kept) if c[3] > 0]
        if not droppable:
            break
        worst = max(droppable, key=lambda k: (kept[k][3], k))
        kept.pop(worst)
        left = [c[0] for c in columns if c not in kept]
        table = build(kept, f"Left out to fit {width} columns: {', '.join(left)} (all of them in {what}).")
    return table


def job_table(result: ExperimentResult, rows: list[dict[str, Any]], width: int | None = None) -> Table:
    """Per job: BatchSizer, DVFS and the oracle (images/s, mean ± std over seeds), and each method's share
    of the oracle; no wider than ``width`` (columns left out, named in the caption)."""
    idx = _index(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    others = [m for m in methods if m != "oracle"]
    c = result.config
    jobs = [o.job for o in result.outcomes]
    g = gains(result)

    def cell(j: Any, m: str, key: str, fmt: Any) -> str:
        r = idx.get((j.id, m))
        return fmt(r[key]) if r else "-"

    cols: list[Column] = [
        ("job", "right", [str(j.id) for j in jobs], 0),
        ("DNN/data", "left", [f"{j.model}/{'IN' if j.dataset == 'imagenet' else 'CT'}" for j in jobs], 0),
        ("cap W", "right", [f"{j.cap_w:g}" for j in jobs], 1),
    ]
    for m, prio in (("batchsizer", 0), ("dvfs", 1), ("oracle", 1)):
        if m in methods:
            cells = [
                f"{_fmt(r['throughput_mean'])}±{_fmt(r['throughput_std'])}" if (r := idx.get((j.id, m))) else "-"
                for j in jobs
            ]
            cols.append((f"{SHORT.get(m, m)} img/s", "right", cells, prio))
    if "batchsizer" in methods and "dvfs" in methods:
        cols.append(("BS/DVFS", "right", [f"{100 * g[j.id]:+.1f}%" if j.id in g else "-" for j in jobs], 0))
    for m in others:
        prio = 2 if m == "batchsizer" else 3 if m == "dvfs" else 4
        cols.append((f"{SHORT.get(m, m)} %orc", "right", [cell(j, m, "oracle_fraction_mean", _pct) for j in jobs], prio))
    if "batchsizer" in methods:
        cols.append(("BS batch", "right", [cell(j, "batchsizer", "avg_batch_size_mean", lambda v: _fmt(v, 1)) for j in jobs], 3))
        cols.append(("BS over", "right", [cell(j, "batchsizer", "over_cap_fraction_mean", lambda v: _pct(v, 2)) for j in jobs], 2))
    return fit_table(
        f"Per job {'of the job table' if c.jobs is not None else f'on sim:{c.gpu}'}, {_plural(c.seeds, 'seed')}, "
        f"{'each job its own' if c.jobs is not None else c.items} images "
        "(img/s: mean ±std; %orc: share of the oracle)",
        "DVFS* = DVFS at the best batch size; HW-PL = the card's power limit at the cap; BS over = time over the cap.",
        cols,
        width,
        "summary.csv",
    )


def method_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method over all jobs: share of the oracle, time over the cap, overshoot, settle time, energy."""
    out = []
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        frac = spread([r["oracle_fraction_mean"] for r in rs])
        out.append(
            {
                "method": m,
                "jobs": len(rs),
                "oracle_fraction_mean": frac["mean"],
                "oracle_fraction_min": frac["min"],
                "over_cap_fraction_mean": spread([r["over_cap_fraction_mean"] for r in rs])["mean"],
                "jobs_over_cap_1pct": sum(1 for r in rs if r["over_cap_fraction_mean"] > 0.01),
                "worst_overshoot_w_max": spread([r["worst_overshoot_w_max"] for r in rs])["max"],
                "longest_violation_s_max": spread([r["longest_violation_s_max"] for r in rs])["max"],
                "longest_episode_s_max": spread([r["longest_episode_s_max"] for r in rs])["max"],
                "settle_s_mean": spread([r["settle_s_mean"] for r in rs])["mean"],
                "energy_per_image_j_mean": spread([r["energy_per_image_j_mean"] for r in rs])["mean"],
                "true_over_cap_fraction_mean": spread([r["true_over_cap_fraction_mean"] for r in rs])["mean"],
                "true_worst_overshoot_w_max": spread([r["true_worst_overshoot_w_max"] for r in rs])["max"],
            }
        )
    return out


def method_table(summary: list[dict[str, Any]], width: int | None = None) -> Table:
    """Per method over the jobs; no wider than ``width`` (columns left out, named in the caption)."""

    def col(head: str, prio: int, fmt: Any) -> Column:
        return (head, "left" if head == "method" else "right", [fmt(s) for s in summary], prio)

    cols = [
        col("method", 0, lambda s: s["method"]),
        col("% of oracle", 0, lambda s: _pct(s["oracle_fraction_mean"], 1)),
        col("worst job", 2, lambda s: _pct(s["oracle_fraction_min"], 1)),
        col("time over cap", 1, lambda s: _pct(s["over_cap_fraction_mean"], 2)),
        col("jobs >1% over", 3, lambda s: str(s["jobs_over_cap_1pct"])),
        col("worst overshoot W", 2, lambda s: _fmt(s["worst_overshoot_w_max"], 1)),
        col("longest spike s", 4, lambda s: _fmt(s["longest_violation_s_max"], 2)),
        col("longest episode s", 4, lambda s: _fmt(s["longest_episode_s_max"], 1)),
        col("settle s", 3, lambda s: _fmt(s["settle_s_mean"], 1)),
        col("J/image", 3, lambda s: _fmt(s["energy_per_image_j_mean"], 3)),
        col("true over cap", 4, lambda s: _pct(s["true_over_cap_fraction_mean"], 2)),
        col("true overshoot W", 4, lambda s: _fmt(s["true_worst_overshoot_w_max"], 1)),
    ]
    return fit_table(
        "Per method, over the jobs (sensor readings; true power in the 'true' columns)", None, cols, width, "methods.csv"
    )


def check_out_dir(out: Path) -> Path:
    """The output folder must be a folder we can create and write; checked, and made, before any run."""
    check_output_folder(out, "out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("out", f"cannot make {out}: {exc.strerror or exc}") from None
    return out


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())  # mkstemp makes 0600; the PNGs beside it get the umask's mode
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def profile_rows(result: ExperimentResult) -> list[dict[str, Any]]:
    """One row per job that had a sweep: the oracle's setting, figures and how it was found (CSV and JSON)."""
    rows = []
    for o in result.outcomes:
        p = o.profile
        if p is None or p.oracle is None:
            continue
        rows.append(
            {
                "job": o.job.id,
                "cap_w": o.job.cap_w,
                "oracle_batch_size": p.oracle.batch_size,
                "oracle_clock_mhz": p.oracle.clock_mhz,
                "oracle_power_limit_w": p.oracle.power_limit_w,
                "oracle_job_throughput": p.oracle.throughput,
                "oracle_estimate": p.oracle_estimate,
                "oracle_peak_w": p.oracle.peak_w,
                "oracle_clean": p.oracle_clean,
                "cap_rule": p.rule,
                "envelope_throughput": p.envelope_throughput,
                "oracle_settings": p.oracle_settings,
                "oracle_checks": p.oracle_checks,
                "oracle_wall_s": p.oracle_wall_s,
                "best_paper_batch_size": p.best_paper_size,
                "best_hw_batch_size": p.best_hw_size,
                "hw_limit_w": p.hw_limit_w,
                "sweep_points": p.runs,
                "job_wall_s": o.wall_s,
                "sweep_wall_s": o.sweep_wall_s,
            }
        )
    return rows


def write_results(result: ExperimentResult, out: Path) -> dict[str, Path]:
    """summary.csv (per job and method), runs.csv (per run), oracle.csv, results.json."""
    rows = aggregate(result)
    summary = method_summary(rows)
    runs = [r.metrics() for r in result.runs]
    for r in runs:
        r["batch_sizes_used"] = " ".join(map(str, r["batch_sizes_used"]))
        r["clocks_used"] = " ".join("default" if c is None else str(c) for c in r["clocks_used"])
    files = {
        "summary_csv": out / "summary.csv",
        "runs_csv": out / "runs.csv",
        "oracle_csv": out / "oracle.csv",
        "methods_csv": out / "methods.csv",
        "json": out / "results.json",
    }
    _write_text_atomic(files["summary_csv"], _csv(rows))
    _write_text_atomic(files["runs_csv"], _csv(runs))
    _write_text_atomic(files["oracle_csv"], _csv(profile_rows(result)))
    _write_text_atomic(files["methods_csv"], _csv(summary))
    g = gains(result)
    claims = {}
    if g:
        best = max(g, key=lambda k: g[k])
        worst = min(g, key=lambda k: g[k])
        claims = {
            "batchsizer_vs_dvfs_by_job": {str(k): v for k, v in g.items()},
            "largest_gain": {"job": best, "gain": g[best], "paper": {"job": 19, "gain": 0.29}},
            "largest_loss": {"job": worst, "gain": g[worst], "paper": {"job": 5, "gain": -0.08}},
            "jobs_batchsizer_faster": sum(1 for v in g.values() if v > 0),
        }
    write_json_atomic(
        files["json"],
        {
            "config": result.config.to_dict(),
            "wall_s": result.wall_s,
            "claims": claims,
            "methods": summary,
            "per_job": rows,
            "oracle": profile_rows(result),
            "runs": runs,
        },
    )
    return files
