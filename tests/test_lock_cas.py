"""The compare-and-swap path on the in-memory store: races, ambiguity, idempotence."""

from __future__ import annotations

import threading
from typing import Any
from collections.abc import Sequence

import pytest

from locksmithd.errors import AmbiguousWrite, CorruptDocument, NotHolder, SemaphoreFull, WriteConflict
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.core.semaphore import decode
from harness.memory_store import MemoryStore
from locksmithd.etcd.store import ABSENT, Versioned


class LosingStore(MemoryStore):
    """Every swap commits, but the first ``lose`` replies are 'lost'."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             **guarded: Any) -> int:
        revision = super().swap(key, value, expected_mod_revision, delete=delete, **guarded)
        if self.lose > 0:
            self.lose -= 1
            raise AmbiguousWrite("reply lost")
        return revision


class InterleavingStore(MemoryStore):
    """Before each of the first ``n`` swaps of an existing document another writer sneaks in a change."""

    def __init__(self, n: int, intruder: "callable") -> None:
        super().__init__()
        self.n = n
        self.intruder = intruder

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             **guarded: Any) -> int:
        if self.n > 0 and expected_mod_revision != ABSENT:
            self.n -= 1
            self.intruder(self)
        return super().swap(key, value, expected_mod_revision, delete=delete, **guarded)


def test_lock_creates_initial_document() -> None:
    """The first lock on an absent key creates locksmith's initial document with one holder."""
    store = MemoryStore()
    client = SemaphoreClient(store)
    client.lock("a")
    stored = store.read(client.key)
    assert stored is not None and decode(stored.value).holders == ("a",)


def test_lost_reply_is_resolved_by_reading_back() -> None:
    """A lock whose reply was lost is not applied twice and reports success."""
    store = LosingStore(lose=1)
    client = SemaphoreClient(store)
    client.set_max(2)
    store.lose = 1
    client.lock("a")
    assert client.read().semaphore.holders == ("a",)


def test_lost_unlock_reply_then_other_write_is_still_success() -> None:
    """An unlock that landed but whose reply was lost is success even if someone wrote after it."""
    store = LosingStore(lose=0)
    client = SemaphoreClient(store)
    client.set_max(2)
    client.lock("a")
    original_read = store.read
    calls = {"n": 0}

    def read_with_intruder(key: str) -> Versioned | None:
        calls["n"] += 1
        if calls["n"] == 1:  # the read-back after the lost reply (snapshots use read_many): someone locks first
            MemoryStore.swap(store, key, decode(original_read(key).value).lock("b").encode(),
                             original_read(key).mod_revision)
        return original_read(key)

    store.read = read_with_intruder  # type: ignore[method-assign]
    store.lose = 1
    client.unlock("a")
    assert decode(original_read(client.key).value).holders == ("b",)


def test_lost_race_is_retried() -> None:
    """A swap that loses to another writer is retried on the new value."""
    def intruder(store: MemoryStore) -> None:
        key = SemaphoreClient(store).key
        cur = store.read(key)
        MemoryStore.swap(store, key, decode(cur.value).set_max(5).encode(), cur.mod_revision)

    store = InterleavingStore(3, intruder)
    client = SemaphoreClient(store)
    client.set_max(5)
    client.lock("a")
    assert client.read().semaphore.holders == ("a",)


def test_endless_races_end_in_write_conflict() -> None:
    """When every attempt loses, the client gives up with WriteConflict."""
    def intruder(store: MemoryStore) -> None:
        key = SemaphoreClient(store).key
        cur = store.read(key)
        MemoryStore.swap(store, key, cur.value, cur.mod_revision)

    store = InterleavingStore(10_000, intruder)
    client = SemaphoreClient(store, max_attempts=5)
    client.set_max(3)
    with pytest.raises(WriteConflict):
        client.lock("a")


def test_corrupt_document_is_never_overwritten() -> None:
    """Lock, unlock and set-max refuse a corrupt document and leave its bytes alone."""
    store = MemoryStore()
    client = SemaphoreClient(store)
    store.put(client.key, b'{"semaphore":5,"max":1,"holders":[]}')
    for action in (lambda: client.lock("a"), lambda: client.unlock("a"), lambda: client.set_max(3)):
        with pytest.raises(CorruptDocument):
            action()
    assert store.read(client.key).value == b'{"semaphore":5,"max":1,"holders":[]}'


def test_reset_replaces_corrupt_document_only_if_unchanged() -> None:
    """reset writes a fresh document guarded by what the operator saw."""
    store = MemoryStore()
    client = SemaphoreClient(store)
    store.put(client.key, b"garbage")
    seen = client.read_raw()
    store.put(client.key, b"other garbage")
    with pytest.raises(WriteConflict):
        client.reset(2, seen)
    client.reset(2, client.read_raw())
    assert client.read().semaphore.max == 2


def test_threads_racing_never_exceed_max() -> None:
    """Many threads locking concurrently never produce more holders than max."""
    store = MemoryStore()
    client = SemaphoreClient(store)
    client.set_max(3)
    results: list[str] = []

    def worker(name: str) -> None:
        try:
            SemaphoreClient(store).lock(name)
            results.append(name)
        except SemaphoreFull:
            pass

    threads = [threading.Thread(target=worker, args=(f"h{i}",)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(client.read().semaphore.holders)
    assert len(results) == 3


def test_unlock_non_holder_raises() -> None:
    """Unlocking an id that is not a holder is NotHolder, and nothing is written."""
    store = MemoryStore()
    client = SemaphoreClient(store)
    with pytest.raises(NotHolder):
        client.unlock("nobody")
    assert store.read(client.key) is None
