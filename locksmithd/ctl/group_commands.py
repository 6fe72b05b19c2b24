"""locksmithctl's group commands: halt, resume and history."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import click

from locksmithd.core.halt import HALT_REPAIR, OPERATOR, Halt
from locksmithd.core.history import DEFAULT_LIMIT, HistoryEvent
from locksmithd.core.holder_record import format_time
from locksmithd.core.names import group_problem, printable
from locksmithd.ctl.context import CtlContext, group_label, handled, is_not_utf8, parse_count, value_problem
from locksmithd.errors import CorruptDocument, InvalidName, UsageError

MAX_REASON_CHARS = 1000
F = TypeVar("F", bound=Callable[..., Any])


def group_option(func: F) -> F:
    """``--group G`` after the command, as in ``locksmithctl halt --reason TEXT --group G`` (wins over the global one)."""
    return click.option("--group", "command_group", default=None, metavar="G",
                        help="the reboot group [default: the global --group, else the default group]")(func)


def in_group(obj: CtlContext, command_group: str | None) -> CtlContext:
    """``obj`` for ``command_group`` when given (checked against the naming rule), else as it is."""
    if command_group is None:
        return obj
    problem = group_problem(command_group)
    if problem is not None:
        raise InvalidName(value_problem("--group", command_group, problem))
    return replace(obj, group=command_group)


@click.command()
@click.option("--reason", required=True, help="why the group is halted (shown by status and history)")
@group_option
@click.pass_obj
@handled
def halt(obj: CtlContext, reason: str, command_group: str | None) -> None:
    """Stop every host of the group from taking a slot until 'resume'.

    Holders keep their slots: hosts already rebooting finish and check their
    health as usual. Halting a halted group changes nothing.
    """
    from locksmithd.etcd.halt import halt_group

    if is_not_utf8(reason):  # as every other text option: never stored, never echoed
        raise UsageError("--reason is not valid UTF-8")
    obj = in_group(obj, command_group)
    text = " ".join(reason.split())
    if not text or len(text) > MAX_REASON_CHARS:
        raise UsageError(f"--reason must be 1 to {MAX_REASON_CHARS} characters of text")
    now = datetime.now(timezone.utc)
    wanted = Halt(reason=text, by=OPERATOR, since=now, group=obj.group)
    client = obj.semaphore()
    in_force = halt_group(client, wanted, [HistoryEvent(at=now, host=OPERATOR, event="halt", detail=text)])
    if isinstance(in_force, CorruptDocument):  # it stops acquisitions already; nothing was written
        raise CorruptDocument(f"{in_force.problem}; the group stays halted by it and this halt was not written",
                              in_force.key, what="halt record", repair=HALT_REPAIR)
    if in_force != wanted:
        click.echo(f"{group_label(obj.group)} was already halted since {format_time(in_force.since)} by "
                   f"{printable(in_force.by)}: {printable(in_force.reason, 300)}")
    else:
        click.echo(f"halted {group_label(obj.group)}: {printable(text)}")


@click.command()
@group_option
@click.pass_obj
@handled
def resume(obj: CtlContext, command_group: str | None) -> None:
    """Lift the group's halt (also removes a corrupt halt record); waiting hosts go on at once."""
    from locksmithd.etcd.halt import resume_group

    obj = in_group(obj, command_group)
    client = obj.semaphore()
    event = HistoryEvent(at=datetime.now(timezone.utc), host=OPERATOR, event="resume")
    outcome = resume_group(client, event)
    removed = outcome.removed
    if removed is None:
        click.echo(f"{group_label(obj.group)} is not halted (nothing to resume)")
    elif isinstance(removed, CorruptDocument):
        click.echo(f"resumed {group_label(obj.group)}: removed a corrupt halt record ({printable(removed.problem, 300)})")
    else:
        click.echo(f"resumed {group_label(obj.group)} (halted since {format_time(removed.since)} by "
                   f"{printable(removed.by)}: {printable(removed.reason, 300)})")
    if not outcome.recorded:
        click.echo("locksmithctl: warning: no history event was written: the semaphore document is corrupt "
                   "(repair with 'locksmithctl reset --max N --yes')", err=True)


@click.command()
@click.option("--limit", default=str(DEFAULT_LIMIT), metavar="N", help=f"newest N events [{DEFAULT_LIMIT}]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@group_option
@click.pass_obj
@handled
def history(obj: CtlContext, limit: str, as_json: bool, command_group: str | None) -> None:
    """Show the group's events (slots taken, reboots, health, halts, operator actions), newest last."""
    from locksmithd.etcd.history import read_history

    obj = in_group(obj, command_group)
    count = parse_count("--limit", limit)
    client = obj.semaphore()
    events, unreadable = read_history(client.store, obj.group, obj.etcd.key_prefix)
    shown = events[-count:] if count else []
    if unreadable:
        click.echo(f"locksmithctl: warning: {unreadable} history entries could not be read and are left out",
                   err=True)
    if as_json:
        click.echo(json.dumps([{"at": format_time(e.at), "host": e.host, "event": e.event, "detail": e.detail}
                               for e in shown]))
        return
    click.echo(f"{'TIME':<24}  {'HOST':<32}  {'EVENT':<16}  DETAIL")
    for event in shown:
        click.echo(f"{format_time(event.at):<24}  {printable(event.host, 64):<32}  {event.event:<16}  "
                   f"{printable(event.detail, 300)}")
