"""The harness's own reader of stored semaphore documents, independent of the product's decoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeGuard

# Deliberately plain json and no import of locksmithd.core.semaphore: a checker that
# used the product's decoder would share its bugs and could not catch them.


class UnreadableDocument(ValueError):
    """The stored bytes are not a semaphore document the checker can count holders in."""


@dataclass(frozen=True)
class SemaphoreDocument:
    """What a safety check needs from one stored version: the maximum and the holders, as stored.

    ``holders`` keeps the stored order and any duplicates (judging them is the
    checker's job); ``semaphore`` is the stored free-slot count, None when absent.
    """

    max: int
    holders: tuple[str, ...]
    semaphore: int | None

    @property
    def duplicates(self) -> tuple[str, ...]:
        """Holder ids listed more than once, sorted."""
        return tuple(sorted({h for h in self.holders if self.holders.count(h) > 1}))


def read_document(raw: bytes) -> SemaphoreDocument:
    """Parse locksmith's JSON (``{"semaphore": n, "max": m, "holders": [...]}``) with plain json.

    ``holders`` may be ``null`` (Go's empty slice, as locksmith writes it).
    Raises UnreadableDocument when the bytes are not UTF-8 JSON, not an object,
    or ``max`` is not a whole number, or ``holders`` is missing or not a list of strings.
    """
    try:
        document: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnreadableDocument(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise UnreadableDocument(f"not a JSON object: {type(document).__name__}")
    max_slots, holders, free = document.get("max"), document.get("holders", ...), document.get("semaphore")
    if not _whole(max_slots):
        raise UnreadableDocument(f"max is not a whole number: {max_slots!r}")
    if holders is ...:
        raise UnreadableDocument("no holders field")
    if holders is None:
        holders = []
    if not isinstance(holders, list) or not all(isinstance(h, str) for h in holders):
        raise UnreadableDocument(f"holders is not a list of strings: {holders!r}")
    return SemaphoreDocument(max_slots, tuple(holders), free if _whole(free) else None)


def stored_holders(raw: bytes | None) -> tuple[str, ...]:
    """The holders in a stored version (``None``: no key, so nobody holds); UnreadableDocument if unreadable."""
    return () if raw is None else read_document(raw).holders


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
