"""The figure of a fleet's records: the budget split over time (``budget.png``).

Reads ``fleet.jsonl`` as ``batchsizer fleet --records DIR`` writes it (:mod:`batchsizer.fleet.records`):
one ``tick`` line per tick with the budget, each running GPU's cap, the sum of the fleet's power
(the tick's mean) and, from this version on, each GPU's mean power. The top panel stacks the caps
under the budget with the sum of power over them; the bottom one has each GPU's cap and power.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from batchsizer.errors import ConfigError  # noqa: E402
from batchsizer.io.records import iter_numbered_records  # noqa: E402
from batchsizer.ui.plotting import check_dpi, make_out_dir, save_figure  # noqa: E402

NAN = float("nan")
#: events drawn as vertical lines on the figure (a kill is followed by its worker-lost event)
MARKED_EVENTS = {"worker-lost": "lost", "sensor-failed": "sensor failed"}


@dataclass
class FleetTrace:
    """The series of ``budget.png``, one value per tick (NaN: the GPU was not running then)."""

    title: str
    #: each tick's start, then the last tick's end: the x of step lines drawn "post"
    edges: list[float]
    budget_w: list[float]
    #: the sum of power, the tick's mean (at the tick's middle)
    mid: list[float]
    sum_mean_w: list[float]
    caps: dict[str, list[float]]
    #: each GPU's mean power per tick; empty for records that do not hold it (older versions)
    power: dict[str, list[float]] = field(default_factory=dict)
    #: (time, what, worker) of kills, losses and sensor failures
    events: list[tuple[float, str, str]] = field(default_factory=list)


def _num(rec: dict[str, Any], key: str, where: str, nullable: bool = False) -> float:
    value = rec.get(key)
    if value is None and nullable and key in rec:
        return NAN
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        got = "nothing" if key not in rec else json.dumps(value)
        raise ConfigError("records", f"{where}: a tick record field {key!r} must be a number, got {got}")
    return float(value)


def _watts(rec: dict[str, Any], key: str, where: str) -> dict[str, float]:
    value = rec.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError("records", f"{where}: a tick record field {key!r} must map GPUs to watts")
    out: dict[str, float] = {}
    for name, w in value.items():
        if w is None:
            out[str(name)] = NAN
            continue
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise ConfigError(
                "records", f"{where}: a tick record field {key!r} must map GPUs to watts, got {json.dumps(w)}"
            )
        out[str(name)] = float(w)
    return out


def load_fleet(path: str | os.PathLike[str]) -> FleetTrace:
    """The series of a fleet records file; a ConfigError naming the line and field of a bad tick."""
    p = Path(path)
    ticks: list[dict[str, Any]] = []
    events: list[tuple[float, str, str]] = []
    budget = ""
    for n, rec in iter_numbered_records(p):
        kind, where = rec["type"], f"{p}, line {n}"
        if kind == "fleet" and not budget:
            budget = str(rec.get("budget", ""))
        elif kind == "tick":
            ticks.append({
                "start": _num(rec, "start", where),
                "end": _num(rec, "end", where),
                "budget_w": _num(rec, "budget_w", where),
                "sum_mean_w": _num(rec, "sum_mean_w", where, nullable=True),
                "caps": _watts(rec, "caps", where),
                "power": _watts(rec, "power_w", where),
                "has_power": "power_w" in rec,
            })  # fmt: skip
        elif kind == "event" and rec.get("kind") in MARKED_EVENTS and isinstance(rec.get("t"), (int, float)):
            events.append((float(rec["t"]), MARKED_EVENTS[rec["kind"]], str(rec.get("worker", ""))))
    if not ticks:
        raise ConfigError("records", f"{p} holds no fleet tick records (the fleet stopped before its first tick?)")
    names = list(dict.fromkeys(name for tk in ticks for name in tk["caps"]))
    trace = FleetTrace(
        title=f"{p.name}: the budget split over time" + (f" (budget {budget})" if budget else ""),
        edges=[tk["start"] for tk in ticks] + [ticks[-1]["end"]],
        budget_w=[tk["budget_w"] for tk in ticks],
        mid=[(tk["start"] + tk["end"]) / 2 for tk in ticks],
        sum_mean_w=[tk["sum_mean_w"] for tk in ticks],
        caps={name: [tk["caps"].get(name, NAN) for tk in ticks] for name in names},
        events=events,
    )
    if any(tk["has_power"] for tk in ticks):
        powered = list(dict.fromkeys([*names, *(name for tk in ticks for name in tk["power"])]))
        trace.power = {name: [tk["power"].get(name, NAN) for tk in ticks] for name in powered}
    return trace


def _post(values: list[float]) -> list[float]:
    """Per-tick values for a step line drawn "post" over the edges: the last value repeated at the end."""
    return [*values, values[-1]]


def _zero(values: list[float]) -> list[float]:
    return [0.0 if not math.isfinite(v) else v for v in values]


def _events(ax: Any, tr: FleetTrace, label: bool) -> None:
    for t, what, worker in tr.events:
        ax.axvline(t, color="0.35", ls=":", lw=1)
        if label:
            ax.annotate(f"{worker} {what}".strip(), (t, 1), xycoords=("data", "axes fraction"), fontsize=7,
                        rotation=90, va="top", ha="right", color="0.3")  # fmt: skip


def plot_fleet_records(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], dpi: int = 120) -> list[Path]:
    """Write budget.png: the caps stacked under the budget with the sum of power, and each GPU's cap
    and power; returns its path."""
    check_dpi(dpi)
    tr = load_fleet(path)
    out = make_out_dir(out_dir)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {name: colors[k % len(colors)] for k, name in enumerate(dict.fromkeys([*tr.caps, *tr.power]))}
    fig, (top, low) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, layout="constrained")
    names = list(tr.caps)
    if names:
        top.stackplot(tr.edges, [_post(_zero(tr.caps[n])) for n in names], labels=[f"cap {n}" for n in names],
                      colors=[color[n] for n in names], step="post", alpha=0.45)  # fmt: skip
    top.step(tr.edges, _post(tr.budget_w), where="post", color="tab:red", lw=1.8, label="budget")
    top.plot(tr.mid, tr.sum_mean_w, color="black", lw=1.0, label="sum of power (tick mean)")
    top.set_ylabel("W")
    top.set_ylim(bottom=0)
    top.set_title(tr.title, fontsize=9)
    top.legend(loc="lower right", fontsize=7, ncol=3)
    top.grid(alpha=0.3)
    _events(top, tr, label=True)
    for n in names:
        low.step(tr.edges, _post(tr.caps[n]), where="post", color=color[n], lw=1.0, ls="--", label=f"cap {n}")
    for n, w in tr.power.items():
        low.plot(tr.mid, w, color=color[n], lw=1.2, label=f"power {n}")
    if not tr.power:
        low.text(0.5, 0.9, "each GPU's power is not in these records (written by an older version)",
                 ha="center", transform=low.transAxes, color="0.4", fontsize=8)  # fmt: skip
    low.set_ylabel("W per GPU")
    low.set_xlabel("virtual time (s)")
    low.set_ylim(bottom=0)
    low.legend(loc="lower right", fontsize=7, ncol=4)
    low.grid(alpha=0.3)
    _events(low, tr, label=False)
    return [save_figure(fig, out / "budget.png", dpi)]
