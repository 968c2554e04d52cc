"""``batchsizer fleet`` in this process (--local, no Ray): faults, outputs, resume, records, bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli

BASE = ["fleet", "--local", "-q", "--gpu", "sim:p40", "--gpu", "sim:v100:mobv2", "--gpu", "sim:a100", "--budget", "600"]


def _ids(path):
    lines = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    return [(x["job"], x["id"]) for x in lines]


def test_faults_outputs_records_and_plot(tmp_path) -> None:
    out, js, rec = tmp_path / "out.jsonl", tmp_path / "s.json", tmp_path / "rec"
    args = BASE + ["--items", "3000", "--save-outputs", str(out), "--json", str(js), "--records", str(rec),
                   "--plot", str(tmp_path / "fig"), "--fault", "kill:a100-2@3", "--fault", "sensor:p40-0@2"]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 6000  # two jobs of 3000, each item once
    s = json.loads(js.read_text())
    assert s["workers"]["a100-2"]["status"] == "lost"
    assert s["workers"]["a100-2"]["cap_over_time"][0]["t"] == 0.0  # kept by the coordinator when its worker went
    assert s["workers"]["p40-0"]["sensor_failed"]
    # from the allocation after the failure was seen (its readings stop at 2 s; the period that shows it
    # may end later), the worker is held at its lowest cap
    failed_at = next(e["t"] for e in s["events"] if e["kind"] == "sensor-failed" and e["worker"] == "p40-0")
    assert failed_at < 4.0
    held = [c["cap_w"] for c in s["workers"]["p40-0"]["cap_over_time"] if c["t"] >= failed_at]
    assert held and all(c == 125.0 for c in held)  # held at its lowest cap
    for key in ("throughput", "over_budget_fraction", "worst_overshoot_w"):
        assert key in s
    assert isinstance(s["budget_w"], float) and s["budget"] == f"{s['budget_w']:g} W"  # a number, and in words
    assert s["workers"]["v100-1"]["summary"]["items"] > 0
    assert (rec / "fleet.jsonl").is_file() and (rec / "p40-0.jsonl").is_file()
    assert (tmp_path / "fig" / "budget.png").stat().st_size > 0


def test_resume_finishes_the_rest_exactly(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    first = BASE + ["--items", "4000", "--save-outputs", str(out), "--duration", "3"]
    assert CliRunner().invoke(cli, first).exit_code == 0
    part = _ids(out)
    assert 0 < len(part) < 8000
    again = CliRunner().invoke(cli, first[:-2] + ["--resume"])
    assert again.exit_code == 0, again.output
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 8000
    assert CliRunner().invoke(cli, first).exit_code == 2  # exists, no --resume


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["fleet", "--local", "--budget", "500"], "gpu"),
        (["fleet", "--local", "--gpu", "sim:p40"], "budget"),
        (["fleet", "--local", "--gpu", "cuda:0", "--budget", "500"], "gpu"),
        (["fleet", "--local", "--gpu", "sim:p41", "--budget", "500"], "gpu"),
        (["fleet", "--local", "--gpu", "sim:p40", "--budget", "-3"], "budget"),
        (["fleet", "--local", "--gpu", "sim:p40", "--budget", "500", "--cap-rule", "max"], "cap rule"),
        (["fleet", "--local", "--gpu", "sim:p40", "--budget", "500", "--fault", "kill:x@1"], "fault"),
        (["fleet", "--local", "--gpu", "sim:p40", "--budget", "500", "--period", "0"], "period"),
        (["fleet", "--local", "--gpu", "sim:p40", "--budget", "500", "--address", "127.0.0.1:6379"], "address"),
        (["fleet", "--local", "--gpu", "sim:p40", "--budget", "500", "--budget-file", "b.txt"], "budget"),
    ],
)
def test_bad_input_is_one_line(args, field) -> None:
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith(f"error: {field}:"), r.output
    assert "--cap" not in r.output  # the fleet's own option names, not run's


def test_a_budget_below_the_lowest_caps_is_said_from_the_first_split() -> None:
    """One P40 (lowest cap 125 W) under 10 W: the summary says the budget cannot be met (it said nothing)."""
    r = CliRunner().invoke(cli, ["fleet", "--local", "-q", "--gpu", "sim:p40", "--budget", "10", "--items", "200"])
    assert r.exit_code == 0, r.output
    assert "below the sum of the workers' lowest caps (125 W)" in r.output, r.output


def test_a_job_that_fails_leaves_its_records_closed_and_without_a_summary(tmp_path, monkeypatch) -> None:
    """An error in the run (here a worker that cannot start): the records written so far stay, the
    file is closed, and no summary line claims the job ended."""
    from batchsizer.errors import ConfigError
    from batchsizer.fleet import coordinator
    from batchsizer.fleet.records import FleetRecorder

    def fail(self):
        raise ConfigError("fleet", "worker w0 could not start: test")

    made: list[FleetRecorder] = []
    real_init = FleetRecorder.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(coordinator.Fleet, "run", fail)
    monkeypatch.setattr(FleetRecorder, "__init__", init)
    rec = tmp_path / "rec"
    r = CliRunner().invoke(cli, BASE + ["--items", "100", "--records", str(rec)])
    assert r.exit_code == 2 and "could not start" in r.stderr, r.output
    lines = [json.loads(x) for x in (rec / "fleet.jsonl").read_text().splitlines()]
    assert lines and all(x["type"] != "summary" for x in lines)
    assert made and made[0].writer._file.closed


def test_records_in_a_folder_that_does_not_exist_is_an_error_not_new_folders(tmp_path) -> None:
    r = CliRunner().invoke(cli, ["fleet", "--local", "-q", "--gpu", "sim:p40", "--budget", "300", "--items", "50",
                                 "--records", str(tmp_path / "no" / "rec")])  # fmt: skip
    assert r.exit_code == 2 and r.output.strip().startswith("error: records:"), r.output
    assert not (tmp_path / "no").exists()


def test_config_help_gives_an_example_key_of_its_own_command() -> None:
    assert "e.g. budget = 900" in CliRunner().invoke(cli, ["fleet", "--help"]).output
    assert "e.g. cap = 150" in CliRunner().invoke(cli, ["run", "--help"]).output
