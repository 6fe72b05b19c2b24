"""The one compare-and-swap path for the semaphore document.

Every write of the document, by locksmithctl, the daemon's release and the
queue's acquisition alike, goes through ``SemaphoreClient.write``: encode
(refusing a document over the size limit before anything is sent), then
write guarded by the ``mod_revision`` the new value was computed from.
``update`` reads, applies a pure change and writes, retrying lost races here
with jitter. ``retry_races`` is that one retry (one Backoff, a log line
before each pause): ``update``, halting and resuming (``halt.py``) and the
FleetLock server's poll (``remote_waiter.py``) all retry through it; the queue (``queue.py``) makes single attempts from its watched
view instead and deletes its waiter key in the same guarded write. An
ambiguous write is resolved by reading back. A holder's next change may start
from the document it last wrote (``update``'s ``known``): the guard makes an
old one a lost race, so it saves the read without risking anything.

The same write carries the group's history: each event it records takes the
next number of the document's ``history_seq`` and is put into its ring slot
in the same transaction, so a change and its record land together or not at
all. A write that admits a new holder also requires the group's halt key to
be absent, so a halt written at revision R stops every acquisition after R.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

from locksmithd.core.backoff import Backoff
from locksmithd.core.halt import Halt, decode_halt
from locksmithd.core.history import DEFAULT_LIMIT, HistoryEvent, ring_slot
from locksmithd.core.semaphore import Semaphore, decode, initial_semaphore
from locksmithd.errors import (
    AmbiguousWrite,
    CorruptDocument,
    DocumentTooLarge,
    GroupHalted,
    LocksmithError,
    NotHolder,
    WriteConflict,
)
from locksmithd.etcd.keys import halt_key, history_key, semaphore_key
from locksmithd.etcd.store import ABSENT, KeyValueStore, Versioned

log = logging.getLogger("locksmithd.lock")
# A lost race means another writer just succeeded: retry soon, spread out (the one Backoff policy).
RACE_FIRST_PAUSE_S = 0.002
RACE_MAX_PAUSE_S = 0.25
T = TypeVar("T")


class _LostRace(Exception):
    """Internal: the guarded write found a newer revision."""


@dataclass(frozen=True)
class GroupRead:
    """A decoded semaphore, the revision it was read at (ABSENT, 0: no document stored), and the halt.

    ``halt_corrupt`` is set instead of ``halt`` when a halt record exists but
    does not decode: it stops acquisitions like a halt, and nothing else.
    """

    semaphore: Semaphore
    mod_revision: int
    halt: Halt | None = None
    halt_corrupt: CorruptDocument | None = None


@dataclass(frozen=True)
class Change:
    """A named pure change, the test that tells whether it is already in effect, and what it records.

    ``admits_holder``: the change adds a holder, so it is refused while the
    group is halted (GroupHalted) and guarded by the halt key's absence.
    ``delete``: keys deleted in the same guarded write (a holder's alive key
    with its release), so they go exactly when the change lands.
    """

    name: str
    apply: Callable[[Semaphore], Semaphore]
    in_effect: Callable[[Semaphore], bool]
    events: Sequence[HistoryEvent] = ()
    admits_holder: bool = False
    delete: Sequence[str] = ()


class SemaphoreClient:
    """Lock, unlock and resize one group's semaphore through a KeyValueStore.

    All methods raise StoreError subclasses when the store cannot answer,
    CorruptDocument when the stored document is invalid (it is never
    overwritten), DocumentTooLarge when the new document would exceed the
    size limit (nothing is written, never retried), and WriteConflict after
    ``max_attempts`` lost races.
    """

    def __init__(
        self,
        store: KeyValueStore,
        group: str = "",
        key_prefix: str = "",
        *,
        max_attempts: int = 64,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        history_limit: int = DEFAULT_LIMIT,
    ) -> None:
        self.store = store
        self.group = group
        self.key_prefix = key_prefix
        self.key = semaphore_key(group, key_prefix)
        self.halt_key = halt_key(group, key_prefix)
        self.history_limit = history_limit
        self._max_attempts = max_attempts
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.last_written: GroupRead | None = None
        """The document as this client last wrote it, and its revision (the queue's winning write
        included): a holder's next change may start from it (``update``'s ``known``) instead of a read."""

    def read(self) -> GroupRead:
        """The current value and halt (one request); an absent key reads as locksmith's initial value.

        Raises CorruptDocument for a bad semaphore document; a bad halt record
        is reported in what it returns (releases must never be blocked by it).
        """
        stored = self.store.read_many([self.key, self.halt_key])
        group = self._decoded_group(stored.get(self.key))
        halt = stored.get(self.halt_key)
        if halt is None:
            return group
        try:
            return GroupRead(group.semaphore, group.mod_revision, decode_halt(halt.value, self.halt_key))
        except CorruptDocument as error:
            return GroupRead(group.semaphore, group.mod_revision, halt_corrupt=error)

    def read_raw(self) -> Versioned | None:
        """The stored bytes, undecoded, for inspecting a corrupt document."""
        return self.store.read(self.key)

    def lock(self, holder: str, info: Mapping[str, Any] | None = None,
             events: Sequence[HistoryEvent] = ()) -> Semaphore:
        """Take a slot for ``holder``; idempotent; SemaphoreFull when none is free, GroupHalted when halted."""
        return self.update(Change(f"lock {holder}", lambda s: s.lock(holder, info), lambda s: s.holds(holder),
                                  events, admits_holder=True))

    def unlock(self, holder: str, events: Sequence[HistoryEvent] = (), *, delete: Sequence[str] = (),
               known: GroupRead | None = None) -> Semaphore:
        """Release ``holder``'s slot (deleting ``delete`` in the same write); NotHolder if it holds none.

        ``known``: as for ``update``.
        """
        return self.update(Change(f"unlock {holder}", lambda s: s.unlock(holder), lambda s: not s.holds(holder),
                                  events, delete=tuple(delete)), known)

    def set_max(self, new_max: int, events: Sequence[HistoryEvent] = ()) -> Semaphore:
        """Set the maximum; values below the holder count are allowed (they drain)."""
        return self.update(Change(f"set-max {new_max}", lambda s: s.set_max(new_max), lambda s: s.max == new_max,
                                  events))

    def reset(self, new_max: int, expected: Versioned | None, extra_fields: Mapping[str, Any] | None = None,
              events: Sequence[HistoryEvent] = (), history_seq: int = 0) -> Semaphore:
        """Replace whatever is stored (even a corrupt document) by an empty semaphore.

        ``extra_fields`` are top-level fields to keep beside locksmith's (the
        caller picks them from the old document). Guarded by ``expected`` (what
        the operator saw): if the key changed since, WriteConflict is raised
        and nothing is written; DocumentTooLarge if the fields do not fit.
        """
        extra = dict(extra_fields or {})
        kept_seq = extra.pop("history_seq", history_seq)  # the history counter goes on after a reset
        if isinstance(kept_seq, bool) or not isinstance(kept_seq, int) or kept_seq < 0:
            kept_seq = 0
        fresh = Semaphore(1, (), {}, extra, kept_seq).set_max(new_max)
        try:
            revision, fresh = self.write(fresh, expected.mod_revision if expected else ABSENT, events=events)
            written = bool(revision)
        except AmbiguousWrite:
            back = self.store.read(self.key)
            written = back is not None and back.value == fresh.with_events(len(events))[0].encode()
        if not written:
            raise WriteConflict(f"{self.key} changed since it was read; nothing was reset, look again")
        return fresh

    def write(self, new: Semaphore, expected_mod_revision: int, *, delete: Sequence[str] = (),
              events: Sequence[HistoryEvent] = (), admits_holder: bool = False,
              puts: Sequence[tuple[str, bytes]] = (), absent: Sequence[str] = ()) -> tuple[int, Semaphore]:
        """The one guarded write: store ``new`` (and delete ``delete``, and record ``events``) if the
        document is still at ``expected_mod_revision`` (ABSENT: only if there is none) and, with
        ``admits_holder``, the group is not halted. ``puts`` and ``absent``
        (other keys to write, keys that must not exist) serve halts and
        liveness checks.

        Returns the document's new mod revision (0 on a lost race: nothing
        changed) and the value as stored (its history counter advanced by
        the events). Raises DocumentTooLarge before sending anything, and
        AmbiguousWrite when the outcome is unknown (the caller reads back).
        """
        stored, first = new.with_events(len(events))
        try:
            stored.encode()
        except DocumentTooLarge:
            if not events:
                raise
            # The history counter would tip the document over the limit: history is a record,
            # not a reason to refuse a change (an unlock must always be able to make room).
            log.warning("%s is at its size limit: this change is written without its history events", self.key)
            stored, events = new, ()
        ring = [(history_key(ring_slot(first + n, self.history_limit), self.group, self.key_prefix), event.encode())
                for n, event in enumerate(events)]
        guards = (*absent, self.halt_key) if admits_holder else tuple(absent)
        revision = self.store.swap(self.key, stored.encode(), expected_mod_revision, delete=delete,
                                   puts=[*puts, *ring], absent=guards)
        if revision:
            self.last_written = GroupRead(stored, revision)
        return revision, stored

    def update(self, change: Change, known: GroupRead | None = None) -> Semaphore:
        """Apply ``change`` with compare-and-swap, retrying lost races with jitter.

        Returns the value as written (or as found, when already in effect).
        Domain errors (SemaphoreFull, NotHolder, InvalidMax) from the first
        application propagate; after an ambiguous write they are resolved by
        ``change.in_effect`` on the value read back.

        ``known`` (a group this process just read, or ``last_written``)
        saves the first read: the first write is guarded by its revision, so
        an old one only loses the race (nothing written) and the attempt goes
        on with a read, without a pause. Since it may be old, it only ever leads to a write: a change it
        shows in effect, or refused, or halted, is decided again on a read.
        """
        state = {"ambiguous": False}
        first = [known]

        def attempt() -> Semaphore | None:
            start, first[0] = first[0], None
            return self._try(change, state, start)

        return self.retry_races(change.name, attempt)

    def retry_races(self, name: str, attempt: Callable[[], Optional[T]], max_attempts: int | None = None) -> T:
        """Call ``attempt`` until it returns a result; None means it lost a race (nothing was written;
        the FleetLock server's queueing also returns None for a lease that expired before its put).

        The one retry of a lost race: each retry pauses as one ``Backoff``
        says (jittered; a log line before each pause), each attempt re-reads.
        Raises WriteConflict after ``max_attempts`` (the client's by default).
        """
        attempts = max_attempts or self._max_attempts
        backoff = Backoff(RACE_FIRST_PAUSE_S, RACE_MAX_PAUSE_S, self._rng)
        for number in range(1, attempts + 1):
            result = attempt()
            if result is not None:
                return result
            if number == attempts:
                break
            pause_s = backoff.next_delay_s()
            log.debug("%s: lost a race on %s, retry %d in %.3fs", name, self.key, number, pause_s)
            self._sleep(pause_s)
        raise WriteConflict(f"{name}: {self.key} kept changing; gave up after {attempts} attempts")

    def _try(self, change: Change, state: dict[str, bool], known: GroupRead | None = None) -> Semaphore | None:
        try:
            return self._attempt(change, state, known)
        except _LostRace:
            return None

    def _attempt(self, change: Change, state: dict[str, bool], known: GroupRead | None = None) -> Semaphore:
        if known is not None and known.mod_revision != ABSENT and not (
                change.admits_holder and (known.halt is not None or known.halt_corrupt is not None)):
            try:
                new = change.apply(known.semaphore)
            except LocksmithError:  # refused on what may be an old view: look again
                new = known.semaphore
            if new != known.semaphore and not change.in_effect(known.semaphore):
                try:
                    return self._write_change(change, state, new, known.mod_revision)
                except _LostRace:
                    pass  # it was old: no pause, this attempt goes on with a read
        group = self.read()
        if state["ambiguous"] and change.in_effect(group.semaphore):
            return group.semaphore
        if change.admits_holder and group.halt_corrupt is not None and not change.in_effect(group.semaphore):
            raise group.halt_corrupt
        if change.admits_holder and group.halt is not None and not change.in_effect(group.semaphore):
            halt = group.halt
            raise GroupHalted(f"{change.name}: the group is halted since {halt.since.isoformat()} by {halt.by}: "
                              f"{halt.reason} (resume with 'locksmithctl resume')")
        try:
            new = change.apply(group.semaphore)
        except NotHolder:
            if state["ambiguous"]:  # our earlier unlock landed before another write
                return group.semaphore
            raise
        if new == group.semaphore and group.mod_revision != ABSENT:
            return new
        return self._write_change(change, state, new, group.mod_revision)

    def _write_change(self, change: Change, state: dict[str, bool], new: Semaphore, expected: int) -> Semaphore:
        """The guarded write of ``change``'s result; _LostRace when it did not land."""
        try:
            written, stored = self.write(new, expected, events=change.events, admits_holder=change.admits_holder,
                                         delete=change.delete)
        except AmbiguousWrite:
            state["ambiguous"] = True
            log.warning("%s: write outcome unknown, reading back %s", change.name, self.key)
            back = self.store.read(self.key)
            if back is not None and back.value == new.with_events(len(change.events))[0].encode():
                return new
            raise _LostRace() from None
        if not written:
            raise _LostRace()
        return stored

    def _decoded_group(self, stored: Versioned | None) -> GroupRead:
        if stored is None:
            return GroupRead(initial_semaphore(), ABSENT)
        return GroupRead(decode(stored.value, self.key), stored.mod_revision)
