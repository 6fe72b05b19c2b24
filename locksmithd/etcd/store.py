"""The small key-value interface the semaphore needs, and an in-memory version.

The etcd adapter (``etcd_store``) implements the same protocol for real; the
in-memory store exists for fast unit tests of the core only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Versioned:
    """A stored value and the store revision that last modified it."""

    value: bytes
    mod_revision: int


class KeyValueStore(Protocol):
    """Three operations, all atomic, all raising StoreError subclasses on failure.

    ``create`` and ``swap`` raise AmbiguousWrite when the request may or may
    not have been applied; callers resolve that by reading back.
    """

    def read(self, key: str) -> Versioned | None:
        """The current value of ``key``, or None when it does not exist."""

    def create(self, key: str, value: bytes) -> bool:
        """Create ``key`` only if absent; False when it already exists."""

    def swap(self, key: str, value: bytes, mod_revision: int) -> bool:
        """Write ``value`` only if ``key`` is still at ``mod_revision``; False on a lost race."""


class MemoryStore:
    """A thread-safe in-memory KeyValueStore with etcd-like revisions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Versioned] = {}
        self._revision = 1

    def read(self, key: str) -> Versioned | None:
        with self._lock:
            return self._data.get(key)

    def create(self, key: str, value: bytes) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._put(key, value)
            return True

    def swap(self, key: str, value: bytes, mod_revision: int) -> bool:
        with self._lock:
            current = self._data.get(key)
            if current is None or current.mod_revision != mod_revision:
                return False
            self._put(key, value)
            return True

    def put(self, key: str, value: bytes) -> None:
        """Unconditional write, for tests that plant documents."""
        with self._lock:
            self._put(key, value)

    def _put(self, key: str, value: bytes) -> None:
        self._revision += 1
        self._data[key] = Versioned(value, self._revision)
