"""What `locksmithctl status` shows: gathering the report and rendering it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from locksmithd.etcd.keys import holder_from_waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient


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


def collect_status(client: SemaphoreClient, group: str, key_prefix: str) -> StatusReport:
    """Read the semaphore and, where the store supports it, the waiting queue.

    Raises CorruptDocument (naming the fault) for an invalid document and
    StoreError subclasses when etcd cannot answer.
    """
    semaphore = client.read().semaphore
    waiters: list[Waiter] = []
    read_prefix = getattr(client.store, "read_prefix", None)
    if read_prefix is not None:
        prefix = waiters_prefix(group, key_prefix)
        position = 0
        for entry in read_prefix(prefix):
            holder = holder_from_waiter_key(entry.key, group, key_prefix)
            if semaphore.holds(holder):
                continue
            position += 1
            waiters.append(Waiter(holder, position, _since(entry.value)))
    return StatusReport(group, semaphore.max, semaphore.available, semaphore.holders,
                        {h: dict(v) for h, v in semaphore.holder_info.items()}, tuple(waiters))


def render_text(report: StatusReport) -> str:
    """locksmith's layout (Available, Max, blank line, MACHINE ID, holders), then the queue."""
    lines = [f"Available: {report.available}", f"Max: {report.max}", "", "MACHINE ID"]
    lines += list(report.holders)
    if report.waiters:
        lines += ["", f"{'WAITING':<40} {'POSITION':>8}  SINCE"]
        lines += [f"{w.holder:<40} {w.position:>8}  {w.since or '-'}" for w in report.waiters]
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
    }, sort_keys=False)


def _since(value: bytes) -> str | None:
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    since = document.get("since") if isinstance(document, dict) else None
    return since if isinstance(since, str) else None
