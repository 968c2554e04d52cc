"""A fleet's records, outputs and live lines (the figure of the budget split: :mod:`batchsizer.ui.plotting_fleet`).

Records (``--records DIR``): ``DIR/fleet.jsonl`` has one ``tick`` line per tick (budget, each
GPU's cap, the sum of power, each GPU's mean power ``power_w``), ``allocation`` and ``event``
lines and the ``summary``; each worker writes the usual ``run`` records to ``DIR/<worker>.jsonl``. Outputs (``--save-outputs FILE``):
a job line, then one line per committed item, ``{"id", "job", "output", "worker"}``, in commit
order; a resume takes every id found there as done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from batchsizer.errors import ConfigError
from batchsizer.fleet.allocator import Allocation
from batchsizer.fleet.coordinator import FleetObserver
from batchsizer.io.outputs import cut_partial_line, placeholder_output
from batchsizer.io.records import RecordWriter


class FleetRecorder(FleetObserver):
    """``fleet.jsonl``: ticks, allocations, events, flushed as they happen."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.writer = RecordWriter(path)
        self.writer.write("fleet", **info)

    def on_allocation(self, t: float, alloc: Allocation, applied: dict[str, float], pending: dict[str, float]) -> None:
        """An ``allocation`` line: the split and its prediction, the caps lowered now, the raises still waiting (W)."""
        self.writer.write("allocation", t=t, budget_w=alloc.budget_w, caps=alloc.caps, note=alloc.note,
                          lowered=applied, raise_pending=pending, predicted=alloc.predicted)  # fmt: skip

    def on_tick(self, t: float, fields: dict[str, Any]) -> None:
        """A ``tick`` line with the coordinator's fields (budget, caps, power sums, items committed)."""
        self.writer.write("tick", t=t, **fields)

    def on_event(self, t: float, kind: str, message: str, **fields: Any) -> None:
        """An ``event`` line (budget change, worker lost or killed, sensor failed or back, budget too low)."""
        self.writer.write("event", t=t, kind=kind, message=message, **fields)

    def close(self, summary: dict[str, Any]) -> None:
        """Write the ``summary`` line, less its per-worker part (``workers``), and close the file."""
        self.writer.write("summary", **{k: v for k, v in summary.items() if k != "workers"})
        self.writer.close()


class FleetPrinter(FleetObserver):
    """A line per allocation period on the terminal: time, budget, sum of power, each GPU's cap."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._next = every_s

    def on_tick(self, t: float, fields: dict[str, Any]) -> None:
        """Print a line once ``every_s`` of virtual time has passed since the last one."""
        if t + 1e-9 < self._next:
            return
        self._next = t + self.every_s
        caps = " ".join(f"{n} {c:.0f}" for n, c in fields["caps"].items())
        click.echo(
            f"t={t:7.1f} s  budget {fields['budget_w']:.0f} W  power {fields['sum_mean_w']:.0f} W  "
            f"caps {fields['cap_sum_w']:.0f} W [{caps}]  done {fields['committed']}"
        )

    def on_event(self, t: float, kind: str, message: str, **fields: Any) -> None:
        """Print every event as it happens."""
        click.echo(f"t={t:7.1f} s  {kind}: {message}")


class FleetOutputs(FleetObserver):
    """Each committed item's output with its id, appended and flushed at every commit."""

    def __init__(self, path: Path, identity: dict[str, Any], resume: bool) -> None:
        self.path = Path(path)
        self.identity = identity
        new = not (resume and self.path.exists() and self.path.stat().st_size > 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w" if new else "a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError("save-outputs", f"cannot write {self.path}: {exc.strerror or exc}") from None
        if new:
            self._file.write(json.dumps({"job": identity}) + "\n")
            self._file.flush()

    def on_commit(self, worker: str, job: str, ids: tuple[int, ...]) -> None:
        """One line per committed item (a placeholder output: simulated GPUs compute none), written at once, flushed."""
        model, _, dataset = job.partition("@")
        ident = {"model": model, "dataset": dataset, "seed": self.identity.get("seed")}
        lines = [json.dumps({"id": i, "job": job, "output": placeholder_output(ident, i), "worker": worker}) for i in ids]
        self._file.write("\n".join(lines) + "\n")  # one write per chunk, then flush: a kill leaves whole lines
        self._file.flush()

    def close(self) -> None:
        """Flush, fsync and close the file; a second call does nothing."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def read_fleet_outputs(path: Path, identity: dict[str, Any]) -> dict[str, set[int]]:
    """The ids already done, per job, in a fleet outputs file of the same job (for ``--resume``)."""
    p = Path(path)
    cut_partial_line(p)
    done: dict[str, set[int]] = {}
    with open(p, encoding="utf-8") as f:
        first = f.readline()
        if not first:
            return done
        try:
            header = json.loads(first)["job"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError("resume", f"{p} is not an outputs file written by batchsizer fleet --save-outputs") from None
        diffs = [k for k in ("jobs", "seed") if header.get(k) != identity.get(k)]
        if diffs:
            raise ConfigError("resume", f"{p} was written by a different fleet job ({', '.join(diffs)} differ)")
        for lineno, line in enumerate(f, start=2):
            try:
                rec = json.loads(line)
                job, i = rec["job"], int(rec["id"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ConfigError("resume", f"{p} line {lineno} is not an output line") from None
            ids = done.setdefault(job, set())
            if i in ids:
                raise ConfigError("resume", f"{p} line {lineno}: item {i} of {job} is there twice")
            ids.add(i)
    return done


def plot_fleet(records: Path, out_dir: Path, dpi: int = 120) -> list[Path]:
    """``budget.png`` (what ``batchsizer plot`` draws of a fleet's records): each GPU's cap stacked under
    the budget with the sum of power, and each GPU's cap and power."""
    from batchsizer.ui.plotting_fleet import plot_fleet_records  # matplotlib loads only here

    return plot_fleet_records(records, out_dir, dpi)
