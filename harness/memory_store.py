"""In-memory stores for logic tests: a QueueStore (etcd's revisions, leases, guarded writes and watches) and
a plain KeyValueStore (``MemoryStore``, for the semaphore's compare-and-swap).

It implements ``locksmithd.etcd.queue_store.QueueStore`` with etcd's rules
as the queue relies on them: one revision per transaction, create and mod
revisions and versions per key, keys bound to leases (revoking or expiring a
lease deletes them, and a put on a missing lease raises LeaseLost),
compare-and-swap guards, reads at past revisions (from the log of changes),
and watches whose events arrive on one delivery thread, in revision order,
after the watch's ``on_created``. Real etcd stays the proof of every feature;
this store only lets the walk's logic run fast and without a server.
"""

from __future__ import annotations

import queue
import random
import threading
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Sequence

from locksmithd.errors import LeaseLost
from locksmithd.etcd.store import ABSENT, Enqueued, Place, Snapshot, StoredKey, Versioned
from locksmithd.etcd.watch import WatchEvent


@dataclass(frozen=True)
class _Change:
    revision: int
    kind: str  # "put" or "delete"
    entry: StoredKey
    version: int


class MemoryWatch:
    """A watch handle; ``cancel`` stops deliveries (events already queued are dropped)."""

    def __init__(self, store: MemoryQueueStore, start: str, end: str, deletes_only: bool,
                 on_events: Callable[[list[WatchEvent], int], None], on_broken: Callable[[BaseException], None],
                 on_created: Callable[[int], None] | None) -> None:
        self.store, self.start, self.end, self.deletes_only = store, start, end, deletes_only
        self.on_events, self.on_broken, self.on_created = on_events, on_broken, on_created
        self.done = False

    def covers(self, change: _Change) -> bool:
        return self.start <= change.entry.key < self.end and not (self.deletes_only and change.kind == "put")

    def cancel(self) -> None:
        with self.store.lock:
            self.done = True
            if self in self.store.watches:
                self.store.watches.remove(self)


class MemoryQueueStore:
    """A thread-safe in-memory etcd for the queue (see the module docstring); ``close`` stops its thread."""

    def __init__(self, shuffle: random.Random | None = None) -> None:
        self.shuffle = shuffle  # given: each change reaches its watches in a random order (etcd promises none)
        self.lock = threading.RLock()
        self.revision = 1
        self.data: dict[str, tuple[StoredKey, int]] = {}  # key -> (entry, version)
        self.log: list[_Change] = []
        self.leases: dict[int, int] = {}  # id -> ttl_s
        self.watches: list[MemoryWatch] = []
        self.requests: dict[str, int] = {}  # request name -> count (for tests of cost)
        self._next_lease = 0x7E57_0000
        self._outbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._deliver, name="memory-store-watches", daemon=True)
        self._thread.start()

    # -- KeyValueStore -------------------------------------------------------

    def read(self, key: str) -> Versioned | None:
        with self.lock:
            self._count("read")
            found = self.data.get(key)
            return Versioned(found[0].value, found[0].mod_revision) if found else None

    def read_many(self, keys: Sequence[str]) -> dict[str, Versioned]:
        with self.lock:
            self._count("read_many")
            return {key: Versioned(self.data[key][0].value, self.data[key][0].mod_revision)
                    for key in keys if key in self.data}

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             puts: Sequence[tuple[str, bytes]] = (), absent: Sequence[str] = ()) -> int:
        with self.lock:
            self._count("swap")
            current = self.data.get(key)
            if (current[0].mod_revision if current else ABSENT) != expected_mod_revision:
                return 0
            if any(other in self.data for other in absent):
                return 0
            changes = [self._put(key, value, 0)] + [self._put(other, data, 0) for other, data in puts]
            changes += [change for other in delete if (change := self._delete(other)) is not None]
            return self._commit(changes)

    def delete(self, key: str) -> bool:
        with self.lock:
            self._count("delete")
            change = self._delete(key)
            if change is None:
                return False
            self._commit([change])
            return True

    def read_prefix(self, prefix: str, keys_only: bool = False) -> list[StoredKey]:
        with self.lock:
            self._count("read_prefix")
            return sorted((entry for key, (entry, _) in self.data.items() if key.startswith(prefix)),
                          key=lambda entry: entry.create_revision)

    # -- leases --------------------------------------------------------------

    def grant_lease(self, ttl_s: int) -> int:
        with self.lock:
            self._count("grant_lease")
            self._next_lease += 1
            self.leases[self._next_lease] = ttl_s
            return self._next_lease

    def keep_alive(self, lease_id: int) -> int:
        with self.lock:
            self._count("keep_alive")
            return self.leases.get(lease_id, 0)

    def revoke_lease(self, lease_id: int) -> None:
        with self.lock:
            self._count("revoke_lease")
            self.expire(lease_id)

    def expire(self, lease_id: int) -> None:
        """The lease ends (as if it timed out): its keys are deleted in one revision."""
        with self.lock:
            if self.leases.pop(lease_id, None) is None:
                return
            changes = [change for key, (entry, _) in list(self.data.items()) if entry.lease == lease_id
                       if (change := self._delete(key)) is not None]
            if changes:
                self._commit(changes)

    # -- the queue's requests ------------------------------------------------

    def enqueue(self, waiter_key: str, value: bytes, lease_id: int, tail_key: str, semaphore_key: str = "",
                halt_key: str = "", served_key: str = "") -> Enqueued:
        with self.lock:
            self._count("enqueue")
            if waiter_key in self.data:
                return Enqueued(self.data[waiter_key][0], created=False)
            self._need_lease(lease_id)
            tail = self.data.get(tail_key)
            put = self._put(waiter_key, value, lease_id)
            self._commit([put, self._put(tail_key, waiter_key.encode(), 0)])
            previous = None
            if tail is not None and tail[0].value:
                previous = StoredKey(tail[0].value.decode(), b"", tail[0].mod_revision, tail[0].mod_revision, 0)
            group = bool(semaphore_key and halt_key and served_key)
            sem, halt, served = ((self.data.get(semaphore_key), self.data.get(halt_key), self.data.get(served_key))
                                 if group else (None, None, None))
            return Enqueued(self.data[waiter_key][0], created=True, previous=previous,
                            ticket=tail[1] + 1 if tail else 1, revision=self.revision, group_read=group,
                            semaphore=Versioned(sem[0].value, sem[0].mod_revision) if sem else None,
                            halt=Versioned(halt[0].value, halt[0].mod_revision) if halt else None,
                            served=Versioned(served[0].value, served[0].mod_revision) if served else None)

    def reput(self, key: str, value: bytes, lease_id: int, create_revision: int) -> bool:
        with self.lock:
            self._count("reput")
            found = self.data.get(key)
            if found is None or found[0].create_revision != create_revision:
                return False
            self._need_lease(lease_id)
            self._commit([self._put(key, value, lease_id)])
            return True

    def snapshot(self, keys: Sequence[str], semaphore_key: str = "", written_at: Sequence[int] = ()) -> Snapshot:
        with self.lock:
            self._count("snapshot")
            found = {key: self.data[key][0] for key in keys if key in self.data}
            versions = {key: self.data[key][1] for key in found}
            written = frozenset(at for at in written_at if any(
                change.revision == at and change.kind == "put" and change.entry.key == semaphore_key
                for change in self.log))
            return Snapshot(self.revision, found, written, versions)

    def locate(self, waiter_key: str, create_revision: int, semaphore_key: str, halt_key: str,
               waiters_prefix: str) -> Place:
        with self.lock:
            self._count("locate")
            mine = self.data.get(waiter_key)
            sem, halt = self.data.get(semaphore_key), self.data.get(halt_key)
            return Place(self.revision, mine[0] if mine else None,
                         Versioned(sem[0].value, sem[0].mod_revision) if sem else None,
                         Versioned(halt[0].value, halt[0].mod_revision) if halt else None,
                         self._before(waiters_prefix, create_revision, self.revision))

    def predecessors(self, waiters_prefix: str, create_revision: int, revision: int) -> tuple[StoredKey, ...]:
        with self.lock:
            self._count("predecessors")
            return self._before(waiters_prefix, create_revision, revision)

    def delete_if_created(self, key: str, create_revision: int) -> bool:
        with self.lock:
            self._count("delete_if_created")
            found = self.data.get(key)
            if found is None or found[0].create_revision != create_revision:
                return False
            change = self._delete(key)
            assert change is not None
            self._commit([change])
            return True

    def watch_range(self, start_key: str, end_key: str, start_revision: int,
                    on_events: Callable[[list[WatchEvent], int], None],
                    on_broken: Callable[[BaseException], None], *, deletes_only: bool = False,
                    on_created: Callable[[int], None] | None = None) -> MemoryWatch:
        with self.lock:
            self._count("watch")
            watch = MemoryWatch(self, start_key, end_key, deletes_only, on_events, on_broken, on_created)
            self.watches.append(watch)
            revision = self.revision
            if on_created is not None:
                self._send(watch, lambda: on_created(revision))
            if start_revision:
                replay = [change for change in self.log if change.revision >= start_revision and watch.covers(change)]
                for at in sorted({change.revision for change in replay}):
                    self._send_events(watch, [change for change in replay if change.revision == at], at)
            return watch

    def break_watches(self, error: BaseException) -> None:
        """Every watch breaks (as on a compaction or a lost leader): ``on_broken`` once each, then nothing."""
        with self.lock:
            broken, self.watches = self.watches, []
            for watch in broken:
                watch.done = True
                self._outbox.put(partial(watch.on_broken, error))

    def close(self) -> None:
        """Stop the delivery thread (watches end silently)."""
        self._outbox.put(None)
        self._thread.join(timeout=5)

    # -- inside ----------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.requests[name] = self.requests.get(name, 0) + 1

    def _need_lease(self, lease_id: int) -> None:
        if lease_id and lease_id not in self.leases:
            raise LeaseLost(f"memory store: lease {lease_id:x} not found")

    def _put(self, key: str, value: bytes, lease_id: int) -> _Change:
        revision = self.revision + 1
        found = self.data.get(key)
        created = found[0].create_revision if found else revision
        version = found[1] + 1 if found else 1
        entry = StoredKey(key, value, created, revision, lease_id)
        self.data[key] = (entry, version)
        return _Change(revision, "put", entry, version)

    def _delete(self, key: str) -> _Change | None:
        found = self.data.pop(key, None)
        if found is None:
            return None
        entry = replace(found[0], value=b"", mod_revision=self.revision + 1, create_revision=0, lease=0)
        return _Change(self.revision + 1, "delete", entry, 0)

    def _commit(self, changes: list[_Change]) -> int:
        """One transaction: one new revision, its changes logged and sent to the watches covering them."""
        self.revision += 1
        self.log.extend(changes)
        watches = list(self.watches)
        if self.shuffle is not None:
            self.shuffle.shuffle(watches)
        for watch in watches:
            mine = [change for change in changes if watch.covers(change)]
            if mine:
                self._send_events(watch, mine, self.revision)
        return self.revision

    def _send_events(self, watch: MemoryWatch, changes: list[_Change], revision: int) -> None:
        events = [WatchEvent(change.kind, change.entry) for change in changes]
        self._send(watch, lambda: watch.on_events(events, revision))

    def _send(self, watch: MemoryWatch, call: Callable[[], None]) -> None:
        self._outbox.put(lambda: None if watch.done else call())

    def _before(self, prefix: str, create_revision: int, revision: int) -> tuple[StoredKey, ...]:
        """The two newest keys under ``prefix`` created before ``create_revision``, as of ``revision``."""
        alive: dict[str, StoredKey] = {}
        for change in self.log:
            if change.revision > revision or not change.entry.key.startswith(prefix):
                continue
            if change.kind == "put":
                alive[change.entry.key] = change.entry
            else:
                alive.pop(change.entry.key, None)
        older = sorted((entry for entry in alive.values() if entry.create_revision < create_revision),
                       key=lambda entry: entry.create_revision, reverse=True)
        return tuple(older[:2])

    def _deliver(self) -> None:
        while True:
            call = self._outbox.get()
            if call is None:
                return
            call()


class MemoryStore:
    """A thread-safe in-memory KeyValueStore with etcd-like revisions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Versioned] = {}
        self._revision = 1

    def read(self, key: str) -> Versioned | None:
        with self._lock:
            return self._data.get(key)

    def read_many(self, keys: Sequence[str]) -> dict[str, Versioned]:
        with self._lock:
            return {key: self._data[key] for key in keys if key in self._data}

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             puts: Sequence[tuple[str, bytes]] = (), absent: Sequence[str] = ()) -> int:
        with self._lock:
            current = self._data.get(key)
            if (current.mod_revision if current else ABSENT) != expected_mod_revision:
                return 0
            if any(other in self._data for other in absent):
                return 0
            self._revision += 1
            self._data[key] = Versioned(value, self._revision)
            for other, other_value in puts:
                self._data[other] = Versioned(other_value, self._revision)
            for other in delete:
                self._data.pop(other, None)
            return self._revision

    def read_prefix(self, prefix: str, keys_only: bool = False) -> list[StoredKey]:
        with self._lock:
            found = [(k, v) for k, v in self._data.items() if k.startswith(prefix)]
        return [StoredKey(k, v.value, v.mod_revision, v.mod_revision, 0) for k, v in sorted(found, key=lambda i: i[1].mod_revision)]

    def delete(self, key: str) -> bool:
        with self._lock:
            existed = self._data.pop(key, None) is not None
            if existed:
                self._revision += 1
            return existed

    def delete_if_created(self, key: str, create_revision: int) -> bool:
        """Its keys' create revision is their mod revision (a put recreates them here)."""
        with self._lock:
            found = self._data.get(key)
            if found is None or found.mod_revision != create_revision:
                return False
            del self._data[key]
            self._revision += 1
            return True

    def put(self, key: str, value: bytes) -> None:
        """Unconditional write, for tests that plant documents."""
        with self._lock:
            self._revision += 1
            self._data[key] = Versioned(value, self._revision)
