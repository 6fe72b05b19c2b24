"""locksmithctl: inspect and control the reboot semaphore (locksmith-compatible CLI)."""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from typing import Any

import click
from click.core import ParameterSource

from locksmithd import __version__
from locksmithd.core.etcd_config import request_timeout_problem
from locksmithd.core.host_defaults import DEFAULT_MACHINE_ID_PATH
from locksmithd.core.names import group_problem, printable
from locksmithd.ctl.context import CtlContext, fail, handled, is_not_utf8, value_problem
from locksmithd.errors import Aborted, ConfigError, ExitCode, InvalidName, LocksmithError, UsageError
from locksmithd.host.journal import quiet_grpc
from locksmithd.settings.etcd_options import etcd_click_options, etcd_settings_from

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code.value:>2}  {code.name.lower().replace('_', ' ')}" for code in ExitCode
)

# Options whose text goes into etcd keys, gRPC requests or D-Bus: bytes that are
# not UTF-8 cannot be sent, so they are refused up front. File paths may be any bytes.
_UTF8_OPTIONS = ("endpoints", "group", "etcd_username", "etcd_password", "etcd_key_prefix", "bus_address")
_MAX_CLICK_MESSAGE_CHARS = 300

# Each command's module, imported only when that command runs (or help lists it): a command
# pays for its own imports only (window's schedules, the bus, identity), not for every command's.
_COMMAND_MODULES = {
    "status": "semaphore_commands", "lock": "semaphore_commands", "unlock": "semaphore_commands",
    "set-max": "semaphore_commands", "reset": "semaphore_commands",
    "halt": "group_commands", "resume": "group_commands", "history": "group_commands",
    "metrics": "metrics_command", "send-need-reboot": "bus_commands", "reboot": "bus_commands",
    "window": "window_command",
}


class _LazyGroup(click.Group):
    """A click group whose commands (from _COMMAND_MODULES) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMAND_MODULES:
            module = importlib.import_module(f"locksmithd.ctl.{_COMMAND_MODULES[cmd_name]}")
            command = next(c for c in vars(module).values() if isinstance(c, click.Command) and c.name == cmd_name)
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


# Each global option names its LOCKSMITHCTL_* variable; no automatic variables for command
# options, so a stray LOCKSMITHCTL_RESET_YES cannot skip reset's confirmation.
@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@etcd_click_options("LOCKSMITHCTL_")
@click.option("--group", default="", envvar="LOCKSMITHCTL_GROUP", help="reboot group [default: the default group]")
@click.option("--machine-id-file", default=DEFAULT_MACHINE_ID_PATH, envvar="LOCKSMITHCTL_MACHINE_ID_FILE", hidden=True)
@click.option("--holder-id", "holder_id_mode", type=click.Choice(["machine-id", "app-specific"]),
              default="machine-id", envvar="LOCKSMITHCTL_HOLDER_ID",
              help="this host's id: the machine id, or the app-specific id derived from it as locksmithd's "
                   "LOCKSMITHD_HOLDER_ID=app-specific does [default: machine-id]")
@click.option("--bus-address", envvar="DBUS_SYSTEM_BUS_ADDRESS", hidden=True)
@click.option("--debug", is_flag=True, envvar="LOCKSMITHCTL_DEBUG", help="log etcd and D-Bus traffic to stderr")
@click.version_option(__version__, "--version", prog_name="locksmithctl")
@click.pass_context
@handled
def cli(ctx: click.Context, endpoints: tuple[str, ...], group: str, etcd_cafile: str | None,
        etcd_certfile: str | None, etcd_keyfile: str | None, etcd_username: str | None,
        etcd_password: str | None, etcd_key_prefix: str, etcd_timeout: float, machine_id_file: str,
        holder_id_mode: str, bus_address: str | None, debug: bool) -> None:
    """Manage the cluster-wide reboot lock used by locksmithd."""
    _configure_logging(debug)
    _check_text_options(ctx)
    problem = group_problem(group)
    if problem is not None:
        raise InvalidName(value_problem(_option_label(ctx, "group"), group, problem))
    problem = request_timeout_problem(etcd_timeout)
    if problem is not None:
        raise UsageError(f"{_option_label(ctx, 'etcd_timeout')} {etcd_timeout!r}: {problem}")
    source = "command line or LOCKSMITHCTL_* environment"
    try:  # a bad option value is a usage error for the CLI
        settings = etcd_settings_from(ctx.params, source, "LOCKSMITHCTL_")
    except ConfigError as error:
        raise UsageError(error.message) from error
    if etcd_password and ctx.get_parameter_source("etcd_password") is ParameterSource.COMMANDLINE:
        click.echo("locksmithctl: warning: --etcd-password is visible to every user in ps; "
                   "set LOCKSMITHCTL_ETCD_PASSWORD instead", err=True)
    logging.getLogger("locksmithd.ctl").debug("etcd settings: %r", settings)
    ctx.obj = CtlContext(settings, group, machine_id_file, bus_address or None, holder_id_mode)


@cli.command("help")
@click.argument("command", required=False)
@click.pass_context
def help_command(ctx: click.Context, command: str | None) -> None:
    """Show help for locksmithctl or one of its commands."""
    parent = ctx.parent
    assert parent is not None
    if command is None:
        click.echo(parent.get_help())
        return
    sub = cli.get_command(parent, command)
    if sub is None:
        raise click.UsageError(f"no such command: {command}", ctx=ctx)
    with click.Context(sub, info_name=command, parent=parent) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


class _EscapingFormatter(logging.Formatter):
    """Log lines with control characters escaped: logged keys and values may come from etcd."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("locksmithctl: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    if not debug:
        logging.getLogger("locksmithd").setLevel(logging.ERROR)


def _option_label(ctx: click.Context, name: str) -> str:
    """How the user gave option ``name``: its environment variable or its flag."""
    param = next(p for p in ctx.command.params if p.name == name)
    if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
        return param.envvar
    return param.opts[0]


def _check_text_options(ctx: click.Context) -> None:
    """Refuse option values that are not UTF-8, naming the option and never echoing the value."""
    for name in _UTF8_OPTIONS:
        value: Any = ctx.params.get(name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(text, str) and is_not_utf8(text) for text in values):
            raise UsageError(f"{_option_label(ctx, name)} is not valid UTF-8")


def _click_error(error: click.ClickException) -> LocksmithError:
    """click's own errors (unknown command, bad option value) as one bounded, escaped line."""
    message = printable(error.format_message(), _MAX_CLICK_MESSAGE_CHARS)
    if isinstance(error, click.UsageError):
        return UsageError(f"{message} (see 'locksmithctl --help')")
    return LocksmithError(message)


def main(args: list[str] | None = None) -> None:
    """Console entry point: every outcome is an exit code and at most one stderr line."""
    try:
        _run(args)
    finally:
        # The process ends now: move every object to the permanent generation, so the
        # interpreter's collections at exit skip them (grpc, protobuf, 10,000 waiters: ~4% of a status).
        gc.freeze()


def _run(args: list[str] | None) -> None:
    quiet_grpc()
    for stream in (sys.stdout, sys.stderr):  # ids are printable but may not fit a non-UTF-8 locale
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = cli.main(args=args, prog_name="locksmithctl", standalone_mode=False)
    except click.ClickException as error:
        fail(_click_error(error))
    except click.exceptions.Abort:  # Ctrl-C or end of input, e.g. at the reset prompt
        if sys.stderr.isatty():  # end the prompt's or "^C"'s line first
            click.echo("", err=True)
        fail(Aborted("interrupted (Ctrl-C or end of input); if a write was in flight, "
                     "check with 'locksmithctl status'"))
    except Exception as error:  # a bug must still end as one line (details with --debug)
        logging.getLogger("locksmithd.ctl").debug("unexpected error", exc_info=True)
        fail(LocksmithError(f"unexpected {type(error).__name__}: {printable(str(error), 200)} "
                           "(rerun with --debug for details)"))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
