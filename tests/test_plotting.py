"""`batchsizer plot` on unusual records: bad field types, resumed jobs, long jobs, one period, the tail."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli

pytest.importorskip("matplotlib")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _job(n_batches: int = 3, start: float = 0.0) -> list[dict]:
    recs: list[dict] = [{"type": "job", "start": start, "device": {"name": "sim:p40"}, "controller": {"name": "x"}}]
    for i in range(n_batches):
        t = start + 0.1 * i
        recs.append({"type": "batch", "i": i, "first": i, "size": 4, "start": t, "end": t + 0.1})
        recs.append({"type": "power", "t": t + 0.05, "w": 100.0 + i})
    recs.append(
        {"type": "period", "start": start, "end": start + 0.1 * n_batches, "cap_w": 200, "peak_w": 103,
         "throughput": 40.0}  # fmt: skip
    )
    return recs


def test_dpi_is_bounded(tmp_path: Path) -> None:
    rec = _lines(tmp_path / "r.jsonl", _job())
    for dpi in ("100000", "5"):
        result = invoke("plot", str(rec), "--dpi", dpi)
        assert result.exit_code == 2 and result.stderr.startswith("error: dpi: must be between 10 and 600"), result.output
    assert not (tmp_path / "r-plots").exists()


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"type": "batch", "i": 0, "size": "4", "start": 0.0, "end": 0.1}, "a batch record field 'size' must be a number, got \"4\""),
        ({"type": "batch", "i": 0, "start": 0.0, "end": 0.1}, "a batch record has no 'size' field"),
        ({"type": "period", "start": 0.0, "end": [1], "cap_w": 200}, "a period record field 'end' must be a number"),
        ({"type": "power", "t": True, "w": 100}, "a power record field 't' must be a number, got true"),
        ({"type": "job", "start": "now"}, "a job record field 'start' must be a number"),
    ],
)
def test_records_with_wrong_field_types_name_the_line_and_the_field(tmp_path: Path, bad: dict, words: str) -> None:
    recs = _job()
    recs.insert(2, bad)
    rec = _lines(tmp_path / "r.jsonl", recs)
    result = invoke("plot", str(rec), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: records: {rec}, line 3: {words}"), result.stderr
    assert not (tmp_path / "o").exists()


def test_a_resumed_job_continues_the_time_axis_with_no_line_joining_the_runs(tmp_path: Path) -> None:
    from batchsizer.ui.plotting import load_trace

    # two runs in one file, each on a clock that starts at 0 (as a simulated job's does)
    rec = _lines(tmp_path / "r.jsonl", _job(3) + _job(2))
    tr = load_trace(rec)
    assert tr.resumes == [pytest.approx(0.3)]
    finite = [t for t in tr.batch_t if not math.isnan(t)]
    assert finite == sorted(finite) and finite[-1] == pytest.approx(0.5)  # 0.3 s, then 0.2 s more
    assert sum(math.isnan(t) for t in tr.batch_t) == 1 and sum(math.isnan(t) for t in tr.power_t) == 1
    assert "2 runs" in tr.title


def test_a_long_job_is_drawn_as_a_band_that_keeps_the_peaks(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from batchsizer.ui.plotting import BAND_COLUMNS, MAX_POWER_POINTS, JobTrace, _power

    n = 5 * MAX_POWER_POINTS
    t = [0.01 * i for i in range(n)]
    w = [60.0 + (i % 7) * 10 for i in range(n)]
    w[12345] = 251.0  # one spike
    tr = JobTrace("long", t, w, [0.0, t[-1]], [200.0, 200.0], [], [], [t[-1]], [251.0], [1.0])
    fig, ax = plt.subplots()
    _power(ax, tr)
    drawn = sum(len(line.get_xdata()) for line in ax.lines)
    assert drawn < 4 * BAND_COLUMNS + 10 < n  # thinned
    assert max(max(line.get_ydata()) for line in ax.lines if line.get_label() != "cap") == 251.0
    assert ax.collections  # the min-max band
    plt.close(fig)


def test_a_job_of_one_control_period_has_a_throughput_line(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from batchsizer.ui.plotting import _throughput, load_trace

    tr = load_trace(_lines(tmp_path / "r.jsonl", _job(3)))
    fig, ax = plt.subplots()
    _throughput(ax, tr)
    xs = [x for line in ax.lines for x in line.get_xdata() if not math.isnan(x)]
    assert len(xs) >= 2 and max(xs) - min(xs) == pytest.approx(0.3)
    plt.close(fig)


def test_the_tail_of_a_job_is_in_its_records_and_plots(tmp_path: Path) -> None:
    from batchsizer.io.records import read_records
    from batchsizer.ui.plotting import load_trace

    rec = tmp_path / "r.jsonl"
    assert invoke("run", "-q", "--items", "2500", "--records", str(rec)).exit_code == 0
    got = read_records(rec)
    t0, duration = got["job"][0]["start"], got["summary"][0]["duration_s"]
    assert got["period"][-1]["end"] - t0 == pytest.approx(duration)
    assert got["period"][-1]["end"] == got["batch"][-1]["end"]
    tr = load_trace(rec)
    assert max(tr.cap_t) == pytest.approx(duration) and max(tr.power_t) > duration - 0.1
    assert invoke("plot", str(rec), "--out", str(tmp_path / "figs"), "--dpi", "40").exit_code == 0


def test_a_job_under_a_rolling_mean_rule_draws_what_the_rule_judges(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from batchsizer.cli import cli
    from batchsizer.ui.plotting import _power, load_trace

    rec = tmp_path / "j.jsonl"
    r = CliRunner().invoke(cli, ["run", "-q", "--items", "800", "--cap-rule", "avg:1", "--records", str(rec)])
    assert r.exit_code == 0, r.output
    tr = load_trace(rec)
    assert tr.cap_rule == "avg:1"
    fig, ax = plt.subplots()
    _power(ax, tr)
    labels = [line.get_label() for line in ax.get_lines()]
    plt.close(fig)
    assert any("rolling mean (avg:1)" in lab for lab in labels)
