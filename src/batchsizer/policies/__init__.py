"""Controllers by name. Each is a pure policy; :func:`make_controller` builds one for a device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchsizer.errors import ConfigError
from batchsizer.policies.adaptive import Adaptive, all_sizes
from batchsizer.policies.aimd import Aimd
from batchsizer.policies.algorithm1 import Algorithm1
from batchsizer.policies.base import (
    DEFAULT_BATCH_SIZES,
    Controller,
    Decision,
    DeviceKnobs,
    Observation,
    Setting,
)
from batchsizer.policies.batchdvfs import BATCHDVFS_SIZES, BatchDvfs
from batchsizer.policies.dvfs import DvfsSearch
from batchsizer.policies.static import Static

Factory = Callable[[DeviceKnobs, dict[str, Any]], Controller]


def _given(o: dict[str, Any], key: str, default: Any) -> Any:
    """The option if the user gave it (0 included, so it is checked rather than replaced), else the default."""
    value = o.get(key)
    return default if value is None else value


def _powers_of_two(knobs: DeviceKnobs) -> tuple[int, ...]:
    """The paper's sizes (powers of two to 256), or the powers of two up to the device's largest size."""
    if knobs.size_range is None:
        return DEFAULT_BATCH_SIZES
    top = knobs.size_range[1]
    return tuple(2**i for i in range(top.bit_length()) if 2**i <= top)


def _batchsizer(knobs: DeviceKnobs, o: dict[str, Any]) -> Controller:
    return Algorithm1(
        sizes=o.get("sizes") or knobs.default_sizes(_powers_of_two(knobs)),
        alpha=o.get("alpha", 0.8),
        initial=o.get("initial"),
        clock_mhz=o.get("clock_mhz"),
    )


def _dvfs(knobs: DeviceKnobs, o: dict[str, Any]) -> Controller:
    if not knobs.has_clocks:
        why = f" ({knobs.clocks_withheld})" if knobs.clocks_withheld else ""
        raise ConfigError("controller", f"dvfs needs a device whose clock can be set; this one has none{why}")
    return DvfsSearch(knobs.clock_levels_mhz, batch_size=_given(o, "batch_size", 16), alpha=o.get("alpha", 0.8))


def _static(knobs: DeviceKnobs, o: dict[str, Any]) -> Controller:
    return Static(batch_size=_given(o, "batch_size", 16), clock_mhz=o.get("clock_mhz"))


def _aimd(knobs: DeviceKnobs, o: dict[str, Any]) -> Controller:
    # the user's list is kept (the batch run snaps to it); without one, every whole size up to the
    # device's largest default size, as the released baseline steps
    if o.get("sizes"):
        return Aimd(initial=o.get("initial"), sizes=o["sizes"])
    return Aimd(initial=_given(o, "initial", 1), max_batch_size=max(knobs.default_sizes(DEFAULT_BATCH_SIZES)))


def _adaptive(knobs: DeviceKnobs, o: dict[str, Any]) -> Controller:
    lo, hi = knobs.size_range or (1, 256)
    return Adaptive(sizes=o.get("sizes") or all_sizes(hi, lo), knobs=knobs, initial=o.get("initial"))


def _batchdvfs(knobs: DeviceKnobs, o: dict[str, Any]) -> Controller:
    # not chosen: the released code's 1..255 (every whole size), inside the device's range
    lo, hi = knobs.size_range or (1, 255)
    sizes = o.get("sizes") or (BATCHDVFS_SIZES if knobs.size_range is None else tuple(range(lo, hi + 1)))
    return BatchDvfs(
        sizes=sizes,
        clock_levels_mhz=knobs.clock_levels_mhz,
        alpha=_given(o, "alpha", 0.8),
        initial=o.get("initial"),
        initial_clock_mhz=o.get("clock_mhz"),
    )


CONTROLLERS: dict[str, Factory] = {
    "adaptive": _adaptive,
    "batchsizer": _batchsizer,
    "dvfs": _dvfs,
    "static": _static,
    "aimd": _aimd,
    "batchdvfs": _batchdvfs,
}

#: the class each named controller builds, for what it declares (``accepts``, ``moves_clock``) before one is built
CONTROLLER_TYPES: dict[str, type[Controller]] = {
    "adaptive": Adaptive,
    "batchsizer": Algorithm1,
    "dvfs": DvfsSearch,
    "static": Static,
    "aimd": Aimd,
    "batchdvfs": BatchDvfs,
}

#: the controller used unless one is named: the model-based one (how it compares with Algorithm 1: docs/controllers.md)
DEFAULT_CONTROLLER = "adaptive"


def register(name: str, factory: Factory, cls: type[Controller] | None = None) -> None:
    """Add a controller that the CLI and the reproduction can name; ``cls``, the class it builds, tells
    the CLI which options it reads (its ``accepts``) and whether it moves the clock."""
    CONTROLLERS[name] = factory
    if cls is None:
        CONTROLLER_TYPES.pop(name, None)
    else:
        CONTROLLER_TYPES[name] = cls


def controller_type(name: str) -> type[Controller] | None:
    """The class the controller called ``name`` builds, where it is known (None: unknown or not declared)."""
    return CONTROLLER_TYPES.get(name) if name in CONTROLLERS else None


def make_controller(name: str, knobs: DeviceKnobs | None = None, **options: Any) -> Controller:
    """Build the controller called ``name`` for a device with ``knobs``."""
    factory = CONTROLLERS.get(name)
    if factory is None:
        raise ConfigError("controller", f"unknown controller {name!r}; choose one of {', '.join(sorted(CONTROLLERS))}")
    return factory(knobs or DeviceKnobs(), options)


__all__ = [
    "CONTROLLERS",
    "CONTROLLER_TYPES",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_CONTROLLER",
    "Controller",
    "Decision",
    "DeviceKnobs",
    "Observation",
    "Setting",
    "controller_type",
    "make_controller",
    "register",
]
