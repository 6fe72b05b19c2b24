"""The halt record: while it exists, no host of the group takes a slot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from locksmithd.core.holder_record import MAX_FIELD_CHARS, format_time, parse_time
from locksmithd.core.names import name_problem, shown_value
from locksmithd.errors import CorruptDocument

MAX_HALT_BYTES = 64 * 1024
OPERATOR = "operator"
HALT_REPAIR = "remove it with 'locksmithctl resume'"


@dataclass(frozen=True)
class Halt:
    """Who halted the group, when and why.

    ``by`` is a holder id (a host that failed its health check or found a
    stale holder) or ``operator``. The record is its own key beside the
    semaphore, and every acquisition's transaction requires that key to be
    absent, so a halt written at revision R stops every acquisition after R.
    """

    reason: str
    by: str
    since: datetime
    group: str = ""

    def encode(self) -> bytes:
        return json.dumps({"group": self.group, "reason": self.reason, "by": self.by,
                           "since": format_time(self.since)}, separators=(",", ":")).encode()


def decode_halt(raw: bytes, key: str | None = None) -> Halt:
    """Decode and validate a stored halt record; CorruptDocument naming ``key`` otherwise.

    A corrupt halt record still stops acquisitions (the key exists): failing
    safe, never a crash and never a reboot.
    """
    def corrupt(problem: str) -> CorruptDocument:
        return CorruptDocument(problem, key, what="halt record", repair=HALT_REPAIR)

    if len(raw) > MAX_HALT_BYTES:
        raise corrupt(f"record is {len(raw)} bytes, over the {MAX_HALT_BYTES}-byte limit")
    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise corrupt("record is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise corrupt(f"record is a JSON {type(document).__name__}, not an object")
    for name in ("reason", "by", "since"):
        value = document.get(name)
        if not isinstance(value, str):
            raise corrupt(f"field {name!r} is {shown_value(value)}, not a string")
        if len(value) > MAX_FIELD_CHARS:
            raise corrupt(f"field {name!r} is longer than {MAX_FIELD_CHARS} characters")
    group = document.get("group", "")
    if not isinstance(group, str):
        raise corrupt(f"field 'group' is {shown_value(group)}, not a string")
    by = document["by"]
    if by != OPERATOR and name_problem(by) is not None:
        raise corrupt(f"field 'by' {shown_value(by)}: {name_problem(by)}")
    try:
        since = parse_time(document["since"])
    except ValueError as exc:
        raise corrupt(f"field 'since' is not a timestamp: {exc}") from None
    return Halt(reason=document["reason"], by=by, since=since, group=group)
