"""Queueing and taking slots on behalf of remote (FleetLock) clients: every decision in etcd, O(1) per poll.

The contract with the daemons' queue (``queue.py``) is the waiter key alone:
a client that asks while it may not take a slot gets a key
``waiters/<escaped id>`` bound to a lease of TTL ``grace_s`` and valued
``{"since": ..., "via": "fleetlock", "grace_s": N, "ticket": T, "follows": ...}``.
It is created like a daemon's (``EtcdStore.enqueue``: the tail key names
it, and its ticket is its number in the order of arrival), so daemons and
remote clients share one FIFO queue.

No poll reads the queue. Like a daemon, a client knows its place from two
numbers and one key: its ticket, ``served`` (the ticket of the last waiter
that took a slot, written with it; this server writes it too) and the key
it ``follows`` (the waiter just ahead when it was queued: the tail's old
value, with that waiter's ticket). A poll reads, in one request, the
semaphore, the halt record, ``served``, the tail, the client's own key and
the key it follows. The client is the head when it follows nobody, or when
the key it follows is gone and ``served`` is that key's ticket (it left by
taking a slot, and every waiter before it had left already). While the key
it follows exists, the client is not the head; its place is at most its
ticket minus ``served``, and the queue's length at most the tail's ticket
minus ``served`` (both exact unless waiters ahead left without a slot).
Only when the key it follows left without a slot (crashed, gave up, its
lease expired) does one poll read the place the expensive way
(``EtcdStore.locate``: etcd scans the queue) and write the waiter now ahead
into the client's key: one write per departure, none per poll.

A refused poll from a queued client writes nothing. Its lease is kept
alive at most once per ``grace_s``/3: each replica remembers when the
leases it saw expire (``LeaseClock``, soft state that is only an
optimisation) and, when one is due, first reads the lease's remaining TTL,
so that two replicas do not both refresh it. A client that stops asking
drops out ``grace_s`` after its last refresh, and a slot kept free for it
as the head is given back. A granted ``pre-reboot`` deletes the key in the
guarded write and revokes its lease: nothing is left but the holder record.

A FleetLock request acts only on what FleetLock took (core/fleetlock_slots.py):
a slot or queue place of a daemon (or of locksmithctl, or of Go locksmith)
that happens to carry the same id is refused (``failed_slot_not_fleetlock``)
and left as it is.

Taking a slot is the one guarded write of ``lock.py`` (document revision,
halt key absent), deleting the waiter key and recording ``served`` in the
same transaction. Only soft state is kept between requests, so any number
of replicas may serve.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, cast

from locksmithd.core.fleetlock_place import place
from locksmithd.core.fleetlock_slots import ForeignSlot, release_ours, slot_source_problem, waiter_source_problem
from locksmithd.core.fleetlock_protocol import ErrorKind, ProtocolError
from locksmithd.core.halt import decode_halt
from locksmithd.core.history import HistoryEvent
from locksmithd.core.holder_record import new_record, parse_time
from locksmithd.core.semaphore import Semaphore, decode, initial_semaphore
from locksmithd.core.waiter_value import FLEETLOCK, UNKNOWN, Pointer, WaiterValue, decode_waiter, encode_waiter, served_ticket
from locksmithd.core.waiters import WaiterKind, classify_waiter
from locksmithd.errors import AmbiguousWrite, CorruptDocument, LeaseLost, NotHolder, StoreError, WriteConflict
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import served_key, tail_key, waiter_key, waiters_prefix
from locksmithd.etcd.lease_clock import LeaseClock
from locksmithd.etcd.lock import Change, SemaphoreClient
from locksmithd.etcd.store import ABSENT, Enqueued, Snapshot, StoredKey

log = logging.getLogger("locksmithd.fleetlock")
DETAIL = "via fleetlock"
MAX_ATTEMPTS = 8
"""Lost races retried through ``SemaphoreClient.retry_races`` (Backoff; each attempt re-reads)."""


@dataclass(frozen=True)
class Granted:
    """The client holds a slot (it just took it, or held it already)."""

    newly: bool


@dataclass(frozen=True)
class _Own:
    """The client's waiter key as read, with its value's fields."""

    entry: StoredKey
    value: WaiterValue

    @property
    def since(self) -> str | None:
        return self.value.since

    @property
    def ticket(self) -> int:
        return self.value.ticket

    @property
    def follows(self) -> Any:
        return self.value.follows


class RemoteWaiter:
    """Pre-reboot and steady-state for one group, on behalf of remote clients.

    Methods are blocking (call them from a thread). They return Granted or
    a ProtocolError for a refusal (full, queued, halted, corrupt document)
    and raise StoreError subclasses when etcd cannot answer.
    """

    def __init__(self, store: EtcdStore, group: str, key_prefix: str, grace_s: int,
                 clock: Callable[[], datetime], leases: LeaseClock | None = None) -> None:
        self.store = store
        self.group = group
        self.key_prefix = key_prefix
        self.grace_s = grace_s
        self.clock = clock
        self.leases = leases or LeaseClock()
        self.semaphore = SemaphoreClient(store, group, key_prefix)
        self.prefix = waiters_prefix(group, key_prefix)
        self.tail_key = tail_key(group, key_prefix)
        self.served_key = served_key(group, key_prefix)

    def pre_reboot(self, client_id: str, peer: str) -> Granted | ProtocolError:
        """RecursiveLock: hold a slot (already held: fine), or queue and say why not yet."""
        key = waiter_key(client_id, self.group, self.key_prefix)
        try:
            answer = self.semaphore.retry_races(f"pre-reboot {client_id} via fleetlock",
                                                lambda: self._poll(key, client_id, peer), MAX_ATTEMPTS)
            return cast("Granted | ProtocolError", answer)  # mypy cannot solve the TypeVar from a union with None
        except WriteConflict:
            return ProtocolError(ErrorKind.QUEUED, "the semaphore kept changing; ask again")

    def _poll(self, key: str, client_id: str, peer: str, queued: bool = False) -> Granted | ProtocolError | None:
        """One attempt of a poll: the answer, or None when it lost a race (``pre_reboot`` retries)."""
        look = self._look(key)
        stored = look.keys.get(self.semaphore.key)
        semaphore = decode(stored.value, self.semaphore.key) if stored else initial_semaphore()
        own_entry = look.keys.get(key)
        if semaphore.holds(client_id):
            problem = slot_source_problem(semaphore, client_id)
            if problem is None and own_entry is not None and waiter_source_problem(client_id, own_entry.value) \
                    is None:  # taken by a concurrent request through another replica: leave no key behind
                self._drop(own_entry)
            return problem or Granted(newly=False)
        if own_entry is not None:
            problem = waiter_source_problem(client_id, own_entry.value)
            if problem is not None:
                return problem
        if own_entry is None or not self._keep_alive(own_entry.lease):
            if queued:
                return None  # queued just now and gone already: a lost race
            self._enqueue(key)
            return self._poll(key, client_id, peer, queued=True)  # the new key and the one it follows, at one revision
        placed = self._is_head(_read_own(own_entry), look, semaphore)
        if placed is None:
            return None  # the key went while its place was read: queue again
        head, own = placed
        refusal = self._refusal(own, head, semaphore, look)
        if refusal is not None:
            return refusal
        if self._take(client_id, own, semaphore, stored.mod_revision if stored else ABSENT, peer):
            return Granted(newly=True)
        return None

    def steady_state(self, client_id: str) -> bool | ProtocolError:
        """UnlockIfHeld: release the client's slot if it holds one and leave the queue; True if released.

        A slot or waiter key of that id not taken through FleetLock is refused
        (failed_slot_not_fleetlock) and nothing is written: the check and the
        release are one guarded write, the key is removed only as it was read.
        """
        key = waiter_key(client_id, self.group, self.key_prefix)
        own = self.store.snapshot([key]).keys.get(key)
        problem = waiter_source_problem(client_id, own.value) if own else None
        if problem is not None:
            return problem
        released = False
        semaphore = self.semaphore.read().semaphore
        problem = slot_source_problem(semaphore, client_id)
        if problem is not None:
            return problem
        if semaphore.holds(client_id):
            event = HistoryEvent(at=self.clock(), host=client_id, event="released", detail=DETAIL)
            change = Change(f"release {client_id} via fleetlock", lambda s: release_ours(s, client_id),
                            lambda s: not s.holds(client_id), (event,))
            try:
                self.semaphore.update(change)
                released = True
            except NotHolder:  # released meanwhile (a concurrent request, an operator)
                pass
            except ForeignSlot as foreign:  # the slot changed hands between the read and the write
                return foreign.refusal
        if own:
            self._drop(own)
        return released

    # -- one poll ------------------------------------------------------------

    def _look(self, key: str) -> Snapshot:
        """One request: the semaphore, halt, ``served``, the tail, the client's key and the key it follows.

        The followed key's name comes from this replica's memory; when the
        client's key names another (or it was forgotten), that key is read
        with a second request.
        """
        names = [self.semaphore.key, self.semaphore.halt_key, self.served_key, self.tail_key, key]
        followed = self.leases.followed(key)
        snapshot = self.store.snapshot([*names, followed] if followed else names)
        own = snapshot.keys.get(key)
        follows = _read_own(own).follows if own is not None else None
        if isinstance(follows, Pointer) and follows.key != followed:
            self.leases.follows(key, follows.key)
            snapshot = self.store.snapshot([*names, follows.key])
        return snapshot

    def _keep_alive(self, lease_id: int) -> bool:
        """Keep the client's place: refresh its lease once it is past a third of its TTL; False if it expired.

        Known to this replica and not due: nothing sent. Otherwise its TTL is
        read first (another replica may have refreshed it) and refreshed only
        when due: at most one keep-alive per lease per ``grace_s``/3.
        """
        if not lease_id:
            return False
        due_s = self.grace_s * 2 / 3
        left_s = self.leases.left_s(lease_id)
        if left_s is not None and left_s > due_s:
            return True
        ttl_s = self.store.lease_ttl(lease_id)
        if ttl_s > due_s:
            self.leases.saw(lease_id, ttl_s)
            return True
        if ttl_s > 0:
            ttl_s = self.store.keep_alive(lease_id)
        if ttl_s <= 0:
            self.leases.forget(lease_id)
            return False
        self.leases.saw(lease_id, ttl_s)
        return True

    def _enqueue(self, key: str) -> None:
        """Queue the client at the back on a new lease (two writes: create, then name the key it follows).

        A key that exists by then (a concurrent request through another
        replica) is kept as it is, and the new lease revoked.
        """
        since = self.clock().isoformat(timespec="milliseconds")

        def attempt() -> tuple[int, Enqueued] | None:
            lease_id = self.store.grant_lease(self.grace_s)
            try:
                return lease_id, self.store.enqueue(key, self._value(since, 0, UNKNOWN), lease_id, self.tail_key)
            except LeaseLost:  # expired before the put (a very short grace, a stalled etcd): a new lease
                return None

        try:
            lease_id, queued = self.semaphore.retry_races(f"queueing {key}", attempt, 2)
        except WriteConflict:
            raise LeaseLost(f"could not queue {key}: its lease kept expiring") from None
        if not queued.created:
            self._revoke(lease_id)
            return
        self.leases.saw(lease_id, self.grace_s)
        previous = queued.previous
        # No tail before it (a new group, or the tail removed): its place is read once, at the next look.
        follows = Pointer(previous.key, previous.create_revision, ticket=queued.ticket - 1) if previous else UNKNOWN
        self.store.reput(key, self._value(since, queued.ticket, follows), lease_id, queued.entry.create_revision)
        if follows is not UNKNOWN:
            self.leases.follows(key, follows.key)

    def _is_head(self, own: _Own, look: Snapshot, semaphore: Semaphore) -> tuple[bool, _Own] | None:
        """(True at the head of the queue, False behind another waiter; the key as now written), or None
        when the key went meanwhile.

        Reads the queue (and writes the key it now follows) only when the key
        it followed left without a slot.
        """
        follows = own.follows
        if follows is None:
            return True, own
        if isinstance(follows, Pointer):
            ahead = look.keys.get(follows.key)
            if ahead is not None and ahead.create_revision == follows.created:
                if self._waits(ahead, semaphore):
                    return False, own
            elif follows.ticket and self._served(look) == follows.ticket:
                return True, own  # it left by taking a slot, as the head: this client heads the queue now
        return self._relocate(own, semaphore)

    def _relocate(self, own: _Own, semaphore: Semaphore) -> tuple[bool, _Own] | None:
        """Find the waiter now ahead (etcd scans the queue) and write it into the client's key."""
        entry = own.entry
        place = self.store.locate(entry.key, entry.create_revision, self.semaphore.key, self.semaphore.halt_key,
                                  self.prefix)
        if place.mine is None or place.mine.create_revision != entry.create_revision:
            return None
        ahead, batch = None, place.before
        while ahead is None and batch:
            ahead = next((candidate for candidate in batch if self._waits(candidate, semaphore)), None)
            if ahead is None and len(batch) == 2:
                batch = self.store.predecessors(self.prefix, batch[-1].create_revision, place.revision)
            elif ahead is None:
                batch = ()
        follows = None if ahead is None else Pointer(ahead.key, ahead.create_revision, ticket=decode_waiter(ahead.value).ticket)
        if not self.store.reput(entry.key, self._value(own.since, own.ticket, follows), entry.lease,
                                entry.create_revision):
            return None
        self.leases.follows(entry.key, None if follows is None else follows.key)
        return follows is None, _Own(entry, WaiterValue(own.since, own.ticket, via=FLEETLOCK, grace_s=self.grace_s, follows=follows))

    def _served(self, look: Snapshot) -> int:
        """The ``served`` ticket in a look (0: none yet)."""
        served = look.keys.get(self.served_key)
        return served_ticket(served.value) if served is not None else 0

    def _waits(self, entry: StoredKey, semaphore: Semaphore) -> bool:
        """True for a key that is a host waiting its turn (the one waiter rule)."""
        kind, _ = classify_waiter(entry.key, entry.lease, self.prefix, frozenset(semaphore.holders))
        return kind is WaiterKind.WAITING

    def _value(self, since: str | None, number: int, follows: Any) -> bytes:
        """The waiter key's value: marked as queued through FleetLock, with its ticket and the key it follows."""
        since = since or self.clock().isoformat(timespec="milliseconds")
        return encode_waiter(WaiterValue(since, number, via=FLEETLOCK, grace_s=self.grace_s, follows=follows))

    def _refusal(self, own: _Own, head: bool, semaphore: Semaphore, look: Snapshot) -> ProtocolError | None:
        """Why the client may not take a slot now, or None when it is the head and a slot is free."""
        halt = look.keys.get(self.semaphore.halt_key)
        if halt is not None:
            try:
                record = decode_halt(halt.value, self.semaphore.halt_key)
                text = f"the group is halted since {record.since.isoformat()} by {record.by}: {record.reason}"
            except CorruptDocument as error:  # an unreadable halt stops acquisitions like a halt
                text = f"the group's halt record is unreadable: {error.one_line()}"
            return ProtocolError(ErrorKind.HALTED, text)
        position, length = place(own.value, head, self._served(look), look.versions.get(self.tail_key, 0))
        if semaphore.available <= 0:
            return ProtocolError(ErrorKind.SEMAPHORE_FULL,
                                 f"semaphore currently full, all slots are locked already ({len(semaphore.holders)} "
                                 f"of max {semaphore.max}); queued at position {position} of {length}")
        if not head:
            return ProtocolError(ErrorKind.QUEUED,
                                 f"a slot is free but {position - 1} earlier waiter(s) go first; "
                                 f"queued at position {position} of {length}")
        return None

    def _take(self, client_id: str, own: _Own, semaphore: Semaphore, mod_revision: int, peer: str) -> bool:
        """The one guarded write taking a slot; False on a lost race (the caller looks again)."""
        now = self.clock()
        record = new_record(now=now, deadline_after=None, hostname=client_id, source=FLEETLOCK,
                            reason=f"FleetLock pre-reboot from {peer}")
        new = semaphore.lock(client_id, record.to_info())
        taken = HistoryEvent(at=now, host=client_id, event="slot-taken",
                             detail=f"{len(new.holders)} of max {new.max} held, {DETAIL}")
        puts = [(self.served_key, str(own.ticket).encode())] if own.ticket else []
        try:
            revision, _ = self.semaphore.write(new, mod_revision, delete=(own.entry.key,), events=(taken,),
                                               puts=puts, admits_holder=True)
        except AmbiguousWrite:
            log.warning("slot for FleetLock client %s: reply lost; reading back", client_id)
            if not self.semaphore.read().semaphore.holds(client_id):
                return False
            revision = 1
        if revision:
            self._revoke(own.entry.lease)  # its key went with the write: no lease left without a key
            self.leases.follows(own.entry.key, None)
        return bool(revision)

    def _drop(self, entry: StoredKey) -> None:
        """Remove the client's waiter key as read, with its lease (the lease holds nothing else)."""
        if entry.lease:
            self._revoke(entry.lease)
        self.store.delete_if_created(entry.key, entry.create_revision)
        self.leases.follows(entry.key, None)

    def _revoke(self, lease_id: int) -> None:
        """Revoke a client's lease; on failure it expires by itself after ``grace_s``."""
        self.leases.forget(lease_id)
        try:
            self.store.revoke_lease(lease_id)
        except StoreError as error:
            log.debug("could not revoke lease %x (it expires by itself): %s", lease_id, error.one_line())


def _read_own(entry: StoredKey) -> _Own:
    value = decode_waiter(entry.value)
    if value.since is not None:
        try:
            parse_time(value.since)
        except ValueError:
            value = replace(value, since=None)
    return _Own(entry, value)
