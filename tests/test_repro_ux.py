"""`batchsizer reproduce` as a user sees it: errors from worker processes, tables that fit the
terminal, file modes, and figures whose legends and notes cover nothing and are not cut."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from rich.console import Console

from batchsizer.errors import ConfigError

pytest.importorskip("matplotlib")


def _raise_config_error() -> None:
    raise ConfigError("jobs", "job 99 does not exist")


def test_a_config_error_crosses_process_boundaries() -> None:
    from batchsizer.hw.images import BadImageError

    copy = pickle.loads(pickle.dumps(ConfigError("jobs", "no such job")))
    assert (copy.field, copy.problem, str(copy)) == ("jobs", "no such job", "jobs: no such job")
    bad = pickle.loads(pickle.dumps(BadImageError("x.jpg", "truncated")))
    assert bad.path == "x.jpg" and bad.field == "images" and "x.jpg is not a readable image" in str(bad)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    with pool, pytest.raises(ConfigError, match="^jobs: job 99 does not exist$"):  # not BrokenProcessPool
        pool.submit(_raise_config_error).result()


@pytest.fixture(scope="module")
def result():
    from batchsizer.repro.experiment import ExperimentConfig, run_experiment

    cfg = ExperimentConfig(
        gpu="p40", job_ids=(5, 19), methods=("batchsizer", "dvfs", "aimd"), seeds=1, items=300, workers=1
    ).checked()
    return run_experiment(cfg)


def _width(table) -> int:
    console = Console(width=10_000)
    return table.__rich_measure__(console, console.options).maximum


def test_tables_fit_80_columns_and_say_what_was_left_out(result) -> None:
    from batchsizer.repro.experiment import aggregate
    from batchsizer.repro.report import job_table, method_summary, method_table

    rows = aggregate(result)
    for make, where in ((lambda w: job_table(result, rows, width=w), "summary.csv"),
                        (lambda w: method_table(method_summary(rows), width=w), "methods.csv")):  # fmt: skip
        full, narrow = make(None), make(80)
        assert _width(full) > 80 and _width(narrow) <= 80
        assert len(narrow.columns) < len(full.columns)
        assert "Left out to fit 80 columns" in str(narrow.caption) and where in str(narrow.caption)
        console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(narrow)
        assert "…" not in console.export_text()  # no cell cut short
    assert "1 seed," in str(job_table(result, rows).title)


def test_results_files_follow_the_umask(result, tmp_path: Path) -> None:
    from batchsizer.repro.report import write_results

    old = os.umask(0o022)
    try:
        files = write_results(result, tmp_path)
    finally:
        os.umask(old)
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def _capture(monkeypatch) -> list:
    import batchsizer.repro.figures as figures

    figs: list = []
    real = figures._save

    def keep(fig, path):
        fig.canvas.draw()
        figs.append((fig, [a.get_window_extent() for a in fig.axes], [lg.get_window_extent() for lg in fig.legends]))
        return real(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    return figs


def test_fig7_and_fig8_legends_cover_no_panel(result, tmp_path: Path, monkeypatch) -> None:
    from batchsizer.repro.figures import fig_batch_over_time, fig_power

    figs = _capture(monkeypatch)
    fig_power(result, tmp_path / "f7.png")
    fig_batch_over_time(result, tmp_path / "f8.png")
    for fig, axes, legends in figs:
        assert legends, "one legend for the figure"
        assert not any(ax.get_legend() for ax in fig.axes)
        for lg in legends:
            assert not any(lg.overlaps(a) for a in axes)


def test_fig5_shows_both_paper_lines_with_their_notes_beside_the_panel(result, tmp_path: Path, monkeypatch) -> None:
    from batchsizer.repro.figures import fig_throughput

    figs = _capture(monkeypatch)
    fig_throughput(result, tmp_path / "f5.png")
    fig, axes, _ = figs[0]
    ax2 = fig.axes[1]
    low, high = ax2.get_ylim()
    assert low < -8 and high > 29  # both claims' lines are inside the panel
    notes = [t for t in ax2.texts if t.get_text().startswith("paper:")]
    assert len(notes) == 2
    panel = axes[1]
    for note in notes:
        box = note.get_window_extent()
        assert box.x0 >= panel.x1 - 1  # right of the bars, so it covers none
        assert panel.y0 <= (box.y0 + box.y1) / 2 <= panel.y1
