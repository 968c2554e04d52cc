"""Measured tables played back as the GPU (``--device table:PATH.csv``): rows, knobs, sensor, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.core.batching import Batch
from batchsizer.core.types import Setting
from batchsizer.core.workloads import WorkloadOptions, open_workload
from batchsizer.errors import ConfigError, UnsupportedError
from batchsizer.sim.table_plant import TableDevice, open_table_device, parse_table_name

HEADER = "batch_size,throughput,mean_w,peak_w,idle_w"
#: (batch, items/s, mean W, peak W): throughput and power rise with the batch size
ROWS = [(1, 20.0, 80.0, 110.0), (4, 60.0, 110.0, 150.0), (16, 120.0, 140.0, 190.0), (64, 160.0, 160.0, 220.0)]


def write_table(path: Path, rows=ROWS, idle: float | str = 50.0, header: str = HEADER) -> Path:
    lines = [header] + [f"{b},{t},{m},{p},{idle}" for b, t, m, p in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def limit_table(path: Path) -> Path:
    """Rows at two power limits: the lower limit is slower and draws less."""
    lines = ["batch_size,batch_s,mean_w,peak_w,power_limit_w"]
    for limit, slow, scale in ((150, 1.3, 0.7), (250, 1.0, 1.0)):
        for b in (8, 32, 128):
            t = (0.01 + 0.001 * b) * slow
            w = (100 + b * 0.5) * scale
            lines.append(f"{b},{t},{w},{w},{limit}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_static(device: TableDevice, size: int, batches: int) -> tuple[float, float]:
    """(items/s, true mean W) of ``batches`` batches of ``size``."""
    start = device.clock.now()
    for _ in range(batches):
        device.run_batch(Batch(0, list(range(size))))
    end = device.clock.now()
    return size * batches / (end - start), device.reference_meter.window(start, end).mean_w


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_each_row_is_played_as_measured(tmp_path):
    d = open_table_device(f"table:{write_table(tmp_path / 't.csv')}", seed=1)
    assert d.size_range == (1, 64) and d.describe()["size_range"] == [1, 64]
    assert not d.knobs.has_clocks and not d.knobs.has_power_limits
    for b, thr, mean, peak in ROWS:
        c = d.plant.cost(b, 0)
        assert c.compute_w == pytest.approx(peak)
        assert c.compute_s / c.total_s == pytest.approx((mean - 50) / (peak - 50))  # compute share
        got_thr, got_mean = run_static(d, b, 300)
        assert got_thr == pytest.approx(thr, rel=0.01)
        assert got_mean == pytest.approx(mean, rel=0.02)
    # the sensor sees the spikes: readings near the peak, not only the mean
    start = d.clock.now()
    run_static(d, 64, 50)
    assert d.meter.window(start, d.clock.now()).peak_w > 210


def test_between_sizes_log2_interpolation_and_no_gain_outside(tmp_path):
    p = open_table_device(f"table:{write_table(tmp_path / 't.csv')}").plant
    per2, w2 = p.lookup(2)  # halfway between 1 and 4 in log2
    assert per2 == pytest.approx((1 / 20 + 1 / 60) / 2) and w2 == pytest.approx(95.0)
    # beyond the largest size: the largest row's time per item and power, never faster
    per_big, w_big = p.lookup(256)
    assert per_big == pytest.approx(1 / 160) and w_big == pytest.approx(160.0)
    assert p.cost(256, 0).total_s == pytest.approx(4 * p.cost(64, 0).total_s)
    assert p.cost(256, 0).compute_w == p.cost(64, 0).compute_w


def test_below_the_smallest_size_is_padded(tmp_path):
    rows = [(8, 80.0, 100.0, 100.0), (32, 200.0, 150.0, 150.0)]
    p = open_table_device(f"table:{write_table(tmp_path / 't.csv', rows)}").plant
    assert p.size_range == (8, 32)
    # a batch of 2 takes batch 8's whole time at batch 8's power: a quarter of its throughput
    assert p.cost(2, 0).total_s == pytest.approx(p.cost(8, 0).total_s)
    assert p.cost(2, 0).compute_w == pytest.approx(100.0)


def test_power_limits_are_a_knob_and_read_only_withholds_them(tmp_path):
    path = limit_table(tmp_path / "lim.csv")
    d = open_table_device(f"table:{path}")
    assert d.knobs.power_limits_w == (150.0, 250.0) and d.knobs.default_power_limit_w == 250.0
    fast, hot = run_static(d, 32, 100)
    d.apply(Setting(32, power_limit_w=150.0))
    slow, cool = run_static(d, 32, 100)
    assert slow == pytest.approx(fast / 1.3, rel=0.02) and cool == pytest.approx(hot * 0.7, rel=0.03)
    d.apply(Setting(32))  # the controller's default: back to the top limit
    assert d.plant.limit_w == 250.0 and d.knobs.has_power_limits
    ro = open_table_device(f"table:{path}", read_only=True)
    assert not ro.knobs.has_power_limits and "read-only" in (ro.knobs.clocks_withheld or "")
    with pytest.raises(ConfigError, match="read-only"):
        ro.set_power_limit(150)
    with pytest.raises(ConfigError, match="150 to 250 W"):
        d.set_power_limit(100)


def test_power_limit_option_holds_for_the_whole_job(tmp_path):
    path = limit_table(tmp_path / "lim.csv")
    base = ["run", "--device", f"table:{path}", "--controller", "static", "--batch-size", "32", "--items", "3000"]
    free = invoke(*base, "-q", "--cap", "300", "--json", str(tmp_path / "a.json"))
    held = invoke(*base, "-q", "--cap", "300", "--power-limit", "150", "--json", str(tmp_path / "b.json"))
    assert free.exit_code == 0 and held.exit_code == 0, held.output
    a, b = (json.loads((tmp_path / n).read_text())["throughput"] for n in ("a.json", "b.json"))
    assert b == pytest.approx(a / 1.3, rel=0.03)
    res = invoke(*base, "-q", "--read-only", "--power-limit", "150")
    assert res.exit_code == 2 and "power-limit" in res.output and "read-only" in res.output


def test_clocks_of_a_profile_table_are_levels(tmp_path):
    lines = ["clock_mhz,batch_size,throughput,mean_w,peak_w"]
    for clock, f in ((544, 0.5), (1531, 1.0)):
        lines += [f"{clock},4,{40 * f},{80 * f + 20},{80 * f + 20}", f"{clock},16,{100 * f},{120 * f + 20},{120 * f + 20}"]
    path = tmp_path / "c.csv"
    path.write_text("\n".join(lines) + "\n")
    d = open_table_device(f"table:{path}")
    assert d.knobs.clock_levels_mhz == (544, 1531) and d.knobs.default_clock_mhz == 1531
    assert run_static(d, 16, 200)[0] == pytest.approx(100, rel=0.01)
    d.apply(Setting(16, clock_mhz=544))
    assert run_static(d, 16, 200)[0] == pytest.approx(50, rel=0.01)
    with pytest.raises(UnsupportedError):
        d.set_clock(1000)
    assert not open_table_device(f"table:{path}", read_only=True).knobs.has_clocks


def test_host_phase_and_idle_options(tmp_path):
    rows = [(8, 80.0, 100.0, 100.0), (32, 200.0, 150.0, 150.0)]
    path = write_table(tmp_path / "t.csv", rows)
    d = open_table_device(f"table:{path}", host_s=0.05)
    thr, _ = run_static(d, 8, 200)
    assert thr == pytest.approx(8 / (0.1 + 0.05), rel=0.01)  # 0.1 s measured + 0.05 s of host per batch
    peaky = write_table(tmp_path / "p.csv", [(1, 20.0, 80.0, 110.0), (4, 60.0, 110.0, 150.0)], idle="")
    with pytest.raises(ConfigError, match="idle power is needed"):
        open_table_device(f"table:{peaky}")
    assert open_table_device(f"table:{peaky}", idle_w=40.0).plant.idle_w == 40.0
    with pytest.raises(ConfigError, match="not above the idle power"):
        open_table_device(f"table:{peaky}", idle_w=90.0)


def test_sensor_options_on_table_and_sim_devices(tmp_path):
    path = write_table(tmp_path / "t.csv")
    d = open_workload(WorkloadOptions(device=f"table:{path}", items=10)).device
    s = d.sensor_spec
    assert (s.update_period_s, s.window_s, s.noise_w) == (0.020, 0.010, 1.0)
    sensor = {"sensor_update_ms": 100.0, "sensor_window_ms": 1000.0, "sensor_noise_w": 0.0}
    s = open_workload(WorkloadOptions(device=f"table:{path}", items=10, **sensor)).device.sensor_spec
    assert (s.update_period_s, s.window_s, s.noise_w) == (0.1, 1.0, 0.0)
    sim = open_workload(WorkloadOptions(device="sim:v100", items=10, sensor_window_ms=1000.0)).device
    assert sim.sensor_spec.window_s == 1.0 and sim.sensor_spec.update_period_s == 0.020  # the rest: Volta's
    # through the CLI: a 1 s window flattens the 220 W spikes the default sensor sees over a 200 W cap
    base = ["run", "--device", f"table:{path}", "--controller", "static", "--batch-size", "64", "--items", "3000",
            "-q", "--cap", "200"]
    over = []
    for extra_args in ([], ["--sensor-window-ms", "1000"]):
        out = tmp_path / f"s{len(over)}.json"
        assert invoke(*base, *extra_args, "--json", str(out)).exit_code == 0
        over.append(json.loads(out.read_text())["over_cap_fraction"])
    assert over[0] > 0.3 and over[1] == 0.0


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--device", "cuda", "--sensor-noise-w", "1"], "sensor-noise-w"),
        (["--device", "cpu", "--sensor-update-ms", "50"], "sensor-update-ms"),
        (["--device", "sim:p40", "--sensor-update-ms", "0"], "sensor-update-ms"),
        (["--device", "sim:p40", "--sensor-window-ms", "-1"], "sensor-window-ms"),
        (["--device", "sim:p40", "--table-idle-w", "40"], "table-idle-w"),
        (["--device", "sim:p40", "--table-host-ms", "5"], "table-host-ms"),
        (["--device", "sim:p40", "--read-only"], "read-only"),
    ],
)
def test_option_on_the_wrong_device_is_one_line(args, field):
    res = invoke("run", "--items", "10", *args)
    assert res.exit_code == 2
    assert res.output.startswith(f"error: {field}: ") and res.output.count("\n") == 1, res.output


def _bad_tables(tmp: Path) -> list[tuple[str, str]]:
    """(device name, what the error must say) for each kind of bad table."""
    (tmp / "empty.csv").write_text("")
    (tmp / "cols.csv").write_text("batch_size,mean_w\n1,50\n2,60\n")
    (tmp / "cell.csv").write_text("batch_size,throughput,mean_w\n1,10,50\n2,fast,60\n")
    (tmp / "one.csv").write_text("batch_size,throughput,mean_w\n1,10,50\n")
    (tmp / "header.csv").write_text("batch_size,throughput,mean_w\n")
    zeus = "dataset,network,batch_size,optimizer,power_limit,time_per_epoch,average_power\n"
    zeus += "".join(f"cifar100,resnet,{b},adam,{w},{100 / b},{w - 10}\n" for b in (8, 16) for w in (100, 200))
    (tmp / "zeus.csv").write_text(zeus)
    (tmp / "dir").mkdir()
    return [
        (f"table:{tmp / 'empty.csv'}", "is empty"),
        (f"table:{tmp / 'cols.csv'}", "missing column throughput (or batch_s)"),
        (f"table:{tmp / 'cell.csv'}", "line 3, column throughput: 'fast' is not a number"),
        (f"table:{tmp / 'one.csv'}", "has 1 row (line 2)"),
        (f"table:{tmp / 'header.csv'}", "no rows"),
        (f"table:{tmp / 'zeus.csv'}:vgg", "no rows for 'vgg'; the table has resnet@cifar100+adam"),
        (f"table:{tmp / 'missing.csv'}", "no such file"),
        (f"table:{tmp / 'dir'}", "is a folder"),
    ]


def test_bad_tables_are_one_clear_line(tmp_path):
    for name, says in _bad_tables(tmp_path):
        res = invoke("run", "--device", name, "--items", "10", "-q")
        path = parse_table_name(name)[0]
        assert res.exit_code == 2, (name, res.output)
        assert res.output.startswith(f"error: device: {path}: ") and says in res.output, res.output
        assert res.output.count("\n") == 1, res.output
    # the same Zeus file with a good selector runs, and its power limits are the knob
    d = open_table_device(f"table:{tmp_path / 'zeus.csv'}:resnet@cifar100")
    assert d.knobs.power_limits_w == (100.0, 200.0) and d.size_range == (8, 16)


def test_bad_table_in_a_subprocess_has_no_traceback(tmp_path):
    (tmp_path / "cell.csv").write_text("batch_size,throughput,mean_w\n1,10,50\n2,fast,60\n")
    proc = subprocess.run(
        [sys.executable, "-m", "batchsizer", "profile", "--device", f"table:{tmp_path / 'cell.csv'}"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: device: ") and "line 3, column throughput" in proc.stderr


def test_profile_then_replay_round_trip(tmp_path):
    out = tmp_path / "p40.csv"
    res = invoke("profile", "--device", "sim:p40", "--sizes", "1,4,16,64", "--batches", "10", "--warmup", "1",
                 "--csv", str(out))
    assert res.exit_code == 0, res.output
    rows = {int(r.split(",")[1]): r.split(",") for r in out.read_text().splitlines()[1:]}
    header = out.read_text().splitlines()[0].split(",")
    assert "idle_w" in header
    measured = float(rows[16][header.index("throughput")])
    js = tmp_path / "run.json"
    res = invoke("run", "--device", f"table:{out}", "--controller", "static", "--batch-size", "16", "--items", "4000",
                 "-q", "--cap", "250", "--json", str(js))
    assert res.exit_code == 0, res.output
    summary = json.loads(js.read_text())
    assert summary["throughput"] == pytest.approx(measured, rel=0.03)
    mean = float(rows[16][header.index("mean_w")])
    assert summary["energy_j"] / summary["duration_s"] == pytest.approx(mean, rel=0.05)
    assert summary["workload"]["size_range"] == [1, 64]
    # and the default controller runs on it under a cap
    assert invoke("run", "--device", f"table:{out}", "--items", "2000", "-q", "--cap", "120").exit_code == 0


def test_names_split_the_selector_only_after_a_csv(tmp_path):
    assert parse_table_name("table:/a/b.csv:resnet50@imagenet") == (Path("/a/b.csv"), "resnet50@imagenet")
    assert parse_table_name("table:/a/b.csv") == (Path("/a/b.csv"), None)
    assert parse_table_name("table:/a/b:c") == (Path("/a/b:c"), None)
    with pytest.raises(ConfigError):
        parse_table_name("table:")


def test_profile_table_takes_no_selector(tmp_path):
    path = write_table(tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="leave out the selector"):
        open_table_device(f"table:{path}:resnet")
    assert math.isfinite(open_table_device(f"table:{path}").plant.idle_w)


def test_profile_of_a_real_gpu_measures_idle_and_replays(tmp_path, monkeypatch):
    """On a (fake) NVIDIA GPU the profile measures the idle power after the last point, so its CSV
    replays as a table device with no --table-idle-w."""
    pytest.importorskip("torch")
    from tiny_models import TINY_CNN_SOURCE, LoadedGpu, run_on_fake_gpu

    load = LoadedGpu(300.0, 90.0, seconds_per_item=0.002)
    run_on_fake_gpu(monkeypatch, load)
    (tmp_path / "net.py").write_text(TINY_CNN_SOURCE)
    out = tmp_path / "gpu.csv"
    res = invoke("profile", "--device", "cuda:0", "--model", f"{tmp_path / 'net.py'}:build", "--input-size", "32",
                 "--sizes", "4,16", "--batches", "4", "--warmup", "1", "--items", "64", "--csv", str(out))
    assert res.exit_code == 0, res.output
    header, *rows = [line.split(",") for line in out.read_text().splitlines()]
    idle = {float(r[header.index("idle_w")]) for r in rows}
    assert len(idle) == 1 and abs(idle.pop() - 90.0) < 5
    d = open_table_device(f"table:{out}")
    assert d.size_range == (4, 16) and d.plant.idle_w == pytest.approx(90.0, abs=5)
