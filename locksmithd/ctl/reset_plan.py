"""What `locksmithctl reset` shows before it writes, and which old fields the fresh document keeps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from locksmithd.core.names import printable
from locksmithd.core.semaphore import Semaphore, decode
from locksmithd.errors import CorruptDocument, DocumentTooLarge

# The fields reset rewrites; every other top-level field of the old document is kept.
_REWRITTEN_FIELDS = frozenset({"semaphore", "max", "holders", "holder_info"})
_SHOWN_CHARS = 200
_SHOWN_BYTES = 4 * _SHOWN_CHARS  # enough bytes for 200 characters of UTF-8


@dataclass(frozen=True)
class ResetPlan:
    """The unknown fields the fresh document keeps, and those dropped because they do not fit."""

    kept_fields: Mapping[str, Any] = field(default_factory=dict)
    dropped_fields: tuple[str, ...] = ()

    def note(self) -> str:
        """A suffix for the confirmation line naming kept or dropped fields (escaped, bounded)."""
        if self.dropped_fields:
            names = printable(", ".join(self.dropped_fields), _SHOWN_CHARS)
            return f"; unknown fields dropped, they alone would exceed the size limit: {names}"
        if self.kept_fields:
            return f"; unknown fields kept: {printable(', '.join(self.kept_fields), _SHOWN_CHARS)}"
        return ""


def plan_reset(stored: bytes | None, new_max: int) -> ResetPlan:
    """Which top-level fields of ``stored`` survive a reset to ``new_max``.

    When ``stored`` is a JSON object (valid or not as a semaphore) its fields
    other than semaphore, max, holders and holder_info are kept, so data other
    tools put there survives a repair; when it is absent or not a JSON object
    at all, nothing is kept. If the kept fields would make the new document
    larger than readers accept, they are all dropped, so reset always works.
    Raises InvalidMax for a maximum out of range.
    """
    kept = _unknown_fields(stored)
    try:
        Semaphore(1, (), {}, kept).set_max(new_max).encode()
    except DocumentTooLarge:
        return ResetPlan({}, tuple(kept))
    return ResetPlan(kept, ())


def describe_document(key: str, stored: bytes | None) -> list[str]:
    """A bounded, escaped summary of the document reset would replace (two lines at most).

    Shows the size, max and holders when it decodes (else why it is corrupt)
    and its first ~200 characters, never the whole document.
    """
    if stored is None:
        return [f"Current document at {key}: absent"]
    head = f"Current document at {key} ({len(stored)} bytes)"
    try:
        semaphore = decode(stored)
    except CorruptDocument as error:
        summary = f"{head} is corrupt: {printable(error.problem, _SHOWN_CHARS)}"
    else:
        holders = printable(", ".join(semaphore.holders), _SHOWN_CHARS)
        summary = f"{head}: max {semaphore.max}, {len(semaphore.holders)} holder(s){': ' if holders else ''}{holders}"
    start = stored[:_SHOWN_BYTES].decode("utf-8", errors="backslashreplace")
    return [summary, f"  starts with: {printable(start, _SHOWN_CHARS)}"]


def _unknown_fields(stored: bytes | None) -> dict[str, Any]:
    if stored is None:
        return {}
    try:
        document = json.loads(stored.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # not JSON at all: nothing to keep
        return {}
    if not isinstance(document, dict):
        return {}
    return {name: value for name, value in document.items() if name not in _REWRITTEN_FIELDS}
