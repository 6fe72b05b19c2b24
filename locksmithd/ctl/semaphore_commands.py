"""locksmithctl's semaphore commands: status, lock, unlock, set-max and reset."""

from __future__ import annotations

import sys

import click

from locksmithd.core.history import HistoryEvent
from locksmithd.core.names import printable
from locksmithd.ctl.context import CtlContext, group_label, handled, parse_count
from locksmithd.errors import Aborted, LocksmithError, UsageError

_UNLOCK_HINT = ("; no valid document holds such an id: if 'locksmithctl status' reports the document corrupt, "
                "repair it with 'locksmithctl reset --max N --yes'")


def operator_event(kind: str, host: str, detail: str = "by locksmithctl") -> HistoryEvent:
    """A history event for an operator's command, timed now."""
    from datetime import datetime, timezone

    return HistoryEvent(at=datetime.now(timezone.utc), host=host, event=kind, detail=detail)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--raw", is_flag=True, help="print the stored document on one line, control characters escaped")
@click.option("--raw-bytes", is_flag=True,
              help="write the stored document's exact bytes to a file or pipe (refuses a terminal)")
@click.option("--waiters", "list_waiters", is_flag=True, help="list every waiting host (--json always does)")
@click.pass_obj
@handled
def status(obj: CtlContext, as_json: bool, raw: bool, raw_bytes: bool, list_waiters: bool) -> None:
    """Show the semaphore: free slots, maximum, holders and a summary of the waiting queue.

    Every string read from etcd is printed escaped, so stored bytes can neither
    add lines nor send terminal sequences; only --raw-bytes writes them as they
    are, and never to a terminal.
    """
    if as_json + raw + raw_bytes > 1:
        raise UsageError("status takes one of --json, --raw and --raw-bytes")
    if raw_bytes and sys.stdout.isatty():
        raise UsageError("--raw-bytes writes the stored bytes unescaped and refuses a terminal: "
                         "redirect it to a file or pipe, or use --raw")
    client = obj.semaphore()
    if raw or raw_bytes:
        stored = client.read_raw()
        if raw:
            text = "(absent)" if stored is None else stored.value.decode("utf-8", errors="backslashreplace")
            click.echo(printable(text))
        elif stored is None:
            click.echo(f"locksmithctl: note: {printable(client.key)} is absent; nothing written", err=True)
        else:
            sys.stdout.buffer.write(stored.value)
            sys.stdout.buffer.flush()
        return
    from locksmithd.ctl.status_view import collect_status, render_json, render_text

    from datetime import datetime, timezone

    report = collect_status(client, obj.group, obj.etcd.key_prefix, datetime.now(timezone.utc),
                            list_waiters=as_json or list_waiters, this_host=_this_host(obj))
    if report.ignored_waiters:
        click.echo(f"locksmithctl: warning: {report.ignored_waiters_line()}", err=True)
    if report.leaseless_waiters:
        click.echo(f"locksmithctl: warning: {report.leaseless_waiters_line()}", err=True)
    click.echo(render_json(report) if as_json else render_text(report, list_waiters))


def _this_host(obj: CtlContext) -> str | None:
    """This machine's holder id, or None where it has none to read (status run from elsewhere)."""
    try:
        return obj.default_id(None)
    except LocksmithError:
        return None


@click.command()
@click.argument("holder_id", metavar="[ID]", required=False)
@click.pass_obj
@handled
def lock(obj: CtlContext, holder_id: str | None) -> None:
    """Take a slot for ID (default: this machine's id)."""
    from locksmithd.host.holder_info import describe_holder

    holder = obj.default_id(holder_id)
    client = obj.semaphore()
    before = client.read().semaphore
    client.lock(holder, describe_holder(source="locksmithctl"), [operator_event("lock", holder)])
    if before.holds(holder):
        click.echo(f"{holder} already holds a slot in {group_label(obj.group)}")


@click.command()
@click.argument("holder_id", metavar="[ID]", required=False)
@click.pass_obj
@handled
def unlock(obj: CtlContext, holder_id: str | None) -> None:
    """Release the slot held by ID (default: this machine's id)."""
    holder = obj.default_id(holder_id, _UNLOCK_HINT)
    obj.semaphore().unlock(holder, [operator_event("unlock", holder)])


@click.command("set-max")
@click.argument("new_max", metavar="N")
@click.pass_obj
@handled
def set_max(obj: CtlContext, new_max: str) -> None:
    """Set the number of hosts that may reboot at once (0 to 1000000)."""
    value = parse_count("N", new_max)
    client = obj.semaphore()
    old = client.read().semaphore
    new = client.set_max(value, [operator_event("set-max", "operator", f"max {old.max} -> {value}")])
    click.echo(f"Old: {old.max}\nNew: {new.max}")
    if len(new.holders) > new.max:
        click.echo(f"note: {len(new.holders)} hosts hold slots, more than the new max {new.max}; "
                   "no host will get a slot until enough of them release", err=True)


@click.command()
@click.option("--max", "new_max", required=True, metavar="N", help="max of the fresh semaphore (0 to 1000000)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.pass_obj
@handled
def reset(obj: CtlContext, new_max: str, yes: bool) -> None:
    """Replace the semaphore document (even a corrupt one) by an empty one; holders are dropped.

    Unknown fields of a document that is a JSON object are kept (unless they
    alone would make the new document too large).
    """
    from locksmithd.ctl.reset_plan import describe_document, plan_reset

    max_slots = parse_count("--max", new_max)
    if not yes and not sys.stdin.isatty():
        raise Aborted("reset needs confirmation: rerun with --yes")
    client = obj.semaphore()
    key = printable(client.key)
    stored = client.read_raw()
    plan = plan_reset(None if stored is None else stored.value, max_slots)
    for line in describe_document(key, None if stored is None else stored.value):
        click.echo(line, err=True)
    if not yes and not click.confirm(f"Drop all holders and reset {key} to max {max_slots}?", err=True):
        raise Aborted("reset not confirmed; nothing changed")
    client.reset(max_slots, stored, extra_fields=plan.kept_fields,
                 events=[operator_event("reset", "operator", f"max {max_slots}, no holders")])
    click.echo(f"Reset {key}: max {max_slots}, no holders{plan.note()}")
    from locksmithd.ctl.status_view import remove_leaseless_waiters
    removed = remove_leaseless_waiters(client, obj.group, obj.etcd.key_prefix)
    if removed:
        click.echo(f"Removed {removed} waiter key(s) bound to no lease (they would never expire)")
