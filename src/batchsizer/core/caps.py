"""Cap sources: where the loop reads the power cap each control period.

The cap comes from outside the job (an external power controller), so it may change while the job
runs: a constant, a schedule of steps, or a file that someone edits during the run.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from batchsizer.errors import ConfigError

log = logging.getLogger(__name__)


def check_cap(value: float, field: str = "cap") -> float:
    """``value`` as a float number of watts; ConfigError on ``field`` unless it is a finite number above 0."""
    try:
        watts = float(value)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a number of watts, got {value!r}") from None
    if not math.isfinite(watts) or watts <= 0:
        raise ConfigError(field, f"must be a positive number of watts, got {value!r}")
    return watts


class CapSource(Protocol):
    """Tells the cap in force at ``elapsed`` seconds since the job started."""

    def cap_at(self, elapsed: float) -> float:
        """The cap in watts in force ``elapsed`` seconds after the job started."""


class ConstantCap:
    """The same cap in watts for the whole job (checked positive and finite when built)."""

    def __init__(self, watts: float) -> None:
        self.watts = check_cap(watts)

    def cap_at(self, elapsed: float) -> float:
        """The fixed cap, whatever the time."""
        return self.watts

    def __repr__(self) -> str:
        return f"{self.watts:g} W"


class CapSchedule:
    """Steps of (time since start in s, cap in W); the first step must start at 0."""

    def __init__(self, steps: Sequence[tuple[float, float]]) -> None:
        if not steps:
            raise ConfigError("cap schedule", "needs at least one (time, cap) step")
        parsed = [(float(t), check_cap(c, "cap schedule")) for t, c in steps]
        times = [t for t, _ in parsed]
        endless = [t for t in times if not math.isfinite(t)]
        if endless:
            raise ConfigError("cap schedule", f"step times must be finite numbers of seconds, got {endless[0]:g}")
        if times[0] != 0:
            raise ConfigError("cap schedule", f"the first step must be at time 0, got {times[0]:g}")
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ConfigError("cap schedule", f"step times must increase strictly, got {times}")
        self.steps = parsed

    @classmethod
    def parse(cls, text: str) -> CapSchedule:
        """Parse ``"0:200,40:150,80:200"`` (seconds:watts, comma separated)."""
        steps = []
        for part in text.split(","):
            part = part.strip()
            if part.count(":") != 1:
                raise ConfigError("cap schedule", f"each step is SECONDS:WATTS, like 0:200,40:150; got {part!r}")
            t, c = part.split(":")
            try:
                steps.append((float(t), float(c)))
            except ValueError:
                raise ConfigError("cap schedule", f"step {part!r} is not SECONDS:WATTS numbers") from None
        return cls(steps)

    def cap_at(self, elapsed: float) -> float:
        """The cap of the last step that started at or before ``elapsed`` (the first step's before 0)."""
        cap = self.steps[0][1]
        for t, c in self.steps:
            if t <= elapsed:
                cap = c
            else:
                break
        return cap

    def __repr__(self) -> str:
        return "schedule " + ",".join(f"{t:g}:{c:g}" for t, c in self.steps)


def parse_cap_text(text: str) -> float:
    """A cap file holds one number of watts, optionally followed by W; # starts a comment."""
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    words = [ln for ln in lines if ln]
    if len(words) != 1:
        raise ConfigError("cap file", f"must hold exactly one value in watts, found {len(words)} lines")
    word = words[0]
    if word.lower().endswith("w"):
        word = word[:-1].strip()
    return check_cap(word, "cap file")


class CapFile:
    """A cap that the user edits while the job runs; bad content keeps the previous cap.

    The file is re-read when its modification time or size changes. The first read must succeed
    (otherwise there is no cap to run under), later bad content is logged and ignored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.rejected: list[str] = []
        self._stamp: tuple[float, int] | None = None
        try:
            self.watts = parse_cap_text(self.path.read_text())
        except FileNotFoundError:
            raise ConfigError("cap file", f"{self.path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("cap file", f"cannot read {self.path}: {exc}") from None
        self._stamp = self._stat()

    def _stat(self) -> tuple[float, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def cap_at(self, elapsed: float) -> float:
        """The cap last read; the file is re-read when its mtime or size changed, bad content noted in ``rejected``."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return self.watts
        self._stamp = stamp
        try:
            new = parse_cap_text(self.path.read_text())
        except (ConfigError, OSError, UnicodeDecodeError) as exc:
            problem = exc.problem if isinstance(exc, ConfigError) else str(exc)
            message = f"{self.path}: {problem}; keeping the previous cap of {self.watts:g} W"
            self.rejected.append(message)  # the CLI reports these as events, on the terminal and in the records
            log.info("cap file %s", message)
            return self.watts
        if new != self.watts:
            log.info("cap file %s: cap changed from %g W to %g W", self.path, self.watts, new)
        self.watts = new
        return self.watts

    def __repr__(self) -> str:
        return f"file {self.path}"
