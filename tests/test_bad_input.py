"""Bad input, everywhere: a clear ``error:`` line naming what was wrong, a non-zero exit code, no
traceback, and no results file left behind by a job that never started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli

BAD = [
    (["--device", "tpu:0"], "device", "unknown device"),
    (["--device", "sim:k80"], "device", "sim:p40"),
    (["--model", "NoSuchNet"], "model", "NoSuchNet"),
    (["--controller", "pid"], "controller", "batchsizer"),
    (["--cap", "0"], "cap", "positive"),
    (["--cap", "-5"], "cap", "positive"),
    (["--cap", "nan"], "cap", "positive"),
    (["--items", "0"], "items", "at least 1"),
    (["--items", "-3"], "items", "at least 1"),
    (["--window", "0"], "window", "at least 1"),
    (["--window-seconds", "-1"], "window", "positive"),
    (["--sizes", "0,1,2"], "sizes", ""),
    (["--sizes", "8,4,2"], "sizes", ""),
    (["--sizes", "1,x"], "sizes", "whole numbers"),
    (["--sizes", "1,,4"], "sizes", "empty value between commas"),
    (["--alpha", "1.5"], "alpha", "between 0 and 1"),
    (["--alpha", "0"], "alpha", "between 0 and 1"),
    (["--controller", "batchsizer", "--initial", "3"], "initial", "one of"),
    (["--controller", "static", "--batch-size", "0"], "batch", "at least 1"),
    (["--cap-schedule", "5:200"], "cap schedule", "time 0"),
    (["--cap-schedule", "0:200,10"], "cap schedule", "SECONDS:WATTS"),
    (["--cap", "100", "--cap-file", "x"], "cap", "only one"),
    (["--read-only"], "read-only", "used by table devices (table:PATH.csv, sim:zeus-...) and cuda devices"),
    (["--cap-from-gpu"], "cap-from-gpu", "not used by 'sim:p40'; used by cuda devices"),
    (["--device", "scripted", "--power-limit", "100"], "power-limit", "not used by 'scripted'"),
    (["--device", "cpu", "--sim-sensor", "average"], "sim-sensor", "used by simulated GPUs"),
    (["--device", "cuda:0", "--cap-from-gpu", "--cap", "150"], "cap", "only one of"),
    (["--input-size", "64"], "input-size", "used by real devices (cpu, cuda[:N])"),
]


@pytest.mark.parametrize(("args", "field", "words"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_value_is_one_clear_line_and_nothing_is_written(args, field, words, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = ["--records", "r.jsonl", "--json", "s.json", "--save-outputs", "o.jsonl"]
    result = CliRunner().invoke(cli, ["run", "-q", "--items", "50", *args, *out])
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert err.startswith("error: ") and field in err.lower() and words in err, err
    assert "Traceback" not in result.output + err
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not any((tmp_path / f).exists() for f in ("r.jsonl", "s.json", "o.jsonl")), list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("content", "words"),
    [("", "exactly one value"), ("abc\n", "number of watts"), ("-20 W\n", "positive"), ("100\n200\n", "exactly one")],
)
def test_invalid_cap_file_at_start(content: str, words: str, tmp_path: Path) -> None:
    f = tmp_path / "cap.txt"
    f.write_text(content)
    result = CliRunner().invoke(cli, ["run", "-q", "--items", "50", "--cap-file", str(f)])
    assert result.exit_code == 2 and "cap file" in result.stderr and words in result.stderr, result.stderr


def test_missing_cap_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "-q", "--cap-file", str(tmp_path / "none.txt")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def write_config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.toml"
    p.write_text(text)
    return p


def test_config_unknown_key_lists_allowed_ones(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 'cap = 150\ncontroler = "dvfs"\n')
    result = CliRunner().invoke(cli, ["run", "-q", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "unknown key(s) 'controler'" in result.stderr and "controller" in result.stderr and "cap" in result.stderr


@pytest.mark.parametrize(
    ("text", "words"),
    [("cap = \n", "not valid TOML"), ("[run]\ncap = 1\n", "unknown key"), ("cap = 0\n", "positive")],
)
def test_config_bad_content(text: str, words: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "-q", "--config", str(write_config(tmp_path, text))])
    assert result.exit_code == 2 and words in result.stderr, result.stderr


def test_config_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "-q", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_config_values_apply_and_flags_win(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        'device = "scripted"\nitems = 300\ncap = 150\nsizes = [1, 2, 4, 8]\nwindow = 5\ncontroller = "batchsizer"\n',
    )
    js = tmp_path / "s.json"
    result = CliRunner().invoke(cli, ["run", "-q", "--config", str(cfg), "--items", "200", "--json", str(js)])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(js.read_text())
    assert summary["items"] == 200  # the flag won over items = 300
    assert summary["controller"]["sizes"] == [1, 2, 4, 8]  # from the file


def test_images_folder_missing_or_empty(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    missing = CliRunner().invoke(cli, ["run", "-q", "--device", "cpu", "--images", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "images" in missing.stderr and "not a folder" in missing.stderr, missing.stderr
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    # static: a CPU without RAPL runs only that, and says so before anything else (checked first)
    args = ["run", "-q", "--device", "cpu", "--controller", "static", "--images", str(tmp_path / "empty")]
    empty = CliRunner().invoke(cli, args)
    assert empty.exit_code == 2 and "no images" in empty.stderr, empty.stderr


@pytest.mark.parametrize(
    "args",
    [["--device", "nosuch"], ["--cap", "-1"], ["--controller", "nope"], ["--sizes", ""]],
    ids=["device", "cap", "controller", "sizes"],
)
def test_real_subprocess_exit_code_and_no_traceback(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "batchsizer", "run", "-q", "--json", "s.json", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "s.json").exists()


def test_strict_cap_not_met_exits_3_after_flushing(tmp_path: Path) -> None:
    js, rec = tmp_path / "s.json", tmp_path / "r.jsonl"
    args = ["run", "-q", "--device", "scripted", "--items", "2000", "--cap", "70", "--strict"]
    proc = subprocess.run(
        [sys.executable, "-m", "batchsizer", *args, "--json", str(js), "--records", str(rec)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "error: cap" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads(js.read_text())
    assert summary["stop_reason"] == "cap-not-met" and summary["cap_not_met"]["excess_w"] > 0
    from batchsizer.io.records import read_records

    assert read_records(rec)["summary"][0]["stop_reason"] == "cap-not-met"
    # without --strict the job runs to the end at the lowest setting and says so
    plain = CliRunner().invoke(cli, args[:-1] + ["--json", str(js)])
    assert plain.exit_code == 0 and "cap NOT met" in plain.output
    assert json.loads(js.read_text())["items"] == 2000


def test_unreadable_image_with_stop_exits_2_naming_it_without_traceback(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    Image = pytest.importorskip("PIL.Image")
    cls = tmp_path / "imgs" / "cls"
    cls.mkdir(parents=True)
    (cls / "a_text.jpg").write_text("not an image\n")  # first, so the job stops before any batch runs
    Image.new("RGB", (40, 30), (10, 20, 30)).save(cls / "b_good.png")
    args = ["run", "-q", "--device", "cpu", "--model", "mobilenet_v3_small", "--images", "imgs", "--workers", "0"]
    args += ["--controller", "static", "--batch-size", "1", "--on-bad-image", "stop"]
    proc = subprocess.run(
        [sys.executable, "-m", "batchsizer", *args, "--json", "s.json", "--save-outputs", "o.jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: images: ") and "Traceback" not in proc.stderr, proc.stderr
    assert "a_text.jpg" in proc.stderr and "--on-bad-image skip" in proc.stderr
    assert not (tmp_path / "s.json").exists()  # no summary of a job that did not finish
    assert (tmp_path / "o.jsonl").read_text().count("\n") == 1  # only the job line: no item was done


UNWRITABLE = [
    ("{blocker}/s.json", "is a file, not a folder"),
    ("{folder}", "is a folder"),
    ("/proc/batchsizer-test/s.json", "cannot write"),
]


@pytest.mark.parametrize("flag", ["--json", "--records", "--save-outputs"])
@pytest.mark.parametrize(("where", "words"), UNWRITABLE, ids=["under-a-file", "a-folder", "read-only-fs"])
def test_unwritable_output_is_refused_before_the_job_runs(flag, where, words, tmp_path: Path) -> None:
    """A result that could not be written must be reported before the job, not after it ran for hours."""
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    (tmp_path / "folder").mkdir()
    target = where.format(blocker=blocker, folder=tmp_path / "folder")
    rec = tmp_path / "r.jsonl"
    other = ["--records", str(rec)] if flag != "--records" else []
    result = CliRunner().invoke(cli, ["run", "-q", "--items", "50", *other, flag, target])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {flag.lstrip('-')}: ") and words in result.stderr, result.stderr
    assert result.stdout == ""  # no summary: the job never ran
    assert not rec.exists()


def test_output_folders_that_do_not_exist_yet_are_not_made_by_the_check(tmp_path: Path) -> None:
    from batchsizer.errors import ConfigError
    from batchsizer.io.paths import check_output_file, check_output_folder

    with pytest.raises(ConfigError, match="json: cannot write .*s.json: the folder .*b does not exist"):
        check_output_file(tmp_path / "a" / "b" / "s.json", "json")  # an output file's folder is never made
    check_output_folder(tmp_path / "c" / "d", "out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(Exception, match="out: .*is a file; give a folder"):
        check_output_folder(tmp_path / "f", "out")
