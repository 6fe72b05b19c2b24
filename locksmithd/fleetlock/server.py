"""The FleetLock HTTP server (aiohttp): protocol edge, limits, access log and health probe; no state of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
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
from locksmithd.etcd.remote_waiter import Granted, RemoteWaiter
from locksmithd.etcd.settings import EtcdSettings

log = logging.getLogger("locksmithd.fleetlock")
access_log = logging.getLogger("locksmithd.fleetlock.access")
_MAX_LOGGED_PATH_CHARS = 200
# What the access log reports of a request, kept on the request (aiohttp's typed request storage).
CLIENT_KEY = web.RequestKey("fleetlock_client", ClientParams)
OUTCOME_KEY = web.RequestKey("fleetlock_outcome", str)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs, validated by the entry point."""

    etcd: EtcdSettings
    host: str
    port: int
    grace_s: int = 600
    max_concurrent: int = 64
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
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self.bound: list[tuple[str, int]] = []

    def app(self) -> web.Application:
        """The aiohttp application: the two protocol routes, the probe and the error middleware."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_post(PRE_REBOOT_PATH, self._pre_reboot)
        app.router.add_post(STEADY_STATE_PATH, self._steady_state)
        app.router.add_get(HEALTH_PATH, self._healthy)
        return app

    async def start(self) -> None:
        """Listen on the configured address (port 0: any free port; ``bound`` says which)."""
        runner = web.AppRunner(self.app(), access_log_class=AccessLogger, handler_cancellation=True,
                               keepalive_timeout=30.0, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=self._ssl_context())
        await site.start()
        self._runner = runner
        server = site._server  # aiohttp has no public accessor for the bound sockets
        sockets = getattr(server, "sockets", None) or ()
        self.bound = [sock.getsockname()[:2] for sock in sockets]
        scheme = "https" if self.config.tls_cert else "http"
        for host, port in self.bound:
            log.info("listening on %s://%s:%d", scheme, f"[{host}]" if ":" in host else host, port)

    async def stop(self) -> None:
        """Stop listening, finish requests in flight, close the etcd client."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
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
            outcome = await asyncio.to_thread(waiter.pre_reboot, params.id, peer)
            if isinstance(outcome, Granted):
                request[OUTCOME_KEY] = "locked" if outcome.newly else "held"
                return None
            return outcome

        return await self._operation(request, op)

    async def _steady_state(self, request: web.Request) -> web.Response:
        async def op(params: ClientParams) -> ProtocolError | None:
            released = await asyncio.to_thread(self._waiter(params).steady_state, params.id)
            if isinstance(released, ProtocolError):
                return released
            request[OUTCOME_KEY] = "released" if released else "not-held"
            return None

        return await self._operation(request, op)

    async def _healthy(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(asyncio.to_thread(self.store.read, semaphore_key("", self.config.etcd.key_prefix)),
                                   self.config.request_timeout_s)
        except (StoreError, asyncio.TimeoutError) as error:
            text = error.one_line() if isinstance(error, StoreError) else "etcd did not answer in time"
            return _error_response(request, ProtocolError(ErrorKind.STORE_UNAVAILABLE, text))
        return web.json_response({"status": "ok"})

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
        params = parse_body(body)
        if isinstance(params, ProtocolError):
            return _error_response(request, params)
        request[CLIENT_KEY] = params
        if self._in_flight >= self.config.max_concurrent:
            return _error_response(request, ProtocolError(ErrorKind.BUSY, "too many requests in flight; retry"))
        self._in_flight += 1
        try:
            outcome = await asyncio.wait_for(op(params), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            outcome = ProtocolError(ErrorKind.TIMEOUT, "etcd did not answer in time; retry")
        except LocksmithError as error:
            outcome = _store_problem(error)
        finally:
            self._in_flight -= 1
        if outcome is not None:
            return _error_response(request, outcome)
        return web.json_response({})

    def _waiter(self, params: ClientParams) -> RemoteWaiter:
        return RemoteWaiter(self.store, params.locksmith_group, self.config.etcd.key_prefix, self.config.grace_s,
                            self.clock)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Router errors (404, 405) and bugs answered in the protocol's error shape, never a traceback."""
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
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, printable(request.path, 200))
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
    log.warning("answering %s: %s", kind.kind, error.one_line())
    return ProtocolError(kind, error.one_line())


def _error_response(request: web.Request, problem: ProtocolError) -> web.Response:
    request[OUTCOME_KEY] = problem.error.kind
    return web.Response(status=problem.status, body=problem.body(), content_type="application/json")


class AccessLogger(AbstractAccessLogger):
    """One JSON line per request: who, what, outcome, time; never headers or bodies (no secrets)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_s: float) -> None:
        params = request.get(CLIENT_KEY)
        entry = {
            "remote": request.remote,
            "method": request.method,
            "path": request.path[:_MAX_LOGGED_PATH_CHARS],
            "status": response.status,
            "outcome": request.get(OUTCOME_KEY),
            "id": params.id if isinstance(params, ClientParams) else None,
            "group": params.group if isinstance(params, ClientParams) else None,
            "duration_ms": round(time_s * 1000, 1),
        }
        access_log.info("%s", json.dumps(entry))  # ensure_ascii escapes every control character

