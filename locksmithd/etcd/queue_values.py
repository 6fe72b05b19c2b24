"""Waiter key values as the queue reads them (to be replaced by core/waiter_value.py, the one codec)."""

from __future__ import annotations

import json
from typing import Any

from locksmithd.core.queue_walk import UNKNOWN


def read_document(value: bytes) -> dict[str, Any] | None:
    """A waiter key's value as a JSON object, or None (not JSON, not an object: written by hand?)."""
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: nested too deep
        return None
    return decoded if isinstance(decoded, dict) else None


def field_of(value: bytes, name: str) -> Any:
    document = read_document(value)
    return document.get(name) if document is not None else None


def since_of(value: bytes) -> str | None:
    since = field_of(value, "since")
    return since if isinstance(since, str) else None


def after_of(value: bytes) -> Any:
    """A waiter key's ``after`` pointer: None (its host was the head), a dict, or UNKNOWN (absent or malformed)."""
    document = read_document(value)
    if document is None or "after" not in document:
        return UNKNOWN
    pointer = document["after"]
    if pointer is None:
        return None
    if (isinstance(pointer, dict) and isinstance(pointer.get("key"), str)
            and all(isinstance(pointer.get(name), int) and not isinstance(pointer.get(name), bool)
                    and pointer[name] > 0 for name in ("created", "seen"))):
        return pointer
    return UNKNOWN


def count(value: Any) -> int:
    """A positive integer read from etcd (a ticket), else 0; bytes or a decoded JSON field."""
    if isinstance(value, bytes):
        text = value.decode("ascii", errors="replace")
        return int(text) if text.isdigit() and len(text) <= 18 else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
