"""etcd v3 adapter: the KeyValueStore and queue operations over python3-etcd3.

The only module that talks to etcd. It fails over between endpoints (an
unreachable one is skipped), maps every dependency exception into
``locksmithd.errors`` and treats a failed write as *ambiguous*: the caller
reads back instead of writing again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import etcd3
import grpc
from etcd3 import etcdrpc

from locksmithd.errors import AmbiguousWrite, LeaseLost, StoreDenied, StoreError, StoreUnavailable
from locksmithd.etcd.settings import Endpoint, EtcdSettings
from locksmithd.etcd.store import Versioned

log = logging.getLogger("locksmithd.etcd")
T = TypeVar("T")

# Keep idle connections honest: detect a dead peer within ~15 s, but never ping
# more often than etcd's default --grpc-keepalive-min-time (5 s) allows.
_GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
}
# UNKNOWN is how etcd reports "context deadline exceeded" from a member that lost
# its leader: try another member (and treat a write as ambiguous, read back).
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.UNKNOWN}
_NOT_ANSWERED = (etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.ConnectionTimeoutError,
                 etcd3.exceptions.InternalServerError, etcd3.exceptions.NoServerAvailableError)


@dataclass(frozen=True)
class Entry:
    """One key under a prefix with the revisions the queue orders by."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    """A change seen by a watch: ``kind`` is "put" or "delete"."""

    kind: str
    entry: Entry


def prefix_end(prefix: str) -> str:
    """The exclusive end of the key range that starts with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode("utf-8", errors="surrogateescape")


class EtcdStore:
    """A KeyValueStore and queue backend on a real etcd cluster.

    Thread-safe. Every method raises StoreUnavailable (naming the endpoints
    tried) when no endpoint answers, StoreDenied on auth or permission
    failure, and AmbiguousWrite when a write's outcome is unknown.
    """

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._clients: dict[Endpoint, Any] = {}
        self._preferred = 0
        self._credentials = self._load_tls() if any(ep.secure for ep in settings.endpoints) else None

    # -- KeyValueStore -------------------------------------------------------

    def read(self, key: str) -> Versioned | None:
        def op(client: Any) -> Versioned | None:
            value, meta = client.get(key)
            return None if value is None else Versioned(value, meta.mod_revision)

        return self._call(f"read {key}", op)

    def create(self, key: str, value: bytes) -> bool:
        def op(client: Any) -> bool:
            ok, _ = client.transaction(
                compare=[client.transactions.create(key) == 0],
                success=[client.transactions.put(key, value)], failure=[])
            return bool(ok)

        return self._call(f"create {key}", op, write=True)

    def swap(self, key: str, value: bytes, mod_revision: int) -> bool:
        def op(client: Any) -> bool:
            ok, _ = client.transaction(
                compare=[client.transactions.mod(key) == mod_revision],
                success=[client.transactions.put(key, value)], failure=[])
            return bool(ok)

        return self._call(f"swap {key}", op, write=True)

    # -- queue operations ---------------------------------------------------

    def put(self, key: str, value: bytes, lease_id: int | None = None) -> None:
        """Unconditional write (queue keys, tests); AmbiguousWrite if the outcome is unknown."""
        self._call(f"put {key}", lambda c: c.put(key, value, lease=lease_id), write=True)

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed. Deleting twice is harmless."""
        return bool(self._call(f"delete {key}", lambda c: c.delete(key), write=True))

    def read_prefix(self, prefix: str) -> list[Entry]:
        """All keys under ``prefix``, oldest first (by create revision)."""
        def op(client: Any) -> list[Entry]:
            items = client.get_prefix(prefix, sort_order="ascend", sort_target="create")
            return [_entry(meta.key, value, meta) for value, meta in items]

        return self._call(f"read {prefix}*", op)

    def enqueue_and_read(self, waiter_key: str, value: bytes, lease_id: int,
                         semaphore_key: str, waiters_prefix: str) -> tuple[int, Versioned | None, list[Entry]]:
        """Put ``waiter_key`` on ``lease_id`` and read the semaphore and queue, atomically.

        Returns (revision of the snapshot, semaphore or None, waiters oldest
        first). One request: the snapshot and the enqueue share a revision, so
        a watch started at revision + 1 misses nothing. A put is idempotent, so
        a lost reply is retried rather than reported ambiguous.
        """
        def op(client: Any) -> tuple[int, Versioned | None, list[Entry]]:
            tx = client.transactions
            request = etcdrpc.TxnRequest(success=client._ops_to_requests([
                tx.put(waiter_key, value, lease=lease_id),
                tx.get(semaphore_key),
                tx.get(waiters_prefix, prefix_end(waiters_prefix)),
            ]))
            response = client.kvstub.Txn(request, client.timeout, credentials=client.call_credentials,
                                         metadata=client.metadata)
            sem_kvs = response.responses[1].response_range.kvs
            semaphore = Versioned(sem_kvs[0].value, sem_kvs[0].mod_revision) if sem_kvs else None
            waiters = sorted((_entry(kv.key, kv.value, kv) for kv in response.responses[2].response_range.kvs),
                             key=lambda e: e.create_revision)
            return response.header.revision, semaphore, waiters

        return self._call(f"enqueue {waiter_key}", op)

    def enqueue(self, waiter_key: str, value: bytes, lease_id: int) -> Entry:
        """Put ``waiter_key`` on ``lease_id`` and return it as stored (its create revision is its place).

        One request whatever the queue length. A re-put keeps the key's create
        revision, so a retried put (after a lost reply) keeps its place.
        """
        def op(client: Any) -> Entry:
            tx = client.transactions
            request = etcdrpc.TxnRequest(success=client._ops_to_requests([
                tx.put(waiter_key, value, lease=lease_id), tx.get(waiter_key)]))
            response = client.kvstub.Txn(request, client.timeout, credentials=client.call_credentials,
                                         metadata=client.metadata)
            kv = response.responses[1].response_range.kvs[0]
            return _entry(kv.key, kv.value, kv)

        return self._call(f"enqueue {waiter_key}", op)

    def swap_and_dequeue(self, semaphore_key: str, value: bytes, mod_revision: int, waiter_key: str) -> int:
        """Write the semaphore if still at ``mod_revision`` and delete ``waiter_key`` in the same transaction.

        Returns the revision of the write (the document's new mod revision), or
        0 when the compare failed and nothing was written.
        """
        def op(client: Any) -> int:
            tx = client.transactions
            request = etcdrpc.TxnRequest(
                compare=[(tx.mod(semaphore_key) == mod_revision).build_message()],
                success=client._ops_to_requests([tx.put(semaphore_key, value), tx.delete(waiter_key)]),
                failure=[])
            response = client.kvstub.Txn(request, client.timeout, credentials=client.call_credentials,
                                         metadata=client.metadata)
            return int(response.header.revision) if response.succeeded else 0

        return self._call(f"swap {semaphore_key}", op, write=True)

    def grant_lease(self, ttl_s: int) -> int:
        """A new lease of ``ttl_s`` seconds; returns its id."""
        return int(self._call("grant lease", lambda c: c.lease(ttl_s).id))

    def keep_alive(self, lease_id: int) -> int:
        """Refresh a lease once; returns the remaining TTL in seconds (0 when it expired)."""
        def op(client: Any) -> int:
            replies = list(client.refresh_lease(lease_id))
            return int(replies[0].TTL) if replies else 0

        return self._call("keep lease alive", op)

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
                    on_broken: Callable[[BaseException], None]) -> "RangeWatch":
        """Watch keys in [start_key, end_key) from ``start_revision`` in a background thread.

        ``on_events(events, revision)`` runs for each response (events may be
        empty for progress notifications). If the stream breaks (endpoint
        down, leader lost, compaction), ``on_broken`` runs once and the watch
        ends: the caller re-reads and starts a new one, so nothing is missed.
        """
        watch = RangeWatch(self, start_key, end_key, start_revision, on_events, on_broken)
        watch.start()
        return watch

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception:  # closing is best effort
                pass

    # -- plumbing -----------------------------------------------------------

    def _load_tls(self) -> Any:
        s = self.settings
        try:
            return etcd3.MultiEndpointEtcd3Client.get_secure_creds(s.cafile, s.keyfile, s.certfile)
        except OSError as exc:
            raise StoreError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc

    def _client_for(self, endpoint: Endpoint) -> Any:
        with self._lock:
            client = self._clients.get(endpoint)
        if client is not None:
            return client
        ep = etcd3.Endpoint(endpoint.host, endpoint.port, secure=endpoint.secure,
                            creds=self._credentials if endpoint.secure else None,
                            time_retry=0, opts=list(_GRPC_OPTIONS.items()))
        client = etcd3.MultiEndpointEtcd3Client(
            endpoints=[ep], timeout=self.settings.request_timeout_s,
            user=self.settings.username, password=self.settings.password, failover=False)
        if not endpoint.secure and client.call_credentials is not None:
            # gRPC refuses call credentials on an insecure channel; the auth token
            # then travels in the request metadata, which python3-etcd3 also sets.
            client.call_credentials = None
        with self._lock:
            self._clients[endpoint] = client
        return client

    def _forget(self, endpoint: Endpoint) -> None:
        with self._lock:
            client = self._clients.pop(endpoint, None)
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _endpoint_order(self) -> Iterator[tuple[int, Endpoint]]:
        endpoints = self.settings.endpoints
        for step in range(len(endpoints)):
            index = (self._preferred + step) % len(endpoints)
            yield index, endpoints[index]

    def _call(self, what: str, op: Callable[[Any], T], *, write: bool = False) -> T:
        """Run ``op`` on the first endpoint that answers; map failures into StoreError."""
        failures: list[str] = []
        for index, endpoint in self._endpoint_order():
            for _ in range(2):  # a second go only after re-authenticating
                try:
                    result = op(self._client_for(endpoint))
                    self._preferred = index
                    return result
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code == grpc.StatusCode.UNAUTHENTICATED and "token" in (exc.details() or ""):
                        self._forget(endpoint)  # token expired: authenticate again
                        continue
                    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) or (
                            code == grpc.StatusCode.INVALID_ARGUMENT and "authentication" in (exc.details() or "")):
                        raise StoreDenied(f"etcd at {endpoint.url} refused {what}: {exc.details()}") from exc
                    if code == grpc.StatusCode.NOT_FOUND and "lease" in (exc.details() or ""):
                        raise LeaseLost(f"etcd at {endpoint.url}: {what}: {exc.details()}") from exc
                    if code not in _UNREACHABLE:
                        raise StoreError(f"etcd at {endpoint.url} failed {what}: {code.name} {exc.details()}") from exc
                    failures.append(f"{endpoint.url} ({code.name.lower()}: {_short(exc.details())})")
                except _NOT_ANSWERED as exc:
                    failures.append(f"{endpoint.url} ({_why(exc)})")
                self._forget(endpoint)
                if write:
                    raise AmbiguousWrite(f"{what}: no reply from {endpoint.url}; the write may or may not have landed")
                break
        raise StoreUnavailable(f"no etcd endpoint answered {what}; tried {', '.join(failures)}")


class RangeWatch:
    """A watch stream on one key range, run in a daemon thread; see EtcdStore.watch_range."""

    def __init__(self, store: EtcdStore, start_key: str, end_key: str, start_revision: int,
                 on_events: Callable[[list[WatchEvent], int], None],
                 on_broken: Callable[[BaseException], None]) -> None:
        self._store = store
        self._request = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=start_key.encode(), range_end=end_key.encode(), start_revision=start_revision,
            progress_notify=True))
        self._on_events = on_events
        self._on_broken = on_broken
        self._stream: Any = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {start_key}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stop the watch; ``on_broken`` is not called for a cancelled watch."""
        self._cancelled.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def _run(self) -> None:
        try:
            self._stream = self._open()
            if self._cancelled.is_set():
                self._stream.cancel()
            for response in self._stream:
                if response.compact_revision:
                    raise StoreError(f"watch fell behind compaction at revision {response.compact_revision}")
                if response.canceled:
                    raise StoreUnavailable(f"etcd cancelled the watch: {response.cancel_reason or 'no reason'}")
                events = [WatchEvent("delete" if ev.type == 1 else "put", _entry(ev.kv.key, ev.kv.value, ev.kv))
                          for ev in response.events]
                self._on_events(events, response.header.revision)
            raise StoreUnavailable("watch stream ended")
        except BaseException as exc:  # reported to the owner, who restarts the watch
            if not self._cancelled.is_set():
                self._on_broken(exc)

    def _requests(self) -> Iterator[Any]:
        # Keep the sending side open until cancelled: a half-closed stream may end.
        yield self._request
        self._cancelled.wait()

    def _open(self) -> Any:
        failures: list[str] = []
        for index, endpoint in self._store._endpoint_order():
            try:
                client = self._store._client_for(endpoint)
                stub = etcdrpc.WatchStub(client.channel)
                # "hasleader" makes etcd end the stream when its member loses the leader,
                # so a partitioned member cannot leave us watching a frozen view.
                metadata = tuple(client.metadata or ()) + (("hasleader", "true"),)
                return stub.Watch(self._requests(), credentials=client.call_credentials, metadata=metadata)
            except (grpc.RpcError, StoreDenied, *_NOT_ANSWERED) as exc:
                failures.append(f"{endpoint.url} ({type(exc).__name__})")
                self._store._forget(endpoint)
        raise StoreUnavailable(f"no etcd endpoint accepted a watch; tried {', '.join(failures)}")


def _entry(key: bytes, value: bytes, meta: Any) -> Entry:
    return Entry(key.decode("utf-8", errors="surrogateescape"), bytes(value), int(meta.create_revision),
                 int(meta.mod_revision), int(getattr(meta, "lease_id", getattr(meta, "lease", 0))))


def _why(exc: BaseException) -> str:
    """python3-etcd3 replaces gRPC errors by bare exceptions; recover the gRPC detail if chained."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, grpc.RpcError):
        return f"{cause.code().name.lower()}: {_short(cause.details())}"
    return type(exc).__name__


def _short(text: str | None, limit: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
