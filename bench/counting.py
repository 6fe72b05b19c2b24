"""A KeyValueStore proxy that counts its calls, to split etcd's request totals by who made them."""

from __future__ import annotations

from typing import Any, Sequence

from locksmithd.etcd.store import StoredKey, Versioned


class CountingStore:
    """Delegates read/swap to ``store``; ``reads`` and ``writes`` count the calls made.

    Each call is one etcd request (a Range or a Txn): the CAS path issues no others.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads = 0
        self.writes = 0

    @property
    def calls(self) -> int:
        return self.reads + self.writes

    def reset(self) -> None:
        self.reads = self.writes = 0

    def read(self, key: str) -> Versioned | None:
        self.reads += 1
        return self.store.read(key)  # type: ignore[no-any-return]

    def read_many(self, keys: Sequence[str]) -> dict[str, Versioned]:
        self.reads += 1
        return self.store.read_many(keys)  # type: ignore[no-any-return]

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             puts: Sequence[tuple[str, bytes]] = (), absent: Sequence[str] = ()) -> int:
        self.writes += 1
        return int(self.store.swap(key, value, expected_mod_revision, delete=delete, puts=puts, absent=absent))

    def delete(self, key: str) -> bool:
        self.writes += 1
        return bool(self.store.delete(key))

    def read_prefix(self, prefix: str, keys_only: bool = False) -> list[StoredKey]:
        self.reads += 1
        return self.store.read_prefix(prefix, keys_only)  # type: ignore[no-any-return]

    def delete_if_created(self, key: str, create_revision: int) -> bool:
        self.writes += 1
        return bool(self.store.delete_if_created(key, create_revision))
