"""Per-item outputs (``--save-outputs``), written as the job runs, and resuming from them (``--resume``).

The file is JSON Lines: a first ``{"job": {...}}`` line saying which job wrote it, then one
``{"id": N, "output": ...}`` line per item, in item order, appended and flushed after every batch.
Items are processed in order, so the complete lines are exactly items 0..k-1; a job killed at any
point leaves at most a partial last line, which resuming cuts off. Resuming then starts the stream
at item k: no item is processed twice into the file and none is skipped.

Simulated and scripted devices compute no predictions; for them the output is a deterministic
placeholder class derived from the job and the item id (``"placeholder": true`` in the job line),
so that resumed and uninterrupted runs can still be compared item by item.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from batchsizer.core.batching import Batch
from batchsizer.core.device import BatchOutcome
from batchsizer.core.loop import LoopObserver, PeriodRecord
from batchsizer.core.summary import Summary
from batchsizer.core.types import Setting
from batchsizer.errors import ConfigError, DeviceError

#: what a job line must agree on for a resume to be the same job
IDENTITY_KEYS = ("device", "model", "dataset", "items", "images", "seed")

#: device kinds that return no predictions and get placeholders
PLACEHOLDER_KINDS = ("sim", "table", "scripted")


def job_identity(**fields: Any) -> dict[str, Any]:
    """The fields that make two runs the same job, JSON-ready."""
    return {k: (str(fields[k]) if isinstance(fields.get(k), Path) else fields.get(k)) for k in IDENTITY_KEYS}


def placeholder_output(identity: dict[str, Any], item_id: int) -> int:
    """A deterministic stand-in class (0..999) for a device that computes no predictions."""
    key = f"{identity.get('model')}|{identity.get('dataset')}|{identity.get('seed')}|{item_id}"
    return zlib.crc32(key.encode()) % 1000


def cut_partial_line(path: Path) -> int:
    """Truncate a file after its last newline (the line a killed job was writing); returns bytes cut."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        pos = size
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            data = f.read(pos - start)
            nl = data.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        if keep < size:
            f.truncate(keep)
        return size - keep


def read_done(path: Path, identity: dict[str, Any]) -> int:
    """How many leading items a previous run of the same job wrote to ``path`` (after cutting a partial line)."""
    cut_partial_line(path)
    done = 0
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        if not first:
            return 0
        try:
            header = json.loads(first)["job"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError("resume", f"{path} is not an outputs file written by batchsizer --save-outputs") from None
        mismatched = [k for k in IDENTITY_KEYS if header.get(k) != identity.get(k)]
        if mismatched:
            diffs = ", ".join(f"{k} {header.get(k)!r} there, {identity.get(k)!r} now" for k in mismatched)
            raise ConfigError("resume", f"{path} was written by a different job ({diffs})")
        for lineno, line in enumerate(f, start=2):
            try:
                item_id = json.loads(line)["id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError("resume", f"{path} line {lineno} is not an output line") from None
            if item_id != done:
                raise ConfigError("resume", f"{path} line {lineno} has item {item_id}, expected {done}")
            done += 1
    return done


def prepare_outputs(path: Path, identity: dict[str, Any], resume: bool) -> int:
    """Check ``--save-outputs``/``--resume`` before the job starts; returns the item to start from."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("save-outputs", f"{path} is a folder; give a file path such as outputs.jsonl")
    if not path.exists():
        return 0
    if not resume:
        raise ConfigError(
            "save-outputs", f"{path} already exists; add --resume to continue that job, or choose another file"
        )
    try:
        return read_done(path, identity)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("resume", f"cannot read {path}: {exc}") from None


def _per_item(outputs: Any, n: int) -> list[Any]:
    if hasattr(outputs, "detach"):
        outputs = outputs.detach().cpu()
    if hasattr(outputs, "tolist"):
        outputs = outputs.tolist()
    if not isinstance(outputs, Sequence) or isinstance(outputs, (str, bytes)) or len(outputs) != n:
        got = len(outputs) if isinstance(outputs, Sequence) else type(outputs).__name__
        raise DeviceError(f"the device returned {got} outputs for a batch of {n} items")
    return list(outputs)


class OutputWriter(LoopObserver):
    """Appends each batch's per-item outputs with their ids and flushes; fsyncs at period ends."""

    def __init__(
        self,
        path: Path,
        identity: dict[str, Any],
        start: int = 0,
        *,
        placeholder: bool = False,
        skipped: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.identity = identity
        self.next_id = start
        self.placeholder = placeholder
        self.skipped = skipped
        if not self.path.parent.exists():  # checked with the options; never made on the user's behalf
            raise ConfigError("save-outputs", f"cannot write {self.path}: the folder {self.path.parent} does not exist")
        try:
            new = start == 0 and (not self.path.exists() or self.path.stat().st_size == 0)
            self._file: IO[str] = open(self.path, "w" if new else "a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError("save-outputs", f"cannot write {self.path}: {exc.strerror or exc}") from None
        if new:
            self._write_line({"job": {**identity, "placeholder": placeholder}})

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._file.flush()

    def on_batch(self, index: int, batch: Batch[Any], outcome: BatchOutcome, setting: Setting) -> None:
        """Append one line per item (id and output, or why it was skipped) in one write, then flush.

        DeviceError when batches come out of order or the device gave no outputs and placeholders are off.
        """
        if batch.first_index != self.next_id:
            raise DeviceError(
                f"outputs out of order: batch starts at item {batch.first_index}, expected {self.next_id}"
            )
        ids = batch.indices
        if outcome.outputs is None:
            if not self.placeholder:
                raise DeviceError("--save-outputs: this device returned no outputs for its batches")
            values: list[Any] = [placeholder_output(self.identity, i) for i in ids]
        else:
            values = _per_item(outcome.outputs, len(batch))
        lines = []
        for i, item, value in zip(ids, batch.items, values):
            reason = self.skipped(item) if self.skipped is not None else None
            obj = {"id": i, "skipped": reason} if reason else {"id": i, "output": value}
            lines.append(json.dumps(obj, separators=(",", ":")))
        self._file.write("\n".join(lines) + "\n")  # one write, then flush: a kill leaves whole lines
        self._file.flush()
        self.next_id = ids.stop

    def on_period(self, record: PeriodRecord) -> None:
        """fsync the file, so a crash loses at most the current period's outputs."""
        os.fsync(self._file.fileno())

    def on_end(self, summary: Summary) -> None:
        """Close the file at the end of the job."""
        self.close()

    def close(self) -> None:
        """Flush, fsync and close the file; nothing if already closed."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def read_outputs(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The job line and the complete item lines of an outputs file (for tests and scripts)."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    if not lines:
        return {}, []
    header = json.loads(lines[0])["job"]
    items = [json.loads(ln) for ln in lines[1:] if ln.endswith("\n")]
    return header, items
