"""Typed errors: user mistakes (shown as one clear line, no traceback) versus device faults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class BatchSizerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BatchSizerError, ValueError):
    """A user-supplied value is invalid; the message names the field and what is allowed."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its message and attributes, not by calling __init__ again with the message
        # (which takes field and problem): so it crosses process boundaries (reproduce's workers)
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    return error


def describe_values(values: Sequence[int]) -> str:
    """Allowed values for a message: all of them when few, else a range or the first and last few
    (a list of 256 sizes or 80 clock levels buries the message)."""
    values = list(values)
    if len(values) <= 12:
        return str(values)
    if values == list(range(values[0], values[-1] + 1)):
        return f"the whole numbers {values[0]}..{values[-1]}"
    head, tail = ", ".join(map(str, values[:5])), ", ".join(map(str, values[-3:]))
    return f"the {len(values)} values [{head}, ..., {tail}]"


class DeviceError(BatchSizerError):
    """A device (real or simulated) failed or cannot do what was asked."""


class UnsupportedError(DeviceError):
    """The device has no such knob or sensor (for example no settable clocks)."""


class PermissionDeniedError(DeviceError):
    """Changing a GPU setting needs root or CAP_SYS_ADMIN."""


class TelemetryError(DeviceError):
    """A power reading could not be obtained."""


class OutOfMemoryError(DeviceError):
    """A batch did not fit in the device's memory. The loop answers by running smaller batches."""

    def __init__(self, batch_size: int, device: str, detail: str = "") -> None:
        self.batch_size = batch_size
        self.device = device
        more = f" ({detail})" if detail else ""
        items = "item" if batch_size == 1 else "items"
        super().__init__(f"a batch of {batch_size} {items} does not fit in {device}'s memory{more}")
