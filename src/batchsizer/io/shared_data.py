"""Where the measured data set (``shared/data``: Zeus traces, NVML sensor measurements) lives.

It is not shipped with the package. Looked for in ``$BATCHSIZER_DATA``, then in ``../shared/data``
beside the working directory or the source checkout. Callers that need it and find nothing raise
:class:`DataUnavailable` with a message saying where it was looked for; tests skip on it.
"""

from __future__ import annotations

import os
from pathlib import Path

from batchsizer.errors import BatchSizerError


class DataUnavailable(BatchSizerError):
    """The measured data folder is not on this machine."""


def candidates() -> list[Path]:
    """The folders looked in, in order, without repeats: ``$BATCHSIZER_DATA``, then ``shared/data`` near here.

    ``shared/data`` and ``../shared/data`` are tried from the working directory and the source checkout
    and up to three folders above each.
    """
    found: list[Path] = []
    env = os.environ.get("BATCHSIZER_DATA")
    if env:
        found.append(Path(env))
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        for up in (base, *base.parents[:3]):
            found.append(up / "shared" / "data")
            found.append(up.parent / "shared" / "data")
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def data_dir(required: str | None = None) -> Path:
    """The data folder (containing ``required`` if given), or DataUnavailable naming where it looked."""
    for p in candidates():
        if p.is_dir() and (required is None or (p / required).exists()):
            return p
    what = f"{required} in " if required else ""
    raise DataUnavailable(
        f"measured data not found: looked for {what}$BATCHSIZER_DATA and ../shared/data "
        f"({', '.join(str(c) for c in candidates()[:3])}, ...); set BATCHSIZER_DATA to the folder"
    )
