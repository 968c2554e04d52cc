"""``batchsizer devices``, ``profile`` and ``make-images`` (NVML faked, profile on simulated devices)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchsizer.cli import cli
from batchsizer.testing import fake_nvml
from batchsizer.testing.fake_nvml import FakeGpu, FakeNvml


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
    from batchsizer.hw import actuators

    monkeypatch.setattr(actuators, "settings_permission", lambda: "not root (test)")
    result = run("devices", "--json", str(tmp_path / "d.json"))
    assert "clocks and power limits: read-only here (not root (test))" in result.output
    assert json.loads((tmp_path / "d.json").read_text())["gpu_settings_changeable"] is False
    monkeypatch.setattr(actuators, "settings_permission", lambda: None)
    assert "clocks and power limits: this process may change them" in run("devices").output


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
    result = CliRunner().invoke(cli, ["profile", "--device", "scripted", "--clocks", "1000,1200"])
    assert result.exit_code == 2 and "no settable clocks" in result.output


def test_profile_says_why_a_gpus_clocks_are_not_offered() -> None:
    from batchsizer.cli.commands.profile import parse_clocks
    from batchsizer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"no settable clocks \(cuda:0's clocks are not offered: opened read-only\)"):
        parse_clocks("all", (), "cuda:0's clocks are not offered: opened read-only")
    assert parse_clocks(None, ()) == [None]
    assert parse_clocks("all", (900, 1200)) == [900, 1200]


def test_make_images(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    result = run("make-images", str(tmp_path / "imgs"), "--count", "4", "--classes", "2", "--profile", "caltech")
    assert result.exit_code == 0, result.output
    assert "wrote 4 images in 2 classes" in result.output
    assert len(list((tmp_path / "imgs").glob("class_*/*.jpg"))) == 4
    result = CliRunner().invoke(cli, ["make-images", str(tmp_path / "imgs"), "--count", "2", "--classes", "1"])
    assert result.exit_code == 2 and "error: folder:" in result.output


# --- batchsizer run on a real device: --half, --channels-last, --checkpoint, --workers, no power meter ----


@pytest.fixture
def cpu_without_rapl(monkeypatch):
    """The cpu device with no readable power meter, whatever this machine has."""
    pytest.importorskip("torchvision")
    from batchsizer.hw import workload
    from batchsizer.hw.torch_device import NoMeter

    monkeypatch.setattr(workload, "cpu_meter", lambda: NoMeter("cpu", "test: no RAPL"))


SMALL = ["run", "-q", "--device", "cpu", "--model", "mobilenet_v3_small", "--items", "8"]
STATIC = ["--controller", "static", "--batch-size", "4"]


def test_checkpoint_is_loaded_and_channels_last_used(cpu_without_rapl, tmp_path: Path) -> None:
    import torch
    from torchvision.models import mobilenet_v3_small

    from batchsizer.hw.torch_runner import TorchRunner
    from batchsizer.hw.workload import SyntheticInput
    from batchsizer.io.outputs import read_outputs

    torch.manual_seed(7)
    model = mobilenet_v3_small(weights=None).eval()
    ckpt = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    out, js, rec = tmp_path / "out.jsonl", tmp_path / "s.json", tmp_path / "r.jsonl"
    result = run(*SMALL, *STATIC, "--checkpoint", str(ckpt), "--channels-last", "--save-outputs", str(out),
                 "--json", str(js), "--records", str(rec))  # fmt: skip
    assert result.exit_code == 0, result.output
    # the same weights on the same synthetic images, computed here, give the same classes
    expected = TorchRunner(model, "cpu").run(SyntheticInput(224, seed=0)(list(range(8))))[2]
    assert [ln["output"] for ln in read_outputs(out)[1]] == expected
    summary = json.loads(js.read_text())
    assert summary["workload"]["channels_last"] is True and summary["workload"]["half"] is False
    job = json.loads(rec.read_text().splitlines()[0])
    assert job["device"]["channels_last"] is True and job["device"]["dtype"] == "float32"
    assert any("no power meter" in n and "uncapped" in n for n in summary["notes"])
    # unknown, not zero: no energy or over-cap figures are made up for a run without a meter
    assert summary["power_measured"] is False
    assert summary["energy_j"] is None and summary["over_cap_fraction"] is None and summary["violations"] is None
    assert "not measured" in result.output and "J/item" not in result.output


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        (["--half"], "half", "used by cuda devices"),
        (["--workers", "-1"], "workers", "0 or more"),
        (["--checkpoint", "missing.pt"], "checkpoint", "missing"),
        (["--cap", "50"], "cap", "no usable power meter"),
        (["--controller", "batchsizer"], "controller", "--controller static"),
    ],
)
def test_bad_real_run_options_are_one_line(cpu_without_rapl, extra, field, words, tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    args = [*SMALL, *(STATIC if "--controller" not in extra else []), *extra, "--json", str(js)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {field}: ") and words in result.stderr, result.stderr
    assert "Traceback" not in result.output and not js.exists()


def test_checkpoint_that_is_not_a_state_dict_or_does_not_fit(cpu_without_rapl, tmp_path: Path) -> None:
    import torch

    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    result = CliRunner().invoke(cli, [*SMALL, *STATIC, "--checkpoint", str(junk)])
    assert result.exit_code == 2 and "error: checkpoint: " in result.stderr and "loadable" in result.stderr
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    result = CliRunner().invoke(cli, [*SMALL, *STATIC, "--checkpoint", str(other)])
    assert result.exit_code == 2 and "does not fit the model" in result.stderr, result.stderr


def test_real_options_refused_on_a_simulated_device() -> None:
    for extra, field in ((["--channels-last"], "channels-last"), (["--checkpoint", "w.pt"], "checkpoint")):
        result = CliRunner().invoke(cli, ["run", "-q", "--device", "sim:p40", *extra])
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {field}: "), result.stderr


def test_an_uncapped_runs_records_plot(cpu_without_rapl, tmp_path: Path) -> None:
    """No power readings and an infinite cap in the records: the figures are still drawn."""
    rec = tmp_path / "r.jsonl"
    result = run(*SMALL, "--items", "48", *STATIC, "--records", str(rec))
    assert result.exit_code == 0, result.output
    result = run("plot", str(rec), "--out", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "batch_size.png",
        "overview.png",
        "power.png",
        "throughput.png",
    ]
