"""``batchsizer run``'s typed options (issue 12): ``RunOptions`` built once from the command line,
the options each device kind and controller declares, and the one check of options given that
nothing reads (an error for device options, the documented warning for controller options)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.cli.commands import run as run_cmd
from batchsizer.cli.option_check import check_options_used, option_flags, users_of
from batchsizer.cli.run_options import RunOptions
from batchsizer.core.workloads import DEVICE_KINDS, DEVICE_OPTIONS, WorkloadOptions, options_kind
from batchsizer.errors import ConfigError
from batchsizer.policies import CONTROLLER_TYPES, CONTROLLERS, register
from batchsizer.policies.static import Static

SIM = "simulated GPUs (sim:p40, sim:v100, sim:a100, sim:h100)"
TABLES = "table devices (table:PATH.csv, sim:zeus-...)"
ZEUS = "sim:zeus-v100:shufflenetv2"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _no_loading(opts):
    raise ConfigError("test", "the model would load here")


# -- an option the chosen device does not read: one line naming who reads it, nothing written

UNUSED_DEVICE = [
    (["--device", "cuda:0", "--sensor-window-ms", "5"], "sensor-window-ms", f"used by {SIM} and {TABLES}"),
    (["--device", "cpu", "--sensor-noise-w", "1"], "sensor-noise-w", f"used by {SIM} and {TABLES}"),
    (["--device", "sim:p40", "--table-idle-w", "50"], "table-idle-w", f"used by {TABLES}"),
    (["--device", "sim:a100", "--table-host-ms", "2"], "table-host-ms", f"used by {TABLES}"),
    (["--device", "cpu", "--dataset", "imagenet"], "dataset", f"used by {SIM}"),
    (["--device", "cuda:0", "--sim-sensor", "instant"], "sim-sensor", f"used by {SIM}"),
    (["--device", ZEUS, "--model", "res50"], "model", f"used by {SIM} and real devices (cpu, cuda[:N])"),
    (["--device", ZEUS, "--sim-sensor", "average"], "sim-sensor", f"used by {SIM}"),
    (["--device", "scripted", "--seed", "3"], "seed", "used by "),
    (["--device", "cpu", "--read-only"], "read-only", f"used by {TABLES} and cuda devices (cuda[:N])"),
    (["--device", "cpu", "--half"], "half", "used by cuda devices (cuda[:N])"),
    (["--device", "sim:p40", "--checkpoint", "w.pt"], "checkpoint", "used by real devices (cpu, cuda[:N])"),
    (["--device", "sim:a100", "--cap-from-gpu"], "cap-from-gpu", "used by cuda devices (cuda[:N])"),
    (["--device", ZEUS, "--cap-from-gpu"], "cap-from-gpu", "used by cuda devices (cuda[:N])"),
    (["--device", "cpu", "--power-limit", "100"], "power-limit", f"used by {SIM}, {TABLES} and cuda devices (cuda[:N])"),
    (["--device", "scripted", "--power-limit", "100"], "power-limit", f"used by {SIM}, {TABLES} and cuda devices"),
]


@pytest.mark.parametrize(("args", "flag", "users"), UNUSED_DEVICE, ids=[" ".join(a) for a, _, _ in UNUSED_DEVICE])
def test_a_device_option_the_device_does_not_read_is_an_error_naming_who_reads_it(
    args, flag, users, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("batchsizer.cli.commands.run.open_workload", _no_loading)  # nothing may be opened
    result = invoke("run", "-q", "--items", "50", *args, "--json", "s.json", "--records", "r.jsonl")
    assert result.exit_code == 2, result.output
    device = args[args.index("--device") + 1]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # a device's own option: the controller is not named (no controller reads it)
    assert lines[0].startswith(f"error: {flag}: not used by {device!r}; {users}"), lines
    assert "Traceback" not in result.output
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "r.jsonl").exists()


def test_profile_checks_device_options_the_same_way_and_keeps_its_own_sizes() -> None:
    result = invoke("profile", "--device", "cuda:0", "--sensor-window-ms", "5", "--sizes", "1,2")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: sensor-window-ms: not used by 'cuda:0'; used by {SIM} and {TABLES}")


# -- options the device or the controller reads pass, with no warning

USED = [
    ["--device", "sim:v100", "--sensor-window-ms", "5", "--sensor-update-ms", "40", "--sensor-noise-w", "0.5"],
    ["--device", "sim:h100", "--sim-sensor", "average", "--dataset", "imagenet", "--model", "res50", "--seed", "2"],
    ["--device", ZEUS, "--table-idle-w", "40", "--table-host-ms", "1", "--read-only", "--seed", "1"],
    ["--device", "scripted", "--controller", "batchsizer", "--alpha", "0.7", "--sizes", "1,2,4,8", "--initial", "2"],
    ["--controller", "static", "--batch-size", "8", "--clock", "1063"],
    ["--controller", "dvfs", "--batch-size", "8", "--alpha", "0.7"],
    ["--device", ZEUS, "--power-limit", "150", "--cap", "140"],
    ["--device", "sim:v100", "--power-limit", "200", "--cap", "180"],
]


@pytest.mark.parametrize("args", USED, ids=[" ".join(a) for a in USED])
def test_options_that_are_read_pass_without_a_word(args: list[str]) -> None:
    result = invoke("run", "-q", "--items", "300", *args)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "error" not in result.stderr, result.stderr


# -- an option the controller ignores: the one-line warning of docs/controllers.md, the job runs


def test_a_controller_option_the_controller_ignores_is_a_one_line_warning_and_the_job_runs(tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    result = invoke("run", "-q", "--items", "300", "--alpha", "0.6", "--batch-size", "4", "--json", str(js))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --alpha, --batch-size are not used by the adaptive controller (it reads --initial, --sizes); "
        "leave them out"
    ]
    assert json.loads(js.read_text())["items"] == 300


def test_a_registered_controller_is_checked_by_the_class_it_declares() -> None:
    class Fixed(Static):
        name = "test-fixed"
        accepts = frozenset({"batch_size"})

    register("test-fixed", lambda knobs, o: Fixed(batch_size=o.get("batch_size") or 4), Fixed)
    try:
        result = invoke("run", "-q", "--items", "200", "--controller", "test-fixed", "--clock", "900")
        assert result.exit_code == 0, result.output
        assert "warning: --clock is not used by the test-fixed controller (it reads --batch-size)" in result.stderr
        register("test-fixed", lambda knobs, o: Fixed(), None)  # no class: nothing declared, nothing checked
        result = invoke("run", "-q", "--items", "200", "--controller", "test-fixed", "--clock", "900")
        assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
    finally:
        CONTROLLERS.pop("test-fixed", None)
        CONTROLLER_TYPES.pop("test-fixed", None)


# -- the declarations themselves


def test_every_built_in_controller_declares_what_it_reads_and_whether_it_moves_the_clock() -> None:
    flags = option_flags(run_cmd.command)
    accepts = {name: CONTROLLER_TYPES[name].accepts for name in CONTROLLERS}
    assert accepts == {
        "adaptive": {"sizes", "initial"},
        "batchsizer": {"sizes", "alpha", "initial", "clock_mhz"},
        "dvfs": {"batch_size", "alpha"},
        "static": {"batch_size", "clock_mhz"},
        "aimd": {"sizes", "initial"},
        "batchdvfs": {"sizes", "alpha", "initial", "clock_mhz"},
    }
    assert all(set(a) <= set(flags) for a in accepts.values())  # each a real option of run
    movers = {name for name in CONTROLLERS if CONTROLLER_TYPES[name].moves_clock}
    assert movers == {"adaptive", "dvfs", "batchdvfs"}


def test_every_device_kind_declares_options_run_has_and_the_workload_carries() -> None:
    from batchsizer.cli.commands import serve as serve_cmd

    assert set(DEVICE_OPTIONS) == set(DEVICE_KINDS) | {"table"}
    every = frozenset().union(*DEVICE_OPTIONS.values())
    workload_fields = {f.name for f in dataclasses.fields(WorkloadOptions)}
    run_flags, serve_flags = set(option_flags(run_cmd.command)), set(option_flags(serve_cmd.command))
    assert every <= run_flags | serve_flags  # each a real option of run or serve
    # what is not a workload field is a command's own option that only some kinds honour
    assert every - workload_fields == {"power_limit", "cap_from_gpu", "time_scale"}
    assert users_of("cap_from_gpu") == ["cuda devices (cuda[:N])"]
    assert users_of("power_limit") == [SIM, TABLES, "cuda devices (cuda[:N])"]
    assert users_of("time_scale") == [SIM, TABLES] and users_of("sim_host_scale") == [SIM]
    assert options_kind(ZEUS) == "table" and options_kind("table:x.csv") == "table" and options_kind("sim") == "sim"
    assert users_of("half") == ["cuda devices (cuda[:N])"]
    assert users_of("alpha") == ["the batchdvfs, batchsizer and dvfs controllers"]


def test_the_check_is_on_what_was_given_never_on_defaults() -> None:
    flags = option_flags(run_cmd.command)
    assert check_options_used(set(), "cuda:0", "static", flags) == []
    with pytest.raises(ConfigError, match="not used by 'sim:p40'; used by table devices"):
        check_options_used({"table_idle_w"}, "sim:p40", None, flags)
    assert check_options_used({"cap", "window_batches", "alpha"}, "sim:p40", "batchsizer", flags) == []
    # a kind that declares nothing is not checked (a device kind added without declarations)
    assert check_options_used({"table_idle_w"}, "myaccel:0", "batchsizer", flags) == []


# -- RunOptions, built once from the command line


@pytest.fixture()
def captured(monkeypatch) -> list[RunOptions]:
    seen: list[RunOptions] = []
    monkeypatch.setattr(run_cmd, "run_job", seen.append)
    return seen


def test_no_options_is_the_dataclass_defaults(captured: list[RunOptions]) -> None:
    assert invoke("run").exit_code == 0
    assert captured == [RunOptions()]
    assert captured[0].sizes is None  # not chosen: each controller's own


def test_run_options_built_from_flags(captured: list[RunOptions], tmp_path: Path) -> None:
    args = ["--device", "sim:a100", "--model", "resnet50", "--cap", "180", "--controller", "batchsizer", "--alpha", "0.8"]
    assert invoke("run", "-q", *args).exit_code == 0
    given = frozenset({"device", "model", "cap", "controller", "alpha", "quiet"})
    expected = RunOptions(
        workload=WorkloadOptions(device="sim:a100", model="resnet50"), cap=180.0, controller="batchsizer", quiet=True,
        given=given,
    )
    assert captured[-1] == expected  # --alpha 0.8 is the default's value, but given
    records = tmp_path / "r.jsonl"
    args = ["--sizes", "1, 2,4", "--window", "5", "--window-seconds", "2", "--records", str(records), "--strict",
            "--cap-schedule", "0:200,10:150", "--device", "table:t.csv", "--table-idle-w", "30", "--cap-rule", "avg:1"]
    assert invoke("run", *args).exit_code == 0
    assert captured[-1] == RunOptions(
        sizes=(1, 2, 4), window_batches=5, window_seconds=2.0, records=records, strict=True,
        cap_schedule="0:200,10:150", workload=WorkloadOptions(device="table:t.csv", table_idle_w=30.0), cap_rule="avg:1",
        given=frozenset({"sizes", "window_batches", "window_seconds", "records", "strict", "cap_schedule", "device",
                         "table_idle_w", "cap_rule"}),
    )
    assert captured[-1].cap_given and not RunOptions().cap_given


def test_run_options_from_a_config_file_count_as_given(captured: list[RunOptions], tmp_path: Path) -> None:
    cfg = tmp_path / "job.toml"
    cfg.write_text('cap = 150\ncontroller = "static"\nbatch-size = 32\n')
    assert invoke("run", "--config", str(cfg), "--cap", "120").exit_code == 0
    assert captured[-1] == RunOptions(
        cap=120.0, controller="static", batch_size=32, given=frozenset({"cap", "controller", "batch_size"})
    )


def test_run_options_take_every_parameter_of_run_and_nothing_else() -> None:
    params = {p.name for p in run_cmd.command.params if p.expose_value}
    own = {f.name for f in dataclasses.fields(RunOptions)} - {"given", "workload"}
    workload = {f.name for f in dataclasses.fields(WorkloadOptions)}
    assert not own & workload  # each field in one place: the workload's in WorkloadOptions only
    assert params == own | (workload - {"sim_host_scale"})  # serve's host scale: run's sim keeps the paper's
    assert RunOptions.from_params({"device": "cpu", "cap": 90.0}).workload.device == "cpu"
    with pytest.raises(TypeError, match="no field for nope"):
        RunOptions.from_params({"nope": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunOptions().cap = 5  # type: ignore[misc]


def test_workload_options_are_typed_fields_not_a_bag() -> None:
    names = {f.name for f in dataclasses.fields(WorkloadOptions)}
    assert "extra" not in names
    o = RunOptions.from_params({"device": "cpu", "input_size": 32, "read_only": True, "quiet": True})
    assert o.workload == WorkloadOptions(device="cpu", input_size=32, read_only=True) and o.quiet
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.workload.device = "cuda"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--controller", "static", "--clock", "123"], "clock: 123 MHz is not a clock level of this device"),
        (["--device", "sim:zeus-v100:resnet50", "--controller", "static", "--clock", "1303"],
         "clock: this device has no settable clock"),
    ],
)  # fmt: skip
def test_a_first_setting_the_device_cannot_take_is_one_line_and_keeps_the_records_there(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """A clock the device has not is found before any output is opened: the records of an earlier job
    are left as they were (they were replaced by one error line before)."""
    if "sim:zeus-v100:resnet50" in args:
        from batchsizer.io.shared_data import DataUnavailable, data_dir

        try:
            data_dir("zeus-nsdi23")
        except DataUnavailable as exc:
            pytest.skip(f"the Zeus tables are not here: {exc}")
    records = tmp_path / "keep.jsonl"
    records.write_text('{"kind": "summary"}\n')
    r = invoke("run", "-q", "--items", "50", "--records", str(records), "--json", str(tmp_path / "s.json"), *args)
    assert r.exit_code == 2 and r.output.strip().splitlines() == [r.output.strip()] and says in r.output, r.output
    assert records.read_text() == '{"kind": "summary"}\n' and not (tmp_path / "s.json").exists()


def test_records_and_json_both_to_stdout_is_refused() -> None:
    r = invoke("run", "-q", "--items", "10", "--records", "-", "--json", "-")
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1].startswith("error: json:"), r.output
