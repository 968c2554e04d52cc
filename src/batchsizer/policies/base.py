"""What a controller sees and decides (the shared types and the :class:`Controller` interface, from
:mod:`batchsizer.core`), and the option checks and default sizes the controllers share."""

from __future__ import annotations

from collections.abc import Sequence

from batchsizer.core.controller import Controller
from batchsizer.core.types import Decision, DeviceKnobs, FrontierPoint, Observation, Setting
from batchsizer.errors import ConfigError

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "Controller",
    "Decision",
    "DeviceKnobs",
    "FrontierPoint",
    "Observation",
    "Setting",
    "check_alpha",
    "check_sizes",
]

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def check_sizes(sizes: Sequence[int], field: str = "batch sizes") -> tuple[int, ...]:
    """An ascending set of positive whole numbers, at least one."""
    values = tuple(sizes)
    if not values:
        raise ConfigError(field, "must hold at least one size, e.g. 1,2,4,8")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(field, f"must be whole numbers, got {v!r}")
        if v < 1:
            raise ConfigError(field, f"must all be at least 1, got {v}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(field, f"must be strictly ascending with no repeats, got {list(values)}")
    return values


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float strictly between 0 and 1 (the band's floor as a share of the cap); ConfigError else."""
    if not isinstance(alpha, (int, float)) or not (0 < float(alpha) < 1):
        raise ConfigError("alpha", f"must be between 0 and 1 (exclusive), got {alpha!r}")
    return float(alpha)
