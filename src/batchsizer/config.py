"""``--config FILE``: a TOML file whose keys are a command's option names; flags on the command line win.

``cap = 150``, ``controller = "dvfs"``, ``save-outputs = "out.jsonl"`` (dashes or underscores).
An unknown key is an error that lists the allowed ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from batchsizer.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

F = TypeVar("F", bound=Callable[..., Any])


def option_keys(command: click.Command) -> dict[str, str]:
    """Config key (the long option name without dashes, and its underscore form) -> click parameter name."""
    keys: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in (None, "config", "help"):
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                keys[opt[2:]] = param.name
                keys[opt[2:].replace("-", "_")] = param.name
    return keys


def load_config(path: Path, command: click.Command) -> dict[str, Any]:
    """The file's settings as a click ``default_map`` for ``command``."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("config", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    keys = option_keys(command)
    allowed = sorted({k for k in keys if "_" not in k or k.replace("_", "-") not in keys})
    unknown = [k for k in data if k not in keys]
    if unknown:
        raise ConfigError(
            "config", f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(allowed)}"
        )
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError("config", f"{path}: {', '.join(nested)} must be a value, not a table")
    return {keys[k]: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in data.items()}


def _apply(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **load_config(value, ctx.command)}
    return value


def config_option(f: F) -> F:
    """Adds ``--config FILE`` (read before every other option, so the file supplies their defaults)."""
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        is_eager=True,
        expose_value=False,
        callback=_apply,
        help="TOML file of option values (keys are the option names, e.g. cap = 150); command-line flags win [default: none].",
    )(f)
