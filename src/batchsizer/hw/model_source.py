"""Where a real device's model comes from: a torchvision name, a TorchScript file, or the user's own code.

``--model`` takes any of three forms, checked in this order:

* ``FILE.py:NAME`` or ``package.module:NAME``: the user's Python code. ``NAME`` is an
  ``nn.Module`` instance, or a class or function that returns one when called with no arguments.
  A dotted module is looked up from the current folder first, as ``python -m`` would.
* a ``torch.export`` archive (``.pt2``, what ``torch.export.save`` writes), exported with a
  dynamic batch dimension; it runs as exported (its input size is read from it; no --half,
  --channels-last or --checkpoint).
* a path to a TorchScript archive (what ``torch.jit.save`` writes; ``.pt``/``.pth``/``.ts``...).
* a torchvision classification model name, or one of the paper's names (IncV1 -> googlenet, ...).

A state dict is not a model: it goes with ``--checkpoint`` beside one of the forms above.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.hw.torch_runner import build_model, input_size, load_checkpoint, resolve_name, torch_module

#: ``something:NAME`` where NAME is a Python identifier (a Windows drive letter is no module)
_CODE_SPEC = re.compile(r"^(?P<module>.+?):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")
#: side of the square input for models that do not say (torchvision's classifiers use 224)
DEFAULT_INPUT_SIDE = 224


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: the module, its name, the input side it expects and where it came from."""

    module: Any
    name: str
    #: the side of the square input it expects
    side: int
    #: "torchvision", "export", "torchscript" or "code"
    kind: str


def is_model_reference(text: str) -> bool:
    """Whether ``--model`` names a file or Python code rather than a model by name."""
    match = _CODE_SPEC.match(text)
    if match and len(match["module"]) > 1:
        return True
    return os.sep in text or text.endswith((".pt", ".pth", ".pt2", ".ts", ".py")) or Path(text).is_file()


def load_model(
    text: str,
    checkpoint: Path | None = None,
    side: int | None = None,
    *,
    device: str = "cpu",
    half: bool = False,
    channels_last: bool = False,
) -> LoadedModel:
    """The model ``--model`` names, with ``checkpoint`` loaded into it; ``side`` overrides its input size.

    ``device``, ``half`` and ``channels_last`` matter only to an exported program, which is moved to
    the device here and cannot be converted afterwards."""
    match = _CODE_SPEC.match(text)
    if match and len(match["module"]) > 1:
        module, name, kind = _from_code(match["module"], match["attr"]), text, "code"
    elif text.endswith(".pt2"):
        for flag, given in (
            ("--checkpoint", checkpoint is not None),
            ("--half", half),
            ("--channels-last", channels_last),
        ):
            if given:
                raise ConfigError(
                    "model", f"{text} is an exported program, which runs as exported: leave {flag} out (export it so)"
                )
        module, exported_side = _from_export(Path(text), device)
        return LoadedModel(module, Path(text).name, side or exported_side or DEFAULT_INPUT_SIDE, "export")
    elif is_model_reference(text):
        module, name, kind = _from_torchscript(Path(text)), Path(text).name, "torchscript"
    else:
        name = resolve_name(text)
        return LoadedModel(build_model(name, checkpoint), name, side or input_size(name), "torchvision")
    if checkpoint is not None:
        load_checkpoint(module, checkpoint)
    return LoadedModel(module, name, side or DEFAULT_INPUT_SIDE, kind)


def _from_export(path: Path, device: str) -> tuple[Any, int | None]:
    """The exported program's module on ``device``, and the side of its square input if it has one."""
    torch = torch_module()
    _check_file(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ConfigError("model", f"{path} is not a torch.export archive ({_first_line(exc)})") from None
    inputs = set(program.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        raise ConfigError(
            "model", f"{path} takes inputs of shapes {[tuple(s) for s in shapes]}; one NCHW image batch is needed"
        )
    (shape,) = shapes
    if not isinstance(shape[0], torch.SymInt):
        raise ConfigError(
            "model",
            f"{path} was exported for batches of exactly {shape[0]}; BatchSizer changes the batch size, so export "
            "it with a dynamic batch: torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))",
        )
    if device != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    side = int(shape[2]) if isinstance(shape[2], int) and shape[2] == shape[3] else None
    return program.module(), side


def _check_file(path: Path) -> None:
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not found"
        raise ConfigError(
            "model", f"{path} is {what}; give a model file (.pt2, TorchScript), FILE.py:NAME or a torchvision name"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _from_torchscript(path: Path) -> Any:
    torch = torch_module()
    _check_file(path)
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ConfigError(
            "model",
            f"{path} is not a TorchScript archive ({_first_line(exc)}); give a torch.export archive (.pt2), a "
            "TorchScript file, Python code as FILE.py:NAME, or put a state dict in --checkpoint beside a model name",
        ) from None


def _from_code(module_text: str, attr: str) -> Any:
    torch = torch_module()
    spec_text = f"{module_text}:{attr}"
    module = _import(module_text, spec_text)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError("model", f"{spec_text}: {module_text} has no {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise ConfigError(
                "model", f"{spec_text} is a {type(obj).__name__}, not an nn.Module or a function making one"
            )
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError("model", f"{spec_text}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, torch.nn.Module):
        raise ConfigError("model", f"{spec_text}() returned a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _import(module_text: str, spec_text: str) -> Any:
    """The module: from a .py file, or by dotted name with the current folder searched first."""
    try:
        if module_text.endswith(".py"):
            path = Path(module_text)
            if not path.is_file():
                raise ConfigError("model", f"{spec_text}: {path} is not a file")
            spec = importlib.util.spec_from_file_location(f"batchsizer_user_model_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        sys.path.insert(0, os.getcwd())
        try:
            return importlib.import_module(module_text)
        finally:
            sys.path.remove(os.getcwd())
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        raise ConfigError("model", f"{spec_text}: no module named {exc.name!r} (from the current folder)") from None
    except Exception as exc:  # the user's module raised while importing: say what and where
        raise ConfigError("model", f"{spec_text}: importing it failed: {type(exc).__name__}: {exc}") from None
