"""What the queue asks of a store: the protocols ``GroupQueue``, ``LeaseSession`` and ``SemaphoreClient`` use.

``EtcdStore`` (``client.py``) implements them for real; ``harness/memory_store.py``
implements them in memory for logic tests. Real etcd stays the proof.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from locksmithd.etcd.store import Enqueued, KeyValueStore, Place, Snapshot, StoredKey
from locksmithd.etcd.watch import WatchEvent


class WatchHandle(Protocol):
    """A running watch; ``cancel`` stops it (no ``on_broken`` after)."""

    def cancel(self) -> None: ...


class LeaseStore(Protocol):
    """The lease calls of ``LeaseSession``; all raise StoreError subclasses on failure."""

    def grant_lease(self, ttl_s: int) -> int:
        """A new lease of ``ttl_s`` seconds; its id."""

    def keep_alive(self, lease_id: int) -> int:
        """Refresh a lease once; the remaining TTL in seconds (0: it expired)."""

    def revoke_lease(self, lease_id: int) -> None:
        """Revoke a lease and every key on it; a gone lease is fine."""


class QueueStore(KeyValueStore, LeaseStore, Protocol):
    """Everything a group's queue uses: the semaphore's five operations (``swap`` is the guarded write),
    the leases, and the queue's own requests (see ``EtcdStore`` for each one's contract)."""

    def enqueue(self, waiter_key: str, value: bytes, lease_id: int, tail_key: str, semaphore_key: str = "",
                halt_key: str = "", served_key: str = "") -> Enqueued:
        """Create ``waiter_key`` on ``lease_id`` if absent, setting the tail key (and reading the semaphore, the
        halt and ``served``, when named, at the same revision); or return it as stored."""

    def reput(self, key: str, value: bytes, lease_id: int, create_revision: int) -> bool:
        """Write ``key`` on ``lease_id`` only if it is still the key created at ``create_revision``."""

    def snapshot(self, keys: Sequence[str], semaphore_key: str = "", written_at: Sequence[int] = ()) -> Snapshot:
        """The named keys at one revision, and at which of ``written_at`` the semaphore was written."""

    def locate(self, waiter_key: str, create_revision: int, semaphore_key: str, halt_key: str,
               waiters_prefix: str) -> Place:
        """The waiter's own key, the semaphore, the halt and the two newest waiters before it."""

    def predecessors(self, waiters_prefix: str, create_revision: int, revision: int) -> tuple[StoredKey, ...]:
        """The two newest waiter keys created before ``create_revision`` as of ``revision``, newest first."""

    def delete_if_created(self, key: str, create_revision: int) -> bool:
        """Delete ``key`` only if it is still the key created at ``create_revision``."""

    def watch_range(self, start_key: str, end_key: str, start_revision: int,
                    on_events: Callable[[list[WatchEvent], int], None],
                    on_broken: Callable[[BaseException], None], *, deletes_only: bool = False,
                    on_created: Callable[[int], None] | None = None) -> WatchHandle:
        """Watch [start_key, end_key) from ``start_revision``; callbacks run on the store's watch thread."""
