"""Queueing and taking slots on behalf of remote (FleetLock) clients: stateless, every decision in etcd.

The contract with the daemons' queue (``queue.py``) is the waiter key alone:
a client that asks while it may not take a slot gets a key
``waiters/<escaped id>`` bound to a lease of TTL ``grace_s`` and valued
``{"since": ..., "via": "fleetlock", "grace_s": N}``. Keys are ordered by
create revision, daemons' and remote clients' alike, so a remote client
holds its place in the one FIFO queue. Each request refreshes the lease
(keep-alive), so a client that stops asking drops out ``grace_s`` after
its last request, and a slot kept free for it as the head is given back.

A FleetLock request acts only on what FleetLock took: a slot whose holder
record says ``source: fleetlock`` and a waiter key whose value says
``via: fleetlock``. A slot or queue place of a daemon (or of locksmithctl,
or of Go locksmith, which writes no record) that happens to carry the same
id is refused (``failed_slot_not_fleetlock``) and left as it is: an
unauthenticated request must never free a slot while its host reboots.

Taking a slot is the one guarded write of ``lock.py`` (document revision,
halt key absent), deleting the waiter key in the same transaction. Nothing
is remembered between requests, so any number of replicas may serve.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from locksmithd.core.fleetlock_protocol import ErrorKind, ProtocolError
from locksmithd.core.halt import decode_halt
from locksmithd.core.history import HistoryEvent
from locksmithd.core.holder_record import new_record, parse_time
from locksmithd.core.names import shown_value
from locksmithd.core.semaphore import Semaphore, decode, initial_semaphore
from locksmithd.core.waiters import WaiterKind, classify_waiter
from locksmithd.errors import AmbiguousWrite, CorruptDocument, LeaseLost, NotHolder
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import tail_key, waiter_key, waiters_prefix
from locksmithd.etcd.lock import Change, SemaphoreClient
from locksmithd.etcd.store import ABSENT, StoredKey, Versioned

log = logging.getLogger("locksmithd.fleetlock")
SOURCE = "fleetlock"
"""The holder record's ``source`` and the waiter key's ``via`` for slots taken through FleetLock."""
DETAIL = "via fleetlock"
MAX_ATTEMPTS = 8
"""Lost races retried at once (each re-reads): another writer succeeded, the view is fresh again."""


@dataclass(frozen=True)
class Granted:
    """The client holds a slot (it just took it, or held it already)."""

    newly: bool


class _ForeignSlot(Exception):
    """Internal: the id holds a slot that was not taken through FleetLock (raised from a pure change)."""

    def __init__(self, refusal: ProtocolError) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal


def slot_source_problem(semaphore: Semaphore, client_id: str) -> ProtocolError | None:
    """The refusal when ``client_id`` holds a slot not taken through FleetLock, or None (not held, or ours)."""
    if not semaphore.holds(client_id):
        return None
    try:
        record = semaphore.record(client_id)
    except ValueError:
        record = None
    source = record.source if record is not None else None
    if source == SOURCE:
        return None
    taken_by = "no holder record (locksmith?)" if source is None else f"source {shown_value(source)}"
    return ProtocolError(ErrorKind.NOT_FLEETLOCK_SLOT,
                         f"{client_id} holds a slot that was not taken through FleetLock ({taken_by}); "
                         f"FleetLock requests never act on it (release it with 'locksmithctl unlock')")


def waiter_source_problem(client_id: str, value: bytes) -> ProtocolError | None:
    """The refusal when ``client_id``'s waiter key was not written through FleetLock, or None."""
    try:
        document = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        document = None
    if isinstance(document, dict) and document.get("via") == SOURCE:
        return None
    return ProtocolError(ErrorKind.NOT_FLEETLOCK_SLOT,
                         f"{client_id} is queued by a daemon, not through FleetLock; "
                         f"FleetLock requests never act on its place in the queue")


class RemoteWaiter:
    """Pre-reboot and steady-state for one group, on behalf of remote clients.

    Methods are blocking (call them from a thread). They return Granted or
    a ProtocolError for a refusal (full, queued, halted, corrupt document)
    and raise StoreError subclasses when etcd cannot answer.
    """

    def __init__(self, store: EtcdStore, group: str, key_prefix: str, grace_s: int,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.group = group
        self.key_prefix = key_prefix
        self.grace_s = grace_s
        self.clock = clock
        self.semaphore = SemaphoreClient(store, group, key_prefix)
        self.prefix = waiters_prefix(group, key_prefix)
        self.tail_key = tail_key(group, key_prefix)

    def pre_reboot(self, client_id: str, peer: str) -> Granted | ProtocolError:
        """RecursiveLock: hold a slot (already held: fine), or queue and say why not yet."""
        snapshot = self.semaphore.read()
        if snapshot.semaphore.holds(client_id):
            return slot_source_problem(snapshot.semaphore, client_id) or Granted(newly=False)
        key = waiter_key(client_id, self.group, self.key_prefix)
        for _ in range(MAX_ATTEMPTS):
            enqueued = self._enqueue(client_id, key)
            if isinstance(enqueued, ProtocolError):
                return enqueued
            revision, stored, halt, entries = enqueued
            semaphore = decode(stored.value, self.semaphore.key) if stored else initial_semaphore()
            if semaphore.holds(client_id):  # taken by a concurrent request through another replica
                problem = slot_source_problem(semaphore, client_id)
                if problem is not None:
                    return problem
                self.store.delete(key)
                return Granted(newly=False)
            refusal = self._refusal(client_id, semaphore, halt, entries)
            if refusal is not None:
                return refusal
            if self._take(client_id, key, semaphore, stored.mod_revision if stored else ABSENT, peer):
                return Granted(newly=True)
        return ProtocolError(ErrorKind.QUEUED, "the semaphore kept changing; ask again")

    def steady_state(self, client_id: str) -> bool | ProtocolError:
        """UnlockIfHeld: release the client's slot if it holds one and leave the queue; True if released.

        A slot or waiter key of that id not taken through FleetLock is refused
        (failed_slot_not_fleetlock) and nothing is written: the check and the
        release are one guarded write, the key is deleted only as it was read.
        """
        key = waiter_key(client_id, self.group, self.key_prefix)
        own = [entry for entry in self.store.read_prefix(key) if entry.key == key]
        problem = waiter_source_problem(client_id, own[0].value) if own else None
        if problem is not None:
            return problem
        released = False
        semaphore = self.semaphore.read().semaphore
        problem = slot_source_problem(semaphore, client_id)
        if problem is not None:
            return problem
        if semaphore.holds(client_id):
            event = HistoryEvent(at=self.clock(), host=client_id, event="released", detail=DETAIL)
            change = Change(f"release {client_id} via fleetlock", lambda s: _release_ours(s, client_id),
                            lambda s: not s.holds(client_id), (event,))
            try:
                self.semaphore.update(change)
                released = True
            except NotHolder:  # released meanwhile (a concurrent request, an operator)
                pass
            except _ForeignSlot as foreign:  # the slot changed hands between the read and the write
                return foreign.refusal
        if own:
            self.store.delete_if_created(key, own[0].create_revision)
        return released

    def _enqueue(self, client_id: str, key: str) -> tuple[int, Versioned | None, Versioned | None,
                                                          list[StoredKey]] | ProtocolError:
        """Put or refresh the waiter key on its lease and read the group, in one transaction.

        The lease of an existing key is kept alive (so its place and ``since``
        are kept); when it is gone a new lease is granted and the key put again.
        A key of that id queued by a daemon is refused, untouched (not its
        value, not its lease).
        """
        own = self.store.snapshot([key]).keys.get(key)  # this one key, not every key it is a prefix of
        problem = waiter_source_problem(client_id, own.value) if own else None
        if problem is not None:
            return problem
        value = self._value(own.value if own else None)
        lease_id = own.lease if own and own.lease else 0
        if lease_id and self.store.keep_alive(lease_id) <= 0:
            lease_id = 0
        for _ in range(2):
            if not lease_id:
                lease_id = self.store.grant_lease(self.grace_s)
            try:
                return self.store.enqueue_and_read(key, value, lease_id, self.semaphore.key, self.prefix,
                                                   self.semaphore.halt_key, self.tail_key)
            except LeaseLost:  # expired between the keep-alive and the put
                lease_id = 0
        raise LeaseLost(f"could not queue {key}: its lease kept expiring")

    def _value(self, old: bytes | None) -> bytes:
        """The waiter key's value: the first ``since`` kept, marked as queued through FleetLock."""
        since = self.clock().isoformat(timespec="milliseconds")
        try:
            previous = json.loads(old.decode("utf-8")) if old else None
            if isinstance(previous, dict) and isinstance(previous.get("since"), str):
                parse_time(previous["since"])  # kept only when it reads as a time (ValueError otherwise)
                since = previous["since"]
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            pass
        return json.dumps({"since": since, "via": SOURCE, "grace_s": self.grace_s}).encode()

    def _refusal(self, client_id: str, semaphore: Semaphore, halt: Versioned | None,
                 entries: list[StoredKey]) -> ProtocolError | None:
        """Why the client may not take a slot now, or None when it is the head and a slot is free."""
        if halt is not None:
            try:
                record = decode_halt(halt.value, self.semaphore.halt_key)
                text = f"the group is halted since {record.since.isoformat()} by {record.by}: {record.reason}"
            except CorruptDocument as error:  # an unreadable halt stops acquisitions like a halt
                text = f"the group's halt record is unreadable: {error.one_line()}"
            return ProtocolError(ErrorKind.HALTED, text)
        queue = self._queue(semaphore, entries)
        position = queue.index(client_id) if client_id in queue else len(queue)
        if semaphore.available <= 0:
            return ProtocolError(ErrorKind.SEMAPHORE_FULL,
                                 f"semaphore currently full, all slots are locked already ({len(semaphore.holders)} "
                                 f"of max {semaphore.max}); queued at position {position + 1} of {len(queue)}")
        if position > 0:
            return ProtocolError(ErrorKind.QUEUED,
                                 f"a slot is free but {position} earlier waiter(s) go first; "
                                 f"queued at position {position + 1} of {len(queue)}")
        return None

    def _queue(self, semaphore: Semaphore, entries: list[StoredKey]) -> list[str]:
        """Waiters oldest first, by the one waiter rule (core/waiters.py): valid ids on a lease, not holders."""
        held = frozenset(semaphore.holders)
        queue = []
        for entry in entries:
            kind, holder = classify_waiter(entry.key, entry.lease, self.prefix, held)
            if kind is WaiterKind.WAITING and holder is not None:
                queue.append(holder)
        return queue

    def _take(self, client_id: str, key: str, semaphore: Semaphore, mod_revision: int, peer: str) -> bool:
        """The one guarded write taking a slot; False on a lost race (the caller looks again)."""
        now = self.clock()
        record = new_record(now=now, deadline_after=None, hostname=client_id, source=SOURCE,
                            reason=f"FleetLock pre-reboot from {peer}")
        new = semaphore.lock(client_id, record.to_info())
        taken = HistoryEvent(at=now, host=client_id, event="slot-taken",
                             detail=f"{len(new.holders)} of max {new.max} held, {DETAIL}")
        try:
            revision, _ = self.semaphore.write(new, mod_revision, delete=(key,), events=(taken,),
                                               admits_holder=True)
        except AmbiguousWrite:
            log.warning("slot for FleetLock client %s: reply lost; reading back", client_id)
            return self.semaphore.read().semaphore.holds(client_id)
        return bool(revision)


def _release_ours(semaphore: Semaphore, client_id: str) -> Semaphore:
    """``client_id``'s slot released if FleetLock took it (pure); _ForeignSlot otherwise, NotHolder if not held."""
    problem = slot_source_problem(semaphore, client_id)
    if problem is not None:
        raise _ForeignSlot(problem)
    return semaphore.unlock(client_id)
