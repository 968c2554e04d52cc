"""``batchsizer reproduce``: the paper's experiment on a simulated GPU, with the baselines it left out."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from batchsizer.errors import ConfigError
from batchsizer.repro.experiment import ExperimentConfig, aggregate, run_experiment
from batchsizer.repro.jobs import PAPER_ITEMS, check_gpu, parse_job_ids
from batchsizer.repro.methods import DEFAULT_METHODS, available_methods, parse_methods
from batchsizer.repro.report import check_out_dir, job_table, method_summary, method_table, progress_bar, write_results


@click.command()
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("out/reproduce"), help="Folder for CSV, JSON and PNG."
)
@click.option("--seeds", type=int, default=3, help="Seeds per job and method (0..N-1); mean and spread over them.")
@click.option("--jobs", "jobs_text", default=None, help="Table 2 job ids, e.g. 1,5,19 or 1-10 [default: all 20].")
@click.option(
    "--methods",
    default=None,
    help=f"Comma-separated, from: {', '.join(available_methods())} [default: {','.join(DEFAULT_METHODS)}]. "
    "The oracle always runs.",
)
@click.option(
    "--job-table",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV of your own jobs (columns model,dataset,cap_w; optional items, device) to run instead of "
    "Table 2; see docs/tables.md [default: none, Table 2].",
)
@click.option("--gpu", default="p40", help="Simulated GPU: p40 (the paper's), v100, a100, h100; caps scaled to it.")
@click.option("--items", type=int, default=PAPER_ITEMS, help="Images per job.")
@click.option("--workers", type=int, default=2, help="Processes to run jobs in.")
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or tables; only where the files went.")
def command(**kw: Any) -> None:
    """Run the paper's 20 jobs (Table 2) under their caps: BatchSizer vs DVFS, plus fair baselines.

    Every method runs through the same control loop on the simulated GPU and is judged by the same
    sensor against the same cap; the oracle (best static batch size and clock under the cap) is
    found by sweeping in the simulator. Writes summary.csv, runs.csv, oracle.csv, methods.csv,
    results.json and the figures into --out.
    """
    gpu = check_gpu(kw["gpu"])
    if kw["items"] < 1:
        raise ConfigError("items", f"must be at least 1, got {kw['items']}")
    jobs = None
    if kw["job_table"] is not None:
        if kw["jobs_text"]:
            raise ConfigError("jobs", "picks Table 2 jobs; leave it out with --job-table (the table's jobs all run)")
        from batchsizer.repro.job_table import read_job_table

        jobs = tuple(read_job_table(kw["job_table"], gpu, kw["items"]))
    cfg = ExperimentConfig(
        gpu=gpu,
        jobs=jobs,
        job_ids=tuple(parse_job_ids(kw["jobs_text"])) if kw["jobs_text"] else None,
        methods=tuple(parse_methods(kw["methods"])),
        seeds=kw["seeds"],
        items=kw["items"],
        workers=kw["workers"],
    ).checked()
    out = check_out_dir(kw["out"])
    console = Console(stderr=True, quiet=kw["quiet"])
    n_jobs = len(cfg.job_list())
    t0 = time.perf_counter()
    with progress_bar(n_jobs, console) as done:
        result = run_experiment(cfg, on_job_done=done)
    files = write_results(result, out)
    if not kw["no_figures"]:
        from batchsizer.repro.figures import write_figures  # matplotlib only when drawing

        files.update(write_figures(result, out))
    wall = time.perf_counter() - t0
    if not kw["quiet"]:
        rows = aggregate(result)
        # a terminal's width (or COLUMNS); a log or pipe gets every column
        term = Console() if Console().is_terminal or os.environ.get("COLUMNS") else Console(width=170)
        term.print(job_table(result, rows, width=term.width))
        term.print(method_table(method_summary(rows), width=term.width))
        term.print(
            f"{len(result.runs)} runs and {sum(o.profile.runs for o in result.outcomes if o.profile)} sweep points "
            f"in {wall:.1f} s wall ({result.wall_s:.1f} s running, {cfg.workers} workers)"
        )
    for path in files.values():
        click.echo(f"wrote {path}")
