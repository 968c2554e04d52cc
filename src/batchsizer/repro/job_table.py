"""A user's own jobs for ``batchsizer reproduce --job-table FILE.csv``, instead of the paper's Table 2.

Columns (header names, any order): ``model``, ``dataset``, ``cap_w``; optional ``items`` (images
per job, else ``--items``) and ``device`` (``sim:<gpu>``, ``table:PATH.csv[:SELECTOR]`` or
``sim:zeus-...``, else the ``--gpu`` card). On a simulated GPU ``model`` and ``dataset`` are the
simulator's names (``batchsizer.sim.MODEL_NAMES``, ``DATASET_NAMES``); on a table device the table
is the workload and they are only labels (they may be empty). Jobs are numbered 1, 2, ... in file
order. Every problem is one ConfigError naming the file and the line.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from batchsizer.errors import BatchSizerError, ConfigError
from batchsizer.repro.job_devices import is_table_name
from batchsizer.repro.jobs import GPU_RANGE_W, Job

REQUIRED = ("model", "dataset", "cap_w")
OPTIONAL = ("items", "device")
FIELD = "job-table"


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError(FIELD, f"{path}: {problem}")


def _rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a folder; give a CSV file with the columns model,dataset,cap_w")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [(reader.line_num, {k: (v or "").strip() for k, v in r.items() if isinstance(k, str)})
                    for r in reader]
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _fail(path, f"is not a CSV text file ({exc})") from None
    if not header:
        raise _fail(path, "is empty; give a header line model,dataset,cap_w and one job per line")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise _fail(path, f"missing column {', '.join(missing)}; a job table has the columns model,dataset,cap_w "
                    f"(optional items, device); the header has {','.join(header)}")
    rows = [(n, r) for n, r in rows if any(r.values())]
    if not rows:
        raise _fail(path, "has a header but no jobs")
    return header, rows


def _device(path: Path, line: int, text: str, default_gpu: str) -> str:
    """The job's ``gpu`` as the device factory reads it, checked (a table is read once here)."""
    if not text:
        return default_gpu
    if is_table_name(text):
        from batchsizer.sim.table_plant import open_table_device

        try:
            open_table_device(text).close()
        except BatchSizerError as exc:
            raise _fail(path, f"line {line}, column device: {exc}") from None
        return text
    key = text.lower().removeprefix("sim:")
    if key not in GPU_RANGE_W:
        raise _fail(path, f"line {line}, column device: {text!r} is not a simulated GPU or a table; use "
                    f"{', '.join('sim:' + g for g in GPU_RANGE_W)}, table:PATH.csv[:SELECTOR] or sim:zeus-...")
    return key


def read_job_table(path: str | Path, gpu: str = "p40", items: int = 10_000) -> list[Job]:
    """The jobs of ``path``, numbered from 1, on ``gpu`` unless a row names its device."""
    p = Path(path)
    _, rows = _rows(p)
    jobs: list[Job] = []
    for n, (line, r) in enumerate(rows, start=1):
        where = f"line {line}"
        text = r.get("cap_w", "")
        try:
            cap = float(text)
        except ValueError:
            raise _fail(p, f"{where}, column cap_w: {text!r} is not a number of watts") from None
        if not math.isfinite(cap) or cap <= 0:
            raise _fail(p, f"{where}, column cap_w: must be above 0 W, got {text!r}")
        count = items
        if r.get("items"):
            try:
                count = int(r["items"])
            except ValueError:
                raise _fail(p, f"{where}, column items: {r['items']!r} is not a whole number") from None
            if count < 1:
                raise _fail(p, f"{where}, column items: must be at least 1, got {r['items']!r}")
        device = _device(p, line, r.get("device", ""), gpu)
        model, dataset = r.get("model", ""), r.get("dataset", "")
        if not is_table_name(device):
            from batchsizer.sim.models import get_dataset, get_model

            try:
                model, dataset = get_model(model).abbr, get_dataset(dataset).name
            except ConfigError as exc:
                raise _fail(p, f"{where}, column {exc.field}: {exc.problem}") from None
        jobs.append(Job(n, model, dataset, cap, cap, gpu=device, items=count))
    return jobs
