"""What a running job shows on the terminal.

On a terminal, :class:`LiveView` keeps one panel updated in place with rich: the window's peak
power against the cap (a bar and a sparkline of recent periods), the batch size, the clock, the
throughput and the progress. Elsewhere (logs, pipes, CI), :class:`PlainLines` prints a line per
control period. ``--quiet`` shows neither. The summary comes last, as a table on a terminal.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from batchsizer.core.loop import LoopObserver, PeriodRecord
from batchsizer.core.summary import Summary

SPARK = "▁▂▃▄▅▆▇█"


def _w(value: float) -> str:
    return "  n/a" if not math.isfinite(value) else f"{value:5.0f}"


def _cap(cap_w: float) -> str:
    """The cap for display: an uncapped job (no power meter) has an infinite one."""
    return " none" if not math.isfinite(cap_w) else f"{cap_w:5.0f} W"


class PlainLines(LoopObserver):
    """A line per period, for logs and pipes (on stderr with ``err``: stdout carries ``--json -``)."""

    def __init__(self, every: int = 1, err: bool = False) -> None:
        self.every = max(1, every)
        self.start = 0.0
        self.err = err

    def on_start(self, info: dict[str, Any]) -> None:
        """Print the job line (device, controller, cap) and note the start time."""
        self.start = float(info.get("start", 0.0))  # times are shown from the job's start
        click.echo(
            f"job: {info['device'].get('name')} | controller {info['controller']['name']} | cap {info['cap']}",
            err=self.err,
        )

    def on_period(self, record: PeriodRecord) -> None:
        """Print every ``every``-th period: time, cap, peak and mean power, batch, throughput, decision."""
        o, d = record.observation, record.decision
        if o.period % self.every:
            return
        clock = f" clock {o.setting.clock_mhz} MHz" if o.setting.clock_mhz else ""
        click.echo(
            f"t={o.end - self.start:8.2f}s cap {_cap(o.cap_w)} peak {_w(o.peak_w)} W mean {_w(o.mean_w)} W "
            f"batch {o.setting.batch_size:4d}{clock} {o.throughput:8.1f} items/s -> {d.reason} {d.setting.batch_size}",
            err=self.err,
        )

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        """Print the event on stderr."""
        click.echo(f"[{kind}] {message}", err=True)


def power_bar(peak_w: float, cap_w: float, alpha: float = 0.8, width: int = 32) -> Text:
    """A bar of the peak on a scale of 1.25 x cap, with the cap marked; red over, green in the band."""
    scale = 1.25 * cap_w
    cap_at = min(width - 1, round(width * cap_w / scale))
    filled = 0 if not math.isfinite(peak_w) else max(0, min(width, round(width * peak_w / scale)))
    if not math.isfinite(peak_w):
        style = "dim"
    elif peak_w > cap_w:
        style = "bold red"
    elif peak_w >= alpha * cap_w:
        style = "green"
    else:
        style = "yellow"
    bar = Text()
    for i in range(width):
        if i == cap_at:
            bar.append("┃", style="bold white")
        elif i < filled:
            bar.append("█", style=style)
        else:
            bar.append("·", style="dim")
    return bar


def sparkline(values: list[float], cap_w: float) -> Text:
    """Recent peaks, one character each, scaled to 1.25 x cap; over-cap periods in red."""
    out = Text()
    top = 1.25 * cap_w
    for v in values:
        if not math.isfinite(v):
            out.append(" ")
            continue
        level = max(0, min(len(SPARK) - 1, int(len(SPARK) * v / top)))
        out.append(SPARK[level], style="red" if v > cap_w else "cyan")
    return out


class LiveView(LoopObserver):
    """An in-place panel for a terminal, refreshed at most ``fps`` times per wall second."""

    def __init__(self, total_items: int | None = None, console: Console | None = None, fps: float = 10.0) -> None:
        self.console = console or Console()
        self.total = total_items
        self.min_interval = 1.0 / fps
        self.items = 0
        self.batch_size = 0
        self.clock_mhz: int | None = None
        self.last: PeriodRecord | None = None
        self.peaks: deque[float] = deque(maxlen=40)
        self.events: deque[str] = deque(maxlen=3)
        self.title = "batchsizer"
        self.alpha = 0.8
        self._live: Live | None = None
        self._drawn = 0.0
        self.start = 0.0

    # -- LoopObserver hooks
    def on_start(self, info: dict[str, Any]) -> None:
        """Start the panel, titled with the device, controller and cap."""
        ctrl = info.get("controller", {})
        self.alpha = float(ctrl.get("alpha", 0.8) or 0.8)
        self.start = float(info.get("start", 0.0))
        self.title = f"{info['device'].get('name')} · controller {ctrl.get('name')} · cap {info['cap']}"
        self._live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def on_batch(self, index: int, batch: Any, outcome: Any, setting: Any) -> None:
        """Count the batch's items and redraw (at most ``fps`` times a second)."""
        self.items += len(batch)
        self.batch_size = setting.batch_size
        self.clock_mhz = setting.clock_mhz
        self._draw()

    def on_period(self, record: PeriodRecord) -> None:
        """Keep the period for the panel and its peak for the sparkline, and redraw."""
        self.last = record
        self.peaks.append(record.observation.peak_w)
        self._draw()

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        """Add the event to the panel's list and redraw at once."""
        self.events.append(f"[{kind}] {message}")
        self._draw(force=True)

    def on_end(self, summary: Summary) -> None:
        """Draw the last frame and stop the panel, leaving it on screen."""
        self._draw(force=True)
        self.close()

    def close(self) -> None:
        """Leave the last frame on screen (also after an error or Ctrl-C)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- drawing
    def _draw(self, force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if not force and now - self._drawn < self.min_interval:
            return
        self._drawn = now
        self._live.update(self._render(), refresh=True)

    def _render(self) -> Group:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", justify="right")
        grid.add_column()
        if self.last is not None:
            o, d = self.last.observation, self.last.decision
            if math.isfinite(o.cap_w):
                power = Text.assemble(
                    power_bar(o.peak_w, o.cap_w, self.alpha),
                    f"  peak {_w(o.peak_w).strip()} W / cap {o.cap_w:.0f} W · mean {_w(o.mean_w).strip()} W",
                )
                grid.add_row("power", power)
                grid.add_row("recent peaks", sparkline(list(self.peaks), o.cap_w))
            else:
                grid.add_row("power", Text("not measured (no power meter): uncapped", style="dim"))
            grid.add_row("throughput", f"{o.throughput:,.1f} items/s  (t = {o.end - self.start:.2f} s)")
            grid.add_row("decision", f"{d.reason} → batch {d.setting.batch_size}")
        else:
            grid.add_row("power", Text("waiting for the first control period…", style="dim"))
        clock = f"{self.clock_mhz} MHz" if self.clock_mhz else "device default"
        grid.add_row("batch size", f"{self.batch_size}   clock {clock}")
        if self.total:
            frac = min(1.0, self.items / self.total)
            done = round(30 * frac)
            grid.add_row(
                "progress", f"{'█' * done}{'·' * (30 - done)} {self.items:,}/{self.total:,} ({100 * frac:.0f} %)"
            )
        else:
            grid.add_row("progress", f"{self.items:,} items")
        parts: list[Any] = [Text(self.title, style="bold cyan"), grid]
        parts.extend(Text(e, style="magenta") for e in self.events)
        return Group(*parts)


class Warnings(LoopObserver):
    """With ``--quiet``: warnings (telemetry faults, cap not met, out of memory...) still reach stderr."""

    #: events that are news, not warnings
    QUIET_KINDS = ("cap", "telemetry-recovered")

    def on_event(self, kind: str, message: str, **fields: Any) -> None:
        """Print the event on stderr as a warning unless it is only news (``QUIET_KINDS``)."""
        if kind not in self.QUIET_KINDS:
            click.echo(f"warning: [{kind}] {message}", err=True)


def is_terminal(err: bool = False) -> bool:
    """Whether stdout (stderr with ``err``) is a terminal, where the live panel can be drawn."""
    return (sys.stderr if err else sys.stdout).isatty()


def make_view(quiet: bool, total_items: int | None = None, err: bool = False) -> LoopObserver:
    """The live panel on a terminal, plain lines otherwise; with ``--quiet`` only warnings.
    With ``err`` all of it goes to stderr (stdout then carries ``--records -`` or ``--json -``)."""
    if quiet:
        return Warnings()
    if is_terminal(err):
        return LiveView(total_items, console=Console(stderr=True) if err else None)
    return PlainLines(err=err)


def close_view(view: LoopObserver | None) -> None:
    """Stop the live panel if ``view`` is one (after an error too); other views need nothing."""
    if isinstance(view, LiveView):
        view.close()


def _rule_note(summary: Summary) -> str:
    """Which cap rule the over-cap figures follow, when it is not the paper's peak rule."""
    rule = getattr(summary, "cap_rule", "peak")
    return "" if rule == "peak" else f" (by {rule}: the rolling mean)"


def summary_lines(summary: Summary) -> list[tuple[str, str]]:
    """The summary as (label, text) rows for the terminal; power figures only when power was measured."""
    rows = [
        ("items", f"{summary.items}"),
        ("time", f"{summary.duration_s:.2f} s"),
        ("throughput", f"{summary.throughput:.1f} items/s"),
        ("average batch size", f"{summary.avg_batch_size:.1f}"),
    ]
    if summary.power_measured:
        rows += [
            ("energy", f"{summary.energy_j:.0f} J ({summary.energy_per_item_j:.3f} J/item)"),
            ("time over the cap", f"{100 * summary.over_cap_fraction:.2f} %{_rule_note(summary)}"),
            (
                "violations",
                f"{summary.violations} (longest {summary.longest_violation_s:.2f} s, worst +{summary.worst_overshoot_w:.0f} W)",
            ),
        ]
        if summary.energy_over_cap_j > 0:
            rows.append(("energy over the cap", f"{summary.energy_over_cap_j:.1f} J"))
    else:
        rows.append(("power", "not measured: no energy, time over the cap or violations to report"))
    if summary.true_power:
        t = summary.true_power
        rows.append(("true power over cap", f"{t['over_cap_s']:.2f} s in {t['violations']} violations"))
    stop_reason = getattr(summary, "stop_reason", None)
    if summary.interrupted or stop_reason:
        rows.append(("stopped", f"before the end ({stop_reason or 'interrupted'})"))
    cap_not_met = getattr(summary, "cap_not_met", None)
    if cap_not_met:
        rows.append(
            (
                "cap not met",
                f"even batch {cap_not_met.get('batch_size')} peaked at {cap_not_met.get('peak_w', 0):.0f} W",
            )
        )
    rows.extend(("note", n) for n in summary.notes)
    return rows


def print_summary(summary: Summary, console: Console | None = None, err: bool = False) -> None:
    """A table on a terminal, aligned plain lines otherwise (easy to grep in logs); on stderr with ``err``."""
    rows = summary_lines(summary)
    if console is not None or is_terminal(err):
        table = Table(title="summary", show_header=False, title_justify="left", title_style="bold")
        table.add_column(style="bold")
        table.add_column()
        for key, value in rows:
            table.add_row(key, value)
        (console or Console(stderr=err)).print(table)
        return
    width = max(len(k) for k, _ in rows)
    click.echo("summary:", err=err)
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}", err=err)
