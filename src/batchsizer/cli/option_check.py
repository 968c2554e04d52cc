"""The one check of options given against who reads them: the chosen device kind and controller.

Each device kind declares the options it reads (``core.workloads.DEVICE_OPTIONS``) and each
controller its own (``Controller.accepts``). An option the user set (on the command line, in the
environment or in ``--config``; defaults never count) that neither the device nor the controller
reads would silently do nothing. For a device option that is an error naming who would read it; for
a controller option it is a one-line warning (docs/controllers.md: "named in a one-line warning").
Options no device kind and no controller declares (``--cap``, ``--window``, ...) belong to the
command itself and are not checked here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import click

from batchsizer.core.workloads import DEVICE_LABELS, DEVICE_OPTIONS, options_kind
from batchsizer.errors import ConfigError
from batchsizer.policies import CONTROLLER_TYPES, controller_type


def option_flags(command: click.Command) -> dict[str, str]:
    """Parameter name -> its long flag (``clock_mhz`` -> ``--clock``), in the command's order."""
    flags: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name:
            longs = [o for o in param.opts if o.startswith("--")]
            flags[param.name] = longs[0] if longs else param.opts[0]
    return flags


def _flag(name: str, flags: Mapping[str, str]) -> str:
    return flags.get(name, "--" + name.replace("_", "-"))


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def users_of(name: str) -> list[str]:
    """Who reads option ``name``: the device kinds, then the controllers (as the user names them)."""
    kinds = [kind for kind, accepts in DEVICE_OPTIONS.items() if name in accepts]
    if "cpu" in kinds and "cuda" in kinds:  # both real kinds: named together, where cuda stood
        kinds = [k for k in kinds if k != "cpu"]
        labels = {**DEVICE_LABELS, "cuda": "real devices (cpu, cuda[:N])"}
    else:
        labels = DEVICE_LABELS
    devices = [labels.get(kind, kind) for kind in kinds]
    controllers = sorted(n for n, cls in CONTROLLER_TYPES.items() if cls.accepts is not None and name in cls.accepts)
    if controllers:
        devices.append(f"the {_join(controllers)} controller{'s' if len(controllers) > 1 else ''}")
    return devices


def check_options_used(
    given: Collection[str], device: str, controller: str | None, flags: Mapping[str, str]
) -> list[str]:
    """Raise ConfigError for the first device option in ``given`` (in ``flags`` order) that the device
    ``device`` does not read (nor the controller); return the warning for the controller options
    that ``controller`` ignores (empty when none, or when ``controller`` is None or undeclared).

    ``flags`` maps the command's parameter names to their flags, in the order they are listed."""
    device_universe = frozenset().union(*DEVICE_OPTIONS.values())
    accepts = DEVICE_OPTIONS.get(options_kind(device))  # None: a kind that declares nothing is not checked
    cls = controller_type(controller) if controller is not None else None
    reads = cls.accepts if cls is not None and cls.accepts is not None else None
    order = [n for n in flags if n in given] + sorted(n for n in given if n not in flags)
    controller_universe = frozenset().union(*(c.accepts for c in CONTROLLER_TYPES.values() if c.accepts is not None))
    if accepts is not None:
        for name in order:
            if name in device_universe and name not in accepts and not (reads is not None and name in reads):
                # the controller is named only for an option some controller reads (a device's own option
                # is no controller's to use)
                by = f" or the {controller} controller" if controller is not None and name in controller_universe else ""
                raise ConfigError(
                    _flag(name, flags).lstrip("-"),
                    f"not used by {device!r}{by}; used by {_join(users_of(name))}",
                )
    if reads is None:
        return []
    unused = [_flag(n, flags) for n in order if n in controller_universe and n not in reads and n not in device_universe]
    if not unused:
        return []
    one = len(unused) == 1
    return [
        f"{', '.join(unused)} {'is' if one else 'are'} not used by the {controller} controller "
        f"(it reads {', '.join(_flag(n, flags) for n in sorted(reads))}); leave {'it' if one else 'them'} out"
    ]
