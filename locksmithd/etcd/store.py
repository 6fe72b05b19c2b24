"""The small key-value interface the semaphore needs, and the records etcd reads return.

The etcd adapter (``etcd/client.py``) implements the protocol for real; the
in-memory versions for unit tests live in ``harness/memory_store.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

ABSENT = 0
"""The mod revision of a key that does not exist (what etcd compares a missing key's to)."""


@dataclass(frozen=True)
class Versioned:
    """A stored value and the store revision that last modified it (never ABSENT)."""

    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class StoredKey:
    """One stored key with the revisions the queue orders by and the lease it is bound to (0: none)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @staticmethod
    def from_kv(kv: Any) -> StoredKey:
        """From etcd's KeyValue message (watch events, ranges inside transactions).

        A range may hold 10,000 keys, so this is built the fast way: the
        message's fields are already bytes and ints (no copies), and the
        fields are filled in directly, as the generated __init__ would (there
        is no __post_init__), without its five object.__setattr__ calls that
        a frozen dataclass makes: they were 5% of ``locksmithctl status``'s
        instructions on a 10,000-key queue. tests/test_etcd_store_records.py
        checks the result equals the constructor's, field for field.
        """
        entry = object.__new__(StoredKey)
        entry.__dict__.update(key=kv.key.decode("utf-8", errors="surrogateescape"), value=kv.value,
                              create_revision=kv.create_revision, mod_revision=kv.mod_revision, lease=kv.lease)
        return entry


class KeyValueStore(Protocol):
    """Six operations, all atomic, all raising StoreError subclasses on failure."""

    def read(self, key: str) -> Versioned | None:
        """The current value of ``key``, or None when it does not exist."""

    def read_many(self, keys: Sequence[str]) -> dict[str, Versioned]:
        """The keys of ``keys`` that exist, all read at one revision."""

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             puts: Sequence[tuple[str, bytes]] = (), absent: Sequence[str] = ()) -> int:
        """Write ``value``, the other ``puts`` and delete the keys in ``delete``, all only if ``key``
        is still at ``expected_mod_revision`` (ABSENT: only if ``key`` does not exist) and none
        of the keys in ``absent`` exists.

        Returns the revision of the write (``key``'s new mod revision), or 0
        when the guard failed and nothing changed. Raises AmbiguousWrite when
        the request may or may not have been applied; callers resolve that by
        reading back, never by writing again blindly.
        """

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed (deleting twice is harmless)."""

    def read_prefix(self, prefix: str, keys_only: bool = False) -> list[StoredKey]:
        """Every key under ``prefix``, oldest first (by create revision); with ``keys_only``, values may be empty."""

    def delete_if_created(self, key: str, create_revision: int) -> bool:
        """Delete ``key`` only if it is still the key created at ``create_revision``; True if deleted."""


@dataclass(frozen=True)
class Place:
    """Where one waiter stands, all read at ``revision`` in one request (see EtcdStore.locate).

    ``mine`` is the waiter's own key (None: it is gone, e.g. its lease
    expired or an operator removed it), ``before`` the (at most two) newest
    keys created before it, newest first.
    """

    revision: int
    mine: StoredKey | None
    semaphore: Versioned | None
    halt: Versioned | None
    before: tuple[StoredKey, ...]


@dataclass(frozen=True)
class Enqueued:
    """The outcome of putting a waiter key (see EtcdStore.enqueue).

    ``created`` is True when this request created the key, at the back of
    the queue; ``previous`` is then the waiter key that was newest before it
    (from the tail key; None when there was none), which may have left since.
    When the key existed already (a retried request, a restarted daemon)
    nothing was written and ``entry`` is the key as stored.
    """

    entry: StoredKey
    created: bool
    previous: StoredKey | None = None
    ticket: int = 0
    """This key's number in the order of arrival (the tail's version after the request); 0: not created here."""
    revision: int = 0
    """The request's revision; with ``group_read``, the semaphore, halt and ``served`` below are as of it."""
    group_read: bool = False
    """True when the request also read the semaphore, the halt and ``served`` (asked for, and the key created)."""
    semaphore: Versioned | None = None
    halt: Versioned | None = None
    served: Versioned | None = None


@dataclass(frozen=True)
class Snapshot:
    """Named keys read at one ``revision`` (absent keys are missing from ``keys``).

    ``semaphore_written_at`` holds those of the asked earlier revisions at
    which the semaphore was written: a waiter key deleted at such a revision
    was taken out by the guarded write that gave its host a slot.
    """

    revision: int
    keys: dict[str, StoredKey]
    semaphore_written_at: frozenset[int] = frozenset()
    versions: dict[str, int] = field(default_factory=dict)
    """Each found key's version (how many times it was written since created): the tail's is the newest ticket."""
