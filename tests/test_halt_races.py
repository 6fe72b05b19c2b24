"""Halt and resume lose a race against a concurrent writer on real etcd: retried through Backoff, landing once."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import pytest

from harness.etcd import EtcdCluster
from locksmithd.core.halt import Halt
from locksmithd.core.history import HistoryEvent
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.halt import halt_group, resume_group
from locksmithd.etcd.history import read_history
from locksmithd.etcd.lock import RACE_FIRST_PAUSE_S, SemaphoreClient
from locksmithd.etcd.remote_waiter import Granted, RemoteWaiter
from tests.fleetlock_support import etcd_settings

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class IntrudingStore(EtcdStore):
    """A real EtcdStore whose first guarded write is preceded by ``intrude`` (another writer, its own connection)."""

    def __init__(self, *args: Any, intrude: Callable[[], object]) -> None:
        super().__init__(*args)
        self.intrude: Callable[[], object] | None = intrude

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             puts: Sequence[tuple[str, bytes]] = (), absent: Sequence[str] = ()) -> int:
        intrude, self.intrude = self.intrude, None
        if intrude is not None:
            intrude()
        return super().swap(key, value, expected_mod_revision, delete=delete, puts=puts, absent=absent)


def racing(cluster: EtcdCluster, prefix: str, intrude: Callable[[SemaphoreClient], object],
           test: Callable[[SemaphoreClient, SemaphoreClient, list[float]], None]) -> None:
    """Run ``test(client, other, pauses)``; ``client``'s first write loses to ``intrude(other)``."""
    settings = etcd_settings(cluster.client_urls, prefix)
    other_store = EtcdStore(settings)
    other = SemaphoreClient(other_store, "", prefix)
    store = IntrudingStore(settings, intrude=lambda: intrude(other))
    pauses: list[float] = []
    client = SemaphoreClient(store, "", prefix, rng=random.Random(5), sleep=pauses.append)
    try:
        test(client, other, pauses)
    finally:
        store.close()
        other_store.close()


def events_named(client: SemaphoreClient, name: str) -> list[HistoryEvent]:
    events, _ = read_history(client.store, "", client.key_prefix)
    return [event for event in events if event.event == name]


def one_backoff_pause(pauses: list[float], caplog: pytest.LogCaptureFixture, name: str) -> None:
    """Exactly one retry, after a jittered first Backoff pause, announced by a log line."""
    assert len(pauses) == 1 and RACE_FIRST_PAUSE_S / 2 <= pauses[0] <= RACE_FIRST_PAUSE_S, pauses
    lines = [record.getMessage() for record in caplog.records if "lost a race" in record.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(f"{name}: lost a race on ") and "retry 1 in" in lines[0]


def test_halt_retries_a_lost_race_and_lands_once(etcd_node: EtcdCluster, key_prefix: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Another host takes a slot between halt's read and write: the halt is retried and written exactly once."""
    caplog.set_level(logging.DEBUG, logger="locksmithd.lock")
    halt = Halt("canary failed", "operator", NOW)

    def test(client: SemaphoreClient, other: SemaphoreClient, pauses: list[float]) -> None:
        assert halt_group(client, halt, [HistoryEvent(NOW, "operator", "halt", "test")]) == halt
        one_backoff_pause(pauses, caplog, "halting")
        snapshot = client.read()
        assert snapshot.halt == halt and snapshot.semaphore.holds("other")  # both writes kept
        assert len(events_named(client, "halt")) == 1

    racing(etcd_node, key_prefix, lambda other: other.lock("other"), test)


def test_halt_losing_to_another_halt_keeps_that_one(etcd_node: EtcdCluster, key_prefix: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Another host halts between halt's read and write: its halt stays in force, recorded once."""
    caplog.set_level(logging.DEBUG, logger="locksmithd.lock")
    first = Halt("health check failed", "host-a", NOW)

    def intrude(other: SemaphoreClient) -> None:
        halt_group(other, first, [HistoryEvent(NOW, "host-a", "halt", "first")])

    def test(client: SemaphoreClient, other: SemaphoreClient, pauses: list[float]) -> None:
        found = halt_group(client, Halt("second", "operator", NOW), [HistoryEvent(NOW, "operator", "halt", "x")])
        assert found == first and client.read().halt == first
        one_backoff_pause(pauses, caplog, "halting")
        assert [event.host for event in events_named(client, "halt")] == ["host-a"]

    racing(etcd_node, key_prefix, intrude, test)


def test_resume_retries_a_lost_race_and_lands_once(etcd_node: EtcdCluster, key_prefix: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The maximum changes between resume's read and write: the resume is retried, one "resume" event."""
    caplog.set_level(logging.DEBUG, logger="locksmithd.lock")
    halt = Halt("maintenance", "operator", NOW)

    def test(client: SemaphoreClient, other: SemaphoreClient, pauses: list[float]) -> None:
        assert halt_group(other, halt, [HistoryEvent(NOW, "operator", "halt", "test")]) == halt
        outcome = resume_group(client, HistoryEvent(NOW, "operator", "resume", "test"))
        assert outcome.removed == halt and outcome.recorded
        one_backoff_pause(pauses, caplog, "resuming")
        snapshot = client.read()
        assert snapshot.halt is None and snapshot.semaphore.max == 3
        assert len(events_named(client, "resume")) == 1

    racing(etcd_node, key_prefix, lambda other: other.set_max(3), test)


def test_fleetlock_poll_retries_a_lost_race_through_the_same_backoff(etcd_node: EtcdCluster, key_prefix: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A daemon takes a slot between a FleetLock poll's read and write: the poll is retried and takes the other."""
    caplog.set_level(logging.DEBUG, logger="locksmithd.lock")
    settings = etcd_settings(etcd_node.client_urls, key_prefix)
    other_store = EtcdStore(settings)
    other = SemaphoreClient(other_store, "", key_prefix)
    other.set_max(2)
    store = IntrudingStore(settings, intrude=lambda: other.lock("daemon"))
    try:
        answer = RemoteWaiter(store, "", key_prefix, 30, lambda: NOW).pre_reboot("c1", "127.0.0.1")
        assert answer == Granted(newly=True)
        holders = other.read().semaphore.holders
        assert sorted(holders) == ["c1", "daemon"], holders
        assert [line for line in (record.getMessage() for record in caplog.records)
                if line.startswith("pre-reboot c1 via fleetlock: lost a race on ")]
    finally:
        store.close()
        other_store.close()
