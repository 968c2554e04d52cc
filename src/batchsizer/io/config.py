"""``--config FILE``: a TOML file whose keys are a command's option names; flags on the command line win.

``cap = 150``, ``controller = "dvfs"``, ``save-outputs = "out.jsonl"`` (dashes or underscores).
An unknown key is an error that lists the allowed ones, so a typo never silently does nothing. A
relative path in the file (a file or folder option, a ``table:`` device's CSV) is taken from the
file's own folder, as a fleet file's tables are, so a config works from any working folder.
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
    params = {p.name: p for p in command.params}
    return {
        keys[k]: _from_folder(path.parent, _checked(path, k, v, params[keys[k]]), params[keys[k]])
        for k, v in data.items()
    }


def _from_folder(folder: Path, value: Any, param: click.Parameter) -> Any:
    """``value`` with a relative path in it taken from ``folder``: a path option's value (``-``,
    standard output, as it is) and a ``table:`` device's CSV."""
    if not isinstance(value, str):
        return value
    if isinstance(param.type, click.Path) and value != "-" and not Path(value).is_absolute():
        return str(folder / value)
    if param.name == "device" and value.strip().lower().startswith("table:"):
        from batchsizer.sim.table_plant import absolute_table_name

        return absolute_table_name(value, folder)
    return value


def _toml(value: Any) -> str:
    """A value as it was written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _checked(path: Path, key: str, value: Any, param: click.Parameter) -> Any:
    """``value`` for ``param`` if it is of the option's type (checked here, like on the command line,
    so that a wrong type is one line naming the file and the key); a list of values for a
    comma-separated option (``sizes = [1, 2, 4]``) is joined."""

    def bad(allowed: str) -> ConfigError:
        return ConfigError("config", f"{path}: {key} = {_toml(value)}: {allowed}")

    kind = param.type
    if isinstance(param, click.Option) and param.is_flag:
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if isinstance(value, list):
        if not isinstance(kind, click.types.StringParamType) or any(isinstance(v, (list, dict, bool)) for v in value):
            raise bad("must be a single value, not a list" if not isinstance(kind, click.types.StringParamType)
                      else "must be a list of numbers or words, like [1, 2, 4]")  # fmt: skip
        value = ",".join(map(str, value))
    if isinstance(kind, click.types.IntParamType) and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("must be a whole number" + (" (without quotes)" if isinstance(value, str) else ""))
    if isinstance(kind, click.types.FloatParamType) and (
        isinstance(value, bool) or not isinstance(value, (int, float))
    ):
        raise bad("must be a number" + (" (without quotes)" if isinstance(value, str) else ""))
    if isinstance(kind, (click.types.StringParamType, click.Choice, click.Path)) and not isinstance(value, str):
        raise bad("must be text in quotes")
    try:
        kind.convert(value, param, None)
    except click.BadParameter as exc:
        raise bad(exc.message) from None
    return value


def _apply(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **load_config(value, ctx.command)}
    return value


def config_option(example: str) -> Callable[[F], F]:
    """``--config FILE`` (read before every other option, so the file supplies their defaults); ``example``
    is one of the command's own keys for the help (``cap = 150`` for run, ``budget = 900`` for fleet)."""
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        is_eager=True,
        expose_value=False,
        callback=_apply,
        help=f"TOML file of option values (keys are the option names, e.g. {example}); command-line flags win [default: none].",
    )
