"""Real PyTorch inference on the CPU through the one control loop (a tiny CNN; torchvision where installed)."""

from __future__ import annotations

import sys
import time

import pytest

torch = pytest.importorskip("torch")

from batchsizer import ConstantCap, ControlLoop, DynamicBatchStream, Window, make_controller  # noqa: E402
from batchsizer.core.loop import LoopObserver  # noqa: E402
from batchsizer.core.workloads import WorkloadOptions, open_workload  # noqa: E402
from batchsizer.errors import ConfigError  # noqa: E402
from batchsizer.hw.nvml import Nvml  # noqa: E402
from batchsizer.hw.nvml_meter import NvmlMeter  # noqa: E402
from batchsizer.hw.torch_device import NoMeter  # noqa: E402
from batchsizer.hw.torch_runner import TorchRunner, parse_device  # noqa: E402
from batchsizer.hw.workload import open_real_workload  # noqa: E402
from batchsizer.testing.fake_nvml import FakeGpu, FakeNvml  # noqa: E402
from tiny_models import LoadedGpu, run_on_fake_gpu, tiny_cnn  # noqa: E402


class Collect(LoopObserver):
    def __init__(self) -> None:
        self.first: list[int] = []
        self.outputs: list[int] = []
        self.sizes: list[int] = []

    def on_batch(self, index, batch, outcome, setting) -> None:
        self.first.append(batch.first_index)
        self.sizes.append(len(batch))
        self.outputs.extend(outcome.outputs)


@pytest.fixture
def fake_gpu_meter(monkeypatch):
    """A meter whose power rises with how busy the CPU-side model is: a fake NVML sensor."""
    busy = {"until": 0.0}
    gpu = FakeGpu(power_fn=lambda t: 200.0 if t < busy["until"] else 60.0, update_period_s=0.005)
    fake = FakeNvml([gpu])
    monkeypatch.setitem(sys.modules, "pynvml", fake.module)
    nvml = Nvml()
    meter = NvmlMeter(nvml.gpu(0), update_period_s=0.005)
    yield meter, busy
    meter.close()
    nvml.close()


def test_tiny_cnn_through_the_real_loop(fake_gpu_meter) -> None:
    meter, _ = fake_gpu_meter
    w = open_real_workload(
        WorkloadOptions(device="cpu", items=600, input_size=32), model=tiny_cnn(), meter=meter
    )
    controller = make_controller("batchsizer", w.device.knobs, sizes=(1, 2, 4, 8, 16, 32))
    seen = Collect()
    stream = DynamicBatchStream(w.source, prefetch=w.prefetch, prepare=w.prepare)
    with w.device:
        summary = ControlLoop(w.device, controller, ConstantCap(250), Window(batches=3), [seen]).run(stream)
    assert summary.items == 600
    # every item once, in order, while the batch size moved
    assert seen.first == [sum(seen.sizes[:i]) for i in range(len(seen.sizes))]
    # the search climbed (how far depends on the fake meter's wall-clock readings on a busy machine)
    assert len(set(seen.sizes)) > 1 and max(seen.sizes) >= 4
    # outputs are the model's predictions, item by item
    x = torch.as_tensor(w.prepare(list(range(600)))).float()
    from batchsizer.hw.torch_runner import normalize

    with torch.inference_mode():
        expected = w.device.runner.model(normalize(x)).argmax(1).tolist()
    assert seen.outputs == expected
    assert summary.energy_j > 0


def test_cap_without_meter_is_a_clear_error() -> None:
    w = open_real_workload(
        WorkloadOptions(device="cpu", items=40, input_size=32),
        model=tiny_cnn(),
        meter=NoMeter("cpu", "no RAPL here"),
    )
    stream = DynamicBatchStream(w.source, prepare=w.prepare)
    with w.device, pytest.raises(ConfigError, match="cpu has no usable power meter \\(no RAPL here\\)"):
        ControlLoop(w.device, make_controller("static", batch_size=4), ConstantCap(100), Window(batches=2)).run(stream)


def test_device_names_and_options() -> None:
    assert parse_device("cuda") == "cuda:0"
    assert parse_device("CUDA:3") == "cuda:3"
    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        parse_device("gpu0")
    with pytest.raises(ConfigError, match="half precision is for cuda"):
        TorchRunner(tiny_cnn(), "cpu", half=True)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA GPU"):
            open_workload(WorkloadOptions(device="cuda:0", model="resnet18"))


def test_channels_last_gives_the_same_predictions() -> None:
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a = TorchRunner(tiny_cnn(), "cpu").run(x)[2]
    b = TorchRunner(tiny_cnn(), "cpu", channels_last=True).run(x)[2]
    assert a == b


def test_torchvision_models_by_name_and_checkpoint(tmp_path) -> None:
    pytest.importorskip("torchvision")
    from batchsizer.hw.torch_runner import build_model, resolve_name

    assert resolve_name("Res101") == "resnet101"
    assert resolve_name("IncV1") == "googlenet"
    with pytest.raises(ConfigError, match="not in torchvision"):
        resolve_name("NASNET")
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'"):
        resolve_name("resnet9000")
    t = time.monotonic()
    model = build_model("mobilenet_v3_small")
    ckpt = tmp_path / "m.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    again = build_model("mobilenet_v3_small", ckpt)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert TorchRunner(model).run(x)[2] == TorchRunner(again).run(x)[2]
    with pytest.raises(ConfigError, match="does not fit the model"):
        build_model("squeezenet1_1", ckpt)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a loadable"):
        build_model("mobilenet_v3_small", tmp_path / "junk.pt")
    googlenet = build_model("googlenet")  # random weights, no aux heads, no scipy init
    assert len(TorchRunner(googlenet).run(torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8))[2]) == 1
    assert time.monotonic() - t < 30


@pytest.mark.parametrize("controller", ["batchsizer", "adaptive"])
@pytest.mark.parametrize("why", ["read-only", "no-permission"])
def test_a_gpu_that_may_not_be_changed_is_left_alone_by_every_controller(
    controller: str, why: str, monkeypatch
) -> None:
    """Opened read-only (--read-only, the GPU check), or by a process without root or CAP_SYS_ADMIN:
    no clock is offered to the controllers, so ``adaptive`` moves the batch size alone, and not one
    call that would change the card is made (a fake NVML GPU records every such call; the model runs
    on the CPU). ``dvfs``, which needs clocks, is refused, saying why."""
    from batchsizer.hw.gpu import CudaDevice

    load = LoadedGpu(250.0)
    gpu = load.gpu
    run_on_fake_gpu(monkeypatch, load, permitted=why != "no-permission")
    nvml = Nvml()
    meter = NvmlMeter(nvml.gpu(0), update_period_s=0.005)
    allow = False if why == "read-only" else None
    runner = TorchRunner(load.wrap(tiny_cnn()))
    device = CudaDevice("cuda:0", runner, nvml, nvml.gpu(0), meter=meter, allow_changes=allow)
    assert not device.knobs.has_clocks and device.describe()["settings"] == "read-only"
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    stream = DynamicBatchStream(range(400), prepare=lambda items: x[: len(items)])
    with device:
        ctl = make_controller(controller, device.knobs, sizes=(1, 2, 4, 8, 16, 32))
        summary = ControlLoop(device, ctl, ConstantCap(200), Window(batches=4)).run(stream)
        assert summary.items == 400
        words = "read-only" if why == "read-only" else "not root"
        with pytest.raises(ConfigError, match=f"dvfs needs a device whose clock can be set.*{words}"):
            make_controller("dvfs", device.knobs, batch_size=4)
    assert gpu.calls == []


def test_clocks_are_offered_where_the_process_may_change_them(monkeypatch) -> None:
    from batchsizer.hw import gpu as gpu_module
    from batchsizer.hw.gpu import CudaDevice

    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([gpu]).module)
    monkeypatch.setattr(gpu_module, "settings_permission", lambda: None)
    nvml = Nvml()
    device = CudaDevice("cuda:0", TorchRunner(tiny_cnn()), nvml, nvml.gpu(0), meter=NoMeter("cuda:0", "test"))
    with device:
        assert device.knobs.has_clocks and device.describe()["settings"] == "changeable"
        device.set_clock(device.knobs.clock_levels_mhz[0])
    assert gpu.calls == ["set_locked", "reset_locked"]  # changed, and put back on close


def test_permission_to_change_settings_is_read_without_touching_the_gpu(tmp_path, monkeypatch) -> None:
    from batchsizer.hw import actuators

    status = tmp_path / "status"
    monkeypatch.setattr(actuators.os, "geteuid", lambda: 1000)
    status.write_text("Name:\tpython\nCapEff:\t0000000000000000\n")
    assert "needs CAP_SYS_ADMIN" in actuators.settings_permission(status)
    status.write_text(f"CapEff:\t{1 << actuators.CAP_SYS_ADMIN:016x}\n")
    assert actuators.settings_permission(status) is None  # the capability, without root
    assert "root or CAP_SYS_ADMIN" in actuators.settings_permission(tmp_path / "missing")
    monkeypatch.setattr(actuators.os, "geteuid", lambda: 0)
    assert actuators.settings_permission(tmp_path / "missing") is None  # no /proc: root is taken at its word
    status.write_text("CapEff:\t00000000a80425fb\n")  # Docker's default set for root: no CAP_SYS_ADMIN
    assert "although it runs as root (a container?)" in actuators.settings_permission(status)
    status.write_text("CapEff:\t000001ffffffffff\n")  # root on a host
    assert actuators.settings_permission(status) is None


def test_a_card_that_refuses_a_clock_leaves_adaptive_with_the_batch_size(monkeypatch) -> None:
    """Clocks offered (the process looks permitted) but NVML refuses the change (a container, a
    card without clock control): adaptive goes on with the batch size alone, says so once, and the
    job completes; dvfs, which needs the clock, stops with the device's error."""
    from batchsizer.core.loop import LoopObserver
    from batchsizer.errors import PermissionDeniedError
    from batchsizer.hw.gpu import CudaDevice

    load = LoadedGpu(260.0, can_set=False)
    gpu = load.gpu
    run_on_fake_gpu(monkeypatch, load, permitted=True)

    class Events(LoopObserver):
        def __init__(self) -> None:
            self.kinds: list[str] = []

        def on_event(self, kind, message, **fields) -> None:
            self.kinds.append(kind)

    nvml = Nvml()
    meter = NvmlMeter(nvml.gpu(0), update_period_s=0.005)
    device = CudaDevice("cuda:0", TorchRunner(load.wrap(tiny_cnn())), nvml, nvml.gpu(0), meter=meter)
    assert device.knobs.has_clocks
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    events = Events()
    with device:
        ctl = make_controller("adaptive", device.knobs, sizes=(1, 2, 4, 8, 16, 32))
        stream = DynamicBatchStream(range(300), prepare=lambda items: x[: len(items)])
        summary = ControlLoop(device, ctl, ConstantCap(200), Window(batches=4), [events]).run(stream)
        assert summary.items == 300
        assert events.kinds.count("clocks-refused") == 1
        assert any("the clock could not be set" in n and "only the batch size moved" in n for n in summary.notes)
        dvfs = make_controller("dvfs", device.knobs, batch_size=4)
        with pytest.raises(PermissionDeniedError, match="CAP_SYS_ADMIN"):
            ControlLoop(device, dvfs, ConstantCap(200), Window(batches=2)).run(
                DynamicBatchStream(range(40), prepare=lambda items: x[: len(items)])
            )
    assert gpu.locked is None and gpu.power_limit_w == 700.0
