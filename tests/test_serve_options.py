"""``batchsizer serve`` opens its device as ``run`` does (issue 12): every option it takes acts on the
device as in ``run``, or is refused with ``run``'s one line naming who would read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.core.caps import ConstantCap
from batchsizer.core.workloads import WorkloadOptions, open_workload
from batchsizer.errors import ConfigError
from batchsizer.serve import server as serve_server
from batchsizer.serve.server import ServeOptions, open_device

SIM = "simulated GPUs (sim:p40, sim:v100, sim:a100, sim:h100)"
TABLES = "table devices (table:PATH.csv, sim:zeus-...)"
SENSOR = {"sensor_update_ms": 250.0, "sensor_window_ms": 40.0, "sensor_noise_w": 3.0}


def write_table(path: Path, limits: bool = False) -> Path:
    """A measured table (docs/tables.md) whose throughput and power rise with the batch size; with
    ``limits``, measured at two board power limits (230 W and, a little slower and lower, 180 W)."""
    rows = [(1, 20.0, 80.0, 110.0), (4, 60.0, 110.0, 150.0), (16, 120.0, 140.0, 190.0), (64, 160.0, 160.0, 220.0)]
    if not limits:
        path.write_text("batch_size,throughput,mean_w,peak_w,idle_w\n" + "".join(f"{b},{t},{m},{p},50\n" for b, t, m, p in rows))
        return path
    lines = [f"{b},{t * f},{m * f},{min(p * f, lim)},50,{lim}\n" for lim, f in ((230, 1.0), (180, 0.85)) for b, t, m, p in rows]
    path.write_text("batch_size,throughput,mean_w,peak_w,idle_w,power_limit_w\n" + "".join(lines))
    return path


def served(w: WorkloadOptions, **kw):
    """The device serve opens for ``w``, its inner simulated device, and its description."""
    device, prepare, info = open_device(ServeOptions(workload=w, caps=ConstantCap(200), **kw))
    assert prepare is None
    return device, device.inner, info


def host_phases(plant) -> set[float]:
    """The host phase (s) of every row a table plant plays."""
    return {r.host_s for rows in plant.groups.values() for r in rows}


def sensor(spec) -> tuple[float, float, float, str]:
    return spec.update_period_s, spec.window_s, spec.noise_w, spec.kind


@pytest.mark.parametrize("device", ["sim:p40", "sim:h100", "table", "sim:zeus-v100:shufflenetv2"])
def test_serve_opens_the_device_run_opens_with_every_sensor_and_table_option(device: str, tmp_path: Path) -> None:
    if device == "table":
        device = f"table:{write_table(tmp_path / 't.csv', limits=True)}"
    table = not device.startswith(("sim:p", "sim:h"))
    extra = {"table_idle_w": 40.0, "table_host_ms": 2.0, "read_only": True} if table else {}
    if device.startswith("sim:zeus"):
        from batchsizer.io.shared_data import DataUnavailable

        try:
            open_workload(WorkloadOptions(device=device, items=1))
        except DataUnavailable as exc:
            pytest.skip(f"the Zeus tables are not here: {exc}")
    w = WorkloadOptions(device=device, seed=3, **SENSOR, **extra)
    _, inner, info = served(w)
    ran = open_workload(w).device
    assert sensor(inner.sensor_spec) == sensor(ran.sensor_spec)
    assert sensor(inner.sensor_spec)[:3] == (0.25, 0.04, 3.0) and inner.sensor_spec.kind.endswith("overridden")
    assert inner.knobs == ran.knobs and info["simulated"] is True
    if extra:
        assert inner.plant.idle_w == 40.0 and host_phases(inner.plant) == {0.002}
        # --read-only withholds the table's knobs: its power limits are not offered, and it says why
        assert len(ran.plant.limits) >= 2 and inner.knobs.power_limits_w == () and inner.knobs.clocks_withheld
        assert open_workload(WorkloadOptions(device=device)).device.knobs.power_limits_w == tuple(ran.plant.limits)
    inner.close()
    ran.close()


def test_serve_keeps_its_host_scale_and_time_scale_on_the_simulated_gpu() -> None:
    device, inner, info = served(WorkloadOptions(device="sim:a100", model="res50"), time_scale=0.5, sim_host_scale=0.25)
    assert inner.plant.host_scale == 0.25 and info["host_scale"] == 0.25 and device.time_scale == 0.5
    assert info["device"] == "sim:a100" and info["model"] == "Res50" and "items" not in info
    assert open_workload(WorkloadOptions(device="sim:a100")).device.plant.host_scale == 1.0  # run's: the paper's


def test_serve_answers_requests_on_a_table_device(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from batchsizer.serve.loadgen import _tiny_png
    from batchsizer.serve.server import ThreadedServer

    w = WorkloadOptions(device=f"table:{write_table(tmp_path / 't.csv')}", table_host_ms=1.0)
    opts = ServeOptions(workload=w, caps=ConstantCap(200), choices={"sizes": (1, 4, 16)}, time_scale=0.2)
    with ThreadedServer(opts) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        r = c.post("/v1/classify", content=_tiny_png(), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["simulated"] is True, r.text
    assert s.summary is not None and s.summary["items"] == 1
    assert s.summary["workload"]["device"].startswith("table:") and s.summary["workload"]["plant"] == "measured table"
    assert host_phases(s.serving.device.inner.plant) == {0.001}


def test_serve_refuses_a_device_it_cannot_run_on_before_it_listens() -> None:
    with pytest.raises(ConfigError, match="serve runs on sim:\\*, table:PATH.csv"):
        open_device(ServeOptions(workload=WorkloadOptions(device="scripted"), caps=ConstantCap(200)))
    r = CliRunner().invoke(cli, ["serve", "--device", "scripted", "--port", "1"])
    assert r.exit_code == 2 and r.stderr.startswith("error: device: serve runs on sim:*"), r.output


# -- through the command line: what is given reaches the device, or is one line naming who reads it


@pytest.fixture()
def captured(monkeypatch) -> list[ServeOptions]:
    seen: list[ServeOptions] = []
    monkeypatch.setattr(serve_server, "run_server", lambda opts, sock: (seen.append(opts), sock.close()))
    return seen


def test_serve_options_on_the_command_line_reach_the_device(captured: list[ServeOptions], tmp_path: Path) -> None:
    table = write_table(tmp_path / "t.csv")
    args = ["serve", "--port", "0", "--device", f"table:{table}", "--sensor-update-ms", "250", "--sensor-window-ms",
            "40", "--sensor-noise-w", "3", "--table-idle-w", "40", "--table-host-ms", "2", "--time-scale", "0.5"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    device, inner, _ = served(captured[-1].workload, time_scale=captured[-1].time_scale)
    assert sensor(inner.sensor_spec)[:3] == (0.25, 0.04, 3.0) and inner.plant.idle_w == 40.0
    assert host_phases(inner.plant) == {0.002} and device.time_scale == 0.5
    inner.close()
    r = CliRunner().invoke(cli, ["serve", "--port", "0", "--device", "sim:v100", "--sensor-noise-w", "2", "--seed", "4"])
    assert r.exit_code == 0, r.output
    _, inner, _ = served(captured[-1].workload)
    assert inner.sensor_spec.noise_w == 2.0 and inner.name == "sim:v100"
    inner.close()


REFUSED = [
    (["--device", "cuda:0", "--sensor-window-ms", "5"], "sensor-window-ms", f"used by {SIM} and {TABLES}"),
    (["--device", "cpu", "--sensor-noise-w", "1"], "sensor-noise-w", f"used by {SIM} and {TABLES}"),
    (["--device", "sim:p40", "--table-idle-w", "50"], "table-idle-w", f"used by {TABLES}"),
    (["--device", "sim:a100", "--table-host-ms", "2"], "table-host-ms", f"used by {TABLES}"),
    (["--device", "sim:p40", "--read-only"], "read-only", f"used by {TABLES} and cuda devices (cuda[:N])"),
    (["--device", "sim:p40", "--cap-from-gpu"], "cap-from-gpu", "used by cuda devices (cuda[:N])"),
    (["--device", "cuda:0", "--time-scale", "0.5"], "time-scale", f"used by {SIM} and {TABLES}"),
    (["--device", "table:t.csv", "--sim-host-scale", "0.5"], "sim-host-scale", f"used by {SIM}"),
    (["--device", "cpu", "--sim-sensor", "average"], "sim-sensor", f"used by {SIM}"),
]


@pytest.mark.parametrize(("args", "flag", "users"), REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED])
def test_an_option_the_device_does_not_read_is_refused_as_run_refuses_it(
    args: list[str], flag: str, users: str, captured: list[ServeOptions], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["serve", "--port", "0", *args, "--json", "s.json"])
    assert r.exit_code == 2, r.output
    device = args[args.index("--device") + 1]
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: {flag}: not used by {device!r}; {users}"], r.stderr
    assert not captured and not (tmp_path / "s.json").exists()
    run = CliRunner().invoke(cli, ["run", "-q", *args])
    if flag != "sim-host-scale":  # serve's own option; run has no such flag
        assert run.exit_code == 2 and run.stderr.startswith(f"error: {flag}: not used by {device!r};")
        assert run.stderr.strip().endswith(users), run.stderr


@pytest.mark.parametrize("flag", ["--items", "--images", "--workers", "--on-bad-image"])
def test_serve_takes_no_option_of_items_it_never_runs(flag: str) -> None:
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert flag not in help_text and "--sensor-noise-w" in help_text and "--table-idle-w" in help_text
    assert CliRunner().invoke(cli, ["serve", flag, "2"]).exit_code == 2


def test_the_serve_summary_describes_the_sensor_it_ran(tmp_path: Path) -> None:
    """The ``workload`` of serve's records and --json is run's description of the same device."""
    pytest.importorskip("fastapi")
    from batchsizer.serve.server import ThreadedServer

    w = WorkloadOptions(device="sim:p40", sensor_noise_w=3.0)
    with ThreadedServer(ServeOptions(workload=w, caps=ConstantCap(200), json_path=tmp_path / "s.json")) as s:
        pass
    doc = json.loads((tmp_path / "s.json").read_text())
    assert s.summary is not None and doc["workload"]["sensor"] == "instantaneous, overridden"
    assert doc["workload"]["seed"] == 0 and doc["workload"]["host_scale"] == 0.1


def test_a_controller_option_the_controller_ignores_is_named_in_one_warning(captured: list[ServeOptions]) -> None:
    """As run warns: --alpha means nothing to adaptive; --sizes is serve's own (the batcher's sizes)."""
    r = CliRunner().invoke(cli, ["serve", "--port", "0", "--alpha", "0.7", "--sizes", "1,8,64"])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --alpha is not used by the adaptive controller (it reads --initial, --sizes); leave it out"]
    quiet = CliRunner().invoke(cli, ["serve", "--port", "0", "--controller", "static", "--sizes", "1,8"])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.stderr
