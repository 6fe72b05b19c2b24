"""EtcdLockStrategy against a real etcd: what it records in the holder record, and when it stays quiet."""

from __future__ import annotations

import asyncio
import logging

import pytest

from harness.etcd import EtcdCluster
from locksmithd.etcd.keys import waiter_key
from locksmithd.strategies.etcd_lock import EtcdLockStrategy
from tests.test_queue_etcd import RETRY_MAX_S, fresh_semaphore, make_store


def strategy(node: EtcdCluster, key_prefix: str, holder: str) -> EtcdLockStrategy:
    return EtcdLockStrategy(make_store(node, key_prefix), holder, "", key_prefix, retry_max_s=RETRY_MAX_S,
                            recheck_interval_s=300.0)


def test_a_health_note_landing_after_the_release_is_not_a_warning(
        etcd_node: EtcdCluster, key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """The daemon sends health notes in the background; one that lands after the host's own healthy
    release finds no slot: that is expected, not 'an operator released it?'."""
    store = make_store(etcd_node, key_prefix)
    fresh_semaphore(store, key_prefix, 1, "host-a")
    host = strategy(etcd_node, key_prefix, "host-a")

    async def scenario() -> None:
        await host.note_health("soaking 3s")
        await host.release_healthy("all checks passed")
        await host.note_health("soaking 1s")  # the late one

    with caplog.at_level(logging.DEBUG, logger="locksmithd.strategy"):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "holds no slot any more" in caplog.text
    host.store.close()
    store.close()


def test_a_record_change_for_a_slot_an_operator_released_is_a_warning(
        etcd_node: EtcdCluster, key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(etcd_node, key_prefix)
    client = fresh_semaphore(store, key_prefix, 1, "host-b")
    host = strategy(etcd_node, key_prefix, "host-b")
    client.unlock("host-b")  # the operator

    with caplog.at_level(logging.WARNING, logger="locksmithd.strategy"):
        asyncio.run(host.rebooting())
    assert "an operator released it?" in caplog.text
    host.store.close()
    store.close()


def test_close_revokes_every_lease_it_holds(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """SIGTERM during a reboot: the alive key goes at once (its lease revoked), and so does the far lease,
    although no key is known to be on it: a queueing write whose reply was lost (a paused leader) may land
    later and create a waiter key there, which must not outlive the daemon (soak seed 1699059275)."""
    store = make_store(etcd_node, key_prefix)
    fresh_semaphore(store, key_prefix, 1)
    host = strategy(etcd_node, key_prefix, "host-c")

    async def scenario() -> tuple[int, int]:
        assert await host.acquire(None)
        session = host.queue.session
        near, far = session.lease_id, session._far.lease_id
        assert near is not None and far is not None and near != far
        assert store.read(host.alive_key) is not None
        late = waiter_key("host-c", "", key_prefix)
        await asyncio.to_thread(store.put, late, b"{}", far)  # the lost-reply enqueue, landing late
        await host.close()
        return near, far

    near, far = asyncio.run(scenario())
    assert store.read(host.alive_key) is None  # gone at once, not after the lease's TTL
    assert store.lease_ttl(near) == 0 and store.lease_ttl(far) == 0
    assert store.read(waiter_key("host-c", "", key_prefix)) is None
    store.close()
