"""What `locksmithctl status` shows: gathering the report and rendering it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Collection, Iterable, NamedTuple

from locksmithd.core.halt import Halt
from locksmithd.core.holder_record import HolderView, format_time, parse_time
from locksmithd.core.names import name_problem, printable
from locksmithd.core.waiter_value import decode_waiter
from locksmithd.core.waiters import WaiterKind, classify_waiter
from locksmithd.etcd.keys import waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.stale import read_holder_views
from locksmithd.etcd.store import StoredKey

_MAX_SINCE_CHARS = 40
_MAX_SHOWN_KEY_CHARS = 100


class Waiter(NamedTuple):
    """One host in the queue: its id, 1-based position, when it queued (if recorded) and for how long.

    A named tuple: status may list 10,000 of them, and a tuple is made in a third of a frozen dataclass's time.
    """

    holder: str
    position: int
    since: str | None
    age: timedelta | None = None
    via: str | None = None
    """``fleetlock`` for a client queued through the FleetLock server."""


@dataclass(frozen=True)
class StatusReport:
    """What ``status`` shows. The queue's summary (``waiting``, ``head``, ``longest_wait``) is always
    there; ``waiters`` lists each waiter only when collected with ``list_waiters``."""

    group: str
    max: int
    available: int
    holders: tuple[str, ...]
    holder_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    waiters: tuple[Waiter, ...] = ()
    waiting: int = 0
    head: str | None = None
    longest_wait: timedelta | None = None
    """The head's wait: it queued first (None: no waiter, or its ``since`` does not read as a time)."""
    ignored_waiters: tuple[str, ...] = ()
    """Waiter keys (as stored) whose id breaks the naming rule; not part of the queue."""
    leaseless_waiters: tuple[str, ...] = ()
    """Waiter keys bound to no lease (they would never expire); passed over by the queue, removed by reset."""
    halt: Halt | None = None
    holder_views: tuple[HolderView, ...] = ()
    this_host: str | None = None
    """This machine's holder id when it could be read (None: status runs elsewhere, e.g. an admin box)."""
    this_host_position: int | None = None
    """Its 1-based place in the queue (None: not waiting)."""

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


def collect_status(client: SemaphoreClient, group: str, key_prefix: str, now: datetime,
                   list_waiters: bool = True, this_host: str | None = None) -> StatusReport:
    """Read the semaphore, the halt, the holders' liveness and, where the store supports it, the queue.

    Every waiter key is checked (ignored and lease-less keys are reported);
    with ``list_waiters`` False only the summary is built, not one Waiter per
    key; ``this_host``'s place is found in the same pass. Raises CorruptDocument (naming the fault) for an invalid document or
    halt record and StoreError subclasses when etcd cannot answer.
    """
    group_read = client.read()
    if group_read.halt_corrupt is not None:
        raise group_read.halt_corrupt
    semaphore = group_read.semaphore
    views = tuple(read_holder_views(client, semaphore, now))
    queue = _Queue(this_host)
    prefix = waiters_prefix(group, key_prefix)
    # The summary needs no value but the head's: etcd then sends only the keys.
    queue.scan(client.store.read_prefix(prefix, keys_only=not list_waiters), prefix, semaphore.holders, now,
               list_waiters)
    if not list_waiters and queue.head_key is not None:
        stored = client.store.read(queue.head_key)
        queue.head_since = decode_waiter(stored.value).since if stored is not None else None
    return StatusReport(group, semaphore.max, semaphore.available, semaphore.holders,
                        {h: dict(v) for h, v in semaphore.holder_info.items()}, tuple(queue.waiters),
                        queue.count, queue.head, queue.longest_wait(now), tuple(queue.ignored),
                        tuple(queue.leaseless), group_read.halt, views, this_host, queue.this_host_position)


class _Queue:
    """The waiter keys of one read, sorted into waiters (counted, listed on demand), ignored and lease-less."""

    def __init__(self, this_host: str | None = None) -> None:
        self.this_host = this_host
        self.this_host_position: int | None = None
        self.count = 0
        self.head: str | None = None
        self.waiters: list[Waiter] = []
        self.ignored: list[str] = []
        self.leaseless: list[str] = []
        self.head_key: str | None = None
        self.head_since: str | None = None

    def scan(self, entries: Iterable[StoredKey], prefix: str, holders: Collection[str], now: datetime,
             list_waiters: bool) -> None:
        """Sort ``entries`` (oldest first) out; a holder's leftover waiter key is passed over, as the queue does."""
        held = frozenset(holders)
        for entry in entries:
            kind, holder = classify_waiter(entry.key, entry.lease, prefix, held)  # the one waiter rule
            if kind is not WaiterKind.WAITING or holder is None:
                if kind is WaiterKind.BAD_NAME:
                    self.ignored.append(entry.key)  # the full key, so the operator can delete it
                elif kind is WaiterKind.LEASELESS:
                    self.leaseless.append(entry.key)
                continue
            self.count += 1
            if self.head is None:
                self.head, self.head_key = holder, entry.key
                if list_waiters:
                    self.head_since = decode_waiter(entry.value).since
            if holder == self.this_host:
                self.this_host_position = self.count
            if list_waiters:
                value = decode_waiter(entry.value)
                since, via = value.since, value.via
                self.waiters.append(Waiter(holder, self.count, since, _age(_moment(since), now),
                                           via if via is not None and name_problem(via) is None else None))

    def longest_wait(self, now: datetime) -> timedelta | None:
        return _age(_moment(self.head_since), now)


def remove_leaseless_waiters(client: SemaphoreClient, group: str, key_prefix: str) -> int:
    """Delete the group's waiter keys bound to no lease (each guarded by its create revision); how many went.

    Such a key would never expire; hosts pass over it, but it is clutter an
    operator's reset should clear.
    """
    store = client.store
    return sum(bool(store.delete_if_created(entry.key, entry.create_revision))
               for entry in store.read_prefix(waiters_prefix(group, key_prefix), keys_only=True) if entry.lease == 0)


def render_text(report: StatusReport, list_waiters: bool = False) -> str:
    """locksmith's layout (Available, Max, then with holders a blank line, MACHINE ID, holders), then a queue summary.

    One line per holder and (with ``list_waiters``) per waiter: ids follow the
    naming rule (decode and ``collect_status`` enforce it) and the free-form
    ``since`` is escaped.
    """
    lines = []
    if report.halt is not None:
        halt = report.halt
        lines += [f"HALTED since {format_time(halt.since)} by {printable(halt.by, 64)}: "
                  f"{printable(halt.reason, 500)}", "(no host takes a slot until 'locksmithctl resume')", ""]
    lines += [f"Available: {report.available}", f"Max: {report.max}"]
    if report.holders:  # locksmith prints the blank line and the header only when someone holds a slot
        lines += ["", "MACHINE ID", *report.holders]  # locksmith's layout so far; our details follow
    if any(view.record is not None and (view.record.deadline is not None or view.record.source == "fleetlock")
           for view in report.holder_views):
        lines += ["", f"{'HOLDER':<40} {'AGE':>8}  {'DEADLINE':<24}  STATE"]
        lines += [_holder_line(view) for view in report.holder_views]
    if report.waiting:
        oldest = report.longest_wait
        mine = "" if report.this_host_position is None else f", this host at position {report.this_host_position}"
        lines += ["", f"Waiting: {report.waiting} (head {report.head}, longest wait "
                      f"{_span(oldest) if oldest is not None else '-'}{mine})"]
    if report.waiters and list_waiters:
        lines += ["", f"{'WAITING':<40} {'POSITION':>8}  {'SINCE':<{_MAX_SINCE_CHARS}}  AGE"]
        lines += [f"{holder:<40} {position:>8}  {printable(since or '-', _MAX_SINCE_CHARS):<{_MAX_SINCE_CHARS}}"
                  f"  {_span(age) if age is not None else '-'}{'  via fleetlock' if via == 'fleetlock' else ''}"
                  for holder, position, since, age, via in report.waiters]
    return "\n".join(lines)


def _holder_line(view: HolderView) -> str:
    """One holder: id, age, deadline and its state (phase, stale or late markers)."""
    record = view.record
    age = _span(view.age) if view.age is not None else "-"
    deadline = format_time(record.deadline) if record is not None and record.deadline else "-"
    marks = [printable(record.phase, 60)] if record is not None and record.phase else []
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
        "waiting": [{"id": holder, "position": position, "since": since,
                     "age_s": None if age is None else round(age.total_seconds(), 3), "via": via}
                    for holder, position, since, age, via in report.waiters],
        "ignored_waiter_keys": [*report.ignored_waiters, *report.leaseless_waiters],
        "this_host": None if report.this_host is None else {
            "id": report.this_host, "position": report.this_host_position,
            "holds_slot": report.this_host in report.holders},
    }, sort_keys=False, check_circular=False)
    # ensure_ascii (the default) escapes every control character; a tree built here and decoded
    # from JSON has no cycle to look for (the check would record each of 10,000 entries)


def _moment(since: str | None) -> datetime | None:
    """A recorded ``since`` in UTC (None when absent, unreadable, without a zone or out of range)."""
    if not since:
        return None
    try:
        return parse_time(since)  # the one parser of stored times: it refuses what cannot be converted
    except ValueError:
        return None


_NO_WAIT = timedelta(0)


def _age(moment: datetime | None, now: datetime) -> timedelta | None:
    """How long a waiter has waited since ``moment`` (never negative: clocks differ)."""
    return None if moment is None else max(now - moment, _NO_WAIT)
