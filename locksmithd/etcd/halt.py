"""Halting and resuming a group: the halt key and its history events, written with one guarded write.

A lost race (the document or the halt key changed between the read and the
write) is retried by ``SemaphoreClient.retry_races``, the one retry with Backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, cast

from locksmithd.core.halt import Halt, decode_halt
from locksmithd.core.history import HistoryEvent
from locksmithd.core.semaphore import Semaphore
from locksmithd.errors import CorruptDocument
from locksmithd.etcd.lock import SemaphoreClient, GroupRead
from locksmithd.etcd.store import ABSENT

log = logging.getLogger("locksmithd.halt")


@dataclass(frozen=True)
class Resumed:
    """What ``resume_group`` removed: the halt record (decoded, or the error of a corrupt one) or nothing.

    ``recorded`` is False when the removal could not carry its "resume"
    event (the semaphore document is corrupt: history lives in it).
    """

    removed: Halt | CorruptDocument | None
    recorded: bool = True


def halt_group(client: SemaphoreClient, halt: Halt, events: list[HistoryEvent],
               change: Callable[[Semaphore], Semaphore] | None = None) -> Halt | CorruptDocument:
    """Halt ``client``'s group with ``halt`` unless it is halted already; return the halt in force.

    In one transaction: the halt key (only if absent), the ``events`` and
    ``change`` (e.g. the failing holder's record) on the semaphore document.
    An existing halt is never overwritten; ``change`` and the events other
    than "halt" are still recorded. A corrupt semaphore document cannot
    carry history: the halt key is then written alone (halting must always
    be possible: it only ever stops reboots). A corrupt halt record in force
    is returned as its CorruptDocument (it stops acquisitions like a halt;
    nothing was written in its place). Raises StoreError subclasses when
    etcd cannot answer.
    """
    def attempt() -> Halt | CorruptDocument | None:
        try:
            group = client.read()
        except CorruptDocument as error:
            log.warning("halting without history: %s", error.one_line())
            if client.store.swap(client.halt_key, halt.encode(), ABSENT):
                return halt
            found = client.store.read(client.halt_key)  # halted already: report that record
            return _decoded(found.value, client.halt_key) if found is not None else None
        if _written(client, group, halt, events, change):
            return group.halt_corrupt or group.halt or halt
        return None

    # cast: mypy cannot solve the TypeVar from a union with None (it infers object)
    return cast("Halt | CorruptDocument", client.retry_races("halting", attempt))


def _decoded(raw: bytes, key: str) -> Halt | CorruptDocument:
    try:
        return decode_halt(raw, key)
    except CorruptDocument as error:
        return error


def _written(client: SemaphoreClient, group: GroupRead, halt: Halt, events: list[HistoryEvent],
             change: Callable[[Semaphore], Semaphore] | None) -> bool:
    new = change(group.semaphore) if change else group.semaphore
    if group.halt is not None or group.halt_corrupt is not None:  # halted already: keep that record
        others = [event for event in events if event.event != "halt"]
        if new == group.semaphore and not others:
            return True
        revision, _ = client.write(new, group.mod_revision, events=others, absent=())
        if revision:
            return True
        return False
    revision, _ = client.write(new, group.mod_revision, events=events, puts=[(client.halt_key, halt.encode())],
                               absent=(client.halt_key,))
    return bool(revision)


def resume_group(client: SemaphoreClient, event: HistoryEvent) -> Resumed:
    """Remove the group's halt record, valid or corrupt, with a "resume" event; say what was removed.

    A corrupt halt record is removed too (resume is its repair), and the
    event's detail says so. A corrupt semaphore document cannot carry the
    event: the record is then removed alone (``recorded`` False). Waiting
    hosts see the deletion through their watch at once.
    """
    def attempt() -> Resumed | None:
        try:
            group = client.read()
        except CorruptDocument as error:
            log.warning("resuming without history: %s", error.one_line())
            found = client.store.read(client.halt_key)
            if found is None:
                return Resumed(None)
            client.store.delete(client.halt_key)
            return Resumed(_decoded(found.value, client.halt_key), recorded=False)
        in_force: Halt | CorruptDocument | None = group.halt_corrupt or group.halt
        if in_force is None:
            return Resumed(None)
        done = event
        if isinstance(in_force, CorruptDocument):
            done = replace(event, detail=f"removed a corrupt halt record: {in_force.problem}")
        revision, _ = client.write(group.semaphore, group.mod_revision, events=[done],
                                   delete=(client.halt_key,))
        return Resumed(in_force) if revision else None

    return client.retry_races("resuming", attempt)
