"""A group's event history: bounded, one key per event in a ring, written with the change it records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from locksmithd.core.holder_record import MAX_FIELD_CHARS, format_time, parse_time
from locksmithd.core.names import shown_value

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
EVENTS = frozenset({
    "slot-taken", "reboot-requested", "booted", "health-passed", "health-failed", "released",
    "halt", "resume", "lock", "unlock", "set-max", "reset", "reclaim",
})  # fmt: skip


@dataclass(frozen=True)
class HistoryEvent:
    """Something that happened to a group: when, to which host (or ``operator``), what, and details."""

    at: datetime
    host: str
    event: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown history event {self.event!r}")

    def encode(self) -> bytes:
        return json.dumps({"at": format_time(self.at), "host": self.host, "event": self.event,
                           "detail": self.detail[:MAX_FIELD_CHARS]}, separators=(",", ":")).encode()


def decode_event(raw: bytes) -> HistoryEvent:
    """Decode one stored event; ValueError naming the fault (history is shown, never acted on)."""
    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("event is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise ValueError("event is not a JSON object")
    for name in ("at", "host", "event"):
        if not isinstance(document.get(name), str):
            raise ValueError(f"field {name!r} is {shown_value(document.get(name))}, not a string")
    detail = document.get("detail", "")
    if not isinstance(detail, str):
        raise ValueError(f"field 'detail' is {shown_value(detail)}, not a string")
    return HistoryEvent(at=parse_time(document["at"]), host=document["host"], event=document["event"],
                        detail=detail)


def ring_slot(sequence: int, limit: int) -> int:
    """The ring position of event number ``sequence``: the oldest of ``limit`` events is overwritten."""
    if limit < 1:
        raise ValueError(f"history limit must be at least 1, got {limit}")
    return sequence % limit
