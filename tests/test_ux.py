"""What a new user trips on (issue 13): bad values that were tracebacks, options ignored without a
word, output paths, standard output, file modes and the wording of messages."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli


def run(*args: str, **kw):
    return CliRunner().invoke(cli, list(args), **kw)


def one_error_line(result, field: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    err = result.stderr.strip().splitlines()
    assert err[-1].startswith(f"error: {field}"), result.stderr
    return err[-1]


# -- tracebacks that became one line


def test_items_beyond_any_range_is_one_line() -> None:
    line = one_error_line(run("run", "-q", "--items", "99999999999999999999"), "items")
    assert "at most" in line


def test_cap_schedule_with_an_infinite_time_is_refused() -> None:
    line = one_error_line(run("run", "-q", "--cap-schedule", "0:200,1e400:100"), "cap schedule")
    assert "finite" in line


# -- accepted silently before


def test_images_on_the_simulator_is_refused_missing_or_not(tmp_path: Path) -> None:
    line = one_error_line(run("run", "-q", "--items", "50", "--images", str(tmp_path / "nope")), "images")
    assert "used by real devices (cpu, cuda[:N])" in line
    line = one_error_line(run("run", "-q", "--items", "50", "--images", str(tmp_path)), "images")
    assert "used by real devices (cpu, cuda[:N])" in line


def test_a_missing_images_folder_is_named_on_a_real_device_before_anything_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("batchsizer.cli.commands.run.open_workload", _no_loading)
    args = ["--device", "cpu", "--controller", "static"]
    line = one_error_line(run("run", "-q", *args, "--images", str(tmp_path / "none")), "images")
    assert "not a folder" in line and "does not exist" in line


def _no_loading(opts):
    from batchsizer.errors import ConfigError

    raise ConfigError("test", "the model would load here")


@pytest.mark.parametrize(
    ("args", "unused"),
    [
        (["--controller", "static", "--sizes", "1,2,4"], "--sizes"),
        (["--controller", "batchsizer", "--batch-size", "32"], "--batch-size"),
        (["--controller", "dvfs", "--initial", "4", "--sizes", "1,2,4"], "--sizes, --initial"),
    ],
)
def test_options_the_controller_ignores_are_named(args: list[str], unused: str) -> None:
    result = run("run", "-q", "--items", "200", *args)
    assert result.exit_code == 0, result.output
    assert f"warning: {unused} " in result.stderr and "not used by the" in result.stderr, result.stderr


def test_options_the_controller_reads_give_no_warning() -> None:
    result = run("run", "-q", "--items", "200", "--controller", "static", "--batch-size", "8")
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr


def test_items_with_images_is_named_as_unused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("batchsizer.cli.commands.run.open_workload", _no_loading)
    (tmp_path / "imgs" / "cls").mkdir(parents=True)
    args = ["--device", "cpu", "--controller", "static", "--images", str(tmp_path / "imgs"), "--items", "5"]
    result = run("run", "-q", *args)
    assert "warning: --items 5 is not used" in result.stderr, result.stderr


def test_a_cap_above_the_board_limit_is_pointed_out(tmp_path: Path) -> None:
    result = run("run", "-q", "--items", "200", "--cap", "1e9")
    assert result.exit_code == 0, result.output
    assert "above sim:p40's board power limit of 250 W" in result.stderr and "does not constrain" in result.stderr
    cap = tmp_path / "cap.txt"
    cap.write_text("2000\n")
    result = run("run", "-q", "--items", "200", "--cap-file", str(cap))
    assert "2000 W is above sim:p40's board power limit" in result.stderr, result.stderr
    assert "warning" not in run("run", "-q", "--items", "200", "--cap", "240").stderr


def test_records_in_a_missing_folder_is_an_error_and_no_folder_is_made(tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.jsonl"
    line = one_error_line(run("run", "-q", "--items", "50", "--records", str(target)), "records")
    assert "does not exist" in line
    assert not (tmp_path / "nonexistent").exists()
    line = one_error_line(run("run", "-q", "--items", "50", "--json", str(target)), "json")
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="needs /proc")
def test_records_on_a_file_in_proc_does_not_say_no_such_file() -> None:
    line = one_error_line(run("run", "-q", "--items", "50", "--records", "/proc/version"), "records")
    assert "No such file" not in line and "cannot be created in /proc" in line


def test_warnings_reach_stderr_with_quiet() -> None:
    result = run("run", "-q", "--device", "scripted", "--items", "3000", "--cap", "70")
    assert result.exit_code == 0, result.output
    assert "warning: [cap-not-met]" in result.stderr, result.stderr


def test_cpu_without_rapl_is_refused_before_the_model_loads(monkeypatch) -> None:
    monkeypatch.setattr("batchsizer.hw.rapl.rapl_status", lambda *a, **k: ([], "no RAPL domains under /x"))
    monkeypatch.setattr("batchsizer.cli.commands.run.open_workload", _no_loading)
    line = one_error_line(run("run", "-q", "--device", "cpu"), "controller")
    assert "--controller static" in line and "RAPL readable" in line


def test_the_model_load_is_announced_on_a_real_device(monkeypatch) -> None:
    monkeypatch.setattr("batchsizer.hw.rapl.rapl_status", lambda *a, **k: ([], None))
    monkeypatch.setattr("batchsizer.cli.commands.run.open_workload", _no_loading)
    result = run("run", "--device", "cpu", "--model", "resnet18")
    assert "loading resnet18 on cpu" in result.stderr, result.stderr


# -- output that machines and people read


def test_json_and_records_to_stdout_with_the_human_output_on_stderr(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("run", "--items", "300", "--json", "-")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "-").exists()
    data = json.loads(result.stdout)
    assert data["items"] == 300 and data["cap_w"] == 200 and data["cap_source"] == "constant"
    assert "summary:" in result.stderr and "items/s" in result.stderr
    result = run("run", "--items", "300", "--records", "-")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0]["type"] == "job" and lines[-1]["type"] == "summary"
    assert not (tmp_path / "-").exists() and "summary:" in result.stderr


def test_save_outputs_cannot_be_stdout() -> None:
    one_error_line(run("run", "-q", "--items", "50", "--save-outputs", "-"), "save-outputs")


def test_json_written_with_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        result = run("run", "-q", "--items", "200", "--json", str(tmp_path / "s.json"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o644


def test_job_record_has_the_cap_as_a_number_and_events_have_times(tmp_path: Path) -> None:
    from batchsizer.io.records import read_records

    rec = tmp_path / "r.jsonl"
    result = run("run", "-q", "--items", "2000", "--cap-schedule", "0:200,3:150", "--records", str(rec))
    assert result.exit_code == 0, result.output
    got = read_records(rec)
    job = got["job"][0]
    assert job["cap_w"] == 200 and "cap" not in job and job["cap_schedule"][1] == {"t_s": 3.0, "cap_w": 150.0}
    events = got["event"]
    assert events and all(isinstance(e["t"], float) for e in events)
    t0 = job["start"]
    cap_event = next(e for e in events if e["kind"] == "cap")
    assert 3.0 <= cap_event["t"] - t0 < 4.0


def test_rejected_cap_file_content_is_an_event_in_the_records(tmp_path: Path) -> None:
    from batchsizer.cli.commands.run import _CapFileRejects
    from batchsizer.core.caps import CapFile
    from batchsizer.io.recorder import JobRecorder
    from batchsizer.io.records import RecordWriter, read_records

    cap = tmp_path / "cap.txt"
    cap.write_text("200\n")
    caps = CapFile(cap)
    rec = tmp_path / "r.jsonl"
    recorder = JobRecorder(RecordWriter(rec), caps=caps)
    forward = _CapFileRejects(caps, [recorder])
    recorder.on_start({"start": 0.0, "cap": "file"})
    cap.write_text("two hundred\nfifty\n")
    os.utime(cap, (1, 1))
    assert caps.cap_at(1.0) == 200
    forward.on_end(None)  # type: ignore[arg-type]
    recorder.writer.close()
    got = read_records(rec)
    assert got["job"][0]["cap_source"] == "file" and got["job"][0]["cap_w"] == 200
    (event,) = got["event"]
    assert event["kind"] == "cap-file" and "keeping the previous cap of 200 W" in event["message"]
    assert "cap file: " not in event["message"]


def test_the_pipe_view_says_items_per_second() -> None:
    result = run("run", "--items", "300")
    assert "items/s" in result.stdout and "img/s" not in result.stdout


# -- --config, -v, bare batchsizer, --help


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("window = 1.5", "window = 1.5: must be a whole number"),
        ("cap = [1, 2]", "cap = [1, 2]: must be a single value, not a list"),
        ('cap = "150"', 'cap = "150": must be a number (without quotes)'),
        ("controller = 3", "controller = 3: must be text in quotes"),
        ("quiet = 1", "quiet = 1: must be true or false"),
        ('sim-sensor = "x"', "sim-sensor = \"x\": 'x' is not one of"),
    ],
)
def test_config_value_of_the_wrong_type_is_one_line_naming_file_and_key(line: str, words: str, tmp_path: Path) -> None:
    cfg = tmp_path / "job.toml"
    cfg.write_text(line + "\n")
    result = run("run", "-q", "--items", "50", "--config", str(cfg))
    err = one_error_line(result, "config")
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{cfg}: {words}" in err, err


def test_config_lists_still_work_for_comma_separated_options(tmp_path: Path) -> None:
    cfg = tmp_path / "job.toml"
    cfg.write_text("sizes = [1, 2, 4]\ncontroller = \"batchsizer\"\nwindow = 5\n")
    result = run("run", "-q", "--items", "300", "--config", str(cfg), "--json", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s.json").read_text())["controller"]["sizes"] == [1, 2, 4]


def test_config_paths_are_taken_from_the_config_files_folder(tmp_path: Path, monkeypatch) -> None:
    # a config names its table and outputs relative to itself, and works from any working folder
    job = tmp_path / "job"
    job.mkdir()
    rows = [(1, 20.0, 80.0, 110.0), (4, 60.0, 110.0, 150.0), (16, 120.0, 140.0, 190.0)]
    lines = ["batch_size,throughput,mean_w,peak_w,idle_w"] + [f"{b},{t},{m},{p},50" for b, t, m, p in rows]
    (job / "t.csv").write_text("\n".join(lines) + "\n")
    (job / "run.toml").write_text('device = "table:t.csv"\ncap = 170\njson = "out/s.json"\nrecords = "r.jsonl"\n')
    (job / "out").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("run", "-q", "--items", "300", "--config", "../job/run.toml")
    assert result.exit_code == 0, result.output
    assert json.loads((job / "out" / "s.json").read_text())["items"] == 300
    assert (job / "r.jsonl").exists() and not list(elsewhere.iterdir())
    # flags on the command line stay relative to the working folder
    result = run("run", "-q", "--items", "300", "--config", "../job/run.toml", "--json", "here.json")
    assert result.exit_code == 0 and (elsewhere / "here.json").exists()


def test_verbose_after_the_subcommand_too() -> None:
    import logging

    result = run("run", "-v", "-q", "--items", "100")
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == logging.INFO
    logging.getLogger().setLevel(logging.WARNING)
    assert run("plot", "--help").output.count("--verbose") == 1


def test_bare_batchsizer_prints_the_help_and_exits_0() -> None:
    result = run()
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout and "Commands:" in result.stdout and "Exit codes" in result.stdout


def test_help_documents_exit_codes_and_completion() -> None:
    text = run("--help").stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "130", "143"):
        assert f"\n    {code}" in text, text
    assert "_BATCHSIZER_COMPLETE=bash_source batchsizer" in text


# -- profile


def test_profile_shows_a_progress_bar_naming_the_point_with_an_estimate() -> None:
    import io

    from rich.console import Console

    from batchsizer.cli.commands.profile import ProfileProgress, run_profile
    from batchsizer.cli.options import make_workload_options
    from batchsizer.core.workloads import open_workload

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    workload = open_workload(make_workload_options(device="sim:p40", model="res101", dataset="caltech",
                                                   items=500, images=None, seed=0))  # fmt: skip
    seen: list[tuple[int, int | None]] = []
    with workload.device, ProfileProgress([1, 8, 64], [None], 3, 1, console) as bar:
        assert bar.total == (1 + 8 + 64) * 4
        real_point = bar.point
        bar.point = lambda size, clock: (seen.append((size, clock)), real_point(size, clock))  # type: ignore[method-assign]
        run_profile(workload, [1, 8, 64], batches=3, warmup=1, progress=bar)
        assert bar._progress.tasks[0].completed == bar.total  # every item counted
        frame = Console(file=io.StringIO(), width=120, record=True)
        frame.print(bar._progress.get_renderable())
        text = frame.export_text()
    assert seen == [(1, None), (8, None), (64, None)]
    assert "profiling batch size 64" in text and "100%" in text and "left" in text


def test_profile_wording_without_a_meter_and_with_the_default_clock() -> None:
    import math

    from batchsizer.cli.commands.profile import _line, saturation_line

    row = {"clock_mhz": None, "batch_size": 4, "throughput": 10.0, "peak_w": math.nan, "mean_w": math.nan,
           "latency_s": 0.1}  # fmt: skip
    assert "peak    n/a" in _line(row) and "- W" not in _line(row)
    assert saturation_line({"default": 1}).endswith("at batch size 1")
    assert saturation_line({"544": 8, "1531": 16}).endswith("at batch size 8 at 544 MHz, 16 at 1531 MHz")


def test_profile_csv_and_json_to_stdout(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("profile", "--sizes", "1,4", "--batches", "2", "--warmup", "0", "--csv", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("clock_mhz,batch_size") and len(result.stdout.splitlines()) == 3
    assert "saturates" in result.stderr and not (tmp_path / "-").exists()
    result = run("profile", "--sizes", "1,4", "--batches", "2", "--json", "-")
    data = json.loads(result.stdout)
    assert len(data["rows"]) == 2 and data["saturation"] and "saturates" in result.stderr


def test_profile_refuses_items_on_a_simulated_device() -> None:
    # its points run --batches batches at each size: --items would set nothing there, and its help says so
    result = run("profile", "--items", "500", "--sizes", "1,4", "--batches", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "items: profile runs --batches 2 batches" in result.output
    assert "refused on sim and table devices" in " ".join(run("profile", "--help").output.split())
    assert "refused on sim" not in run("run", "--help").output  # run's --items keeps its own help


def test_profile_refuses_an_empty_value_in_its_lists() -> None:
    # "1,,4" was read as 1,4 (a missing value dropped silently); a trailing comma stays allowed
    for option in ("--sizes", "--clocks"):
        result = run("profile", option, "1,,4", "--batches", "2")
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "empty value between commas" in result.output
    assert run("profile", "--sizes", "1,4,", "--batches", "2", "--warmup", "0", "--csv", "-").exit_code == 0


def test_long_lists_of_allowed_values_are_shortened_in_messages() -> None:
    from batchsizer.errors import describe_values

    assert describe_values([1, 2, 4]) == "[1, 2, 4]"
    assert describe_values(range(1, 257)) == "the whole numbers 1..256"
    assert describe_values([*range(1, 13), 16, 20]) == "the 14 values [1, 2, 3, 4, 5, ..., 12, 16, 20]"
    result = run("run", "--initial", "300", "--items", "10")
    assert result.exit_code == 2 and "must be one of the whole numbers 1..256, got 300" in result.output


def test_a_sim_device_without_a_gpu_name_is_refused() -> None:
    result = run("run", "--device", "sim:", "--items", "10")
    assert result.exit_code == 2 and "unknown simulated GPU 'sim:'" in result.output


def test_a_job_often_over_a_cap_it_could_meet_says_so() -> None:
    # Algorithm 1 on sizes 1, 16, 256 at 200 W: 16 reads under alpha * cap, so it steps up to 256, over
    result = run("run", "--controller", "batchsizer", "--sizes", "1,16,256", "-q")
    assert result.exit_code == 0, result.output
    assert "kept returning to settings over it" in result.output and "adaptive, keeps off settings" in result.output
    assert "kept returning" not in run("run", "-q", "--items", "3000").output
    # a short job over the cap in its first probes, or over it twice only: not "returning"
    from batchsizer.core.cap_watch import often_over_note

    assert often_over_note(0.38, 2, "adaptive", 6) is None and often_over_note(0.14, 2, "adaptive", 12) is None
    assert often_over_note(0.04, 30, "batchsizer", 50) is None
    assert "adaptive kept returning" in often_over_note(0.2, 5, "adaptive", 12)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "--cap", "abc"], "error: Invalid value for '--cap': 'abc' is not a valid float. (see '"),
        (["run", "--bogus"], "error: No such option '--bogus'"),
        (["runn"], "error: No such command 'runn'. (see '"),
        (["load"], "error: Missing argument 'URL'."),
        (["run", "--cap"], "error: Option '--cap' requires an argument. (see '"),
        (["--bogus"], "error: No such option '--bogus'"),
    ],
)
def test_click_usage_errors_are_one_line_too(args: list[str], says: str) -> None:
    result = run(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(says), result.stderr
    command = next((a for a in args if not a.startswith("-")), None)
    if command in ("run", "load"):  # the help of the command the option was given to
        assert f"{command} --help')" in result.stderr
