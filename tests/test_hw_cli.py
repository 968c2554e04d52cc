"""``batchsizer devices``, ``profile`` and ``make-images`` (NVML faked, profile on simulated devices)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.hw import fake_nvml
from batchsizer.hw.fake_nvml import FakeGpu, FakeNvml


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_devices_lists_fake_gpus(monkeypatch, tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu(), FakeGpu(name="NVIDIA A10", architecture=7, instant_field=False, uuid="GPU-a10")])
    monkeypatch.setitem(sys.modules, "pynvml", fake.module)
    result = run("devices", "--json", str(tmp_path / "d.json"))
    assert result.exit_code == 0, result.output
    assert "cuda:0  NVIDIA H100 80GB HBM3  (Hopper)  limit 700 W (default 700, settable 200-700)" in result.output
    assert "cuda:1  NVIDIA A10  (Ampere)" in result.output and "1 s average" in result.output
    assert "SM clocks: 110 levels, 345-1980 MHz" in result.output
    data = json.loads((tmp_path / "d.json").read_text())
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA H100 80GB HBM3", "NVIDIA A10"]
    assert fake.initialised == 0  # NVML shut down again


def test_devices_without_driver_says_so(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(init_error=fake_nvml.ERROR_DRIVER_NOT_LOADED).module)
    result = run("devices")
    assert result.exit_code == 0
    assert "none: NVML is not available" in result.output and "driver" in result.output
    assert "sim:p40" in result.output


def test_profile_writes_json_and_csv(tmp_path: Path) -> None:
    result = run(
        "profile", "--device", "scripted", "--sizes", "1,4,16,64", "--batches", "4", "--warmup", "1",
        "--json", str(tmp_path / "p.json"), "--csv", str(tmp_path / "p.csv"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "p.json").read_text())
    rows = data["rows"]
    assert [r["batch_size"] for r in rows] == [1, 4, 16, 64]
    # the scripted device: time 4 ms + 1.2 ms per item, power 60 + 24 sqrt(b) W (capped at 250)
    for r in rows:
        b = r["batch_size"]
        assert r["throughput"] == pytest.approx(b / (0.002 + 0.004 + 0.0012 * b), rel=1e-6)
        assert r["peak_w"] == pytest.approx(min(250.0, 60 + 24 * b**0.5))
    assert data["saturation"] == {"default": 64}
    with open(tmp_path / "p.csv") as f:
        assert [int(r["batch_size"]) for r in csv.DictReader(f)] == [1, 4, 16, 64]


def test_profile_on_a_simulated_gpu(tmp_path: Path) -> None:
    pytest.importorskip("batchsizer.sim.workload")
    result = run(
        "profile", "--device", "sim:p40", "--sizes", "1,8,64", "--batches", "3", "--json", str(tmp_path / "p.json")
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert rows[0]["throughput"] < rows[-1]["throughput"] and rows[0]["peak_w"] < rows[-1]["peak_w"]


def test_profile_bad_input_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["profile", "--device", "scripted", "--sizes", "4,2"])
    assert result.exit_code == 2 and "error: sizes: must be strictly ascending" in result.output
    result = CliRunner().invoke(cli, ["profile", "--device", "scripted", "--batches", "0"])
    assert result.exit_code == 2 and "error: batches: must be at least 1" in result.output
    result = CliRunner().invoke(cli, ["profile", "--device", "scripted", "--clocks", "all"])
    assert result.exit_code == 2 and "no settable clocks" in result.output


def test_make_images(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    result = run("make-images", str(tmp_path / "imgs"), "--count", "4", "--classes", "2", "--profile", "caltech")
    assert result.exit_code == 0, result.output
    assert "wrote 4 images in 2 classes" in result.output
    assert len(list((tmp_path / "imgs").glob("class_*/*.jpg"))) == 4
    result = CliRunner().invoke(cli, ["make-images", str(tmp_path / "imgs"), "--count", "2", "--classes", "1"])
    assert result.exit_code == 2 and "error: folder:" in result.output
