"""--cap-from-gpu: the cap is the power limit someone set on the GPU, followed as it changes (fake NVML)."""

from __future__ import annotations

import sys

import pytest

from batchsizer.errors import ConfigError
from batchsizer.hw.gpu_cap import GpuLimitCap
from batchsizer.hw.nvml import Nvml
from batchsizer.testing import fake_nvml
from batchsizer.testing.fake_nvml import FakeGpu, FakeNvml


@pytest.fixture
def gpu(monkeypatch):
    fake = FakeGpu(limits_w=(200.0, 700.0, 700.0))
    fake.power_limit_w = 450.0
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([fake]).module)
    with Nvml() as nvml:
        yield fake, nvml.gpu(0)


def test_the_limit_in_force_is_the_cap_and_changes_are_followed(gpu) -> None:
    fake, handle = gpu
    clock = {"t": 0.0}
    cap = GpuLimitCap(handle, every_s=0.5, now=lambda: clock["t"])
    assert cap.cap_at(0.0) == 450.0 and "450 W" in repr(cap)
    fake.power_limit_w = 300.0  # an external controller lowers the limit (nvidia-smi -pl 300)
    clock["t"] = 0.2
    assert cap.cap_at(0.2) == 450.0  # not re-read yet: at most every 0.5 s
    clock["t"] = 0.6
    assert cap.cap_at(0.6) == 300.0
    assert fake.calls == []  # only read, never set


def test_a_failed_read_keeps_the_last_cap(gpu, monkeypatch) -> None:
    fake, handle = gpu
    clock = {"t": 0.0}
    cap = GpuLimitCap(handle, every_s=0.1, now=lambda: clock["t"])

    def broken(*args):
        raise fake_nvml.NVMLError(fake_nvml.ERROR_UNKNOWN)

    monkeypatch.setattr(handle.lib, "nvmlDeviceGetPowerManagementLimit", broken)
    clock["t"] = 1.0
    assert cap.cap_at(1.0) == 450.0


def test_the_loop_follows_a_limit_changed_during_the_job(gpu) -> None:
    """Through the control loop: the period after the change is decided under the new limit."""
    from batchsizer import ControlLoop, DynamicBatchStream, Window, make_controller
    from batchsizer.core.loop import LoopObserver
    from batchsizer.testing.scripted import ScriptedDevice

    fake, handle = gpu
    device = ScriptedDevice(time_fn=lambda b, c: 0.001 * b + 0.002, power_fn=lambda b, c: 100.0 + 2.0 * b)
    cap = GpuLimitCap(handle, every_s=0.0, now=device.clock.now)

    class Lower(LoopObserver):
        def __init__(self) -> None:
            self.events: list[dict] = []

        def on_batch(self, index, batch, outcome, setting) -> None:
            if index == 30:
                fake.power_limit_w = 250.0

        def on_event(self, kind, message, **fields) -> None:
            if kind == "cap":
                self.events.append(fields)

    seen = Lower()
    ControlLoop(device, make_controller("batchsizer", device.knobs), cap, Window(batches=5), [seen]).run(
        DynamicBatchStream(range(3000))
    )
    assert seen.events == [{"old": 450.0, "new": 250.0}]


def test_the_first_read_must_work(gpu, monkeypatch) -> None:
    fake, handle = gpu
    fake.power_limit_w = 0.0
    with pytest.raises(ConfigError, match="cap from gpu: must be a positive number of watts"):
        GpuLimitCap(handle)


def _fake_gpu_command(monkeypatch, tmp_path, permitted: bool, limit_w: float = 250.0):
    """`batchsizer run` on a fake cuda:0 (see tiny_models.run_on_fake_gpu) with the tiny CNN as the
    user's own model file. Returns the fake GPU and the command's first arguments."""
    pytest.importorskip("torch")
    from tiny_models import TINY_CNN_SOURCE, LoadedGpu, run_on_fake_gpu

    load = LoadedGpu(320.0, 90.0, seconds_per_item=0.0005)
    load.gpu.power_limit_w = limit_w
    run_on_fake_gpu(monkeypatch, load, permitted=permitted)
    (tmp_path / "net.py").write_text(TINY_CNN_SOURCE)
    args = ["run", "-q", "--device", "cuda:0", "--model", f"{tmp_path / 'net.py'}:build", "--input-size", "32"]
    return load.gpu, args


@pytest.mark.parametrize("permitted", [True, False])
def test_the_whole_command_on_a_fake_gpu(permitted: bool, tmp_path, monkeypatch) -> None:
    """`batchsizer run --device cuda:0 --cap-from-gpu` end to end. Where clocks may be changed, the
    user is told before the job that the clock may be locked; they are put back."""
    import json

    from click.testing import CliRunner

    from batchsizer.cli import cli

    fake, args = _fake_gpu_command(monkeypatch, tmp_path, permitted)
    out = tmp_path / "s.json"
    args += ["--items", "300", "--cap-from-gpu", "--json", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads(out.read_text())
    assert summary["items"] == 300 and summary["power_measured"] is True
    assert summary["cap_w"] == 250 and summary["cap_source"] == "gpu-limit"  # numbers, the unit in the key
    note = "may lock cuda:0's SM clock"
    assert (note in result.stderr) is permitted
    if permitted:
        # adaptive did lower the clock under this cap, and it was unlocked when the job ended
        assert "set_locked" in fake.calls and fake.calls[-1] == "reset_locked" and fake.locked is None
    else:
        assert fake.calls == []


@pytest.mark.parametrize("read_only", [False, True])
def test_power_limit_on_a_fake_gpu_is_set_for_the_job_and_put_back(read_only: bool, tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from batchsizer.cli import cli

    fake, args = _fake_gpu_command(monkeypatch, tmp_path, permitted=True, limit_w=700.0)
    args += ["--items", "100", "--controller", "static", "--batch-size", "8", "--power-limit", "300", "--cap", "300"]
    result = CliRunner().invoke(cli, [*args, "--read-only"] if read_only else args)
    if read_only:
        assert result.exit_code == 2 and "read-only" in result.stderr
        assert fake.calls == []
    else:
        assert result.exit_code == 0, result.output + result.stderr
        assert fake.calls == ["set_limit", "set_limit"]  # 300 W for the job, then 700 W again
    assert fake.power_limit_w == 700.0


def test_a_mistake_found_after_the_power_limit_was_set_puts_it_back(tmp_path, monkeypatch) -> None:
    """--power-limit is set once the device is open; a mistake found after that (here dvfs on a card
    with no settable clocks) still ends with the limit put back, not left at the job's value."""
    from click.testing import CliRunner

    from batchsizer.cli import cli

    fake, args = _fake_gpu_command(monkeypatch, tmp_path, permitted=True, limit_w=700.0)
    fake.memory_clocks, fake.graphics_clocks = (), ()  # a card that lists no clock levels
    result = CliRunner().invoke(cli, [*args, "--items", "50", "--controller", "dvfs", "--power-limit", "300"])
    assert result.exit_code == 2 and "dvfs needs a device whose clock can be set" in result.stderr
    assert fake.calls == ["set_limit", "set_limit"] and fake.power_limit_w == 700.0
