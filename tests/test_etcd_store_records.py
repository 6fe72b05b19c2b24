"""StoredKey.from_kv, built without the dataclass constructor, gives exactly what the constructor gives."""

from __future__ import annotations

import dataclasses

import pytest
from etcd3.etcdrpc import kv_pb2

from locksmithd.etcd.store import StoredKey


def test_from_kv_fills_every_field_as_the_constructor_does() -> None:
    """Same fields, same values and types, equal and hashable alike, and still frozen."""
    kv = kv_pb2.KeyValue(key=b"prefix/waiters/a\xff", value=b'{"since": "x"}', create_revision=7,
                         mod_revision=9, lease=1234)
    entry = StoredKey.from_kv(kv)
    expected = StoredKey("prefix/waiters/a\udcff", b'{"since": "x"}', 7, 9, 1234)
    assert set(vars(entry)) == {field.name for field in dataclasses.fields(StoredKey)}
    assert entry == expected and hash(entry) == hash(expected) and repr(entry) == repr(expected)
    assert [type(getattr(entry, f.name)) for f in dataclasses.fields(StoredKey)] == [str, bytes, int, int, int]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.lease = 0  # type: ignore[misc]
