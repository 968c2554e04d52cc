"""Small models and a loaded fake GPU for tests of the real (torch) path: deterministic, milliseconds per batch."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from batchsizer.testing.fake_nvml import FakeGpu, FakeNvml


def tiny_cnn(classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, classes),
    )


#: the tiny CNN as a user's own model file (``--model net.py:build`` or ``net.py:Net``)
TINY_CNN_SOURCE = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(8, 10),
        )

    def forward(self, x):
        return self.body(x)

def build():
    return Net()
"""


class LoadedGpu:
    """A fake NVML GPU that draws ``load_w`` while a model wrapped by :meth:`wrap` runs a batch
    (``seconds_per_item`` per item of it) and ``idle_w`` otherwise, as a GPU's power follows its load."""

    def __init__(
        self,
        load_w: float,
        idle_w: float = 80.0,
        *,
        seconds_per_item: float = 0.002,
        update_period_s: float = 0.005,
        **gpu_options: Any,
    ) -> None:
        self.load_w, self.idle_w, self.seconds_per_item = load_w, idle_w, seconds_per_item
        self.busy_until = 0.0
        self.gpu = FakeGpu(power_fn=self.power, update_period_s=update_period_s, **gpu_options)

    def power(self, t: float) -> float:
        return self.load_w if t < self.busy_until else self.idle_w

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return _Loading(model, self)


class _Loading(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, load: LoadedGpu) -> None:
        super().__init__()
        self.inner = inner
        self.load = load

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.load.busy_until = time.monotonic() + self.load.seconds_per_item * x.shape[0]
        return self.inner(x)


def run_on_fake_gpu(monkeypatch: Any, load: LoadedGpu, *, permitted: bool = True) -> None:
    """Make ``cuda:0`` that fake GPU for the rest of the test: NVML faked, the process permitted to
    change its settings or not, and each model run on the CPU (wrapped to draw the load's power)
    where a GPU job would move it to the card. Everything else is what a GPU job runs."""
    from batchsizer.hw import gpu as gpu_module
    from batchsizer.hw import workload as workload_module
    from batchsizer.hw.torch_runner import TorchRunner

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([load.gpu]).module)
    monkeypatch.setattr(gpu_module, "settings_permission", lambda: None if permitted else "not root (test)")
    monkeypatch.setattr(workload_module, "check_device_available", lambda device: None)
    monkeypatch.setattr(
        workload_module, "TorchRunner", lambda model, device, **kw: TorchRunner(load.wrap(model), "cpu", **kw)
    )
