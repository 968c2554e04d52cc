"""Job records as JSON Lines, appended and flushed as the job runs, readable after a crash.

Each line is one JSON object with a ``type``: ``job`` (configuration), ``batch``, ``period``,
``power`` (sensor samples), ``event`` (warnings, faults, cap changes) and ``summary``. A crash can
leave at most a partial last line, which :func:`read_records` skips.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from batchsizer.errors import ConfigError
from batchsizer.io.paths import is_stdout, umask_mode


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
    """Writes one JSON object per line and flushes it, so a crash loses at most the line in flight.

    A new file replaces an old one of the same name unless ``append`` (``--resume``); ``-`` is
    standard output. The file's folder must exist: none is made."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = Path(path)
        self._stdout = is_stdout(path)
        if self._stdout:
            self._file: IO[str] = sys.stdout
            return
        if self.path.is_dir():
            raise ConfigError("records", f"{self.path} is a folder; give a file path such as run.jsonl")
        if not self.path.parent.exists():
            raise ConfigError("records", f"cannot write {self.path}: the folder {self.path.parent} does not exist")
        try:
            self._file = open(self.path, "a" if append else "w", encoding="utf-8")
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
        if not self._stdout:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Sync and close the file; standard output is flushed only, never closed."""
        if self._stdout:
            self._file.flush()
        elif not self._file.closed:
            self.sync()
            self._file.close()


def iter_numbered_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number from 1, record) for every complete record; a partial or corrupt line (a crash
    mid-write) is skipped. Files of older versions read the same (their fields are only fewer)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("records", f"{p} is not a file")
    with open(p, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                return  # the line in flight when the job stopped
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("type"), str):
                yield n, obj


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every complete record in a file; a partial or corrupt line (a crash mid-write) is skipped."""
    for _, obj in iter_numbered_records(path):
        yield obj


def read_records(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by type."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for rec in iter_records(path):
        grouped.setdefault(rec["type"], []).append(rec)
    return grouped


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file; with the
    mode a new file gets under the user's umask; ``-`` writes to standard output."""
    if is_stdout(path):
        click.echo(json.dumps(_clean(data), indent=2, allow_nan=False))
        return
    p = Path(path)
    if not p.parent.exists():
        raise ConfigError("json", f"cannot write {p}: the folder {p.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    except OSError as exc:
        raise ConfigError("json", f"cannot write {p}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, umask_mode())  # mkstemp makes 0600; a results file is the user's to share
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_clean(data), f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
