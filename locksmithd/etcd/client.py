"""etcd v3 adapter: the KeyValueStore and queue operations over python3-etcd3.

The only module that sends requests to etcd (the watch stream, ``watch.py``,
opens through it). It fails over between endpoints (an unreachable one is
skipped), maps every dependency exception into ``locksmithd.errors`` through
the table in ``grpc_errors.py``, and treats a failed write as *ambiguous*:
the caller reads back instead of writing again.

Works with python3-etcd3 0.13 (PyPI) and Debian bookworm's etcd3 0.12.0
(``_connect`` builds the client for either; everything else sends raw
requests on the stubs, which are the same in both). Workarounds, kept here:
- 0.13: one failed call marks an endpoint dead for 300 s (``time_retry``): we
  create one single-endpoint client per endpoint with ``time_retry=0`` and
  fail over ourselves;
- gRPC refuses call credentials on a plain-http channel: the auth token then
  travels only in the request metadata (which python3-etcd3 also sets);
- tokens expire (and die with the member that issued them): on "invalid auth
  token" the client is rebuilt, which authenticates again, and the call is
  retried once;
- its wrapped calls replace a gRPC error by a bare exception: the gRPC error
  is recovered from the exception's context and classified like any other;
- its watcher is not used at all (see ``watch.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator, Sequence, TypeVar

import etcd3
import grpc
from etcd3 import etcdrpc

from locksmithd.errors import AmbiguousWrite, LeaseLost, StoreDenied, StoreError, StoreUnavailable
from locksmithd.etcd.grpc_errors import Action, classify
from locksmithd.etcd.keys import prefix_end
from locksmithd.etcd.connection import Endpoint, EtcdSettings
from locksmithd.etcd.store import Enqueued, Place, Snapshot, StoredKey, Versioned
from locksmithd.etcd.watch import RangeWatch, WatchEvent, WatchStream

__all__ = ["EtcdStore", "RangeWatch", "StoredKey", "WatchEvent", "prefix_end"]

log = logging.getLogger("locksmithd.etcd")
T = TypeVar("T")

# Keep idle connections honest: detect a dead peer within ~15 s, but never ping
# more often than etcd's default --grpc-keepalive-min-time (5 s) allows.
_MULTI_ENDPOINT = hasattr(etcd3, "MultiEndpointEtcd3Client")
"""python3-etcd3 0.13 (PyPI); Debian bookworm ships the original etcd3 0.12.0, which has only Etcd3Client."""

_GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
}


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
        self.observer: Callable[[str, float, str], None] | None = None
        """Called after each request with (operation, seconds, "ok" or the error kind); the daemon
        sets it to feed its latency histogram, so this edge stays free of any metrics library."""
        self._watches = WatchStream(self._open_stream)  # every watch of this store shares one gRPC stream

    # -- KeyValueStore -------------------------------------------------------

    def read(self, key: str) -> Versioned | None:
        def op(client: Any) -> Versioned | None:
            value, meta = client.get(key)
            return None if value is None else Versioned(value, meta.mod_revision)

        return self._call(f"read {key}", op)

    def read_many(self, keys: Sequence[str]) -> dict[str, Versioned]:
        """The keys of ``keys`` that exist, read at one revision (one request)."""
        def op(client: Any) -> dict[str, Versioned]:
            response = _txn(client, [client.transactions.get(key) for key in keys])
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
            response = _txn(client, ops, guards)
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
        return self._call(f"read {prefix}*", lambda client: _read_pages(client, prefix, keys_only))

    def enqueue(self, waiter_key: str, value: bytes, lease_id: int, tail_key: str) -> Enqueued:
        """Create ``waiter_key`` on ``lease_id`` at the back of the queue, learning the waiter just ahead.

        One request, one key read, whatever the queue length: the key is
        created only if it does not exist, and in the same transaction the
        tail key is set to it, returning the tail's previous value (the newest
        waiter key before it; its create revision is the tail's mod revision).
        When the key exists (a retried request whose reply was lost, a
        restarted daemon) nothing is written and it is returned as stored, so
        a retry never loses a place.
        """
        def op(client: Any) -> Enqueued:
            tx = client.transactions
            mine = waiter_key.encode("utf-8", errors="surrogateescape")
            put_tail = etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(
                key=tail_key.encode("utf-8", errors="surrogateescape"), value=mine, prev_kv=True))
            response = _txn(client, [tx.put(waiter_key, value, lease=lease_id), put_tail, _range(waiter_key)],
                            [tx.create(waiter_key) == 0], otherwise=[_range(waiter_key)])
            entry = StoredKey.from_kv(response.responses[-1].response_range.kvs[0])
            if not response.succeeded:
                return Enqueued(entry, created=False)
            prev = response.responses[1].response_put.prev_kv
            previous = None
            if prev.key and prev.value:
                previous = StoredKey(bytes(prev.value).decode("utf-8", errors="surrogateescape"), b"",
                                     int(prev.mod_revision), int(prev.mod_revision), 0)
            return Enqueued(entry, created=True, previous=previous, ticket=int(prev.version) + 1 if prev.key else 1)

        return self._call(f"enqueue {waiter_key}", op)

    def snapshot(self, keys: Sequence[str], semaphore_key: str = "", written_at: Sequence[int] = ()) -> Snapshot:
        """The named keys (those that exist) read at one revision, in one request of ``len(keys)`` key reads.

        For each revision in ``written_at``, also whether ``semaphore_key`` was
        written at that earlier revision (one more key read each, at that
        revision); a compacted revision raises StoreError.
        """
        def op(client: Any) -> Snapshot:
            ops = [_range(key) for key in keys] + [_range(semaphore_key, revision=at) for at in written_at]
            response = _txn(client, ops)
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
            response = _txn(client, [tx.put(key, value, lease=lease_id)], [tx.create(key) == create_revision])
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
            response = _txn(client, [
                _range(waiter_key), _range(semaphore_key), _range(halt_key),
                _range(waiters_prefix, end, max_create_revision=below, limit=2,
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
        request = _range(waiters_prefix, prefix_end(waiters_prefix), max_create_revision=create_revision - 1,
                         limit=2, sort_order=etcdrpc.RangeRequest.DESCEND, sort_target=etcdrpc.RangeRequest.CREATE,
                         revision=revision).request_range

        def op(client: Any) -> tuple[StoredKey, ...]:
            reply = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                        metadata=client.metadata)
            return tuple(StoredKey.from_kv(kv) for kv in reply.kvs)

        return self._call(f"read the waiter before revision {create_revision}", op)

    def count_prefix(self, prefix: str) -> tuple[int, int]:
        """(number of keys under ``prefix``, revision): etcd counts without sending the keys."""
        request = _range(prefix, prefix_end(prefix), count_only=True).request_range

        def op(client: Any) -> tuple[int, int]:
            reply = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                        metadata=client.metadata)
            return int(reply.count), int(reply.header.revision)

        return self._call(f"count {prefix}*", op)

    def delete_if_created(self, key: str, create_revision: int) -> bool:
        """Delete ``key`` only if it is still the key created at ``create_revision``; True if deleted."""
        def op(client: Any) -> bool:
            tx = client.transactions
            return bool(_txn(client, [tx.delete(key)], [tx.create(key) == create_revision]).succeeded)

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
            if not _MULTI_ENDPOINT:  # etcd3 0.12 reads the files for each client; read once here to fail early
                for path in (s.cafile, s.keyfile, s.certfile):
                    if path:
                        with open(path, "rb"):
                            pass
                return None
            return etcd3.MultiEndpointEtcd3Client.get_secure_creds(s.cafile, s.keyfile, s.certfile)
        except OSError as exc:  # checked at start-up; gone or changed since
            raise StoreError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc

    def _client_for(self, endpoint: Endpoint) -> Any:
        with self._lock:
            client = self._clients.get(endpoint)
        if client is not None:
            return client
        client = self._connect(endpoint)
        if not endpoint.secure and client.call_credentials is not None:
            # gRPC refuses call credentials on an insecure channel; the auth token
            # then travels in the request metadata, which python3-etcd3 also sets.
            client.call_credentials = None
        with self._lock:
            self._clients[endpoint] = client
        return client

    def _connect(self, endpoint: Endpoint) -> Any:
        """A new single-endpoint client (authenticated when a username is set), for either etcd3 release.

        python3-etcd3 0.13 (PyPI) takes ``Endpoint`` objects; Debian bookworm's
        etcd3 0.12.0 has only ``Etcd3Client``, which reads the TLS files itself.
        The host goes in brackets when it is an IPv6 literal: both build the
        gRPC target as "host:port".
        """
        s = self.settings
        if _MULTI_ENDPOINT:
            ep = etcd3.Endpoint(endpoint.url_host, endpoint.port, secure=endpoint.secure,
                                creds=self._credentials if endpoint.secure else None,
                                time_retry=0, opts=list(_GRPC_OPTIONS.items()))
            return etcd3.MultiEndpointEtcd3Client(endpoints=[ep], timeout=s.request_timeout_s,
                                                  user=s.username, password=s.password, failover=False)
        tls = (s.cafile, s.keyfile, s.certfile) if endpoint.secure else (None, None, None)
        try:
            return etcd3.Etcd3Client(endpoint.url_host, endpoint.port, ca_cert=tls[0], cert_key=tls[1],
                                     cert_cert=tls[2], timeout=s.request_timeout_s, user=s.username or None,
                                     password=s.password or None, grpc_options=list(_GRPC_OPTIONS.items()))
        except OSError as exc:  # checked at start-up; gone or changed since
            raise StoreError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc

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
        """Run ``op`` on the first endpoint that answers; map failures into StoreError.

        The one place every request passes: ``observer`` (if set) sees its
        duration, failover included, and outcome.
        """
        observer = self.observer
        if observer is None:
            return self._call_endpoints(what, op, write)
        started = time.monotonic()
        outcome = "ok"
        try:
            return self._call_endpoints(what, op, write)
        except StoreError as error:
            outcome = error.kind
            raise
        finally:
            observer(what.split(" ", 1)[0], time.monotonic() - started, outcome)

    def _call_endpoints(self, what: str, op: Callable[[Any], T], write: bool) -> T:
        failures: list[str] = []
        for index, endpoint in self._endpoint_order():
            reauthenticated = False
            while True:
                try:
                    result = op(self._client_for(endpoint))
                    self._preferred = index
                    return result
                except (grpc.RpcError, etcd3.exceptions.Etcd3Exception) as exc:
                    outcome, code, details = _classify(exc)
                    if outcome is Action.REAUTHENTICATE and not reauthenticated:
                        self._forget(endpoint)  # a new client authenticates again
                        reauthenticated = True
                        continue
                    if outcome is not Action.TRY_NEXT:
                        raise self._error(outcome, endpoint, what, code, details) from exc
                    failures.append(f"{endpoint.url} ({code.lower()}{': ' + _short(details) if details else ''})")
                self._forget(endpoint)
                if write:
                    raise AmbiguousWrite(f"{what}: no reply from {endpoint.url}; the write may or may not have landed")
                break
        raise StoreUnavailable(f"no etcd endpoint answered {what}; tried {', '.join(failures)}")

    def _open_stream(self, start: Callable[[Any], T]) -> T:
        """Run ``start(client)`` (opening a stream) on the first endpoint that accepts it."""
        failures: list[str] = []
        for _, endpoint in self._endpoint_order():
            try:
                return start(self._client_for(endpoint))
            except (grpc.RpcError, etcd3.exceptions.Etcd3Exception) as exc:
                failures.append(f"{endpoint.url} ({_classify(exc)[1].lower()})")
                self._forget(endpoint)
        raise StoreUnavailable(f"no etcd endpoint accepted a watch; tried {', '.join(failures)}")

    def _error(self, outcome: Action | type[StoreError], endpoint: Endpoint, what: str, code: str,
               details: str) -> StoreError:
        """Our error for a classified gRPC failure (a second "re-authenticate" is a refusal)."""
        if outcome is StoreDenied or outcome is Action.REAUTHENTICATE:
            hint = "" if self.settings.username else "; no etcd username and password were given"
            return StoreDenied(f"etcd at {endpoint.url} refused {what}: {details}{hint}")
        if outcome is LeaseLost:
            return LeaseLost(f"etcd at {endpoint.url}: {what}: {details}")
        return StoreError(f"etcd at {endpoint.url} failed {what}: {code} {details}")

def _txn(client: Any, ops: Sequence[Any], guards: Sequence[Any] = (), otherwise: Sequence[Any] = ()) -> Any:
    """One etcd transaction: ``ops`` (python3-etcd3 Put/Get/Delete) if every guard holds, else ``otherwise``.

    ``ops`` may also be raw RequestOps (see ``_range``). The one place that sends a raw Txn. Raw, not ``client.transaction``,
    because the caller needs the response header's revision and ranges with
    create revisions and leases, which python3-etcd3's wrapper drops. Raises
    grpc.RpcError, which ``EtcdStore._call`` classifies.
    """
    def raw(branch: Sequence[Any]) -> list[Any]:
        return [op if isinstance(op, etcdrpc.RequestOp) else client._ops_to_requests([op])[0] for op in branch]

    request = etcdrpc.TxnRequest(compare=[guard.build_message() for guard in guards], success=raw(ops),
                                 failure=raw(otherwise))
    return client.kvstub.Txn(request, client.timeout, credentials=client.call_credentials, metadata=client.metadata)


def _range(key: str, range_end: str = "", **options: Any) -> Any:
    """A raw range request (as a transaction op): python3-etcd3 cannot count, limit or bound create revisions."""
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(
        key=key.encode("utf-8", errors="surrogateescape"),
        range_end=range_end.encode("utf-8", errors="surrogateescape"), **options))


def _classify(exc: BaseException) -> tuple[Action | type[StoreError], str, str]:
    """(outcome, status code name, details) of a gRPC error, or of the one python3-etcd3 replaced."""
    cause = exc if isinstance(exc, grpc.RpcError) else exc.__cause__ or exc.__context__
    if isinstance(cause, grpc.RpcError):
        code, details = cause.code().name, cause.details() or ""
        return classify(code, details), code, details
    return Action.TRY_NEXT, type(exc).__name__, ""  # e.g. NoServerAvailableError: nothing answered


_PAGE_KEYS = 10_000
"""Keys per page of a keys-only read (10,000 keys of 100 bytes: 1 MB); smaller on RESOURCE_EXHAUSTED."""
_PAGE_VALUES = 500
"""Keys per page when values are read (waiter values are ~100 bytes; bigger ones shrink the page)."""
_RESTARTS = 3


def _read_pages(client: Any, prefix: str, keys_only: bool) -> list[StoredKey]:
    """Every key under ``prefix`` at one revision, page by page in key order, then oldest first."""
    end = prefix_end(prefix).encode("utf-8", errors="surrogateescape")
    limit = _PAGE_KEYS if keys_only else _PAGE_VALUES
    for attempt in range(_RESTARTS + 1):
        start, revision = prefix.encode("utf-8", errors="surrogateescape"), 0
        found: list[StoredKey] = []
        while True:
            request = etcdrpc.RangeRequest(key=start, range_end=end, keys_only=keys_only, limit=limit,
                                           revision=revision)
            try:
                reply = client.kvstub.Range(request, client.timeout, credentials=client.call_credentials,
                                            metadata=client.metadata)
            except grpc.RpcError as exc:
                code = exc.code() if callable(getattr(exc, "code", None)) else None
                if code is grpc.StatusCode.RESOURCE_EXHAUSTED and limit > 1:
                    limit = max(limit // 4, 1)  # the reply passed the client's limit: smaller pages
                    continue
                if code is grpc.StatusCode.OUT_OF_RANGE and revision and attempt < _RESTARTS:
                    break  # compacted between pages: read again from the start
                raise
            revision = revision or int(reply.header.revision)
            found.extend(StoredKey.from_kv(kv) for kv in reply.kvs)
            if not reply.more or not reply.kvs:
                return sorted(found, key=lambda entry: entry.create_revision)
            start = bytes(reply.kvs[-1].key) + b"\0"
    raise AssertionError("unreachable: the last attempt returns or raises")


def _by_creation(kvs: Any) -> list[StoredKey]:
    return sorted((StoredKey.from_kv(kv) for kv in kvs), key=lambda entry: entry.create_revision)


def _short(text: str | None, limit: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
