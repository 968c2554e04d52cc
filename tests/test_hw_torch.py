"""Real PyTorch inference on the CPU through the one control loop (a tiny CNN; torchvision where installed)."""

from __future__ import annotations

import sys
import time

import pytest

torch = pytest.importorskip("torch")

from batchsizer import ConstantCap, ControlLoop, DynamicBatchStream, Window, make_controller  # noqa: E402
from batchsizer.errors import ConfigError  # noqa: E402
from batchsizer.hw.device import NoMeter  # noqa: E402
from batchsizer.hw.fake_nvml import FakeGpu, FakeNvml  # noqa: E402
from batchsizer.hw.nvml import Nvml  # noqa: E402
from batchsizer.hw.nvml_meter import NvmlMeter  # noqa: E402
from batchsizer.hw.torch_runner import TorchRunner, parse_device  # noqa: E402
from batchsizer.hw.workload import open_real_workload  # noqa: E402
from batchsizer.loop import LoopObserver  # noqa: E402
from batchsizer.workloads import WorkloadOptions, open_workload  # noqa: E402
from tiny_models import tiny_cnn  # noqa: E402


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
        WorkloadOptions(device="cpu", items=600, extra={"input_size": 32}), model=tiny_cnn(), meter=meter
    )
    controller = make_controller("batchsizer", w.device.knobs, sizes=(1, 2, 4, 8, 16, 32))
    seen = Collect()
    stream = DynamicBatchStream(w.source, prefetch=w.prefetch, prepare=w.prepare)
    with w.device:
        summary = ControlLoop(w.device, controller, ConstantCap(250), Window(batches=3), [seen]).run(stream)
    assert summary.items == 600
    # every item once, in order, while the batch size moved
    assert seen.first == [sum(seen.sizes[:i]) for i in range(len(seen.sizes))]
    assert len(set(seen.sizes)) > 1 and max(seen.sizes) == 32
    # outputs are the model's predictions, item by item
    x = torch.as_tensor(w.prepare(list(range(600)))).float()
    from batchsizer.hw.torch_runner import normalize

    with torch.inference_mode():
        expected = w.device.runner.model(normalize(x)).argmax(1).tolist()
    assert seen.outputs == expected
    assert summary.energy_j > 0


def test_cap_without_meter_is_a_clear_error() -> None:
    w = open_real_workload(
        WorkloadOptions(device="cpu", items=40, extra={"input_size": 32}),
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
