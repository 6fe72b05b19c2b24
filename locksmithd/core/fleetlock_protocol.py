"""The FleetLock protocol (Zincati's): request validation, the bounded set of error kinds and the error body."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from locksmithd.core.names import name_problem, printable, shown_value

PROTOCOL_HEADER = "fleet-lock-protocol"
PRE_REBOOT_PATH = "/v1/pre-reboot"
STEADY_STATE_PATH = "/v1/steady-state"
HEALTH_PATH = "/-/healthy"
DEFAULT_GROUP = "default"
"""The FleetLock group Zincati uses unless configured; it is locksmith's default group ("")."""

MAX_BODY_BYTES = 16 * 1024
"""A request body is two short strings; anything much larger is refused unread."""

GROUP_PATTERN = re.compile(r"[a-zA-Z0-9.-]+")
MAX_VALUE_CHARS = 1000
"""Longest error ``value`` sent: messages echo untrusted input, bounded."""


class ErrorKind(enum.Enum):
    """Every ``kind`` the server may answer (bounded cardinality, as the protocol asks) and its status.

    4xx: the request or the client's turn is the problem (retry later or fix
    the client); 5xx: the server or etcd is (retry later). 403
    ``failed_slot_not_fleetlock``: the id names a slot or a queue place a
    daemon or an operator took, which FleetLock requests never touch.
    """

    BAD_HEADER = ("bad_request_header", 400)
    BAD_BODY = ("bad_request_body", 400)
    BAD_CLIENT_ID = ("bad_request_client_id", 400)
    BAD_GROUP = ("bad_request_group", 400)
    BODY_TOO_LARGE = ("bad_request_body_too_large", 413)
    BAD_HTTP = ("bad_request_http", 400)
    HEADERS_TOO_LARGE = ("bad_request_headers_too_large", 431)
    HEADER_TIMEOUT = ("bad_request_header_timeout", 408)
    NOT_FLEETLOCK_SLOT = ("failed_slot_not_fleetlock", 403)
    NOT_FOUND = ("not_found", 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405)
    SEMAPHORE_FULL = ("failed_lock_semaphore_full", 409)
    QUEUED = ("failed_lock_queued", 409)
    HALTED = ("failed_lock_group_halted", 409)
    CORRUPT_DOCUMENT = ("failed_corrupt_document", 500)
    DOCUMENT_TOO_LARGE = ("failed_document_too_large", 507)
    STORE_DENIED = ("failed_etcd_denied", 502)
    STORE_UNAVAILABLE = ("failed_etcd_unavailable", 503)
    CONFLICT = ("failed_write_conflict", 503)
    BUSY = ("server_busy", 503)
    TIMEOUT = ("request_timeout", 503)
    INTERNAL = ("internal_error", 500)

    @property
    def kind(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]


@dataclass(frozen=True)
class ProtocolError:
    """A failure answer: its kind (and so its status) and the human text."""

    error: ErrorKind
    text: str

    @property
    def status(self) -> int:
        return self.error.status

    def body(self) -> bytes:
        """The protocol's JSON error body ``{"kind": ..., "value": ...}`` (both non-empty)."""
        value = printable(self.text, MAX_VALUE_CHARS) or self.error.kind
        return json.dumps({"kind": self.error.kind, "value": value}).encode()


@dataclass(frozen=True)
class ClientParams:
    """A validated request: the client id (a holder id) and its group, both as sent and as locksmith's."""

    id: str
    group: str

    @property
    def locksmith_group(self) -> str:
        """The locksmithd group: FleetLock's ``default`` is locksmith's default group ("")."""
        return "" if self.group == DEFAULT_GROUP else self.group


def header_problem(value: str | None) -> ProtocolError | None:
    """Why the ``fleet-lock-protocol`` header value is wrong (it must be ``true``), or None."""
    if value is None:
        return ProtocolError(ErrorKind.BAD_HEADER, f"missing '{PROTOCOL_HEADER}: true' header")
    if value.strip().lower() != "true":
        return ProtocolError(ErrorKind.BAD_HEADER,
                             f"header '{PROTOCOL_HEADER}' is {shown_value(value)}, expected 'true'")
    return None


def parse_body(raw: bytes) -> ClientParams | ProtocolError:
    """The client parameters of a request body, or the error to answer.

    The body must be a UTF-8 JSON object with ``client_params``, an object
    holding ``id`` (a non-empty string that is also a valid holder id, see
    ``names.name_problem``) and ``group`` (non-empty, ``[a-zA-Z0-9.-]+``).
    Unknown fields are ignored, as the protocol allows extensions.
    """
    if len(raw) > MAX_BODY_BYTES:
        return ProtocolError(ErrorKind.BODY_TOO_LARGE, f"request body is over {MAX_BODY_BYTES} bytes")
    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ProtocolError(ErrorKind.BAD_BODY, "request body is not UTF-8 JSON")
    if not isinstance(document, dict):
        return ProtocolError(ErrorKind.BAD_BODY, "request body is not a JSON object")
    params = document.get("client_params")
    if not isinstance(params, dict):
        return ProtocolError(ErrorKind.BAD_BODY,
                             "request body has no 'client_params' object" if params is None
                             else f"'client_params' is {shown_value(params)}, not an object")
    client_id, group = params.get("id"), params.get("group")
    if client_id is None:
        return ProtocolError(ErrorKind.BAD_BODY, "'client_params' has no 'id'")
    if group is None:
        return ProtocolError(ErrorKind.BAD_BODY, "'client_params' has no 'group'")
    problem = name_problem(client_id, "client id")
    if problem is not None:
        shown = f" ({shown_value(client_id)})" if isinstance(client_id, str) and client_id else ""
        return ProtocolError(ErrorKind.BAD_CLIENT_ID, f"{problem}{shown}")
    problem = group_problem(group)
    if problem is not None:
        return ProtocolError(ErrorKind.BAD_GROUP, problem)
    return ClientParams(client_id, group)


def group_problem(group: object) -> str | None:
    """Why ``group`` is not a FleetLock group name, or None."""
    if not isinstance(group, str):
        return f"group is {shown_value(group)}, not a string"
    if group == "":
        return "group is empty"
    if not GROUP_PATTERN.fullmatch(group):
        return f"group {shown_value(group)} does not match ^[a-zA-Z0-9.-]+$"
    return name_problem(group, "group")  # the length bound of every locksmithd name


# --- The client's side: what counts as an answer of the protocol ---------------------------------------------------

MAX_REPLY_BYTES = 16 * 1024
"""Longest answer a client reads: a FleetLock answer is a short JSON object or nothing."""

REPLY_EXCERPT_CHARS = 200
"""How much of a foreign answer's body a refusal shows (escaped)."""

SUCCESS_TEXTS: dict[str, frozenset[str]] = {
    PRE_REBOOT_PATH: frozenset({"obtained reboot lease", "retained reboot lease"}),
    STEADY_STATE_PATH: frozenset({"steady-state confirmed"}),
}
"""The text/plain bodies poseidon/fleetlock answers with its 200s, by path (no other server sends text)."""

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


@dataclass(frozen=True)
class Reply:
    """An HTTP answer as a FleetLock client read it: status, content type ("" if none), the first bytes of
    the body (at most MAX_REPLY_BYTES), whether more followed, and the redirect target ("" if none)."""

    status: int
    content_type: str
    body: bytes
    truncated: bool = False
    location: str = ""


def success_problem(path: str, reply: Reply) -> str | None:
    """Why ``reply`` to ``path`` is not the protocol's success (None when it is one).

    The protocol's success is a 200, and the only body it defines is the JSON
    object ``{"kind": ..., "value": ...}``. Its servers answer a 200 with an
    empty body (airlock), ``{}`` (locksmithd-fleetlock) or a short text
    (poseidon/fleetlock, ``SUCCESS_TEXTS``). Nothing else is a success: not a
    redirect (a login page behind it is no grant), not an HTML page (a proxy's
    or web server's, whatever its status), not JSON of another shape. The
    problem is worded for a log line, with no body in it (``reply_excerpt``).
    """
    if 300 <= reply.status < 400:
        return f"a redirect ({reply.status})"
    if reply.status != 200:
        return f"status {reply.status}"
    if is_html(reply):
        return "an HTML page"
    if reply.truncated:
        return f"a body over {MAX_REPLY_BYTES} bytes"
    if reply.body.strip() == b"":
        return None
    try:
        text = reply.body.decode("utf-8")
    except UnicodeDecodeError:
        return "a body that is not UTF-8"
    if text.strip() in SUCCESS_TEXTS.get(path, frozenset()):
        return None
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError):
        return "a body that is neither JSON nor a known FleetLock text"
    if not isinstance(document, dict):
        return "JSON that is not an object"
    others = sorted(key for key in document if key not in ("kind", "value"))
    if others:
        return f"a JSON object with fields the protocol does not have ({printable(', '.join(others), 100)})"
    if any(not isinstance(document[key], str) for key in document):
        return "a JSON object whose kind or value is not a string"
    return None


def is_html(reply: Reply) -> bool:
    """Whether ``reply`` says it is an HTML page (a web server's or a login proxy's, never a FleetLock answer)."""
    return reply.content_type.split(";", 1)[0].strip().lower() in _HTML_TYPES


def error_fields(body: bytes) -> tuple[str, str] | None:
    """The protocol error body's ``kind`` and ``value`` (bounded, escaped), or None when ``body`` is not one."""
    try:
        document: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    kind, value = document.get("kind"), document.get("value")
    if not isinstance(kind, str) or not kind or not isinstance(value, str):
        return None
    return printable(kind, 100), printable(value, 500)


def reply_excerpt(reply: Reply) -> str:
    """What came back, for one log line: status, content type, redirect target and the body's start, escaped."""
    parts = [f"status {reply.status}", f"content type {printable(reply.content_type, 100) or '(none)'}"]
    if reply.location:
        # without the query: a login page's return address may carry one-time tokens
        parts.append(f"location {printable(reply.location.split('?', 1)[0], REPLY_EXCERPT_CHARS)}")
    body = reply.body.decode("utf-8", "replace")
    shown = f"'{printable(' '.join(body.split()), REPLY_EXCERPT_CHARS)}'" if body.strip() else "(empty)"
    parts.append(f"body {shown}" + (f" (over {MAX_REPLY_BYTES} bytes)" if reply.truncated else ""))
    return ", ".join(parts)


_PLACE = re.compile(r"queued at position (\d{1,9}) of (\d{1,9})")
HEAD_POLL_S = 0.5
"""How often a client our server names the head of the queue asks again (an extension: see poll_pause_s)."""


def queue_place(value: str) -> tuple[int, int] | None:
    """(position, length) from a refusal's text ("queued at position N of M", our server's), or None."""
    match = _PLACE.search(value)
    if match is None or int(match.group(1)) < 1:
        return None
    return int(match.group(1)), int(match.group(2))


def poll_pause_s(position: int, poll_max_s: float) -> float:
    """The pause before asking again at ``position`` (1: the head): HEAD_POLL_S per place, at most ``poll_max_s``.

    The head asks twice a second, so a freed slot is taken within about half
    a second; each place further back asks proportionally less often, so a
    queue of K clients costs the server about 2 ln K polls a second plus K
    every ``poll_max_s``. Plain clients (Zincati) ignore the text and poll
    at their own pace.
    """
    return min(max(poll_max_s, HEAD_POLL_S), HEAD_POLL_S * max(position, 1))
