"""The etcd adapter: its gRPC error table (pure), the one guarded write and IPv6 targets."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from locksmithd.core.semaphore import decode, initial_semaphore
from locksmithd.errors import LeaseLost, StoreDenied, StoreError
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.grpc_errors import RULES, Action, classify
from locksmithd.core.halt import Halt
from locksmithd.core.history import HistoryEvent, decode_event
from locksmithd.errors import GroupHalted
from locksmithd.etcd.keys import history_prefix, waiter_key
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from harness.memory_store import MemoryStore
from locksmithd.etcd.store import ABSENT
from harness.etcd import EtcdCluster


class TestErrorTable:
    @pytest.mark.parametrize("code, details, outcome", [
        ("UNAUTHENTICATED", "etcdserver: invalid auth token", Action.REAUTHENTICATE),
        ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old", Action.REAUTHENTICATE),
        ("INVALID_ARGUMENT", "etcdserver: user name is empty", StoreDenied),
        ("INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password", StoreDenied),
        ("FAILED_PRECONDITION", "etcdserver: user name not found", StoreDenied),
        ("PERMISSION_DENIED", "etcdserver: permission denied", StoreDenied),
        ("NOT_FOUND", "etcdserver: requested lease not found", LeaseLost),
        ("UNAVAILABLE", "failed to connect to all addresses", Action.TRY_NEXT),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", Action.TRY_NEXT),
        ("UNKNOWN", "context deadline exceeded", Action.TRY_NEXT),
        ("CANCELLED", "", Action.TRY_NEXT),
        ("INTERNAL", "stream terminated", Action.TRY_NEXT),
        ("INVALID_ARGUMENT", "etcdserver: key is not provided", StoreError),
        ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded", StoreError),
        ("NOT_FOUND", None, StoreError),
    ])
    def test_each_status_maps_to_one_outcome(self, code: str, details: str | None, outcome: object) -> None:
        """Status code and etcd's detail text decide: our error, another endpoint, or a new token."""
        assert classify(code, details) is outcome

    def test_specific_rows_come_before_the_catch_alls(self) -> None:
        """A detail-specific row is never shadowed by an earlier catch-all row of the same code."""
        for index, rule in enumerate(RULES):
            for earlier in RULES[:index]:
                assert not (earlier.code == rule.code and earlier.detail == ""), (earlier, rule)

    def test_only_our_errors_or_actions(self) -> None:
        """Every outcome is an error of our tree or one of the two actions: nothing else can leak."""
        for rule in RULES:
            assert isinstance(rule.outcome, Action) or issubclass(rule.outcome, StoreError)


class TestGuardedWriteInMemory:
    def test_absent_means_revision_zero(self) -> None:
        """0 guards "must be absent" (like etcd's compare on a missing key); a stale revision loses."""
        store = MemoryStore()
        first = store.swap("k", b"1", ABSENT)
        assert first > 0 and store.swap("k", b"2", ABSENT) == 0
        assert store.swap("k", b"3", first) > first and store.read("k").value == b"3"  # type: ignore[union-attr]
        assert store.swap("k", b"4", first) == 0

    def test_absent_document_reads_as_revision_zero(self) -> None:
        """The lock path's snapshot of an absent document has mod revision 0, as the queue's view."""
        assert SemaphoreClient(MemoryStore()).read().mod_revision == ABSENT == 0


def store_for(cluster: EtcdCluster, key_prefix: str = "") -> EtcdStore:
    return EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(cluster.client_urls, "test", "endpoint"),
                                  key_prefix=key_prefix))


class TestGuardedWriteOnEtcd:
    def test_write_deletes_the_waiter_key_only_when_it_wins(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """The queue's acquisition is the lock path's write plus a delete in the same transaction."""
        store = store_for(etcd_node, key_prefix)
        try:
            client = SemaphoreClient(store, "", key_prefix)
            waiter = waiter_key("a", "", key_prefix)
            store.put(waiter, b"{}")
            taken = initial_semaphore().lock("a")
            assert client.write(taken, 12345, delete=(waiter,))[0] == 0  # stale guard: nothing changes
            assert store.read(client.key) is None and store.read(waiter) is not None
            revision, _ = client.write(taken, ABSENT, delete=(waiter,))
            stored = store.read(client.key)
            assert stored is not None and stored.mod_revision == revision and decode(stored.value).holders == ("a",)
            assert store.read(waiter) is None
        finally:
            store.close()

    def test_read_prefix_lists_keys_oldest_first(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """StoredKey records carry create revisions in arrival order and the lease (0: none)."""
        store = store_for(etcd_node, key_prefix)
        try:
            for name in ("b", "a", "c"):
                store.put(f"{key_prefix}q/{name}", name.encode())
            entries = store.read_prefix(f"{key_prefix}q/")
            assert [e.key.rsplit("/", 1)[1] for e in entries] == ["b", "a", "c"]
            assert [e.value for e in entries] == [b"b", b"a", b"c"] and {e.lease for e in entries} == {0}
            assert entries[0].create_revision < entries[1].create_revision < entries[2].create_revision
        finally:
            store.close()

    def test_read_prefix_reads_in_pages_at_one_revision(self, etcd_node: EtcdCluster, key_prefix: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        """Pages of 3 keys: every key once, oldest first (keys made in one transaction in key order), at the
        first page's revision (a key written between pages is not seen), values or keys only."""
        import locksmithd.etcd.raw as raw_module

        store = store_for(etcd_node, key_prefix)
        prefix = f"{key_prefix}pages/"
        try:
            names = [f"k{n:02d}" for n in (5, 3, 9, 1, 7, 0, 2, 8, 4, 6)]  # created out of key order
            for name in names:
                store.put(prefix + name, name.encode())
            store.swap(prefix + "z1", b"z1", ABSENT, puts=[(prefix + "z0", b"z0")])  # one create revision
            expected = [*names, "z0", "z1"]
            monkeypatch.setattr(raw_module, "PAGE_KEYS", 3)
            monkeypatch.setattr(raw_module, "PAGE_VALUES", 3)
            for keys_only in (False, True):
                entries = store.read_prefix(prefix, keys_only=keys_only)
                assert [e.key[len(prefix):] for e in entries] == expected
                assert [e.value for e in entries] == ([b""] * 12 if keys_only else [n.encode() for n in expected])
            pages: list[int] = []
            real_range = raw_module.etcdrpc.RangeRequest

            def range_request(**fields: object) -> object:
                if len(pages) == 1:  # between the first and second page: a key lands where page 3 reads
                    store.put(prefix + "k05a", b"late")
                pages.append(1)
                return real_range(**fields)

            monkeypatch.setattr(raw_module.etcdrpc, "RangeRequest", range_request)
            entries = store.read_prefix(prefix, keys_only=True)
            monkeypatch.setattr(raw_module.etcdrpc, "RangeRequest", real_range)
            assert len(pages) == 4 and [e.key[len(prefix):] for e in entries] == expected
            assert store.read(prefix + "k05a") is not None  # it landed, after the view was fixed
        finally:
            store.close()


class TestHaltAndHistoryInTheGuardedWrite:
    def test_a_halt_written_after_the_read_stops_the_acquisition(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """The race: a host read the semaphore at R, a halt lands at R+1, the host's transaction changes nothing."""
        store = store_for(etcd_node, key_prefix)
        try:
            client = SemaphoreClient(store, "", key_prefix)
            client.set_max(2)
            snapshot = client.read()
            waiter = waiter_key("a", "", key_prefix)
            store.put(waiter, b"{}")
            halt = Halt(reason="test", by="operator", since=datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc))
            assert store.swap(client.halt_key, halt.encode(), ABSENT) > 0  # the halt wins the race
            taken = snapshot.semaphore.lock("a")
            revision, _ = client.write(taken, snapshot.mod_revision, delete=(waiter,), admits_holder=True)
            assert revision == 0
            assert client.read().semaphore.holders == () and store.read(waiter) is not None
            assert client.read().halt == halt
            with pytest.raises(GroupHalted, match="halted"):
                client.lock("a")
            # A release is never blocked by a halt.
            store.delete(client.halt_key)
            client.lock("a")
            store.swap(client.halt_key, halt.encode(), ABSENT)
            assert client.unlock("a").holders == ()
        finally:
            store.close()

    def test_events_land_with_the_change_in_a_bounded_ring(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """Each event takes the next history number and its ring slot in the same transaction."""
        store = store_for(etcd_node, key_prefix)
        try:
            client = SemaphoreClient(store, "", key_prefix, history_limit=3)
            now = datetime.now(timezone.utc)
            for n in range(5):
                client.set_max(n + 1, events=(HistoryEvent(at=now, host="operator", event="set-max",
                                                           detail=f"max {n + 1}"),))
            assert client.read().semaphore.history_seq == 5
            ring = store.read_prefix(history_prefix("", key_prefix))
            assert len(ring) == 3
            details = sorted((e.mod_revision, decode_event(e.value).detail) for e in ring)
            assert [d for _, d in details] == ["max 3", "max 4", "max 5"]
        finally:
            store.close()
