"""Halting and resuming a group: the halt key and its history events, written with one guarded write."""

from __future__ import annotations

import logging
from typing import Callable

from locksmithd.core.halt import Halt
from locksmithd.core.history import HistoryEvent
from locksmithd.core.semaphore import Semaphore
from locksmithd.errors import CorruptDocument, WriteConflict
from locksmithd.etcd.lock import SemaphoreClient, Snapshot
from locksmithd.etcd.store import ABSENT

log = logging.getLogger("locksmithd.halt")
MAX_ATTEMPTS = 64


def halt_group(client: SemaphoreClient, halt: Halt, events: list[HistoryEvent],
               change: Callable[[Semaphore], Semaphore] | None = None) -> Halt:
    """Halt ``client``'s group with ``halt`` unless it is halted already; return the halt in force.

    In one transaction: the halt key (only if absent), the ``events`` and
    ``change`` (e.g. the failing holder's record) on the semaphore document.
    An existing halt is never overwritten; ``change`` and the events other
    than "halt" are still recorded. A corrupt semaphore document cannot
    carry history: the halt key is then written alone (halting must always
    be possible: it only ever stops reboots). Raises CorruptDocument for a
    corrupt halt record (which already stops acquisitions) and StoreError
    subclasses when etcd cannot answer.
    """
    for _ in range(MAX_ATTEMPTS):
        try:
            snapshot = client.read()
        except CorruptDocument as error:
            log.warning("halting without history: %s", error.one_line())
            if client.store.swap(client.halt_key, halt.encode(), ABSENT):
                return halt
            continue
        if _written(client, snapshot, halt, events, change):
            return snapshot.halt or halt  # a corrupt record in force is reported by status
    raise WriteConflict(f"halting {client.key}: it kept changing; gave up after {MAX_ATTEMPTS} attempts")


def _written(client: SemaphoreClient, snapshot: Snapshot, halt: Halt, events: list[HistoryEvent],
             change: Callable[[Semaphore], Semaphore] | None) -> bool:
    new = change(snapshot.semaphore) if change else snapshot.semaphore
    if snapshot.halt is not None or snapshot.halt_corrupt is not None:  # halted already: keep that record
        others = [event for event in events if event.event != "halt"]
        if new == snapshot.semaphore and not others:
            return True
        revision, _ = client.write(new, snapshot.mod_revision, events=others, absent=())
        if revision:
            return True
        return False
    revision, _ = client.write(new, snapshot.mod_revision, events=events, puts=[(client.halt_key, halt.encode())],
                               absent=(client.halt_key,))
    return bool(revision)


def resume_group(client: SemaphoreClient, event: HistoryEvent) -> Halt | None:
    """Remove the group's halt (with a "resume" event); return the halt removed, None if there was none.

    A corrupt halt record is removed too (resume is its repair). Waiting
    hosts see the deletion through their watch at once.
    """
    for _ in range(MAX_ATTEMPTS):
        try:
            snapshot = client.read()
        except CorruptDocument as error:
            log.warning("resuming without history: %s", error.one_line())
            client.store.delete(client.halt_key)
            return None
        if snapshot.halt_corrupt is not None:  # removing a corrupt halt record is how it is repaired
            client.store.delete(client.halt_key)
            return None
        if snapshot.halt is None:
            return None
        revision, _ = client.write(snapshot.semaphore, snapshot.mod_revision, events=[event],
                                   delete=(client.halt_key,))
        if revision:
            return snapshot.halt
    raise WriteConflict(f"resuming {client.key}: it kept changing; gave up after {MAX_ATTEMPTS} attempts")
