"""etcd v3 adapter: the KeyValueStore and queue operations over python3-etcd3.

The only package area that sends requests to etcd: each request goes
through ``EtcdCalls._call`` (``calls.py``: failover between endpoints,
re-authentication, every dependency exception mapped into
``locksmithd.errors`` through ``grpc_errors.py``, a failed write treated as
*ambiguous*: the caller reads back instead of writing again); raw requests
are built in ``raw.py``; the watch stream (``watch.py``) opens through
``EtcdCalls._open_stream``. The workarounds for python3-etcd3 0.12/0.13 are
listed in ``calls.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import grpc
from etcd3 import etcdrpc

from locksmithd.etcd.calls import EtcdCalls
from locksmithd.etcd.connection import EtcdSettings
from locksmithd.etcd.keys import prefix_end
from locksmithd.etcd.raw import range_op, read_pages, txn
from locksmithd.etcd.store import Enqueued, Place, Snapshot, StoredKey, Versioned
from locksmithd.etcd.watch import RangeWatch, WatchEvent, WatchStream

__all__ = ["EtcdStore", "RangeWatch", "StoredKey", "WatchEvent", "prefix_end"]


class EtcdStore(EtcdCalls):
    """A KeyValueStore and queue backend on a real etcd cluster.

    Thread-safe. Every method raises StoreUnavailable (naming the endpoints
    tried) when no endpoint answers, StoreDenied on auth or permission
    failure, and AmbiguousWrite when a write's outcome is unknown.
    """

    def __init__(self, settings: EtcdSettings) -> None:
        super().__init__(settings)
        self._watches = WatchStream(self._open_stream)  # every watch of this store shares one gRPC stream

    def read(self, key: str) -> Versioned | None:
        def op(client: Any) -> Versioned | None:
            value, meta = client.get(key)
            return None if value is None else Versioned(value, meta.mod_revision)

        return self._call(f"read {key}", op)

    def read_many(self, keys: Sequence[str]) -> dict[str, Versioned]:
        """The keys of ``keys`` that exist, read at one revision (one request)."""
        def op(client: Any) -> dict[str, Versioned]:
            response = txn(client, [client.transactions.get(key) for key in keys])
            found: dict[str, Versioned] = {}
            for key, reply in zip(keys, response.responses):
                kvs = reply.response_range.kvs
                if kvs:
                    found[key] = Versioned(bytes(kvs[0].value), int(kvs[0].mod_revision))
            return found

        return self._call(f"read {', '.join(keys)}", op)

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             puts: Sequence[tuple[str, bytes]] = (), absent: Sequence[str] = ()) -> int:
        """The guarded write of the KeyValueStore protocol (0 for ``expected_mod_revision``: key absent)."""
        def op(client: Any) -> int:
            tx = client.transactions
            ops = [tx.put(key, value), *(tx.put(k, v) for k, v in puts), *(tx.delete(other) for other in delete)]
            guards = [tx.mod(key) == expected_mod_revision, *(tx.version(other) == 0 for other in absent)]
            response = txn(client, ops, guards)
            return int(response.header.revision) if response.succeeded else 0

        return self._call(f"swap {key}", op, write=True)

    # -- queue operations ---------------------------------------------------

    def put(self, key: str, value: bytes, lease_id: int | None = None) -> None:
        """Unconditional write (queue keys, tests); AmbiguousWrite if the outcome is unknown."""
        self._call(f"put {key}", lambda c: c.put(key, value, lease=lease_id), write=True)

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed. Deleting twice is harmless."""
        return bool(self._call(f"delete {key}", lambda c: c.delete(key), write=True))

    def read_prefix(self, prefix: str, keys_only: bool = False) -> list[StoredKey]:
        """All keys under ``prefix``, oldest first (by create revision); with ``keys_only``, values empty.

        Read in pages, all at the first page's revision (one consistent
        view), so any number of keys and values of any size fit gRPC's 4 MiB
        reply limit: a page that does not fit is asked again a quarter as
        large. A revision compacted between pages starts the read over.
        """
        return self._call(f"read {prefix}*", lambda client: read_pages(client, prefix, keys_only))

    def enqueue(self, waiter_key: str, value: bytes, lease_id: int, tail_key: str, semaphore_key: str = "",
                halt_key: str = "", served_key: str = "") -> Enqueued:
        """Create ``waiter_key`` on ``lease_id`` at the back of the queue, learning the waiter just ahead.

        One request, one key read, whatever the queue length: the key is
        created only if it does not exist, and in the same transaction the
        tail key is set to it, returning the tail's previous value (the newest
        waiter key before it; its create revision is the tail's mod revision).
        With ``semaphore_key``, ``halt_key`` and ``served_key`` a created
        key's request also reads those three (so a key whose predecessor took
        its slot already, the head, needs no other read before its attempt). When the key exists (a retried
        request whose reply was lost, a restarted daemon) nothing is written
        and it is returned as stored, so a retry never loses a place.
        """
        named = (semaphore_key, halt_key, served_key)
        group = [range_op(key) for key in named] if all(named) else []

        def op(client: Any) -> Enqueued:
            tx = client.transactions
            mine = waiter_key.encode("utf-8", errors="surrogateescape")
            put_tail = etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(
                key=tail_key.encode("utf-8", errors="surrogateescape"), value=mine, prev_kv=True))
            response = txn(client, [tx.put(waiter_key, value, lease=lease_id), put_tail, range_op(waiter_key),
                                    *group], [tx.create(waiter_key) == 0], otherwise=[range_op(waiter_key)])
            entry = StoredKey.from_kv(response.responses[2 if response.succeeded else 0].response_range.kvs[0])
            if not response.succeeded:
                return Enqueued(entry, created=False)
            prev = response.responses[1].response_put.prev_kv
            previous = None
            if prev.key and prev.value:
                previous = StoredKey(bytes(prev.value).decode("utf-8", errors="surrogateescape"), b"",
                                     int(prev.mod_revision), int(prev.mod_revision), 0)
            sem, halt, served = ([StoredKey.from_kv(r.response_range.kvs[0]) if r.response_range.kvs else None
                                  for r in response.responses[3:6]] if group else [None, None, None])
            return Enqueued(entry, created=True, previous=previous, ticket=int(prev.version) + 1 if prev.key else 1,
                            revision=int(response.header.revision), group_read=bool(group),
                            semaphore=Versioned(sem.value, sem.mod_revision) if sem else None,
                            halt=Versioned(halt.value, halt.mod_revision) if halt else None,
                            served=Versioned(served.value, served.mod_revision) if served else None)

        return self._call(f"enqueue {waiter_key}", op)

    def snapshot(self, keys: Sequence[str], semaphore_key: str = "", written_at: Sequence[int] = ()) -> Snapshot:
        """The named keys (those that exist) read at one revision, in one request of ``len(keys)`` key reads.

        For each revision in ``written_at``, also whether ``semaphore_key`` was
        written at that earlier revision (one more key read each, at that
        revision); a compacted revision raises StoreError.
        """
        def op(client: Any) -> Snapshot:
            ops = [range_op(key) for key in keys] + [range_op(semaphore_key, revision=at) for at in written_at]
            response = txn(client, ops)
            found: dict[str, StoredKey] = {}
            versions: dict[str, int] = {}
            for reply in response.responses[:len(keys)]:
                for kv in reply.response_range.kvs:
                    entry = StoredKey.from_kv(kv)
                    found[entry.key] = entry
                    versions[entry.key] = int(kv.version)
            written = frozenset(at for at, reply in zip(written_at, response.responses[len(keys):])
                                if reply.response_range.kvs and int(reply.response_range.kvs[0].mod_revision) == at)
            return Snapshot(int(response.header.revision), found, written, versions)

        return self._call(f"read {len(keys)} keys", op)

    def reput(self, key: str, value: bytes, lease_id: int, create_revision: int) -> bool:
        """Write ``value`` on ``lease_id`` to ``key`` only if it is still the key created at ``create_revision``.

        Keeps its place (create revision); False (nothing written) when the
        key is gone or was created anew. Idempotent, so retried on a lost reply.
        """
        def op(client: Any) -> bool:
            tx = client.transactions
            response = txn(client, [tx.put(key, value, lease=lease_id)], [tx.create(key) == create_revision])
            return bool(response.succeeded)

        return self._call(f"rewrite {key}", op)

    def locate(self, waiter_key: str, create_revision: int, semaphore_key: str, halt_key: str,
               waiters_prefix: str) -> Place:
        """Where the waiter created at ``create_revision`` stands: one request, five keys at most.

        Reads the waiter's own key, the semaphore, the halt record and the two
        newest waiter keys created before it (newest first: with fewer than
        two, the waiter is the head or next in line), all at one revision,
        whatever the queue length.
        """
        end = prefix_end(waiters_prefix)

        def op(client: Any) -> Place:
            below = create_revision - 1
            response = txn(client, [
                range_op(waiter_key), range_op(semaphore_key), range_op(halt_key),
                range_op(waiters_prefix, end, max_create_revision=below, limit=2,
                       sort_order=etcdrpc.RangeRequest.DESCEND, sort_target=etcdrpc.RangeRequest.CREATE)])
            ranges = [reply.response_range for reply in response.responses]

            def first(index: int) -> StoredKey | None:
                return StoredKey.from_kv(ranges[index].kvs[0]) if ranges[index].kvs else None

            sem, halt = first(1), first(2)
            return Place(int(response.header.revision), first(0),
                         Versioned(sem.value, sem.mod_revision) if sem else None,
                         Versioned(halt.value, halt.mod_revision) if halt else None,
                         tuple(StoredKey.from_kv(kv) for kv in ranges[3].kvs))

        return self._call(f"locate {waiter_key}", op)

    def predecessors(self, waiters_prefix: str, create_revision: int, revision: int) -> tuple[StoredKey, ...]:
        """The two newest waiter keys created before ``create_revision`` as of ``revision``, newest first."""
        request = range_op(waiters_prefix, prefix_end(waiters_prefix), max_create_revision=create_revision - 1,
                         limit=2, sort_order=etcdrpc.RangeRequest.DESCEND, sort_target=etcdrpc.RangeRequest.CREATE,
                         revision=revision).request_range

        def op(client: Any) -> tuple[StoredKey, ...]:
            reply = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                        metadata=client.metadata)
            return tuple(StoredKey.from_kv(kv) for kv in reply.kvs)

        return self._call(f"read the waiter before revision {create_revision}", op)

    def count_prefix(self, prefix: str) -> tuple[int, int]:
        """(number of keys under ``prefix``, revision): etcd counts without sending the keys."""
        request = range_op(prefix, prefix_end(prefix), count_only=True).request_range

        def op(client: Any) -> tuple[int, int]:
            reply = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                        metadata=client.metadata)
            return int(reply.count), int(reply.header.revision)

        return self._call(f"count {prefix}*", op)

    def delete_if_created(self, key: str, create_revision: int) -> bool:
        """Delete ``key`` only if it is still the key created at ``create_revision``; True if deleted."""
        def op(client: Any) -> bool:
            tx = client.transactions
            return bool(txn(client, [tx.delete(key)], [tx.create(key) == create_revision]).succeeded)

        return self._call(f"delete {key}", op, write=True)

    def grant_lease(self, ttl_s: int) -> int:
        """A new lease of ``ttl_s`` seconds; returns its id."""
        return int(self._call("grant lease", lambda c: c.lease(ttl_s).id))

    def keep_alive(self, lease_id: int) -> int:
        """Refresh a lease once; returns the remaining TTL in seconds (0 when it expired)."""
        def op(client: Any) -> int:
            replies = list(client.refresh_lease(lease_id))
            return int(replies[0].TTL) if replies else 0

        return self._call("keep lease alive", op)

    def lease_ttl(self, lease_id: int) -> int:
        """A lease's remaining TTL in seconds, read without refreshing it (0 when it expired or never was)."""
        def op(client: Any) -> int:
            return max(int(client.get_lease_info(lease_id).TTL), 0)

        return self._call("read lease TTL", op)

    def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease and with it every key attached; a gone lease is fine."""
        def op(client: Any) -> None:
            try:
                client.revoke_lease(lease_id)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise

        self._call("revoke lease", op)

    def watch_range(self, start_key: str, end_key: str, start_revision: int,
                    on_events: Callable[[list[WatchEvent], int], None],
                    on_broken: Callable[[BaseException], None], *, deletes_only: bool = False,
                    on_created: Callable[[int], None] | None = None) -> RangeWatch:
        """Watch keys in [start_key, end_key) from ``start_revision``, on this store's one watch stream.

        All watches of a store share one gRPC stream and one thread
        (``watch.py``), so a process can hold thousands. ``on_events(events,
        revision)`` runs on that thread for each response with events; with
        ``deletes_only`` etcd sends no put events at all. If the watch or the
        stream breaks (endpoint down, leader lost, compaction), ``on_broken``
        runs once and the watch ends: the caller re-reads and starts a new
        one, so nothing is missed. ``on_created(revision)`` runs once etcd has
        set the watch up: with ``start_revision`` 0 it then sends every change
        after that revision.
        """
        watch = RangeWatch(self._watches, start_key, end_key, start_revision, on_events, on_broken,
                           deletes_only=deletes_only, on_created=on_created)
        watch.start()
        return watch

    def close(self) -> None:
        self._watches.close()
        self.close_clients()

    # -- plumbing -----------------------------------------------------------
