"""The FleetLock server's connections: header deadline and size, open-connection bound, malformed HTTP, access log.

aiohttp (bookworm's 3.8 as much as newer ones) reads request headers with
no deadline of its own, so each connection is wrapped in a
``GuardedConnection`` that owns the limits, independent of aiohttp's
internals:

- at most ``max_connections`` connections are open at once; one more is
  answered ``503 server_busy`` and closed before aiohttp sees it;
- the request's headers must be complete within ``header_timeout_s`` of
  the connection being made (``408 bad_request_header_timeout``) and
  within ``MAX_HEADER_BYTES`` (``431 bad_request_headers_too_large``);
- after its headers, a connection lives at most ``life_s`` (the body
  and the answer have their own, shorter deadlines in the handler);
- every connection carries one request (the server closes it after the
  answer), so these limits apply to every request.

``ProtocolHandler`` is aiohttp's request handler answering malformed HTTP in
the protocol's error shape, with no traceback and no header value logged.
Every request, refused ones included, is one JSON line on
``locksmithd.fleetlock.access``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from locksmithd.core.fleetlock_protocol import ClientParams, ErrorKind, ProtocolError

log = logging.getLogger("locksmithd.fleetlock")
access_log = logging.getLogger("locksmithd.fleetlock.access")
MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers together; Zincati sends a few hundred bytes."""
MAX_HEADER_FIELDS = 32
MAX_HEADER_LINE_BYTES = 8190
LINGERING_S = 2.0
"""How long an unread request body is drained after the answer (aiohttp's lingering close)."""
CLOSE_GRACE_S = 1.0
"""After a refusal is written, how long the peer has to take it before the connection is cut."""
_MAX_LOGGED_PATH_CHARS = 200
_HEADER_ENDS = (b"\r\n\r\n", b"\n\n")
BODY_ERRORS = (ConnectionError, HttpProcessingError, web.RequestPayloadError)
"""What reading a request body raises when the client vanished mid-body or sent one that cannot be decoded."""


def _request_key(name: str, kind: type) -> Any:
    """aiohttp's typed request key where it has one (3.12+), the plain name otherwise (bookworm's 3.8)."""
    factory = getattr(web, "RequestKey", None)
    return factory(name, kind) if factory is not None else name


# What the access log reports of a request, kept on the request.
CLIENT_KEY = _request_key("fleetlock_client", ClientParams)
OUTCOME_KEY = _request_key("fleetlock_outcome", str)
DETAIL_KEY = _request_key("fleetlock_detail", str)
MALFORMED_KEY = _request_key("fleetlock_malformed", bool)


def log_request(remote: str | None, method: str | None, path: str | None, status: int, outcome: str | None,
                params: ClientParams | None, time_s: float, detail: str | None = None) -> None:
    """The one JSON line of a request: who, what, outcome, time; never header values or bodies (no secrets)."""
    entry: dict[str, Any] = {
        "remote": remote,
        "method": method,
        "path": path[:_MAX_LOGGED_PATH_CHARS] if path is not None else None,
        "status": status,
        "outcome": outcome,
        "id": params.id if params else None,
        "group": params.group if params else None,
        "duration_ms": round(time_s * 1000, 1),
    }
    if detail:
        entry["detail"] = detail
    access_log.info("%s", json.dumps(entry))  # ensure_ascii escapes every control character


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook, writing ``log_request``'s line."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_s: float) -> None:
        params = request.get(CLIENT_KEY)
        malformed = bool(request.get(MALFORMED_KEY))  # aiohttp's stand-in request: its method and path are made up
        log_request(request.remote, None if malformed else request.method, None if malformed else request.path,
                    response.status, request.get(OUTCOME_KEY), params if isinstance(params, ClientParams) else None,
                    time_s, request.get(DETAIL_KEY))

    @property
    def enabled(self) -> bool:
        return True


class ProtocolHandler(RequestHandler):
    """aiohttp's per-connection handler, answering malformed HTTP as the protocol does and never logging
    a traceback (aiohttp's carry the offending bytes, header values included)."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is already on its way: the connection is broken
            raise ConnectionError("the answer was sent already")
        what = type(exc).__name__ if exc is not None else f"HTTP {status}"
        if isinstance(exc, LineTooLong):
            problem = ProtocolError(ErrorKind.HEADERS_TOO_LARGE,
                                    f"a request header line is over {MAX_HEADER_LINE_BYTES} bytes")
        elif status < 500:
            problem = ProtocolError(ErrorKind.BAD_HTTP, f"malformed HTTP request ({what})")
        else:
            problem = ProtocolError(ErrorKind.INTERNAL, "internal error (see the server log)")
        request[MALFORMED_KEY] = status < 500
        request[OUTCOME_KEY] = problem.error.kind
        request[DETAIL_KEY] = what
        response = web.Response(status=problem.status, body=problem.body(), content_type="application/json")
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own errors as one line naming the exception's type only (its text may carry bytes sent)."""
        exc = kw.get("exc_info")
        # A body error was answered already (its access line says so); aiohttp meets it again draining the body.
        level = logging.DEBUG if isinstance(exc, BODY_ERRORS) else logging.WARNING
        log.log(level, "HTTP layer: %s%s", args[0] if args else "error",
                f" ({type(exc).__name__})" if isinstance(exc, BaseException) else "")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long and how large a connection may be, and how many may be open."""

    header_timeout_s: float
    life_s: float
    max_connections: int


class ConnectionCount:
    """The open connections of one server (admitted ones: refused connections are not counted)."""

    def __init__(self) -> None:
        self.open = 0


class GuardedConnection(asyncio.Protocol):
    """One connection: admits it under the bound, enforces the header deadline and size, then hands every
    event to aiohttp's protocol (created only once admitted)."""

    def __init__(self, make_inner: Callable[[], asyncio.Protocol], limits: ConnectionLimits,
                 count: ConnectionCount) -> None:
        self._make_inner = make_inner
        self._limits = limits
        self._count = count
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers_done = False
        self._refused = False
        self._received = 0
        self._tail = b""
        self._started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        if self._count.open >= self._limits.max_connections:
            self._refuse(ProtocolError(ErrorKind.BUSY, f"over {self._limits.max_connections} open connections; "
                                                       f"retry"))
            return
        self._count.open += 1
        self._timer = loop.call_later(self._limits.header_timeout_s, self._expire)
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._inner is None:
            return
        if not self._headers_done:
            scan = self._tail + data
            ends = [scan.find(end) + len(end) for end in _HEADER_ENDS if end in scan]
            size = self._received - len(self._tail) + (min(ends) if ends else len(scan))
            if size > MAX_HEADER_BYTES:
                self._refuse(ProtocolError(ErrorKind.HEADERS_TOO_LARGE,
                                           f"request line and headers are over {MAX_HEADER_BYTES} bytes"))
                return
            self._received += len(data)
            self._tail = scan[-3:]
            if ends:
                self._headers_done = True
                self._rearm(self._limits.life_s, self._cut)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None and not self._refused else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is not None:
            self._count.open -= 1
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def _expire(self) -> None:
        self._timer = None
        if not self._headers_done:
            self._refuse(ProtocolError(ErrorKind.HEADER_TIMEOUT, f"request headers not received within "
                                                                 f"{self._limits.header_timeout_s:g} s"))

    def _cut(self) -> None:
        """The connection outlived every deadline of its request: cut it (no answer can be written safely)."""
        self._timer = None
        log.warning("connection from %s open for over %g s after its request headers; closed", self._peer(),
                    self._limits.life_s)
        if self._transport is not None:
            self._transport.abort()

    def _refuse(self, problem: ProtocolError) -> None:
        """Answer ``problem`` in the protocol's shape outside aiohttp, log the line, close (cut if not taken)."""
        self._refused = True
        transport = self._transport
        assert transport is not None
        body = problem.body()
        head = (f"HTTP/1.1 {problem.status} {_REASONS.get(problem.status, 'Error')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        loop = asyncio.get_running_loop()
        log_request(self._peer(), None, None, problem.status, problem.error.kind, None,
                    loop.time() - self._started)
        transport.write(head.encode() + body)
        transport.close()
        self._rearm(CLOSE_GRACE_S, transport.abort)

    def _rearm(self, delay_s: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _peer(self) -> str | None:
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None


_REASONS = {403: "Forbidden", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}
