"""collect_status on an in-memory queue: the summary alone agrees with the full listing, whatever the values."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from locksmithd.ctl.status_view import collect_status, render_json, render_text
from locksmithd.etcd.keys import semaphore_key, waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from harness.memory_store import MemoryStore
from locksmithd.etcd.store import StoredKey

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


class LeasedStore(MemoryStore):
    """A MemoryStore whose waiter keys carry leases, as etcd's do (``put_waiter``; lease 0: none)."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: dict[str, int] = {}

    def put_waiter(self, key: str, value: bytes, lease: int = 7) -> None:
        self.put(key, value)
        self.leases[key] = lease

    def read_prefix(self, prefix: str, keys_only: bool = False) -> list[StoredKey]:
        return [StoredKey(e.key, b"" if keys_only else e.value, e.create_revision, e.mod_revision,
                          self.leases.get(e.key, 0)) for e in super().read_prefix(prefix)]


def since(minutes_ago: int, **extra: str) -> bytes:
    moment = (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds")
    return json.dumps({"since": moment, **extra}).encode()


def queue_store() -> LeasedStore:
    store = LeasedStore()
    store.put(semaphore_key(), json.dumps({"semaphore": 0, "max": 1, "holders": ["h"]}).encode())
    store.put_waiter(waiter_key("h"), since(90))  # a holder's leftover key: passed over
    store.put_waiter(waiter_key("w1"), since(5, after="x"))  # unknown fields are fine
    store.put_waiter(waiter_key("w2"), b'{"since": "not a time"}')
    store.put_waiter(waiter_key("w3"), since(42, via="fleetlock"))  # an earlier since, but the head queued first
    store.put_waiter(waiter_key("w4"), b'{"since": "2026-12-01T11:00:00"}')  # no zone: no age
    store.put_waiter(waiter_key("w5"), since(60) + b" trailing")  # not JSON
    store.put_waiter(waiter_key("w6"), b"[" * 100_000)  # nested too deep: no since, no crash
    store.put_waiter(waiter_key("w7"), b' \n' + since(1) + b'\n')  # whitespace around: still JSON
    store.put_waiter(waiters_prefix() + "bad%0Aid", since(3))
    store.put_waiter(waiter_key("nolease"), since(99), lease=0)
    return store


def test_the_summary_alone_matches_the_listing() -> None:
    """Count, head and longest wait are the same with and without the per-waiter listing."""
    client = SemaphoreClient(queue_store())
    listed = collect_status(client, "", "", NOW)
    summary = collect_status(client, "", "", NOW, list_waiters=False)
    assert summary.waiters == ()
    assert [w.holder for w in listed.waiters] == ["w1", "w2", "w3", "w4", "w5", "w6", "w7"]
    assert [w.position for w in listed.waiters] == [1, 2, 3, 4, 5, 6, 7]
    for report in (listed, summary):
        assert (report.waiting, report.head, report.longest_wait) == (7, "w1", timedelta(minutes=5))
        assert report.ignored_waiters == (waiters_prefix() + "bad%0Aid",)
        assert report.leaseless_waiters == (waiter_key("nolease"),)
    assert render_text(summary) == render_text(listed)
    assert render_text(summary).splitlines()[-1] == "Waiting: 7 (head w1, longest wait 5m00s)"


def test_each_waiter_keeps_what_its_value_says() -> None:
    """since as written, an age only for a zoned time, via only when it is a valid name."""
    report = collect_status(SemaphoreClient(queue_store()), "", "", NOW)
    shown = {w.holder: (w.since, w.age, w.via) for w in report.waiters}
    assert shown["w1"] == ((NOW - timedelta(minutes=5)).isoformat(timespec="milliseconds"), timedelta(minutes=5), None)
    assert shown["w2"] == ("not a time", None, None)
    assert shown["w3"][1:] == (timedelta(minutes=42), "fleetlock")
    assert shown["w4"] == ("2026-12-01T11:00:00", None, None)
    assert shown["w5"] == shown["w6"] == (None, None, None)
    assert shown["w7"][1] == timedelta(minutes=1)
    document = json.loads(render_json(report))
    assert [w["id"] for w in document["waiting"]] == ["w1", "w2", "w3", "w4", "w5", "w6", "w7"]
    assert document["ignored_waiter_keys"] == [waiters_prefix() + "bad%0Aid", waiter_key("nolease")]


def test_an_empty_queue_has_no_summary_line() -> None:
    store = LeasedStore()
    store.put(semaphore_key(), json.dumps({"semaphore": 1, "max": 1, "holders": []}).encode())
    report = collect_status(SemaphoreClient(store), "", "", NOW, list_waiters=False)
    assert (report.waiting, report.head, report.longest_wait) == (0, None, None)
    assert "Waiting" not in render_text(report)


def test_the_summary_gives_this_hosts_position() -> None:
    """The issue's summary: count, head, longest wait and this host's place, without --waiters."""
    client = SemaphoreClient(queue_store())
    report = collect_status(client, "", "", NOW, list_waiters=False, this_host="w3")
    assert report.this_host_position == 3
    assert "this host at position 3)" in render_text(report).splitlines()[-1]
    assert json.loads(render_json(report))["this_host"] == {"id": "w3", "position": 3, "holds_slot": False}
    holder = collect_status(client, "", "", NOW, list_waiters=False, this_host="h")
    assert holder.this_host_position is None  # its leftover waiter key is not a place in the queue
    assert json.loads(render_json(holder))["this_host"] == {"id": "h", "position": None, "holds_slot": True}
    assert "this host" not in render_text(holder)
    elsewhere = collect_status(client, "", "", NOW, list_waiters=False)
    assert json.loads(render_json(elsewhere))["this_host"] is None
