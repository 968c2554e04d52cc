"""Reading measured tables (``--device table:PATH.csv[:SELECTOR]``) into rows a table plant can play.

Two formats, told apart by the header (docs/tables.md has the exact columns):

* ``profile``: what ``batchsizer profile --csv`` writes. One row per setting: ``batch_size``,
  ``mean_w``, and ``throughput`` (items/s) or ``batch_s`` (seconds per batch); optional
  ``peak_w``, ``clock_mhz``, ``power_limit_w``, ``idle_w``, ``host_s``. Other columns are ignored.
* ``zeus``: the Zeus NSDI'23 ``summary_power_*.csv`` (``dataset,network,batch_size,optimizer,
  power_limit,time_per_epoch,average_power``, optional ``samples_per_epoch``); the SELECTOR
  ``network[@dataset][+optimizer]`` picks one workload.

Every problem is a :class:`ConfigError` on the ``device`` field naming the file, and the line and
column where there is one, so a bad table costs one clear line and nothing runs.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from batchsizer.errors import ConfigError

#: public training-set sizes (samples per epoch) of the Zeus workloads
SAMPLES_PER_EPOCH: dict[str, int] = {
    "cifar100": 50_000,
    "imagenet": 1_281_167,
    "librispeech": 281_241,
    "movielens-1m": 1_000_209,
    "squad": 87_599,
    "sentiment140": 1_600_000,
}

ZEUS_COLUMNS = ("dataset", "network", "batch_size", "optimizer", "power_limit", "time_per_epoch", "average_power")
PROFILE_REQUIRED = ("batch_size", "mean_w")
PROFILE_OPTIONAL = ("peak_w", "clock_mhz", "power_limit_w", "idle_w", "host_s")
#: a peak within this share of the mean is a flat row (played at one power)
FLAT_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class TableRow:
    """One measured setting: a batch of ``batch`` took ``batch_s`` end to end at ``mean_w`` on
    average and ``peak_w`` at most; ``idle_w`` and ``host_s`` where the table gives them."""

    line: int
    batch: int
    batch_s: float
    mean_w: float
    peak_w: float
    clock_mhz: int | None = None
    power_limit_w: float | None = None
    idle_w: float | None = None
    host_s: float | None = None

    @property
    def flat(self) -> bool:
        """Whether the row's peak is within ``FLAT_TOLERANCE`` of its mean, so it plays at one power."""
        return self.peak_w <= self.mean_w * (1.0 + FLAT_TOLERANCE)


@dataclass(frozen=True)
class MeasuredTable:
    """The rows of one workload of one file, checked: at least two batch sizes at every setting."""

    path: Path
    format: str
    rows: tuple[TableRow, ...]
    #: what the selector chose (zeus: network, dataset, optimizer); empty for profile tables
    workload: tuple[str, ...] = ()

    @property
    def clocks(self) -> tuple[int | None, ...]:
        """The distinct clocks (MHz) of the rows, ascending; None (not a column) sorts first."""
        return tuple(sorted({r.clock_mhz for r in self.rows}, key=lambda c: -1 if c is None else c))

    @property
    def limits(self) -> tuple[float | None, ...]:
        """The distinct power limits (W) of the rows, ascending; None (not a column) sorts first."""
        return tuple(sorted({r.power_limit_w for r in self.rows}, key=lambda w: -1.0 if w is None else w))


def _fail(path: Path, problem: str) -> ConfigError:
    return ConfigError("device", f"{path}: {problem}")


def _number(path: Path, line: int, column: str, text: str | None, *, whole: bool = False) -> float:
    cell = (text or "").strip()
    if not cell:
        raise _fail(path, f"line {line}, column {column}: empty; a number is needed")
    try:
        value = float(cell)
    except ValueError:
        raise _fail(path, f"line {line}, column {column}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise _fail(path, f"line {line}, column {column}: {cell!r} is not a measured value")
    if whole and value != int(value):
        raise _fail(path, f"line {line}, column {column}: {cell!r} is not a whole number")
    return value


def _positive(path: Path, line: int, column: str, text: str | None, *, whole: bool = False) -> float:
    value = _number(path, line, column, text, whole=whole)
    if value <= 0:
        raise _fail(path, f"line {line}, column {column}: must be above 0, got {text!r}")
    return value


def _optional(path: Path, line: int, column: str, row: dict[str, str | None], *, positive: bool = True) -> float | None:
    text = row.get(column)
    if text is None or not text.strip():
        return None
    if positive:
        return _positive(path, line, column, text)
    value = _number(path, line, column, text)
    if value < 0:
        raise _fail(path, f"line {line}, column {column}: must be 0 or more, got {text!r}")
    return value


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str | None]]]]:
    """Header and (line number, row) pairs; the file's own problems as one ConfigError."""
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a folder; give a CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise _fail(path, "is empty; a measured table needs a header line and rows")
            reader.fieldnames = header
            rows = [(reader.line_num, r) for r in reader if any((v or "").strip() for v in r.values() if isinstance(v, str))]
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _fail(path, f"is not a CSV text file ({exc})") from None
    return header, rows


def detect_format(path: Path, header: list[str]) -> str:
    """``zeus`` or ``profile`` from the header, or a ConfigError saying what either needs."""
    if all(c in header for c in ZEUS_COLUMNS):
        return "zeus"
    if all(c in header for c in PROFILE_REQUIRED) and ("throughput" in header or "batch_s" in header):
        return "profile"
    if "time_per_epoch" in header or "average_power" in header:
        missing = [c for c in ZEUS_COLUMNS if c not in header]
        raise _fail(path, f"a Zeus table needs the columns {','.join(ZEUS_COLUMNS)}; missing {', '.join(missing)}")
    missing = [c for c in PROFILE_REQUIRED if c not in header]
    if "throughput" not in header and "batch_s" not in header:
        missing.append("throughput (or batch_s)")
    raise _fail(
        path,
        f"missing column {', '.join(missing)}; a profile table needs batch_size, mean_w and throughput or batch_s "
        f"(as batchsizer profile --csv writes), a Zeus table {','.join(ZEUS_COLUMNS)}; the header has "
        f"{','.join(header)}",
    )


def _profile_rows(path: Path, rows: list[tuple[int, dict[str, str | None]]]) -> list[TableRow]:
    out: list[TableRow] = []
    for line, r in rows:
        batch = int(_positive(path, line, "batch_size", r.get("batch_size"), whole=True))
        mean = _positive(path, line, "mean_w", r.get("mean_w"))
        peak = _optional(path, line, "peak_w", r)
        if (r.get("throughput") or "").strip() or not (r.get("batch_s") or "").strip():
            seconds = batch / _positive(path, line, "throughput", r.get("throughput"))
        else:
            seconds = _positive(path, line, "batch_s", r.get("batch_s"))
        clock = _optional(path, line, "clock_mhz", r)
        if clock is not None and clock != int(clock):
            raise _fail(path, f"line {line}, column clock_mhz: {r.get('clock_mhz')!r} is not a whole number of MHz")
        out.append(
            TableRow(
                line=line,
                batch=batch,
                batch_s=seconds,
                mean_w=mean,
                peak_w=max(peak, mean) if peak is not None else mean,
                clock_mhz=None if clock is None else int(clock),
                power_limit_w=_optional(path, line, "power_limit_w", r),
                idle_w=_optional(path, line, "idle_w", r),
                host_s=_optional(path, line, "host_s", r, positive=False),
            )
        )
    return out


def parse_selector(selector: str) -> tuple[str, str | None, str | None]:
    """``network[@dataset][+optimizer]`` -> (network, dataset, optimizer)."""
    spec, _, optimizer = selector.strip().partition("+")
    network, _, dataset = spec.partition("@")
    return network.strip(), dataset.strip() or None, optimizer.strip() or None


def _zeus_rows(
    path: Path, rows: list[tuple[int, dict[str, str | None]]], selector: str | None
) -> tuple[list[TableRow], tuple[str, str, str]]:
    combos = sorted({((r["network"] or "").strip(), (r["dataset"] or "").strip(), (r["optimizer"] or "").strip())
                     for _, r in rows})
    listing = ", ".join(f"{n}@{d}+{o}" for n, d, o in combos)
    if not selector:
        if len(combos) != 1:
            raise _fail(path, f"holds several workloads; name one as table:{path}:NETWORK[@DATASET][+OPTIMIZER]: {listing}")
        network, dataset, optimizer = combos[0]
    else:
        network, dataset, optimizer = parse_selector(selector)
    chosen = [c for c in combos if c[0] == network and (dataset is None or c[1] == dataset)]
    if optimizer is not None:
        chosen = [c for c in chosen if c[2] == optimizer]
    if not chosen:
        raise _fail(path, f"no rows for {selector!r}; the table has {listing}")
    if len({c[1] for c in chosen}) > 1:
        raise _fail(path, f"{selector!r} is ambiguous; add @dataset: {listing}")
    combo = chosen[0]  # first optimizer alphabetically unless one was named
    out: list[TableRow] = []
    for line, r in rows:
        if ((r["network"] or "").strip(), (r["dataset"] or "").strip(), (r["optimizer"] or "").strip()) != combo:
            continue
        samples = _optional(path, line, "samples_per_epoch", r)
        if samples is None:
            if combo[1] not in SAMPLES_PER_EPOCH:
                raise _fail(
                    path,
                    f"line {line}: samples per epoch of dataset {combo[1]!r} unknown; add a samples_per_epoch column "
                    f"(known: {', '.join(SAMPLES_PER_EPOCH)})",
                )
            samples = float(SAMPLES_PER_EPOCH[combo[1]])
        batch = int(_positive(path, line, "batch_size", r["batch_size"], whole=True))
        epoch = _positive(path, line, "time_per_epoch", r["time_per_epoch"])
        watts = _positive(path, line, "average_power", r["average_power"])
        limit = _positive(path, line, "power_limit", r["power_limit"])
        out.append(TableRow(line, batch, epoch / samples * batch, watts, watts, power_limit_w=limit))
    return out, combo


def _check_grid(path: Path, rows: list[TableRow]) -> None:
    """Two or more batch sizes per setting, no setting measured twice, and every (clock, limit) pair."""
    if len(rows) < 2:
        where = f" (line {rows[0].line})" if rows else ""
        raise _fail(path, f"has {len(rows)} row{'' if len(rows) == 1 else 's'}{where}; at least two batch sizes are "
                    "needed to replay a table")
    seen: dict[tuple[int | None, float | None, int], int] = {}
    sizes: dict[tuple[int | None, float | None], set[int]] = {}
    for r in rows:
        key = (r.clock_mhz, r.power_limit_w, r.batch)
        if key in seen:
            raise _fail(path, f"line {r.line} measures {_setting(r)} batch {r.batch} again (line {seen[key]})")
        seen[key] = r.line
        sizes.setdefault((r.clock_mhz, r.power_limit_w), set()).add(r.batch)
    for (clock, limit), got in sizes.items():
        if len(got) < 2:
            row = next(r for r in rows if (r.clock_mhz, r.power_limit_w) == (clock, limit))
            raise _fail(path, f"{_setting(row) or 'the table'} has one batch size (line {row.line}); each setting needs "
                        "rows at two batch sizes or more")
    clocks = {c for c, _ in sizes}
    limits = {w for _, w in sizes}
    for c in clocks:
        for w in limits:
            if (c, w) not in sizes:
                probe = TableRow(0, 0, 1.0, 1.0, 1.0, c, w)
                raise _fail(path, f"no rows at {_setting(probe)}; rows are needed at every clock and power limit pair")


def _setting(r: TableRow) -> str:
    parts = []
    if r.clock_mhz is not None:
        parts.append(f"clock {r.clock_mhz} MHz")
    if r.power_limit_w is not None:
        parts.append(f"power limit {r.power_limit_w:g} W")
    return ", ".join(parts)


def read_table(path: str | Path, selector: str | None = None) -> MeasuredTable:
    """The checked rows of ``path`` (one workload of it: ``selector`` for Zeus tables)."""
    p = Path(path)
    try:
        stat = os.stat(p)
        key = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = (0, 0)
    return _read_cached(str(p), selector, key)


@lru_cache(maxsize=32)
def _read_cached(path_text: str, selector: str | None, _stamp: tuple[int, int]) -> MeasuredTable:
    path = Path(path_text)
    header, raw = _read(path)
    fmt = detect_format(path, header)
    if not raw:
        raise _fail(path, "has a header but no rows")
    if fmt == "zeus":
        rows, combo = _zeus_rows(path, raw, selector)
        table = MeasuredTable(path, fmt, tuple(rows), combo)
    else:
        if selector:
            raise _fail(path, f"a profile table holds one workload; leave out the selector {selector!r}")
        table = MeasuredTable(path, fmt, tuple(_profile_rows(path, raw)))
    _check_grid(path, list(table.rows))
    return table
