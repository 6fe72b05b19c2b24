"""What `locksmithctl status` shows: gathering the report and rendering it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from locksmithd.core.halt import Halt
from locksmithd.core.holder_record import HolderView, format_time
from locksmithd.core.names import name_problem, printable
from locksmithd.etcd.keys import waiter_holder, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.stale import read_holder_views

_MAX_SINCE_CHARS = 40
_MAX_SHOWN_KEY_CHARS = 100


@dataclass(frozen=True)
class Waiter:
    """One host in the queue: its id, 1-based position, when it queued (if recorded) and for how long."""

    holder: str
    position: int
    since: str | None
    age: timedelta | None = None
    via: str | None = None
    """``fleetlock`` for a client queued through the FleetLock server."""


@dataclass(frozen=True)
class StatusReport:
    group: str
    max: int
    available: int
    holders: tuple[str, ...]
    holder_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    waiters: tuple[Waiter, ...] = ()
    ignored_waiters: tuple[str, ...] = ()
    """Waiter keys (as stored) whose id breaks the naming rule; not part of the queue."""
    leaseless_waiters: tuple[str, ...] = ()
    """Waiter keys bound to no lease (they would never expire); passed over by the queue, removed by reset."""
    halt: Halt | None = None
    holder_views: tuple[HolderView, ...] = ()

    def ignored_waiters_line(self) -> str:
        """One escaped, bounded line reporting the ignored waiter keys."""
        first = printable(self.ignored_waiters[0], _MAX_SHOWN_KEY_CHARS)
        more = f" and {len(self.ignored_waiters) - 1} more" if len(self.ignored_waiters) > 1 else ""
        return (f"ignored waiter key {first}{more}: not the key of a valid holder id, "
                "so not listed as waiting (remove it with 'etcdctl del')")

    def leaseless_waiters_line(self) -> str:
        """One escaped, bounded line reporting the waiter keys bound to no lease."""
        first = printable(self.leaseless_waiters[0], _MAX_SHOWN_KEY_CHARS)
        more = f" and {len(self.leaseless_waiters) - 1} more" if len(self.leaseless_waiters) > 1 else ""
        return (f"ignored waiter key {first}{more}: bound to no lease, so it would never expire; hosts pass "
                "over it (remove it with 'locksmithctl reset')")


def collect_status(client: SemaphoreClient, group: str, key_prefix: str, now: datetime) -> StatusReport:
    """Read the semaphore, the halt, the holders' liveness and, where the store supports it, the queue.

    Raises CorruptDocument (naming the fault) for an invalid document or halt
    record and StoreError subclasses when etcd cannot answer.
    """
    snapshot = client.read()
    if snapshot.halt_corrupt is not None:
        raise snapshot.halt_corrupt
    semaphore = snapshot.semaphore
    views = tuple(read_holder_views(client, semaphore, now))
    waiters: list[Waiter] = []
    ignored: list[str] = []
    leaseless: list[str] = []
    read_prefix = getattr(client.store, "read_prefix", None)
    if read_prefix is not None:
        position = 0
        for entry in read_prefix(waiters_prefix(group, key_prefix)):
            holder = waiter_holder(entry.key, group, key_prefix)
            if holder is None:
                ignored.append(entry.key)  # the full key, so the operator can delete it
                continue
            if entry.lease == 0:
                leaseless.append(entry.key)
                continue
            if semaphore.holds(holder):
                continue
            position += 1
            since = _since(entry.value)
            waiters.append(Waiter(holder, position, since, _age(since, now), _field(entry.value, "via")))
    return StatusReport(group, semaphore.max, semaphore.available, semaphore.holders,
                        {h: dict(v) for h, v in semaphore.holder_info.items()}, tuple(waiters), tuple(ignored),
                        tuple(leaseless), snapshot.halt, views)


def remove_leaseless_waiters(client: SemaphoreClient, group: str, key_prefix: str) -> int:
    """Delete the group's waiter keys bound to no lease (each guarded by its create revision); how many went.

    Such a key would never expire; hosts pass over it, but it is clutter an
    operator's reset should clear. Stores without a queue remove nothing.
    """
    read_prefix = getattr(client.store, "read_prefix", None)
    delete_if_created = getattr(client.store, "delete_if_created", None)
    if read_prefix is None or delete_if_created is None:
        return 0
    return sum(bool(delete_if_created(entry.key, entry.create_revision))
               for entry in read_prefix(waiters_prefix(group, key_prefix)) if entry.lease == 0)


def render_text(report: StatusReport, list_waiters: bool = False) -> str:
    """locksmith's layout (Available, Max, blank line, MACHINE ID, holders), then a queue summary.

    One line per holder and (with ``list_waiters``) per waiter: ids follow the
    naming rule (decode and ``collect_status`` enforce it) and the free-form
    ``since`` is escaped.
    """
    lines = []
    if report.halt is not None:
        halt = report.halt
        lines += [f"HALTED since {format_time(halt.since)} by {printable(halt.by, 64)}: "
                  f"{printable(halt.reason, 500)}", "(no host takes a slot until 'locksmithctl resume')", ""]
    lines += [f"Available: {report.available}", f"Max: {report.max}", "", "MACHINE ID"]
    lines += list(report.holders)  # locksmith's layout so far; our details follow in their own table
    if any(view.record is not None and (view.record.deadline is not None or view.record.source == "fleetlock")
           for view in report.holder_views):
        lines += ["", f"{'HOLDER':<40} {'AGE':>8}  {'DEADLINE':<24}  STATE"]
        lines += [_holder_line(view) for view in report.holder_views]
    if report.waiters:
        head, oldest = report.waiters[0], max((w.age for w in report.waiters if w.age is not None), default=None)
        lines += ["", f"Waiting: {len(report.waiters)} (head {head.holder}, longest wait "
                      f"{_span(oldest) if oldest is not None else '-'})"]
    if report.waiters and list_waiters:
        lines += ["", f"{'WAITING':<40} {'POSITION':>8}  {'SINCE':<{_MAX_SINCE_CHARS}}  AGE"]
        lines += [f"{w.holder:<40} {w.position:>8}  {printable(w.since or '-', _MAX_SINCE_CHARS):<{_MAX_SINCE_CHARS}}"
                  f"  {_span(w.age) if w.age is not None else '-'}{'  via fleetlock' if w.via == 'fleetlock' else ''}"
                  for w in report.waiters]
    return "\n".join(lines)


def _holder_line(view: HolderView) -> str:
    """One holder: id, age, deadline and its state (phase, stale or late markers)."""
    record = view.record
    age = _span(view.age) if view.age is not None else "-"
    deadline = format_time(record.deadline) if record is not None and record.deadline else "-"
    marks = [record.phase] if record is not None and record.phase else []
    if record is not None and record.source == "fleetlock":
        marks.append("via fleetlock")
    if view.stale:
        marks.append(f"stale ({_span(view.overdue)} late, no live daemon)")
    elif view.overdue is not None:
        marks.append(f"late ({_span(view.overdue)}, daemon alive)")
    if record is not None and record.health:
        marks.append(printable(record.health, 120))
    return f"{view.holder:<40} {age:>8}  {deadline:<24}  {'; '.join(marks) or '-'}"


def _span(span: timedelta | None) -> str:
    seconds = int(span.total_seconds()) if span is not None else 0
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def render_json(report: StatusReport) -> str:
    """One JSON object: group, halt, max, available, holders (with age, deadline, stale), holder_info, waiting."""
    halt = report.halt
    return json.dumps({
        "group": report.group,
        "halt": None if halt is None else {"reason": halt.reason, "by": halt.by, "since": format_time(halt.since)},
        "max": report.max,
        "available": report.available,
        "holders": list(report.holders),
        "holder_state": {
            view.holder: {
                "age_s": None if view.age is None else round(view.age.total_seconds(), 3),
                "deadline": None if view.record is None or view.record.deadline is None
                else format_time(view.record.deadline),
                "phase": view.record.phase if view.record else None,
                "alive": view.alive,
                "overdue_s": None if view.overdue is None else round(view.overdue.total_seconds(), 3),
                "stale": view.stale,
                "source": view.record.source if view.record else None,
            } for view in report.holder_views},
        "holder_info": report.holder_info,
        "waiting": [{"id": w.holder, "position": w.position, "since": w.since,
                     "age_s": None if w.age is None else round(w.age.total_seconds(), 3), "via": w.via}
                    for w in report.waiters],
        "ignored_waiter_keys": [*report.ignored_waiters, *report.leaseless_waiters],
    }, sort_keys=False)  # ensure_ascii (the default) escapes every control character


def _age(since: str | None, now: datetime) -> timedelta | None:
    """How long a waiter has waited, from its recorded ``since`` (None when absent or unreadable)."""
    try:
        moment = datetime.fromisoformat(since) if since else None
    except ValueError:
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max(now - moment, timedelta(0))


def _field(value: bytes, name: str) -> str | None:
    """A short text field of a waiter key's JSON value (``via``), or None."""
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    found = document.get(name) if isinstance(document, dict) else None
    return found if isinstance(found, str) and name_problem(found) is None else None


def _since(value: bytes) -> str | None:
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    since = document.get("since") if isinstance(document, dict) else None
    return since if isinstance(since, str) else None
