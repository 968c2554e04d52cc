"""What a fleet is made of: ``--gpu DEVICE[:MODEL[@DATASET]]`` and the ``--fleet FILE`` TOML.

A worker is a simulated GPU, ``sim:GPU[:MODEL[@DATASET]]`` (``sim:p40``, ``sim:v100:mobv2@imagenet``), or
a measured table played back as one, named as ``run --device`` names it (docs/tables.md):
``table:PATH.csv[:SELECTOR]`` or ``sim:zeus-<v100|a40>:NETWORK[@DATASET][+OPTIMIZER]``. A table is
opened (read and checked) here, once, so a missing file, a bad selector or a table that does not
parse is one error naming the worker before anything runs.

A fleet file lists workers as ``[[worker]]`` tables with ``device``, and optionally ``model``,
``dataset`` (simulated GPUs only), ``items`` (the number of items of that worker's job), ``weight``
(its throughput counts this much in the total), ``name`` and ``job``. A table's relative path is
taken from the fleet file's folder. Jobs: workers with the same
``job`` share one queue of items; without one, simulated GPUs with the same model and data set
share one (``model@dataset``), and table workers naming the same table (the same device text, case
aside) share one, never with a simulated GPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchsizer.errors import BatchSizerError, ConfigError
from batchsizer.sim.gpus import GPUS
from batchsizer.sim.models import get_dataset, get_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class GpuSpec:
    """One worker as the user gave it.

    ``gpu`` is the simulated GPU (``p40``) or, for a table worker, the device text as given
    (``table:mygpu.csv``); ``device`` is what a table worker opens (its path made absolute, so a worker
    in another process finds it), empty for a simulated GPU. A table worker's ``model`` and ``dataset``
    are labels: its Zeus selector's network and data set, else the file's stem."""

    gpu: str
    model: str
    dataset: str
    weight: float = 1.0
    items: int | None = None
    name: str | None = None
    device: str = ""
    job: str | None = None
    #: which of ``model`` and ``dataset`` came from the command's defaults (the worker named neither)
    defaults_used: frozenset[str] = frozenset()

    @property
    def table(self) -> bool:
        """Whether this worker plays a measured table."""
        return bool(self.device)

    @property
    def job_key(self) -> str:
        """Its job: the ``job`` given, else its table (the device text, lower case) or ``model@dataset``."""
        if self.job is not None:
            return self.job
        if self.table:
            return self.gpu.lower()
        return f"{self.model.lower()}@{self.dataset.lower()}"

    def worker_name(self, index: int) -> str:
        """Its name: the one given, else the device and its place (``p40-0``, ``zeus-v100-1``, ``table-2``)."""
        return self.name or (f"{_table_prefix(self.gpu)}-{index}" if self.table else f"{self.gpu}-{index}")


def is_table(text: str) -> bool:
    """``table:...`` or ``sim:zeus-...``: a worker that plays a measured table (as ``run --device`` names one)."""
    from batchsizer.core.workloads import options_kind

    return options_kind(text) == "table"


def open_table(text: str, seed: int = 0) -> Any:
    """The table device ``text`` names, opened as ``batchsizer run --device`` opens it (its default sensor,
    the table's idle power and host phase)."""
    from batchsizer.core.workloads import WorkloadOptions, open_workload

    return open_workload(WorkloadOptions(device=text, seed=seed, items=1)).device


def _table_prefix(text: str) -> str:
    """``zeus-v100`` for ``sim:zeus-v100:...``, ``table`` for ``table:...``."""
    head = text.strip().lower().removeprefix("sim:").split(":", 1)[0]
    return head if head.startswith("zeus-") else "table"


def parse_table(text: str, worker: str, base: Path | None = None) -> GpuSpec:
    """A table worker: the table read and checked once (ConfigError naming ``worker`` and the problem;
    DataUnavailable, with ``run``'s message, for a ``sim:zeus-`` name when the shipped data is absent).
    A relative path is taken from ``base`` where given (a fleet file's folder)."""
    from batchsizer.io.shared_data import DataUnavailable
    from batchsizer.sim.table_plant import absolute_table_name

    raw = text.strip()
    try:
        device = absolute_table_name(raw, base)
        opened = open_table(device)
    except DataUnavailable as exc:
        raise DataUnavailable(f"worker {worker} ({raw}): {exc}") from None
    except BatchSizerError as exc:
        raise ConfigError("gpu", f"worker {worker} ({raw}): {getattr(exc, 'problem', exc)}") from None
    try:
        plant = opened.plant
        stem = Path(plant.path).stem
        return GpuSpec(raw, plant.network or stem, plant.dataset or stem, device=device)
    finally:
        opened.close()


def parse_gpu(text: str, model: str, dataset: str, index: int = 0) -> GpuSpec:
    """``sim:p40``, ``sim:p40:res101``, ``sim:p40:mobv2@imagenet`` -> a spec (names checked); a table
    (``table:PATH.csv[:SELECTOR]``, ``sim:zeus-GPU:SELECTOR``) is read and checked (:func:`parse_table`),
    its errors naming the worker by its default name (``index``: its place in the fleet)."""
    raw = text.strip()
    if is_table(raw):
        return parse_table(raw, f"{_table_prefix(raw)}-{index}")
    head, _, ds = raw.partition("@")
    parts = head.split(":")
    if len(parts) < 2 or parts[0].lower() != "sim" or not parts[1]:
        raise ConfigError(
            "gpu",
            f"must be sim:GPU[:MODEL[@DATASET]] with GPU one of {', '.join(GPUS)}, table:PATH.csv[:SELECTOR] or "
            f"sim:zeus-<v100|a40>:NETWORK[@DATASET] (fleet runs simulated GPUs and measured tables), got {text!r}",
        )
    if len(parts) > 3:
        raise ConfigError("gpu", f"must be sim:GPU[:MODEL[@DATASET]], got {text!r}")
    gpu = parts[1].strip().lower()
    if gpu not in GPUS:
        raise ConfigError("gpu", f"unknown simulated GPU {parts[1]!r} in {text!r}; choose one of {', '.join(GPUS)}")
    named_model = len(parts) == 3 and bool(parts[2])
    m = parts[2] if named_model else model
    d = ds or dataset
    used = frozenset(k for k, named in (("model", named_model), ("dataset", bool(ds))) if not named)
    return GpuSpec(gpu, get_model(m).abbr, get_dataset(d).name, defaults_used=used)


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
        raise ConfigError("fleet", f"{p} needs [[worker]] tables, each with device = \"sim:...\" or \"table:...\"")
    unknown = set(data) - {"worker"}
    if unknown:
        raise ConfigError("fleet", f"{p}: unknown key(s) {', '.join(sorted(unknown))}; only [[worker]] tables")
    out = []
    allowed = {"device", "model", "dataset", "items", "weight", "name", "job"}
    for k, w in enumerate(workers, start=1):
        if not isinstance(w, dict) or "device" not in w:
            raise ConfigError("fleet", f"{p}: worker {k} needs device = \"sim:GPU\" or \"table:PATH.csv\"")
        bad = set(w) - allowed
        if bad:
            raise ConfigError("fleet", f"{p}: worker {k}: unknown key(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(allowed))}")
        name = w.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name):
            raise ConfigError("fleet", f"{p}: worker {k} name must be a non-empty word without '/', got {name!r}")
        job = w.get("job")
        if job is not None and (not isinstance(job, str) or not job.strip()):
            raise ConfigError("fleet", f"{p}: worker {k} job must be a non-empty name, got {job!r}")
        device = str(w["device"])
        if is_table(device):
            given = sorted({"model", "dataset"} & set(w))
            if given:
                raise ConfigError("fleet", f"{p}: worker {k}: {' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to simulated GPUs only; a "
                                  f"table worker ({device}) plays its table")
            try:
                base = parse_table(device, name or f"{_table_prefix(device)}-{k - 1}", p.parent)
            except ConfigError as exc:
                raise ConfigError("fleet", f"{p}: {exc.problem}") from None
        else:
            base = parse_gpu(device, str(w.get("model", model)), str(w.get("dataset", dataset)))
            named = sorted({"model", "dataset"} & set(w) - base.defaults_used)
            if named:  # the device text names it too: one of the two would be ignored
                raise ConfigError("fleet", f"{p}: worker {k}: {device!r} names its {' and '.join(named)}; give "
                                  f"{'them' if len(named) > 1 else 'it'} once, in device or as a key")  # fmt: skip
        weight = _number(w.get("weight", 1.0), f"worker {k} weight", positive=True)
        items = w.get("items")
        if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items < 1):
            raise ConfigError("fleet", f"{p}: worker {k} items must be a whole number of at least 1, got {items!r}")
        out.append(GpuSpec(base.gpu, base.model, base.dataset, weight, items, name, base.device,
                           job.strip() if job is not None else None, base.defaults_used - set(w)))
    return out


def _number(value: Any, field: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("fleet", f"{field} must be a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError("fleet", f"{field} must be positive, got {value!r}")
    return float(value)


def job_items(specs: list[GpuSpec], default_items: int) -> dict[str, int]:
    """Items per job (:attr:`GpuSpec.job_key`); workers of one job must agree on ``items`` where they give it."""
    jobs: dict[str, int] = {}
    given: dict[str, int] = {}
    for s in specs:
        key = s.job_key
        if s.items is not None:
            if key in given and given[key] != s.items:
                raise ConfigError("fleet", f"workers of job {key} give different items ({given[key]} and {s.items})")
            given[key] = s.items
        jobs[key] = default_items
    jobs.update(given)
    return jobs
