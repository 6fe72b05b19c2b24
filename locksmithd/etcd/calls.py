"""Sending one request to etcd: a client per endpoint, failover, re-authentication, errors mapped.

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

import threading
import time
from typing import Any, Callable, Iterator, TypeVar

import etcd3
import grpc

from locksmithd.errors import AmbiguousWrite, LeaseLost, StoreDenied, StoreError, StoreUnavailable
from locksmithd.etcd.connection import Endpoint, EtcdSettings
from locksmithd.etcd.grpc_errors import Action, classify

T = TypeVar("T")

_MULTI_ENDPOINT = hasattr(etcd3, "MultiEndpointEtcd3Client")
"""python3-etcd3 0.13 (PyPI); Debian bookworm ships the original etcd3 0.12.0, which has only Etcd3Client."""

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


class EtcdCalls:
    """The one path of every request (``_call``) and of every stream opened (``_open_stream``).

    Thread-safe. A call raises StoreUnavailable (naming the endpoints tried)
    when no endpoint answers, StoreDenied on auth or permission failure, and
    AmbiguousWrite when a write's outcome is unknown.
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

    def close_clients(self) -> None:
        """Close every endpoint's client (best effort)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception:  # closing is best effort
                pass

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


def _classify(exc: BaseException) -> tuple[Action | type[StoreError], str, str]:
    """(outcome, status code name, details) of a gRPC error, or of the one python3-etcd3 replaced."""
    cause = exc if isinstance(exc, grpc.RpcError) else exc.__cause__ or exc.__context__
    if isinstance(cause, grpc.RpcError):
        code, details = cause.code().name, cause.details() or ""
        return classify(code, details), code, details
    return Action.TRY_NEXT, type(exc).__name__, ""  # e.g. NoServerAvailableError: nothing answered



def _short(text: str | None, limit: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
