"""Job records as JSON Lines, appended and flushed as the job runs, readable after a crash.

Each line is one JSON object with a ``type``: ``job`` (configuration), ``batch``, ``period``,
``power`` (sensor samples), ``event`` (warnings, faults, cap changes) and ``summary``. A crash can
leave at most a partial last line, which :func:`read_records` skips.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from batchsizer.errors import ConfigError


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RecordWriter:
    """Appends one JSON object per line and flushes it, so a crash loses at most the line in flight."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError("records", f"{self.path} is a folder; give a file path such as run.jsonl")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = open(self.path, "a" if append else "w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError("records", f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write(self, kind: str, /, **fields: Any) -> None:
        """One record; ``kind`` is positional-only so a field may itself be called ``kind``."""
        line = json.dumps({"type": kind, **_clean(fields)}, separators=(",", ":"), allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Push what was written to the disk (done at period ends and on close)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record in a file; a partial or corrupt line (a crash mid-write) is skipped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("records", f"{p} is not a file")
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # the line in flight when the job stopped
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "type" in obj:
                yield obj


def read_records(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by type."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rec in iter_records(path):
        grouped.setdefault(rec["type"], []).append(rec)
    return grouped


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    except OSError as exc:
        raise ConfigError("json", f"cannot write {p}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_clean(data), f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
