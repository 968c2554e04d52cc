"""The package layout is a map, and its layers hold: devices (sim/, hw/, the device interface and the
scripted test device) import only the core, never the controllers; the core imports none of the
packages built on it and the controllers only the core; and importing the core, the controllers, the simulator and the CLI loads no
optional heavy dependency (torch, FastAPI, Ray)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import batchsizer

PACKAGE = Path(batchsizer.__file__).resolve().parent

#: modules that make or describe devices: they see the core's types, not the controllers
DEVICE_MODULES = ["sim", "hw", "core/device.py", "testing/scripted.py"]

#: what the core must not import: the packages built on top of it
ABOVE_CORE = ["policies", "sim", "hw", "repro", "cli", "serve", "fleet", "io", "ui", "testing"]


def _modules(entry: str) -> list[Path]:
    path = PACKAGE / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _imported(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions count), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "batchsizer":  # from batchsizer import policies
                found.extend((node.lineno, f"batchsizer.{a.name}") for a in node.names)
    return found


def _offending(entries: list[str], forbidden: list[str]) -> list[str]:
    bad = []
    for entry in entries:
        paths = _modules(entry)
        assert paths and all(p.exists() for p in paths), f"{entry} is not in the package (layout changed?)"
        for path in paths:
            for line, name in _imported(path):
                if any(name == f"batchsizer.{f}" or name.startswith(f"batchsizer.{f}.") for f in forbidden):
                    bad.append(f"{path.relative_to(PACKAGE)}:{line}: imports {name}")
    return bad


def test_devices_do_not_import_the_controllers() -> None:
    bad = _offending(DEVICE_MODULES, ["policies"])
    assert not bad, "devices must take their types from batchsizer.core:\n" + "\n".join(bad)


def test_the_core_imports_nothing_built_on_it() -> None:
    bad = _offending(["core"], ABOVE_CORE)
    assert not bad, "batchsizer.core is the bottom layer:\n" + "\n".join(bad)


def test_the_controllers_import_only_the_core() -> None:
    bad = _offending(["policies"], [f for f in ABOVE_CORE if f != "policies"])
    assert not bad, "controllers are pure policies over the core's types:\n" + "\n".join(bad)


def test_the_top_level_is_a_map() -> None:
    """Only the package's entry points and its errors sit beside the folders."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py"], top
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == ["cli", "core", "fleet", "hw", "io", "policies", "repro", "serve", "sim", "testing", "ui"]


def test_module_names_say_which_device() -> None:
    """One module per name for devices: no two called device/devices (the CLI's `devices` command aside)."""
    named = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.stem in ("device", "devices") and p.parent.name != "commands"
    ]
    assert named == ["core/device.py"], named


def test_core_controllers_sim_and_cli_load_no_heavy_optional_dependency() -> None:
    code = (
        "import sys, pkgutil, importlib, batchsizer, batchsizer.core, batchsizer.cli, batchsizer.policies, "
        "batchsizer.sim, batchsizer.sim.workload, batchsizer.io.recorder, batchsizer.ui.live\n"
        "for m in pkgutil.iter_modules(batchsizer.core.__path__):\n"
        "    importlib.import_module('batchsizer.core.' + m.name)\n"
        "print(sorted(n for n in ('torch', 'torchvision', 'fastapi', 'uvicorn', 'ray') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
