"""Stopping a job cleanly on Ctrl-C or SIGTERM: finish the batch in flight, flush, exit 130 or 143.

The first signal only sets the loop's stop event (the loop checks it after each batch, then
flushes records, outputs and the summary); a second one stops at once with KeyboardInterrupt.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

#: exit codes, as a shell reports a process killed by the signal
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopOnSignal:
    """Context manager turning SIGINT/SIGTERM into ``stop_event.set()`` for the duration of a job."""

    def __init__(self, stop_event: threading.Event, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.stop_event = stop_event
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # second signal: the user insists
        self.received = signum
        self.stop_event.reason = signal.Signals(signum).name  # type: ignore[attr-defined]  # the loop records it
        self.stop_event.set()
        name = signal.Signals(signum).name
        # os.write, not print: a signal handler must not re-enter a buffered stream
        os.write(
            2,
            f"\n[{name}] stopping after the current batch; records and outputs are kept "
            "(send it again to stop at once)\n".encode(),
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    @property
    def reason(self) -> str | None:
        """The name of the signal that stopped the job (``SIGINT``, ``SIGTERM``); None when none came."""
        return signal.Signals(self.received).name if self.received is not None else None

    @property
    def exit_code(self) -> int:
        """0 when no signal came, else 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
        return 0 if self.received is None else EXIT_CODES.get(self.received, 128 + int(self.received))
