"""What a fleet is made of: ``--gpu DEVICE[:MODEL[@DATASET]]`` and the ``--fleet FILE`` TOML.

A fleet file lists workers as ``[[worker]]`` tables with ``device`` (``sim:p40``...), and
optionally ``model``, ``dataset``, ``items`` (the number of items of that worker's job), ``weight``
(its throughput counts this much in the total) and ``name``. Workers with the same model and data
set share one job: one queue of items.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.sim.gpus import GPUS
from batchsizer.sim.models import get_dataset, get_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class GpuSpec:
    """One worker as the user gave it."""

    gpu: str
    model: str
    dataset: str
    weight: float = 1.0
    items: int | None = None
    name: str | None = None


def parse_gpu(text: str, model: str, dataset: str) -> GpuSpec:
    """``sim:p40``, ``sim:p40:res101``, ``sim:p40:mobv2@imagenet`` -> a spec (names checked)."""
    raw = text.strip()
    head, _, ds = raw.partition("@")
    parts = head.split(":")
    if len(parts) < 2 or parts[0].lower() != "sim" or not parts[1]:
        raise ConfigError(
            "gpu",
            f"must be sim:GPU[:MODEL[@DATASET]] with GPU one of {', '.join(GPUS)} (fleet runs simulated GPUs), got {text!r}",
        )
    if len(parts) > 3:
        raise ConfigError("gpu", f"must be sim:GPU[:MODEL[@DATASET]], got {text!r}")
    gpu = parts[1].strip().lower()
    if gpu not in GPUS:
        raise ConfigError("gpu", f"unknown simulated GPU {parts[1]!r} in {text!r}; choose one of {', '.join(GPUS)}")
    m = parts[2] if len(parts) == 3 and parts[2] else model
    d = ds or dataset
    return GpuSpec(gpu, get_model(m).abbr, get_dataset(d).name)


def load_fleet_file(path: Path, model: str, dataset: str) -> list[GpuSpec]:
    """The workers of a fleet TOML file (see the module's docstring)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("fleet", f"{p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("fleet", f"cannot read {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("fleet", f"{p} is not valid TOML: {exc}") from None
    workers = data.get("worker")
    if not isinstance(workers, list) or not workers:
        raise ConfigError("fleet", f"{p} needs [[worker]] tables, each with device = \"sim:...\"")
    unknown = set(data) - {"worker"}
    if unknown:
        raise ConfigError("fleet", f"{p}: unknown key(s) {', '.join(sorted(unknown))}; only [[worker]] tables")
    out = []
    allowed = {"device", "model", "dataset", "items", "weight", "name"}
    for k, w in enumerate(workers, start=1):
        if not isinstance(w, dict) or "device" not in w:
            raise ConfigError("fleet", f"{p}: worker {k} needs device = \"sim:GPU\"")
        bad = set(w) - allowed
        if bad:
            raise ConfigError("fleet", f"{p}: worker {k}: unknown key(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(allowed))}")
        base = parse_gpu(str(w["device"]), str(w.get("model", model)), str(w.get("dataset", dataset)))
        weight = _number(w.get("weight", 1.0), f"worker {k} weight", positive=True)
        items = w.get("items")
        if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items < 1):
            raise ConfigError("fleet", f"{p}: worker {k} items must be a whole number of at least 1, got {items!r}")
        name = w.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name):
            raise ConfigError("fleet", f"{p}: worker {k} name must be a non-empty word without '/', got {name!r}")
        out.append(GpuSpec(base.gpu, base.model, base.dataset, weight, items, name))
    return out


def _number(value: Any, field: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("fleet", f"{field} must be a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError("fleet", f"{field} must be positive, got {value!r}")
    return float(value)


def job_items(specs: list[GpuSpec], default_items: int) -> dict[str, int]:
    """Items per job (model@dataset); workers of one job must agree on ``items`` where they give it."""
    jobs: dict[str, int] = {}
    given: dict[str, int] = {}
    for s in specs:
        key = f"{s.model.lower()}@{s.dataset.lower()}"
        if s.items is not None:
            if key in given and given[key] != s.items:
                raise ConfigError("fleet", f"workers of job {key} give different items ({given[key]} and {s.items})")
            given[key] = s.items
        jobs[key] = default_items
    jobs.update(given)
    return jobs
