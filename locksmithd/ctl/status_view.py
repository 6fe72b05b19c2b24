"""What `locksmithctl status` shows: gathering the report and rendering it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from locksmithd.core.names import name_problem, printable
from locksmithd.etcd.keys import holder_from_waiter_key, waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient

_MAX_SINCE_CHARS = 40
_MAX_SHOWN_KEY_CHARS = 100


@dataclass(frozen=True)
class Waiter:
    """One host in the queue: its id, 1-based position and when it queued (if recorded)."""

    holder: str
    position: int
    since: str | None


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

    def ignored_waiters_line(self) -> str:
        """One escaped, bounded line reporting the ignored waiter keys."""
        first = printable(self.ignored_waiters[0], _MAX_SHOWN_KEY_CHARS)
        more = f" and {len(self.ignored_waiters) - 1} more" if len(self.ignored_waiters) > 1 else ""
        return (f"ignored waiter key {first}{more}: not the key of a valid holder id, "
                "so not listed as waiting (remove it with 'etcdctl del')")


def collect_status(client: SemaphoreClient, group: str, key_prefix: str) -> StatusReport:
    """Read the semaphore and, where the store supports it, the waiting queue.

    Raises CorruptDocument (naming the fault) for an invalid document and
    StoreError subclasses when etcd cannot answer.
    """
    semaphore = client.read().semaphore
    waiters: list[Waiter] = []
    ignored: list[str] = []
    read_prefix = getattr(client.store, "read_prefix", None)
    if read_prefix is not None:
        position = 0
        for entry in read_prefix(waiters_prefix(group, key_prefix)):
            holder = _waiter_holder(entry.key, group, key_prefix)
            if holder is None:
                ignored.append(entry.key)  # the full key, so the operator can delete it
                continue
            if semaphore.holds(holder):
                continue
            position += 1
            waiters.append(Waiter(holder, position, _since(entry.value)))
    return StatusReport(group, semaphore.max, semaphore.available, semaphore.holders,
                        {h: dict(v) for h, v in semaphore.holder_info.items()}, tuple(waiters), tuple(ignored))


def _waiter_holder(key: str, group: str, key_prefix: str) -> str | None:
    """The holder id a waiter key names, or None when the key is not one a host would write.

    A valid key is exactly ``waiter_key(id)`` for an id that follows the naming
    rule; anything else (control characters, bytes that are not UTF-8,
    non-canonical escapes that decode lossily) is not shown as a waiter.
    """
    try:
        holder = holder_from_waiter_key(key, group, key_prefix)
    except ValueError:
        return None
    if name_problem(holder) is not None or waiter_key(holder, group, key_prefix) != key:
        return None
    return holder


def render_text(report: StatusReport) -> str:
    """locksmith's layout (Available, Max, blank line, MACHINE ID, holders), then the queue.

    One line per holder and per waiter: ids follow the naming rule (decode and
    ``collect_status`` enforce it) and the free-form ``since`` is escaped.
    """
    lines = [f"Available: {report.available}", f"Max: {report.max}", "", "MACHINE ID"]
    lines += list(report.holders)
    if report.waiters:
        lines += ["", f"{'WAITING':<40} {'POSITION':>8}  SINCE"]
        lines += [f"{w.holder:<40} {w.position:>8}  {printable(w.since or '-', _MAX_SINCE_CHARS)}"
                  for w in report.waiters]
    return "\n".join(lines)


def render_json(report: StatusReport) -> str:
    """One JSON object: group, max, available, holders, holder_info, waiting."""
    return json.dumps({
        "group": report.group,
        "max": report.max,
        "available": report.available,
        "holders": list(report.holders),
        "holder_info": report.holder_info,
        "waiting": [{"id": w.holder, "position": w.position, "since": w.since} for w in report.waiters],
    }, sort_keys=False)  # ensure_ascii (the default) escapes every control character


def _since(value: bytes) -> str | None:
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    since = document.get("since") if isinstance(document, dict) else None
    return since if isinstance(since, str) else None
