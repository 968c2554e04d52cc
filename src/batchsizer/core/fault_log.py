"""What the telemetry guard saw and did, for the job's events, counts and summary note.

One :class:`FaultLog` is shared by the reading side (faults found) and the fallback side (periods
held or fallen back, recoveries), so counts keep the order things happened in."""

from __future__ import annotations

from typing import Any

from batchsizer.core.reading_filter import FAULT_KINDS, Fault


class FaultLog:
    """Counts by kind, and events waiting for the loop to pass them to its observers."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self._warned: set[str] = set()

    def note(self, fault: Fault) -> None:
        """Count a fault (and the samples it dropped); announce each kind the first time only."""
        self.count(fault.kind)
        if fault.dropped:
            self.count("dropped_samples", fault.dropped)
        if fault.kind not in self._warned:
            self._warned.add(fault.kind)
            self.event("telemetry", f"{fault.message}; the controller is not shown these readings", fault=fault.kind)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the count of ``key``."""
        self.counts[key] = self.counts.get(key, 0) + n

    def event(self, kind: str, message: str, **fields: Any) -> None:
        """Queue an event for the loop's observers (see :meth:`pop_events`)."""
        self.events.append((kind, message, fields))

    def pop_events(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The events since the last call, oldest first."""
        events, self.events = self.events, []
        return events

    def note_lines(self) -> list[str]:
        """One line for the summary when anything was wrong with the readings."""
        parts = [f"{self.counts[k]} {k.replace('_', ' ')}" for k in FAULT_KINDS if self.counts.get(k)]
        if not parts:
            return []
        acts = [f"{self.counts[k]} {k.replace('_', ' ')}" for k in ("held", "fell_back") if self.counts.get(k)]
        tail = f"; periods {', '.join(acts)}" if acts else ""
        return [f"telemetry faults (periods): {', '.join(parts)}{tail}"]
