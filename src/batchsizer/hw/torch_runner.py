"""PyTorch inference for the real devices: a model by name or any ``nn.Module``, run batch by batch.

Models by name come from torchvision's classification models (random weights unless a checkpoint
is given), with the paper's names accepted too (IncV1 -> googlenet, Res101 -> resnet101, ...).
The model runs in eval mode under ``torch.inference_mode``, optionally in half precision and
channels-last. On a GPU the batch's end is taken after ``torch.cuda.synchronize`` once per batch
(not after every op), so batch times are the GPU's and not the launch queue's.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from batchsizer.errors import ConfigError, OutOfMemoryError
from batchsizer.hw.memory import retain_freed_memory

#: the paper's DNN names (Table 1) that torchvision has, to torchvision's names
PAPER_NAMES = {
    "incv1": "googlenet",
    "incv3": "inception_v3",
    "mobv2": "mobilenet_v2",
    "res50": "resnet50",
    "res101": "resnet101",
    "res152": "resnet152",
}
#: the paper's models torchvision lacks
NOT_IN_TORCHVISION = {
    "incv2": "Inception V2",
    "mobv1": "MobileNet V1",
    "nasnet": "NASNet-Mobile",
    "pnasnet": "PNASNet-Mobile",
}


def torch_module() -> Any:
    """The imported ``torch`` module, imported only when needed; ConfigError naming the extra if absent."""
    try:
        import torch
    except ImportError:
        raise ConfigError("device", "real devices need PyTorch: pip install 'batchsizer[vision]'") from None
    return torch


def parse_device(name: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` -> the torch device string (``cuda`` means ``cuda:0``)."""
    text = name.strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return "cuda:0"
    if text.startswith("cuda:") and text[5:].isdigit():
        return f"cuda:{int(text[5:])}"
    raise ConfigError("device", f"{name!r} is not a real device; use cpu, cuda or cuda:N (N a GPU number)")


def check_device_available(device: str) -> None:
    """ConfigError unless PyTorch can use ``device`` (``cpu`` or ``cuda:N`` with N in range)."""
    torch = torch_module()
    if device == "cpu":
        return
    if not torch.cuda.is_available():
        raise ConfigError("device", f"{device} asked but PyTorch sees no CUDA GPU (CPU-only torch build, or no driver)")
    index = int(device.split(":")[1])
    if index >= torch.cuda.device_count():
        raise ConfigError("device", f"{device} asked but PyTorch sees {torch.cuda.device_count()} GPU(s)")


def torchvision_names() -> list[str]:
    """The classification model names torchvision offers; ConfigError if torchvision is absent."""
    try:
        from torchvision import models
    except ImportError:
        raise ConfigError("model", "models by name need torchvision: pip install 'batchsizer[vision]'") from None
    return list(models.list_models(module=models))


def resolve_name(name: str) -> str:
    """The torchvision name for ``name`` (case, dashes and the paper's abbreviations accepted); ConfigError else."""
    key = name.strip().lower().replace("-", "_")
    if key.replace("_", "") in NOT_IN_TORCHVISION:
        full = NOT_IN_TORCHVISION[key.replace("_", "")]
        raise ConfigError(
            "model", f"{name} ({full}) is not in torchvision; pass the module yourself or pick another model"
        )
    key = PAPER_NAMES.get(key.replace("_", ""), key)
    names = torchvision_names()
    if key not in names:
        raise ConfigError("model", f"unknown model {name!r}; torchvision has: {', '.join(names)}")
    return key


def input_size(model_name: str) -> int:
    """The side of the square input the model expects."""
    return 299 if model_name == "inception_v3" else 224


def build_model(name: str, checkpoint: Path | None = None) -> Any:
    """A torchvision classification model, random weights unless ``checkpoint`` (a state dict file) is given."""
    from torchvision import models

    key = resolve_name(name)
    kwargs: dict[str, Any] = {"weights": None}
    if key in ("googlenet", "inception_v3"):
        # no auxiliary heads at inference; skip the scipy-based init that random weights would run
        kwargs.update(aux_logits=False, init_weights=False)
    model = models.get_model(key, **kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def load_checkpoint(model: Any, path: Path) -> None:
    """Load a state dict file into ``model`` strictly (``module.`` prefixes and aux heads dropped).

    ConfigError when the file is missing, not a state dict, or does not fit the model.
    """
    torch = torch_module()
    path = Path(path)
    if not path.is_file():
        raise ConfigError("checkpoint", f"{path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError("checkpoint", f"{path} is not a loadable PyTorch state dict ({exc})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ConfigError("checkpoint", f"{path} holds a {type(state).__name__}, not a state dict")
    state = {
        k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise ConfigError("checkpoint", f"{path} does not fit the model: {' '.join(first)}") from None


class TorchRunner:
    """Runs one model on one device, a batch at a time, returning the predicted class of each item.

    ``retain_memory`` (default on) tells glibc to keep freed memory for reuse, process-wide
    (:mod:`batchsizer.hw.memory`); it makes CPU inference up to a third faster and its speed steady.
    """

    def __init__(
        self,
        model: Any,
        device: str = "cpu",
        *,
        half: bool = False,
        channels_last: bool = False,
        retain_memory: bool = True,
    ) -> None:
        torch = torch_module()
        if retain_memory:  # see batchsizer.hw.memory: else CPU batches page-fault their activations in anew
            retain_freed_memory()
        self.torch = torch
        self.device = torch.device(device)
        self.is_cuda = self.device.type == "cuda"
        if half and not self.is_cuda:
            raise ConfigError("half", "half precision is for cuda devices; on cpu run in float32")
        self.dtype = torch.float16 if half else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if not isinstance(model, torch.nn.Module):
            raise ConfigError("model", f"expected a torch.nn.Module, got {type(model).__name__}")
        with contextlib.suppress(NotImplementedError):  # an exported program runs in the mode it was exported in
            model.eval()
        self.model = model.to(self.device, dtype=self.dtype, memory_format=self.memory_format)

    def to_input(self, batch: Any) -> Any:
        """A CPU tensor (uint8 NCHW or float) -> the model's device, dtype and layout (normalised if uint8)."""
        torch = self.torch
        x = batch if isinstance(batch, torch.Tensor) else torch.as_tensor(batch)
        # each conversion only where needed: a no-op .to() still costs a dispatch per batch
        if x.device != self.device:
            x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = normalize(x.to(self.dtype))
        if x.dtype != self.dtype or not x.is_contiguous(memory_format=self.memory_format):
            x = x.to(dtype=self.dtype, memory_format=self.memory_format)
        return x

    def head(self, logits: Any) -> Any:
        """The answer computed on the device from the (N, classes) logits: here the arg-max per item."""
        return logits.argmax(dim=1)

    def rows(self, answer: Any) -> list[Any]:
        """:meth:`head`'s answer -> one Python value per item (after the batch's end is taken)."""
        return (answer.cpu() if self.is_cuda else answer).tolist()

    def run(self, batch: Any) -> tuple[float, float, list[Any]]:
        """(start, end, :meth:`rows` of the batch: the predicted class per item) with ``time.monotonic``
        times, true on a GPU."""
        torch = self.torch
        start = time.monotonic()
        try:
            with torch.inference_mode():
                out = self.model(self.to_input(batch))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                elif not isinstance(out, torch.Tensor) and hasattr(out, "logits"):
                    out = out.logits
                answer = self.head(out)
                if self.is_cuda:
                    torch.cuda.synchronize(self.device)
                end = time.monotonic()
                labels = self.rows(answer)
        except RuntimeError as exc:  # torch.OutOfMemoryError is one; the CPU allocator raises a plain one
            if not is_out_of_memory(torch, exc):
                raise
        else:
            return start, end, labels
        # out of the except block, so the failed batch's frames and tensors are already released
        if self.is_cuda:
            torch.cuda.empty_cache()  # give back what the failed batch reserved before smaller ones run
        raise OutOfMemoryError(len(batch), str(self.device))

    def describe(self) -> dict[str, Any]:
        """The model class, torch device, dtype and memory format, for the job's records."""
        return {
            "model": type(self.model).__name__,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "channels_last": self.memory_format is self.torch.channels_last,
        }


def is_out_of_memory(torch: Any, exc: BaseException) -> bool:
    """Whether ``exc`` says a tensor could not be allocated (CUDA, or the CPU allocator)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "can't allocate memory" in text


_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


_SCALES: dict[tuple[Any, Any], tuple[Any, Any]] = {}


def normalize(x: Any) -> Any:
    """uint8-range NCHW floats -> ImageNet-normalised, on the tensor's own device."""
    key = (x.device, x.dtype)
    scales = _SCALES.get(key)
    if scales is None:  # made once per device and dtype, not per batch
        torch = torch_module()
        with torch.inference_mode(False):  # ordinary tensors, usable in and out of inference mode
            mean = torch.tensor(_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255
            std = torch.tensor(_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255
        scales = _SCALES[key] = (mean, std)
    mean, std = scales
    return (x - mean) / std
