"""A batch too large for the device's memory: the job goes on in smaller batches, losing and repeating nothing.

The model here raises the error PyTorch raises when a CUDA allocation fails (or the CPU allocator's
plain RuntimeError) for batches over a size, like a GPU with little memory left.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from batchsizer import ConstantCap, ControlLoop, DynamicBatchStream, Window, make_controller  # noqa: E402
from batchsizer.cli.commands.profile import run_profile  # noqa: E402
from batchsizer.core.loop import LoopObserver  # noqa: E402
from batchsizer.core.workloads import WorkloadOptions  # noqa: E402
from batchsizer.errors import DeviceError, OutOfMemoryError  # noqa: E402
from batchsizer.hw.torch_device import NoMeter  # noqa: E402
from batchsizer.hw.torch_runner import TorchRunner, normalize  # noqa: E402
from batchsizer.hw.workload import open_real_workload  # noqa: E402
from tiny_models import TINY_CNN_SOURCE, tiny_cnn  # noqa: E402

CUDA_OOM = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


class SmallMemory(torch.nn.Module):
    """``inner``, but a batch of more than ``fits`` items fails as an allocation would."""

    def __init__(self, inner: torch.nn.Module, fits: int, error: type[Exception] = CUDA_OOM, text: str = "") -> None:
        super().__init__()
        self.inner, self.fits, self.error = inner, fits, error
        self.text = text or "CUDA out of memory. Tried to allocate 2.00 GiB"
        self.tried: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tried.append(x.shape[0])
        if x.shape[0] > self.fits:
            raise self.error(self.text)
        return self.inner(x)


class Seen(LoopObserver):
    def __init__(self) -> None:
        self.first: list[int] = []
        self.sizes: list[int] = []
        self.outputs: list[int] = []
        self.events: list[tuple[str, dict]] = []

    def on_batch(self, index, batch, outcome, setting) -> None:
        self.first.append(batch.first_index)
        self.sizes.append(len(batch))
        self.outputs.extend(outcome.outputs)

    def on_event(self, kind, message, **fields) -> None:
        self.events.append((kind, {"message": message, **fields}))


def _workload(model: torch.nn.Module, items: int):
    meter = NoMeter("cpu", "test")
    meter.allow_empty = True
    return open_real_workload(
        WorkloadOptions(device="cpu", items=items, input_size=32), model=model, meter=meter
    )


def _expected(w, items: int) -> list[int]:
    x = torch.as_tensor(w.prepare(list(range(items)))).float()
    with torch.inference_mode():
        return tiny_cnn()(normalize(x)).argmax(1).tolist()


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (CUDA_OOM, ""),
        (
            RuntimeError,
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB",
        ),
    ],
    ids=["cuda", "cpu-allocator"],
)
def test_the_runner_names_an_allocation_failure_and_nothing_else(error, text) -> None:
    runner = TorchRunner(SmallMemory(tiny_cnn(), fits=4, error=error, text=text))
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(OutOfMemoryError, match="a batch of 6 items does not fit in cpu's memory") as info:
        runner.run(x)
    assert info.value.batch_size == 6
    assert len(runner.run(x[:4])[2]) == 4
    other = TorchRunner(SmallMemory(tiny_cnn(), fits=4, error=RuntimeError, text="shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not every RuntimeError is memory
        other.run(x)


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("controller", ["static", "batchsizer"])
def test_a_job_goes_on_in_smaller_batches_with_every_item_once(prefetch: int, controller: str) -> None:
    model = SmallMemory(tiny_cnn(), fits=5)
    w = _workload(model, items=203)
    opts = {"batch_size": 32} if controller == "static" else {"sizes": (4, 8, 16, 32), "initial": 32}
    stream = DynamicBatchStream(w.source, prefetch=prefetch, prepare=w.prepare)
    seen = Seen()
    with w.device:
        loop = ControlLoop(w.device, make_controller(controller, **opts), ConstantCap(1000), Window(batches=3), [seen])
        summary = loop.run(stream)
    assert summary.items == 203
    assert seen.first == [sum(seen.sizes[:i]) for i in range(len(seen.sizes))]  # in order, none twice
    assert seen.outputs == _expected(w, 203)  # and each item's own prediction
    # 32 failed, then 16, then 8: halves until a batch fitted; nothing over 4 ran after that
    assert [e["limit"] for k, e in seen.events if k == "out-of-memory"] == [16, 8, 4]
    assert max(seen.sizes) <= 4 and loop.size_limit == 4
    assert summary.counts["out_of_memory"] == 3 and any("did not fit" in n for n in summary.notes)
    assert max(model.tried[model.tried.index(4) :]) <= 4  # no batch over the limit was even tried again


def test_not_even_one_item_fits_is_a_clear_error() -> None:
    w = _workload(SmallMemory(tiny_cnn(), fits=0), items=10)
    stream = DynamicBatchStream(w.source, prepare=w.prepare)
    with w.device, pytest.raises(DeviceError, match="not even one item fits"):
        ControlLoop(w.device, make_controller("static", batch_size=4), ConstantCap(1000), Window(batches=2)).run(stream)


def test_the_profile_stops_at_the_first_size_that_does_not_fit() -> None:
    w = _workload(SmallMemory(tiny_cnn(), fits=8), items=64)
    lines: list[str] = []
    with w.device:
        result = run_profile(w, (2, 4, 8, 16, 32), batches=2, warmup=1, echo=lines.append)
    assert [r["batch_size"] for r in result["rows"]] == [2, 4, 8]
    assert [(o["batch_size"], o["clock_mhz"]) for o in result["out_of_memory"]] == [(16, None)]
    assert any("batch 16: a batch of 16 items does not fit" in line and "not tried" in line for line in lines)


#: the user's tiny CNN, failing batches of more than 5 items as a full GPU does
SMALL_MEMORY_SUBCLASS = """
class SmallMemory(Net):
    def forward(self, x):
        if x.shape[0] > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)
"""


def test_the_command_goes_on_and_every_output_is_written(tmp_path) -> None:
    """`batchsizer run` with a model that runs out of memory above 5 items: the job ends normally,
    --save-outputs holds every item once, in order, and the summary says what happened."""
    import json

    from click.testing import CliRunner

    from batchsizer.cli import cli
    from batchsizer.io.outputs import read_outputs

    (tmp_path / "net.py").write_text(TINY_CNN_SOURCE + SMALL_MEMORY_SUBCLASS)
    out, js = tmp_path / "o.jsonl", tmp_path / "s.json"
    args = ["run", "-q", "--device", "cpu", "--model", f"{tmp_path / 'net.py'}:SmallMemory", "--input-size", "32"]
    args += ["--items", "70", "--controller", "static", "--batch-size", "16", "--workers", "0"]
    result = CliRunner().invoke(cli, [*args, "--save-outputs", str(out), "--json", str(js)])
    assert result.exit_code == 0, result.output + result.stderr
    _, lines = read_outputs(out)
    assert [line["id"] for line in lines] == list(range(70))
    summary = json.loads(js.read_text())
    assert summary["items"] == 70 and summary["counts"]["out_of_memory"] == 2  # 16 -> 8 -> 4
    assert any("more than 4 items did not fit" in n for n in summary["notes"])
    assert "did not fit" in result.output
