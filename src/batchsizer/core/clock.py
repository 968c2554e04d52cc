"""Clocks: the control loop asks a clock for time so a simulated device can run on virtual time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells time in seconds and can wait."""

    def now(self) -> float:
        """Seconds since an arbitrary start; only differences are meaningful."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (on this clock's time); nothing for zero or less."""


class WallClock:
    """Real monotonic time, for real devices."""

    def now(self) -> float:
        """``time.monotonic()``, so wall-clock adjustments never move it."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block the thread for ``seconds`` of real time; returns at once for zero or less."""
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Simulated time that moves only when told, so a simulated job runs far faster than real time."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        """The virtual time in seconds, moved only by ``sleep`` and ``advance``."""
        return self._t

    def sleep(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds`` instead of waiting."""
        self.advance(seconds)

    def advance(self, seconds: float) -> float:
        """Move virtual time forward by ``seconds`` and return the new time; ValueError if negative."""
        if seconds < 0:
            raise ValueError(f"virtual time cannot go backwards (asked {seconds} s)")
        self._t += seconds
        return self._t
