"""The one codec for a waiter key's value, and for the group's ``served`` ticket.

Every reader and writer of the queue goes through it: the daemons' queue
(``etcd/queue.py``), the FleetLock server (``etcd/remote_waiter.py``) and
``locksmithctl status``. The key (``waiters/<id>``) is the host's place;
its value says what the others need to know without reading the queue:

- a daemon writes ``{"since", "ticket", "after"}``;
- the FleetLock server writes ``{"since", "via": "fleetlock", "grace_s",
  "ticket", "follows"}``.

``since`` is when the host queued (ISO 8601; shown by ``status``).
``ticket`` is its number in the order of arrival (the tail key's version
when it queued; left out when not known). ``after`` (daemons) names the
waiter just ahead as last read: its key, create revision and a store revision
at which it still existed (``seen``); ``follows`` (FleetLock) names it by key,
create revision and ticket. Either is null once the host knows it heads the
queue, and left out while not known yet. ``served`` holds the ticket of the
last waiter that took a slot, as ASCII digits.

Decoding never raises: a value written by hand or by a version that wrote
other fields decodes with the fields it lacks as unknown (``UNKNOWN``
pointers, ``None`` texts, ``0`` numbers). Encoding writes exactly the fields
above in that order, so daemons of different versions read each other's keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FLEETLOCK = "fleetlock"
"""The waiter key's ``via`` (and the holder record's ``source``) for hosts queued through the FleetLock server."""

UNKNOWN: Any = object()
"""A pointer (``after``, ``follows``) not written, or not readable as written: its host has not located it."""


@dataclass(frozen=True)
class Pointer:
    """The waiter just ahead, as a host last read it: key and create revision; ``seen`` (daemons) a revision
    at which it existed, ``ticket`` (FleetLock) its ticket (0: unknown)."""

    key: str
    created: int
    seen: int = 0
    ticket: int = 0


@dataclass(frozen=True)
class WaiterValue:
    """What a waiter key's value says; see the module docstring for each field."""

    since: str | None
    ticket: int = 0
    after: Any = UNKNOWN  # Pointer, None (at the head) or UNKNOWN: a daemon's pointer
    via: str | None = None  # FLEETLOCK for the server's keys
    grace_s: int = 0
    follows: Any = UNKNOWN  # Pointer, None (at the head) or UNKNOWN: the FleetLock server's pointer

    @property
    def through_fleetlock(self) -> bool:
        """True when the FleetLock server queued this host (it never writes ``after``)."""
        return self.via == FLEETLOCK


_DECODER = json.JSONDecoder()


def read_document(value: bytes) -> dict[str, Any] | None:
    """A stored value as a JSON object (None when it is not one).

    ``raw_decode`` of the UTF-8 text is json.loads without its whitespace
    scans, a third of the cost (``status`` decodes every waiter); whatever it
    does not take whole (leading or trailing bytes, other encodings, bad
    JSON) gets json.loads's verdict.
    """
    try:
        text = value.decode()
        document, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError("trailing data")
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        try:
            document = json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to be a waiter's value
            return None
    return document if isinstance(document, dict) else None


def decode_waiter(value: bytes) -> WaiterValue:
    """What a waiter key's value says; never an error (see the module docstring)."""
    fields = read_document(value) or {}
    return WaiterValue(since=_text(fields, "since"), ticket=_positive(fields.get("ticket")),
                       after=_pointer(fields, "after", "seen"), via=_text(fields, "via"),
                       grace_s=_positive(fields.get("grace_s")), follows=_pointer(fields, "follows", "ticket"))


def encode_waiter(value: WaiterValue) -> bytes:
    """The stored form of ``value``: ``via`` and ``grace_s`` only for FleetLock, ``ticket`` only when known,
    pointers only when not UNKNOWN."""
    document: dict[str, Any] = {"since": value.since}
    if value.via is not None:
        document["via"] = value.via
        document["grace_s"] = value.grace_s
    if value.ticket:
        document["ticket"] = value.ticket
    if value.after is not UNKNOWN:
        document["after"] = None if value.after is None else {
            "key": value.after.key, "created": value.after.created, "seen": value.after.seen}
    if value.follows is not UNKNOWN:
        document["follows"] = None if value.follows is None else {
            "key": value.follows.key, "created": value.follows.created, "ticket": value.follows.ticket}
    return json.dumps(document).encode()


def served_ticket(value: bytes) -> int:
    """The ticket stored in ``served`` (ASCII digits), or 0 when it does not read as one."""
    text = value.decode("ascii", errors="replace")
    return int(text) if text.isdigit() and len(text) <= 18 else 0


def _text(fields: dict[str, Any], name: str) -> str | None:
    found = fields.get(name)
    return found if isinstance(found, str) else None


def _positive(value: Any) -> int:
    """A positive JSON integer, else 0 (booleans are not numbers here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _pointer(fields: dict[str, Any], name: str, extra: str) -> Any:
    """The pointer field ``name``: None (at the head), a Pointer, or UNKNOWN when absent or malformed.

    ``after`` needs a positive ``seen``; ``follows`` a ticket that is a non-negative integer.
    """
    if name not in fields:
        return UNKNOWN
    pointer = fields[name]
    if pointer is None:
        return None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("key"), str) or not _positive(pointer.get("created")):
        return UNKNOWN
    number = _positive(pointer.get(extra))
    if extra == "seen" and number:
        return Pointer(pointer["key"], pointer["created"], seen=number)
    if extra == "ticket" and (number or (pointer.get(extra) == 0 and not isinstance(pointer.get(extra), bool))):
        return Pointer(pointer["key"], pointer["created"], ticket=number)
    return UNKNOWN
