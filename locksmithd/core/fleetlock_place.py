"""A FleetLock client's place in the shared queue, from tickets (pure): its waiter key's value and the arithmetic.

The server (``etcd/remote_waiter.py``) keeps in each FleetLock waiter key
``{"since", "via": "fleetlock", "grace_s", "ticket", "follows"}``: the
client's number in the order of arrival and the waiter just ahead of it
when last known (``follows``: its key, create revision and ticket; null
once the client is known to head the queue). With ``served`` (the ticket
of the last waiter that took a slot) these give the client's place without
reading the queue: exact at the head, an upper bound further back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SOURCE = "fleetlock"
"""The holder record's ``source`` and the waiter key's ``via`` for slots taken through FleetLock."""


@dataclass(frozen=True)
class Follows:
    """The waiter just ahead of a client when last known: its key, create revision and ticket (0: unknown)."""

    key: str
    created: int
    ticket: int


UNKNOWN: Any = object()
"""A ``follows`` not known (not written yet, or a key from an older server): the place is read once."""


@dataclass(frozen=True)
class WaiterValue:
    """The fields of a FleetLock waiter key's value that the server reads back."""

    since: str | None
    ticket: int
    follows: Any  # Follows, None (the head), or UNKNOWN


def document(value: bytes) -> dict[str, Any] | None:
    """A key's value as a JSON object, or None (not JSON, not an object)."""
    try:
        decoded = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def queued_through_fleetlock(value: bytes) -> bool:
    """True for a waiter key's value written by the FleetLock server."""
    fields = document(value)
    return fields is not None and fields.get("via") == SOURCE


def encode_value(since: str, grace_s: int, ticket: int, follows: Any) -> bytes:
    """The waiter key's value; ``ticket`` 0 and ``follows`` UNKNOWN are left out."""
    value: dict[str, Any] = {"since": since, "via": SOURCE, "grace_s": grace_s}
    if ticket:
        value["ticket"] = ticket
    if follows is not UNKNOWN:
        value["follows"] = None if follows is None else {"key": follows.key, "created": follows.created,
                                                         "ticket": follows.ticket}
    return json.dumps(value).encode()


def decode_value(value: bytes) -> WaiterValue:
    """What a FleetLock waiter key says; fields that do not read as written are unknown, never an error.

    ``since`` is returned as stored (the caller checks it reads as a time).
    """
    fields = document(value) or {}
    since = fields.get("since")
    return WaiterValue(since if isinstance(since, str) else None, _positive_or_zero(fields.get("ticket")),
                       _follows(fields))


def ticket(value: bytes) -> int:
    """The ticket stored in ``served`` (ASCII digits), or 0."""
    text = value.decode("ascii", errors="replace")
    return int(text) if text.isdigit() and len(text) <= 18 else 0


def field_ticket(value: bytes) -> int:
    """The ``ticket`` field of any waiter key's value (daemons' and FleetLock's), or 0."""
    fields = document(value)
    return _positive_or_zero(fields.get("ticket")) if fields else 0


def place(own: WaiterValue, head: bool, served: int, tail_ticket: int) -> tuple[int, int]:
    """(position, queue length): exact at the head; further back upper bounds from tickets, exact unless
    waiters ahead left without a slot (with tickets unknown: position 2)."""
    position = 1
    if not head:
        position = 2
        if own.ticket > served:
            bound = own.ticket - served
            if isinstance(own.follows, Follows) and own.follows.ticket > served:
                bound = min(bound, own.follows.ticket - served + 1)
            position = max(2, bound)
    behind = tail_ticket - own.ticket if own.ticket and tail_ticket > own.ticket else 0
    return position, position + behind


def _follows(fields: dict[str, Any]) -> Any:
    if "follows" not in fields:
        return UNKNOWN
    pointer = fields["follows"]
    if pointer is None:
        return None
    if isinstance(pointer, dict) and isinstance(pointer.get("key"), str) and _positive_or_zero(pointer.get("created")) \
            and (_positive_or_zero(pointer.get("ticket")) or pointer.get("ticket") == 0):
        return Follows(pointer["key"], pointer["created"], pointer["ticket"])
    return UNKNOWN


def _positive_or_zero(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
