"""scripts/gpu_check.py has one run on a lent GPU: its dry run (CPU + fake NVML) keeps it working till then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchvision", reason="the GPU check's dry run uses torchvision models ('.[vision]' extra)")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_dry_run_does_every_step_and_changes_no_setting(tmp_path: Path) -> None:
    out = tmp_path / "gc.json"
    proc = _run("--dry-run", "--run-s", "1", "--sizes", "1,2,4", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["settings_changed"] == []
    assert report["sensor"]["update_period_s"] > 0 and report["sensor"]["update_period_seen_under_load_s"] > 0
    assert list(report["profiles"]) == ["squeezenet1_1", "mobilenet_v3_small", "resnet18"]
    for profile in report["profiles"].values():
        assert [r["batch_size"] for r in profile["rows"]] == [1, 2, 4]
        assert all(r["throughput"] > 0 and r["peak_w"] > 0 for r in profile["rows"])
    runs = report["capped"]["runs"]
    assert [r["cap_fraction"] for r in runs] == [0.6, 0.85]
    for r in runs:
        assert r["cap_w"] < report["capped"]["peak_seen_w"]
        for name in ("batchsizer", "adaptive", "static"):
            assert r[name]["items"] > 0 and 0 <= r[name]["over_cap_fraction"] <= 1
        assert set(r["throughput_ratio"]) == {"batchsizer", "adaptive"}
    assert "settings changed on the (fake) GPU: none" in proc.stdout
    assert proc.stdout.rstrip().endswith(f"-> {out}")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--controllers", "batchsizer,pid"], "controllers: unknown ['pid']"),
        (["--sizes", "4,2"], "sizes: must be strictly ascending"),
        (["--models", "resnet9000"], "unknown model 'resnet9000'"),
        (["--json", "/proc/no/gc.json"], "json: cannot write"),
    ],
)
def test_mistakes_are_refused_before_anything_runs(args: list[str], words: str) -> None:
    proc = _run("--dry-run", *args, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "GPU" not in proc.stdout


def test_the_real_path_on_a_fake_gpu_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    """The check as it runs on a GPU (device cuda:0: CudaDevice, NvmlMeter, read-only knobs), with
    NVML faked and the models moved to the CPU: every step runs, and the fake GPU, whose settings
    this process would be allowed to change, records not one call that changes them."""
    import importlib.util

    from tiny_models import LoadedGpu, run_on_fake_gpu

    load = LoadedGpu(300.0, 80.0, seconds_per_item=0.001, update_period_s=0.01)
    run_on_fake_gpu(monkeypatch, load, permitted=True)  # as root: only --read-only stops it
    fake = load.gpu
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gc.json"
    argv = ["--device", "cuda:0", "--models", "squeezenet1_1,mobilenet_v3_small", "--sizes", "1,2"]
    argv += ["--batches", "2", "--warmup", "1", "--run-s", "1", "--window-s", "0.3", "--json", str(out)]
    assert gpu_check.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] is False and report["gpu"]["name"] == fake.name
    assert set(report["capped"]["runs"][0]) >= {"batchsizer", "adaptive", "static"}
    assert fake.calls == []
