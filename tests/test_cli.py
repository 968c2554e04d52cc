"""The command line: bad input is one line naming the field, --help explains every option, outputs work."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.io.records import read_records

# the paper's controller, pinned (the default may differ); a later --controller overrides it
SCRIPTED = ["run", "--device", "scripted", "--items", "300", "-q", "--controller", "batchsizer"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--sizes", ""], "sizes"),
        (["--sizes", " , "], "sizes"),
        (["--sizes", "4,2,8"], "sizes"),
        (["--sizes", "1,2,2"], "sizes"),
        (["--sizes", "0,1,2"], "sizes"),
        (["--sizes", "-4,1"], "sizes"),
        (["--sizes", "1,two"], "sizes"),
        (["--alpha", "0"], "alpha"),
        (["--alpha", "1"], "alpha"),
        (["--alpha", "-0.5"], "alpha"),
        (["--alpha", "1.2"], "alpha"),
        (["--cap", "0"], "cap"),
        (["--cap", "-10"], "cap"),
        (["--cap", "nan"], "cap"),
        (["--cap", "100", "--cap-schedule", "0:100"], "cap"),
        (["--cap-schedule", "0:200,10:0"], "cap schedule"),
        (["--cap-schedule", "10:200"], "cap schedule"),
        (["--cap-file", "/nonexistent/cap"], "cap file"),
        (["--window", "0"], "window"),
        (["--window", "-3"], "window"),
        (["--window-seconds", "0"], "window"),
        (["--window-seconds", "-1.5"], "window"),
        (["--controller", "nope"], "controller"),
        (["--controller", "dvfs"], "controller"),  # scripted device has no clocks
        (["--initial", "3"], "initial batch size"),
        (["--controller", "static", "--batch-size", "0"], "batch_size"),
        (["--items", "0"], "items"),
        (["--device", "tpu"], "device"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(extra: list[str], field: str) -> None:
    result = CliRunner().invoke(cli, SCRIPTED + extra)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"error: {field}: "), result.output
    assert "Traceback" not in result.output


def test_zero_window_seconds_with_batches_off(tmp_path: Path) -> None:
    # "empty window" from the library side: no batches and no seconds
    from batchsizer.core.loop import Window
    from batchsizer.errors import ConfigError

    with pytest.raises(ConfigError, match="^window: "):
        Window(batches=None, seconds=None)


def _options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option)]


@pytest.mark.parametrize("name", sorted(cli.list_commands(click.Context(cli))))
def test_help_explains_every_option_with_its_default(name: str) -> None:
    result = invoke(name, "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    cmd = cli.get_command(click.Context(cli), name)
    assert cmd is not None
    for opt in _options(cmd):
        if opt.hidden or opt.name == "help":
            continue
        flag = max(opt.opts, key=len)
        assert flag in text, (name, flag)
        assert opt.help, f"{name} {flag} has no help"
        # the default is shown by click ([default: ...]) or written in the help text
        shown = opt.show_default is not False and opt.default is not None and not (opt.is_flag and not opt.default)
        assert shown or "default" in opt.help.lower(), f"{name} {flag}: help does not say its default"


def test_run_help_shows_defaults() -> None:
    text = " ".join(invoke("run", "--help").output.split())
    from batchsizer.policies import DEFAULT_CONTROLLER

    for piece in (
        "[default: sim:p40]",
        f"[default: {DEFAULT_CONTROLLER}]",
        "[default: 0.8]",
        "[default: 10]",
        "every whole size 1..256 for adaptive",
    ):
        assert piece in text


def test_json_and_records(tmp_path: Path) -> None:
    js, rec = tmp_path / "s.json", tmp_path / "r.jsonl"  # folders must exist: none is made
    result = invoke(*SCRIPTED, "--json", str(js), "--records", str(rec), "--cap-schedule", "0:200,0.2:120")
    assert result.exit_code == 0, result.output
    data = json.loads(js.read_text())
    assert data["items"] == 300 and data["batches"] > 0 and data["throughput"] > 0
    assert 0 <= data["over_cap_fraction"] <= 1
    assert data["controller"]["name"] == "batchsizer"
    r = read_records(rec)
    assert sum(b["size"] for b in r["batch"]) == 300
    assert r["summary"][0]["items"] == 300
    assert any(e["kind"] == "cap" for e in r.get("event", []))
    assert "summary:" in result.output and "throughput" in result.output
    assert "t=" not in result.output  # --quiet: only the summary


def test_plain_lines_when_not_a_terminal() -> None:
    result = invoke("run", "--device", "scripted", "--items", "300", "--controller", "batchsizer")
    assert result.exit_code == 0
    assert result.output.startswith("job: scripted | controller batchsizer | cap 200 W")
    assert re.search(r"t=\s*\d+\.\d+s cap\s+200 W peak\s+\d+ W", result.output)
    assert "\x1b[" not in result.output  # no terminal control codes in a pipe


def test_cap_file_option(tmp_path: Path) -> None:
    f = tmp_path / "cap"
    f.write_text("150 W\n")
    result = invoke(*SCRIPTED, "--cap-file", str(f))
    assert result.exit_code == 0, result.output


def test_static_and_aimd_run() -> None:
    for extra in (["--controller", "static", "--batch-size", "8"], ["--controller", "aimd"]):
        result = invoke(*SCRIPTED, *extra)
        assert result.exit_code == 0, result.output


def test_real_subprocess_bad_input_and_version(tmp_path: Path) -> None:
    exe = shutil.which("batchsizer") or str(Path(sys.executable).with_name("batchsizer"))
    p = subprocess.run([exe, "run", "--device", "scripted", "--alpha", "2"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: alpha: must be between 0 and 1 (exclusive), got 2.0"
    assert p.stdout == ""
    js = tmp_path / "s.json"
    p = subprocess.run(
        [exe, "run", "--device", "scripted", "--items", "200", "--json", str(js)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(js.read_text())["items"] == 200
    assert "summary:" in p.stdout


def test_plot_writes_pngs(tmp_path: Path) -> None:
    rec = tmp_path / "job.jsonl"
    assert invoke(*SCRIPTED, "--records", str(rec), "--cap-schedule", "0:200,0.3:110").exit_code == 0
    out = tmp_path / "figs"
    result = invoke("plot", str(rec), "--out", str(out), "--dpi", "60")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["batch_size.png", "overview.png", "power.png", "throughput.png"]
    from PIL import Image

    for png in out.iterdir():
        img = Image.open(png)
        assert img.size[0] > 300 and img.size[1] > 150
        # non-trivial: many distinct colours (lines, text), not a blank canvas
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    # default folder: beside the records
    assert invoke("plot", str(rec), "--dpi", "40").exit_code == 0
    assert (tmp_path / "job-plots" / "power.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b'{"a": 1}\n[1, 2]\n', "holds no batch or period records"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "holds no batch or period records"),
    ],
)
def test_plot_bad_records(tmp_path: Path, content: bytes | None, match: str) -> None:
    rec = tmp_path / "r.jsonl"
    if content is not None:
        rec.write_bytes(content)
    result = CliRunner().invoke(cli, ["plot", str(rec), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.startswith("error: records: ") and match in result.output
    assert not (tmp_path / "o").exists()


def test_plot_out_is_a_file(tmp_path: Path) -> None:
    rec = tmp_path / "job.jsonl"
    invoke(*SCRIPTED, "--records", str(rec))
    (tmp_path / "f").write_text("x")
    result = CliRunner().invoke(cli, ["plot", str(rec), "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and result.output.startswith("error: out: ")


def test_plain_run_on_the_default_simulated_p40() -> None:
    exe = shutil.which("batchsizer") or str(Path(sys.executable).with_name("batchsizer"))
    p = subprocess.run([exe, "run"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "summary:" in p.stdout and re.search(r"items\s+10000\n", p.stdout)
    assert re.search(r"-> (up|down|hold)", p.stdout)  # the controller's decisions, one line per period


def test_live_view_renders_in_place_and_summary_table() -> None:
    import io

    from rich.console import Console

    from batchsizer.core.batching import DynamicBatchStream
    from batchsizer.core.caps import CapSchedule
    from batchsizer.core.loop import ControlLoop, Window
    from batchsizer.core.workloads import WorkloadOptions, open_workload
    from batchsizer.policies.algorithm1 import Algorithm1
    from batchsizer.ui.live import LiveView, power_bar, print_summary, sparkline

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system="truecolor")
    w = open_workload(WorkloadOptions(device="scripted", items=1500))
    view = LiveView(total_items=1500, console=console, fps=1e9)
    caps = CapSchedule([(0, 200.0), (0.8, 120.0)])
    summary = ControlLoop(w.device, Algorithm1(), caps, Window(10), [view]).run(DynamicBatchStream(w.source))
    out = buf.getvalue()
    assert "\x1b[" in out  # drawn in place with cursor movement, not appended lines
    for piece in ("power", "cap 120 W", "batch size", "throughput", "1,500/1,500 (100 %)", "[cap] cap changed"):
        assert piece in out, piece
    buf2 = io.StringIO()
    print_summary(summary, Console(file=buf2, width=100))
    table = buf2.getvalue()
    assert "summary" in table and "average batch size" in table and "│" in table
    assert str(power_bar(250, 200)).count("█") > str(power_bar(100, 200)).count("█")
    # scale 1.25 x 200 = 250 W over 8 levels: int(8 * v / 250) = 1, 3, 4, 8 (clipped to 7)
    assert str(sparkline([50, 100, 150, 260], 200)) == "▂▄▅█"


@pytest.mark.parametrize("view_kind", ["live", "lines"])
def test_views_of_a_real_device_job_that_runs_uncapped(view_kind: str, capsys) -> None:
    """A real device's clock is the machine's monotonic time and an uncapped job's cap is infinite:
    the views show seconds since the job's start and "none", and the live panel does not try to
    draw a bar against an infinite cap."""
    import io

    from rich.console import Console

    from batchsizer.core.batching import DynamicBatchStream
    from batchsizer.core.caps import ConstantCap
    from batchsizer.core.loop import ControlLoop, Window
    from batchsizer.core.workloads import WorkloadOptions, open_workload
    from batchsizer.policies import make_controller
    from batchsizer.ui.live import LiveView, PlainLines

    w = open_workload(WorkloadOptions(device="scripted", items=300))
    w.device.clock.advance(12_000.0)  # a monotonic clock, long after boot
    buf = io.StringIO()
    view = (
        LiveView(300, Console(file=buf, force_terminal=True, width=120), fps=1e9)
        if view_kind == "live"
        else PlainLines()
    )
    caps = ConstantCap(1e9)
    caps.watts = math.inf  # what an uncapped job runs under
    ControlLoop(w.device, make_controller("static", batch_size=10), caps, Window(5), [view]).run(
        DynamicBatchStream(w.source)
    )
    out = buf.getvalue() if view_kind == "live" else capsys.readouterr().out
    assert "12000" not in out and "12,000" not in out
    assert ("uncapped" in out) if view_kind == "live" else ("cap  none" in out)


def test_power_limit_is_the_hardware_limit_baseline(tmp_path: Path) -> None:
    """--power-limit sets the card's own limit for the job (here the simulated P40's limiter, which
    holds the average power by lowering the clock): slower than without it, and recorded."""
    results = {}
    for label, extra in (("none", []), ("limit", ["--power-limit", "125"])):
        out = tmp_path / f"{label}.json"
        args = ["run", "-q", "--controller", "static", "--batch-size", "128", "--cap", "150", "--items", "3000"]
        result = CliRunner().invoke(cli, [*args, *extra, "--json", str(out)])
        assert result.exit_code == 0, result.output
        results[label] = json.loads(out.read_text())
    assert results["limit"]["power_limit_w"] == 125 and results["none"]["power_limit_w"] is None
    assert results["limit"]["throughput"] < 0.95 * results["none"]["throughput"]
    bad = CliRunner().invoke(cli, ["run", "-q", "--power-limit", "20"])
    assert bad.exit_code == 2 and "power limit: Tesla P40 accepts 125 to 250 W, got 20" in bad.stderr


def test_time_scale_runs_a_simulated_job_in_real_time_so_a_cap_file_can_be_edited(tmp_path: Path) -> None:
    """--time-scale 1: the P40's 300-item job lasts its simulated ~2 s of wall time, and a cap file
    edited half-way through is the cap from then on."""
    import threading
    import time

    cap, js, rec = tmp_path / "cap", tmp_path / "s.json", tmp_path / "r.jsonl"
    cap.write_text("200\n")
    threading.Timer(0.8, lambda: cap.write_text("150\n")).start()
    t0 = time.monotonic()
    result = invoke("run", "--items", "300", "-q", "--time-scale", "1", "--cap-file", str(cap), "--json", str(js),
                    "--records", str(rec))  # fmt: skip
    wall = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    s = json.loads(js.read_text())
    assert wall >= 0.9 * s["duration_s"] and s["duration_s"] > 1.0 and s["time_scale"] == 1.0
    events = [json.loads(line) for line in rec.read_text().splitlines() if '"event"' in line]
    assert any(e["kind"] == "cap" and e["new"] == 150.0 for e in events), events
    # the wall clock runs on past the last batch: no empty period of that time at the end
    periods = [json.loads(line) for line in rec.read_text().splitlines() if '"period"' in line]
    assert periods and all(p["batches"] >= 1 for p in periods)


def test_time_scale_below_one_is_refused_by_run() -> None:
    result = CliRunner().invoke(cli, ["run", "--items", "50", "--time-scale", "0.2"])
    assert result.exit_code == 2 and "time-scale: run takes 1 or more" in result.output
