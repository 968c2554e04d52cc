"""What a running job shows on the terminal: one line per control period, and the summary.

A richer in-place view (power against the cap, batch size, throughput) replaces the lines when
stdout is a terminal.
"""

from __future__ import annotations

import math
from typing import Any

import click

from batchsizer.loop import LoopObserver, PeriodRecord
from batchsizer.summary import Summary


def _w(value: float) -> str:
    return "  n/a" if not math.isfinite(value) else f"{value:5.0f}"


class PlainLines(LoopObserver):
    """A line per period, for logs and pipes."""

    def __init__(self, every: int = 1) -> None:
        self.every = max(1, every)

    def on_start(self, info: dict[str, Any]) -> None:
        click.echo(f"job: {info['device'].get('name')} | controller {info['controller']['name']} | cap {info['cap']}")

    def on_period(self, record: PeriodRecord) -> None:
        o, d = record.observation, record.decision
        if o.period % self.every:
            return
        clock = f" clock {o.setting.clock_mhz} MHz" if o.setting.clock_mhz else ""
        click.echo(
            f"t={o.end:8.2f}s cap {o.cap_w:5.0f} W peak {_w(o.peak_w)} W mean {_w(o.mean_w)} W "
            f"batch {o.setting.batch_size:4d}{clock} {o.throughput:8.1f} img/s -> {d.reason} {d.setting.batch_size}"
        )

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        click.echo(f"[{kind}] {message}", err=True)


def summary_lines(summary: Summary) -> list[tuple[str, str]]:
    rows = [
        ("items", f"{summary.items}"),
        ("time", f"{summary.duration_s:.2f} s"),
        ("throughput", f"{summary.throughput:.1f} items/s"),
        ("average batch size", f"{summary.avg_batch_size:.1f}"),
        ("energy", f"{summary.energy_j:.0f} J ({summary.energy_per_item_j:.3f} J/item)"),
        ("time over the cap", f"{100 * summary.over_cap_fraction:.2f} %"),
        (
            "violations",
            f"{summary.violations} (longest {summary.longest_violation_s:.2f} s, worst +{summary.worst_overshoot_w:.0f} W)",
        ),
    ]
    if summary.true_power:
        t = summary.true_power
        rows.append(("true power over cap", f"{t['over_cap_s']:.2f} s in {t['violations']} violations"))
    if summary.interrupted:
        rows.append(("stopped", "interrupted before the end"))
    rows.extend(("note", n) for n in summary.notes)
    return rows


def print_summary(summary: Summary) -> None:
    width = max(len(k) for k, _ in summary_lines(summary))
    click.echo("summary:")
    for key, value in summary_lines(summary):
        click.echo(f"  {key:<{width}}  {value}")
