"""The FleetLock HTTP server (aiohttp): protocol edge, limits and health probe; no state of its own.

Connection limits, malformed HTTP and the access log are in ``connections.py``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from locksmithd.core.fleetlock_protocol import (
    HEALTH_PATH,
    MAX_BODY_BYTES,
    PRE_REBOOT_PATH,
    PROTOCOL_HEADER,
    STEADY_STATE_PATH,
    ClientParams,
    ErrorKind,
    ProtocolError,
    header_problem,
    parse_body,
)
from locksmithd.core.names import printable
from locksmithd.errors import (
    CorruptDocument,
    DocumentTooLarge,
    LocksmithError,
    StoreDenied,
    StoreError,
    WriteConflict,
)
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import semaphore_key
from locksmithd.etcd.lease_clock import LeaseClock
from locksmithd.etcd.remote_waiter import Granted, RemoteWaiter
from locksmithd.etcd.connection import EtcdSettings
from locksmithd.fleetlock.connections import (
    BODY_ERRORS,
    CLIENT_KEY,
    CLOSE_GRACE_S,
    DETAIL_KEY,
    LINGERING_S,
    MAX_HEADER_FIELDS,
    MAX_HEADER_LINE_BYTES,
    OUTCOME_KEY,
    AccessLogger,
    ConnectionCount,
    ConnectionLimits,
    GuardedConnection,
    ProtocolHandler,
)

log = logging.getLogger("locksmithd.fleetlock")
DEFAULT_MAX_CONNECTIONS = 512
SHUTDOWN_TIMEOUT_S = 5.0
MAX_THREADS = 32
"""Threads making etcd calls; further calls (up to --max-concurrent in all) wait for one."""
T = TypeVar("T")


class _Busy(Exception):
    """Internal: --max-concurrent etcd calls are unfinished (answered 503 server_busy)."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs, validated by the entry point."""

    etcd: EtcdSettings
    host: str
    port: int
    grace_s: int = 600
    max_concurrent: int = 64
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_timeout_s: float = 10.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None


class FleetLockServer:
    """One replica: answers FleetLock requests from the etcd semaphore, one transaction at a time per request."""

    def __init__(self, config: ServerConfig, store: EtcdStore | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.config = config
        self.store = store or EtcdStore(config.etcd)
        self.clock = clock
        self.leases = LeaseClock()  # soft state: when this replica last saw each client's lease refreshed
        self._in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=min(MAX_THREADS, config.max_concurrent),
                                            thread_name_prefix="fleetlock-etcd")
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self.connections = ConnectionCount()
        self.bound: list[tuple[str, int]] = []

    def app(self) -> web.Application:
        """The aiohttp application: the two protocol routes, the probe and the error middleware."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_post(PRE_REBOOT_PATH, self._pre_reboot)
        app.router.add_post(STEADY_STATE_PATH, self._steady_state)
        app.router.add_get(HEALTH_PATH, self._healthy)
        return app

    async def start(self) -> None:
        """Listen on the configured address (port 0: any free port; ``bound`` says which).

        The listener is ours, not aiohttp's site, so that every connection is
        a GuardedConnection around aiohttp's handler (see connections.py).
        """
        runner = web.AppRunner(self.app())
        await runner.setup()
        self._runner = runner
        manager = runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()
        timeout_s = self.config.request_timeout_s
        limits = ConnectionLimits(header_timeout_s=timeout_s, life_s=2 * timeout_s + LINGERING_S + 2.0,
                                  max_connections=self.config.max_connections)

        def handler() -> asyncio.Protocol:
            return ProtocolHandler(manager, loop=loop, keepalive_timeout=timeout_s + CLOSE_GRACE_S,
                                   access_log_class=AccessLogger, max_line_size=MAX_HEADER_LINE_BYTES, max_field_size=MAX_HEADER_LINE_BYTES,
                                   max_headers=MAX_HEADER_FIELDS, lingering_time=LINGERING_S,
                                   # Bodies are read as sent: no gzip bomb is inflated, no more than the
                                   # 16 KiB limit is buffered per connection.
                                   auto_decompress=False, read_bufsize=MAX_BODY_BYTES)

        context = self._ssl_context()
        self._listener = await loop.create_server(
            lambda: GuardedConnection(handler, limits, self.connections), self.config.host or None,
            self.config.port, ssl=context, ssl_handshake_timeout=timeout_s if context else None, backlog=128,
            reuse_address=True)
        self.bound = [sock.getsockname()[:2] for sock in self._listener.sockets]
        scheme = "https" if self.config.tls_cert else "http"
        for host, port in self.bound:
            log.info("listening on %s://%s:%d", scheme, f"[{host}]" if ":" in host else host, port)

    async def stop(self) -> None:
        """Stop listening, finish requests in flight (up to SHUTDOWN_TIMEOUT_S), close the etcd client."""
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.shutdown()
            if self._runner.server is not None:
                await self._runner.server.shutdown(SHUTDOWN_TIMEOUT_S)
            await self._runner.cleanup()
            self._runner = None
        self._listener = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.store.close)

    @property
    def port(self) -> int:
        return self.bound[0][1]

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        if self.config.tls_client_ca:
            context.load_verify_locations(cafile=self.config.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    # -- handlers ------------------------------------------------------------

    async def _pre_reboot(self, request: web.Request) -> web.Response:
        async def op(params: ClientParams) -> ProtocolError | None:
            waiter = self._waiter(params)
            peer = request.remote or "unknown"
            outcome = await self._blocking(lambda: waiter.pre_reboot(params.id, peer))
            if isinstance(outcome, Granted):
                request[OUTCOME_KEY] = "locked" if outcome.newly else "held"
                return None
            return outcome

        return await self._operation(request, op)

    async def _steady_state(self, request: web.Request) -> web.Response:
        async def op(params: ClientParams) -> ProtocolError | None:
            waiter = self._waiter(params)
            released = await self._blocking(lambda: waiter.steady_state(params.id))
            if isinstance(released, ProtocolError):
                return released
            request[OUTCOME_KEY] = "released" if released else "not-held"
            return None

        return await self._operation(request, op)

    async def _healthy(self, request: web.Request) -> web.Response:
        key = semaphore_key("", self.config.etcd.key_prefix)
        try:
            await asyncio.wait_for(self._blocking(lambda: self.store.read(key)), self.config.request_timeout_s)
        except _Busy:
            return _error_response(request, ProtocolError(ErrorKind.BUSY, "too many requests in flight; retry"))
        except (StoreError, asyncio.TimeoutError) as error:
            text = error.one_line() if isinstance(error, StoreError) else "etcd did not answer in time"
            request[DETAIL_KEY] = printable(text, 300)
            return _error_response(request, ProtocolError(ErrorKind.STORE_UNAVAILABLE, text))
        return web.json_response({"status": "ok"})

    async def _blocking(self, call: Callable[[], T]) -> T:
        """Run a blocking etcd call in the server's threads; _Busy when --max-concurrent calls are unfinished.

        A call counts until its thread returns, not until its request gives
        up: a stalled etcd cannot pile up threads or queued calls.
        """
        if self._in_flight >= self.config.max_concurrent:
            raise _Busy()
        self._in_flight += 1
        loop = asyncio.get_running_loop()

        def finished(_: Future[T]) -> None:
            try:
                loop.call_soon_threadsafe(self._call_finished)
            except RuntimeError:  # the loop is closed: the server is gone, nothing left to count
                pass

        future = self._executor.submit(call)
        future.add_done_callback(finished)
        return await asyncio.wrap_future(future)

    def _call_finished(self) -> None:
        self._in_flight -= 1

    async def _operation(self, request: web.Request,
                         op: Callable[[ClientParams], Awaitable[ProtocolError | None]]) -> web.Response:
        """Validate the request, bound concurrency and time, run ``op``; every failure in the protocol's shape."""
        problem = header_problem(request.headers.get(PROTOCOL_HEADER))
        if problem is not None:
            return _error_response(request, problem)
        try:
            body = await asyncio.wait_for(request.read(), self.config.request_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            return _error_response(request, ProtocolError(ErrorKind.BODY_TOO_LARGE,
                                                          f"request body is over {MAX_BODY_BYTES} bytes"))
        except asyncio.TimeoutError:
            return _error_response(request, ProtocolError(ErrorKind.TIMEOUT, "request body not received in time"))
        except BODY_ERRORS as error:  # the client went away mid-body, or sent one that cannot be decoded
            request[DETAIL_KEY] = f"body incomplete or undecodable ({type(error).__name__})"
            return _error_response(request, ProtocolError(ErrorKind.BAD_BODY,
                                                          "request body ended early or could not be decoded"))
        params = parse_body(body)
        if isinstance(params, ProtocolError):
            return _error_response(request, params)
        request[CLIENT_KEY] = params
        try:
            outcome = await asyncio.wait_for(op(params), self.config.request_timeout_s)
        except _Busy:
            outcome = ProtocolError(ErrorKind.BUSY, "too many requests in flight; retry")
        except asyncio.TimeoutError:
            outcome = ProtocolError(ErrorKind.TIMEOUT, "etcd did not answer in time; retry")
        except LocksmithError as error:
            outcome = _store_problem(error)
            request[DETAIL_KEY] = printable(error.one_line(), 300)
        if outcome is not None:
            return _error_response(request, outcome)
        return web.json_response({})

    def _waiter(self, params: ClientParams) -> RemoteWaiter:
        return RemoteWaiter(self.store, params.locksmith_group, self.config.etcd.key_prefix, self.config.grace_s,
                            self.clock, self.leases)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Router errors (404, 405) and bugs answered in the protocol's error shape, never a traceback.

        Every answer closes its connection: one request per connection, so
        the connection limits (connections.py) hold for every request.
        """
        try:
            response = await self._answer(request, handler)
        except web.HTTPException as error:
            error.force_close()
            raise
        response.force_close()
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error_response(request, ProtocolError(ErrorKind.NOT_FOUND, "no such endpoint"))
        except web.HTTPMethodNotAllowed as error:
            return _error_response(request, ProtocolError(
                ErrorKind.METHOD_NOT_ALLOWED, f"method {request.method} not allowed; use {', '.join(error.allowed_methods)}"))
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug: its type and where, never its text or request data (header values)
            log.error("unexpected %s answering %s %s", type(error).__name__, request.method,
                      printable(request.path, 200), exc_info=log.isEnabledFor(logging.DEBUG))
            return _error_response(request, ProtocolError(ErrorKind.INTERNAL, "internal error (see the server log)"))


def _store_problem(error: LocksmithError) -> ProtocolError:
    """The protocol error for a failure of the semaphore or etcd."""
    if isinstance(error, CorruptDocument):
        kind = ErrorKind.CORRUPT_DOCUMENT
    elif isinstance(error, DocumentTooLarge):
        kind = ErrorKind.DOCUMENT_TOO_LARGE
    elif isinstance(error, StoreDenied):
        kind = ErrorKind.STORE_DENIED
    elif isinstance(error, WriteConflict):
        kind = ErrorKind.CONFLICT
    elif isinstance(error, StoreError):
        kind = ErrorKind.STORE_UNAVAILABLE
    else:
        kind = ErrorKind.INTERNAL
    return ProtocolError(kind, error.one_line())


def _error_response(request: web.Request, problem: ProtocolError) -> web.Response:
    request[OUTCOME_KEY] = problem.error.kind
    return web.Response(status=problem.status, body=problem.body(), content_type="application/json")
