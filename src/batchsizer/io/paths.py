"""Output paths checked before a job starts, so a long run never ends in 'cannot write' and loses its results.

The check is done by trying: a temporary file is created (and removed at once) in the nearest folder
that exists, so a read-only file system, a missing permission or a file standing where a folder
should be are all caught, for root too (for whom permission bits say little). Nothing is left
behind. An output file's folder must exist already: a mistyped path never makes folders the user
did not ask for. ``-`` means standard output.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from batchsizer.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


#: the output path that means standard output
STDOUT = "-"


def is_stdout(path: object) -> bool:
    """Whether an output option was given as ``-`` (write to standard output)."""
    return path is not None and str(path) == STDOUT


def _probe_folder(folder: Path, field: str, target: Path) -> None:
    if not folder.is_dir():
        raise ConfigError(field, f"cannot write {target}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        # ENOENT for a folder that exists (a virtual file system such as /proc) would read "no such file"
        why = "" if exc.errno == errno.ENOENT else f" ({exc.strerror or exc})"
        raise ConfigError(field, f"cannot write {target}: files cannot be created in {folder}{why}") from None


def check_output_file(path: Path, field: str) -> Path:
    """``path`` if a file can be written there (made, or replaced) in a folder that exists, or ``-``
    (standard output); else a ConfigError saying why."""
    path = Path(path)
    if is_stdout(path):
        return path
    if path.is_dir():
        raise ConfigError(field, f"{path} is a folder; give a file path")
    parent = path.parent
    if not parent.exists():
        raise ConfigError(field, f"cannot write {path}: the folder {parent} does not exist; make it first")
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            raise ConfigError(field, f"cannot write {path}: {exc.strerror or exc}") from None
    _probe_folder(_nearest_existing(path.parent), field, path)
    return path


def check_output_folder(path: Path, field: str) -> Path:
    """``path`` if files can be written in it (it may not exist yet); else a ConfigError saying why."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(field, f"{path} is a file; give a folder")
    _probe_folder(_nearest_existing(path), field, path)
    return path


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process's umask: what ``open()`` would give a new file (``mkstemp`` gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask
