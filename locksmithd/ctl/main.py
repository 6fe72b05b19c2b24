"""locksmithctl: inspect and control the reboot semaphore (locksmith-compatible CLI)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

import click

from locksmithd import __version__
from locksmithd.host.journal import quiet_grpc
from locksmithd.errors import ConfigError, ExitCode, LocksmithError, UsageError
from locksmithd.etcd.settings import DEFAULT_ENDPOINT, EtcdSettings, parse_endpoints, validate_tls_and_auth

if TYPE_CHECKING:  # the etcd client (grpc) is imported only by commands that need it
    from locksmithd.etcd.lock import SemaphoreClient

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code.value:>2}  {code.name.lower().replace('_', ' ')}" for code in ExitCode
)


@dataclass(frozen=True)
class CtlContext:
    """What every command needs, validated once from flags and LOCKSMITHCTL_* env."""

    etcd: EtcdSettings
    group: str
    machine_id_file: str
    bus_address: str | None

    def semaphore(self) -> SemaphoreClient:
        from locksmithd.etcd.client import EtcdStore
        from locksmithd.etcd.lock import SemaphoreClient

        return SemaphoreClient(EtcdStore(self.etcd), self.group, self.etcd.key_prefix)

    def default_id(self, given: str | None) -> str:
        from locksmithd.host.identity import read_machine_id, validate_holder_id

        if given is not None:
            return validate_holder_id(given, "command line", "ID")
        return read_machine_id(self.machine_id_file)


def _fail(error: LocksmithError) -> NoReturn:
    click.echo(f"locksmithctl: {error.one_line()}", err=True)
    sys.exit(int(error.exit_code))


def _handled(func: F) -> F:
    """Turn LocksmithError into one stderr line and its exit code (the one place that exits)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LocksmithError as error:
            _fail(error)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LOCKSMITHCTL"},
             epilog=EXIT_CODES_HELP)
@click.option("--endpoint", "endpoints", multiple=True, envvar="LOCKSMITHCTL_ENDPOINT", metavar="URL",
              help=f"etcd endpoint; repeat or comma-separate [default: {DEFAULT_ENDPOINT}]")
@click.option("--group", default="", envvar="LOCKSMITHCTL_GROUP", help="reboot group [default: the default group]")
@click.option("--etcd-cafile", envvar="LOCKSMITHCTL_ETCD_CAFILE", help="CA certificate for etcd TLS")
@click.option("--etcd-certfile", envvar="LOCKSMITHCTL_ETCD_CERTFILE", help="client certificate for etcd TLS")
@click.option("--etcd-keyfile", envvar="LOCKSMITHCTL_ETCD_KEYFILE", help="client key for etcd TLS")
@click.option("--etcd-username", envvar="LOCKSMITHCTL_ETCD_USERNAME", help="etcd user name")
@click.option("--etcd-password", envvar="LOCKSMITHCTL_ETCD_PASSWORD", help="etcd password (prefer the env variable)")
@click.option("--etcd-key-prefix", default="", envvar="LOCKSMITHCTL_ETCD_KEY_PREFIX",
              help="prefix before locksmith's key names (multi-tenant etcd)")
@click.option("--etcd-timeout", default=5.0, type=click.FloatRange(min=0.1), envvar="LOCKSMITHCTL_ETCD_TIMEOUT",
              help="seconds per etcd request [default: 5]")
@click.option("--machine-id-file", default="/etc/machine-id", envvar="LOCKSMITHCTL_MACHINE_ID_FILE", hidden=True)
@click.option("--bus-address", envvar="DBUS_SYSTEM_BUS_ADDRESS", hidden=True)
@click.option("--debug", is_flag=True, envvar="LOCKSMITHCTL_DEBUG", help="log etcd and D-Bus traffic to stderr")
@click.version_option(__version__, "--version", prog_name="locksmithctl")
@click.pass_context
@_handled
def cli(ctx: click.Context, endpoints: tuple[str, ...], group: str, etcd_cafile: str | None,
        etcd_certfile: str | None, etcd_keyfile: str | None, etcd_username: str | None,
        etcd_password: str | None, etcd_key_prefix: str, etcd_timeout: float, machine_id_file: str,
        bus_address: str | None, debug: bool) -> None:
    """Manage the cluster-wide reboot lock used by locksmithd."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="locksmithctl: %(levelname)s %(name)s: %(message)s")
    if not debug:
        logging.getLogger("locksmithd").setLevel(logging.ERROR)
    source = "command line or LOCKSMITHCTL_* environment"
    try:
        parsed = parse_endpoints(endpoints or (DEFAULT_ENDPOINT,), source, "LOCKSMITHCTL_ENDPOINT")
    except ConfigError as error:
        raise UsageError(error.message) from error
    settings = EtcdSettings(
        endpoints=parsed,
        cafile=etcd_cafile or None, certfile=etcd_certfile or None, keyfile=etcd_keyfile or None,
        username=etcd_username or None, password=etcd_password or None,
        key_prefix=etcd_key_prefix, request_timeout_s=etcd_timeout)
    try:
        validate_tls_and_auth(settings, source, "LOCKSMITHCTL_")
    except ConfigError as error:  # a bad option value is a usage error for the CLI
        raise UsageError(error.message) from error
    logging.getLogger("locksmithd.ctl").debug("etcd settings: %r", settings)
    ctx.obj = CtlContext(settings, group, machine_id_file, bus_address or None)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--raw", is_flag=True, help="print the stored document as is (for a corrupt one)")
@click.pass_obj
@_handled
def status(obj: CtlContext, as_json: bool, raw: bool) -> None:
    """Show the semaphore: free slots, maximum, holders and the waiting queue."""
    client = obj.semaphore()
    if raw:
        stored = client.read_raw()
        click.echo("(absent)" if stored is None else stored.value.decode("utf-8", errors="backslashreplace"))
        return
    from locksmithd.ctl.status_view import collect_status, render_json, render_text

    report = collect_status(client, obj.group, obj.etcd.key_prefix)
    click.echo(render_json(report) if as_json else render_text(report))


@cli.command()
@click.argument("holder_id", metavar="[ID]", required=False)
@click.pass_obj
@_handled
def lock(obj: CtlContext, holder_id: str | None) -> None:
    """Take a slot for ID (default: this machine's id)."""
    from locksmithd.host.holder_info import describe_holder

    holder = obj.default_id(holder_id)
    client = obj.semaphore()
    before = client.read().semaphore
    client.lock(holder, describe_holder(source="locksmithctl"))
    if before.holds(holder):
        click.echo(f"{holder} already holds a slot in {_group_name(obj.group)}")


@cli.command()
@click.argument("holder_id", metavar="[ID]", required=False)
@click.pass_obj
@_handled
def unlock(obj: CtlContext, holder_id: str | None) -> None:
    """Release the slot held by ID (default: this machine's id)."""
    holder = obj.default_id(holder_id)
    obj.semaphore().unlock(holder)


@cli.command("set-max")
@click.argument("new_max", metavar="N")
@click.pass_obj
@_handled
def set_max(obj: CtlContext, new_max: str) -> None:
    """Set the number of hosts that may reboot at once."""
    try:
        value = int(new_max, 10)
    except ValueError:
        raise UsageError(f"N must be a whole number >= 0, got {new_max!r}") from None
    if value < 0:
        raise UsageError(f"N must be a whole number >= 0, got {new_max!r}")
    client = obj.semaphore()
    old = client.read().semaphore
    new = client.set_max(value)
    click.echo(f"Old: {old.max}\nNew: {new.max}")
    if len(new.holders) > new.max:
        click.echo(f"note: {len(new.holders)} hosts hold slots, more than the new max {new.max}; "
                   "no host will get a slot until enough of them release", err=True)


@cli.command()
@click.option("--max", "new_max", type=click.IntRange(min=0), required=True, help="max of the fresh semaphore")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_obj
@_handled
def reset(obj: CtlContext, new_max: int, yes: bool) -> None:
    """Replace the semaphore document (even a corrupt one) by an empty one; holders are dropped."""
    from locksmithd.errors import Aborted

    client = obj.semaphore()
    stored = client.read_raw()
    shown = "(absent)" if stored is None else stored.value.decode("utf-8", errors="backslashreplace")
    click.echo(f"Current document at {client.key}:\n{shown[:2000]}", err=True)
    if not yes:
        if not sys.stdin.isatty():
            raise Aborted("reset needs confirmation: rerun with --yes")
        if not click.confirm(f"Drop all holders and reset {client.key} to max {new_max}?", err=True):
            raise Aborted("reset not confirmed; nothing changed")
    client.reset(new_max, stored)
    click.echo(f"Reset {client.key}: max {new_max}, no holders")


@cli.command("send-need-reboot")
@click.pass_obj
@_handled
def send_need_reboot(obj: CtlContext) -> None:
    """Emit update_engine's 'reboot needed' signal on the system bus."""
    from locksmithd.bus.need_reboot import send_need_reboot_sync

    send_need_reboot_sync(obj.bus_address)


@cli.command()
@click.pass_obj
@_handled
def reboot(obj: CtlContext) -> None:
    """Take this machine's slot and reboot through logind; release the slot if logind refuses."""
    import asyncio

    from locksmithd.bus.connection import connect, disconnect
    from locksmithd.bus.logind import LogindClient
    from locksmithd.host.holder_info import describe_holder

    holder = obj.default_id(None)
    client = obj.semaphore()
    client.lock(holder, describe_holder(source="locksmithctl reboot"))

    async def ask_logind() -> None:
        bus = await connect(obj.bus_address)
        try:
            await LogindClient(bus).reboot()
        finally:
            await disconnect(bus)

    try:
        asyncio.run(ask_logind())
    except LocksmithError:
        client.unlock(holder)
        raise
    click.echo(f"{holder} holds a slot; reboot requested")


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


def _group_name(group: str) -> str:
    return f"group {group!r}" if group else "the default group"


def main() -> None:
    """Console entry point."""
    quiet_grpc()
    cli(prog_name="locksmithctl")


if __name__ == "__main__":
    main()
