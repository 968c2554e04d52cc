"""The ``batchsizer`` command. Each subcommand is a module in :mod:`batchsizer.cli.commands`
exposing ``command`` (a click command); they are found by name, so adding one touches no other file.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from batchsizer import __version__
from batchsizer.errors import BatchSizerError


class _Commands(click.Group):
    """Finds subcommands lazily and turns user mistakes into one clear line and exit code 2."""

    def _modules(self) -> list[str]:
        from batchsizer.cli import commands

        return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | {m.replace("_", "-") for m in self._modules()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        module = cmd_name.replace("-", "_")
        if module not in self._modules():
            return None
        command: click.Command = importlib.import_module(f"batchsizer.cli.commands.{module}").command
        if not any(p.name == "verbose" for p in command.params):  # -v after the subcommand too
            command.params.append(
                click.Option(
                    ["-v", "--verbose"],
                    is_flag=True,
                    expose_value=False,
                    callback=_verbose,
                    help="Log what the tool does to stderr (as batchsizer -v).",
                )
            )
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BatchSizerError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:  # an unknown option or a value of the wrong type: one line too
            _usage_error(ctx, exc)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # the group's own options (batchsizer --bogus)
            _usage_error(ctx, exc)
            raise  # not reached: _usage_error exits


def _usage_error(ctx: click.Context, exc: click.UsageError) -> None:
    """Say a click usage error in one line, pointing at the help of the command it was given to, and exit 2."""
    where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
    if exc.ctx is None and ctx.invoked_subcommand:  # click names no context for "requires an argument"
        where = f"{ctx.command_path} {ctx.invoked_subcommand}"
    click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
    ctx.exit(exc.exit_code)


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.INFO)


EPILOG = """\b
Exit codes:
  0    done (bare `batchsizer` too: it prints this help)
  1    an unexpected error: a bug, please report its traceback
  2    bad input, one line `error: <field>: <what is allowed>`,
       or a device that failed
  3    run --strict: the cap could not be met
  130  stopped by Ctrl-C (SIGINT), records and outputs flushed
  143  stopped by SIGTERM, records and outputs flushed

\b
Shell completion, e.g. in ~/.bashrc (zsh_source, fish_source for others):
  eval "$(_BATCHSIZER_COMPLETE=bash_source batchsizer)"
"""


@click.group(
    cls=_Commands,
    invoke_without_command=True,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(__version__, prog_name="batchsizer")
@click.option("-v", "--verbose", is_flag=True, help="Log what the tool does (cap changes, warnings) to stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Run DNN inference under a power cap, as fast as the cap allows, by moving the batch size.

    With no GPU, everything runs on a simulated one (the default device, sim:p40).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    if ctx.invoked_subcommand is None:  # bare `batchsizer`: the help, and success (as `git` or `pip` do)
        click.echo(ctx.get_help())
        ctx.exit(0)


def main() -> None:
    """The ``batchsizer`` console script; its exit codes are in the help's epilog."""
    cli(prog_name="batchsizer")
