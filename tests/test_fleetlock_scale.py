"""The FleetLock server at fleet scale, against real etcd: order, grace, no writes per refused poll, no stray leases."""

from __future__ import annotations

import asyncio
import json
import random
import time
import aiohttp
import pytest

from harness.etcd import EtcdCluster
from harness.leases import lease_ids, leases_without_keys
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import served_key, waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.queue import GroupQueue
from tests.fleetlock_support import Client, base_url, etcd_settings, running_server


def _counters(cluster: EtcdCluster) -> dict[str, float]:
    """etcd's own write and keep-alive counters."""
    metrics = cluster.members[0].metrics()
    keep_alives = sum(value for key, value in metrics.items()
                      if key.startswith("grpc_server_started_total") and 'grpc_method="LeaseKeepAlive"' in key)
    return {"puts": metrics["etcd_mvcc_put_total"], "deletes": metrics["etcd_mvcc_delete_total"],
            "proposals": metrics["etcd_server_proposals_committed_total"], "keep_alives": keep_alives}


async def _queue(client: Client, ids: list[str], bases: list[str], connections: int = 8) -> None:
    """Queue every id with one refused pre-reboot, ``connections`` at once, spread over ``bases``."""
    pending = iter(enumerate(ids))

    async def worker() -> None:
        for n, client_id in pending:
            status, answer = await client.pre_reboot(client_id, base=bases[n % len(bases)])
            assert status == 409, answer

    await asyncio.gather(*(worker() for _ in range(connections)))


@pytest.mark.slow
def test_order_is_kept_across_1000_clients_on_two_replicas(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """1,000 clients queued through two replicas at once are served one at a time in the order etcd queued
    them: at each turn the head, asking through either replica, is granted and others asking are refused."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        sem.lock("seed-holder")
        try:
            async with running_server(etcd_node.client_urls, key_prefix) as one, \
                    running_server(etcd_node.client_urls, key_prefix) as two, \
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
                client, bases = Client(session, base_url(one)), [base_url(one), base_url(two)]
                await _queue(client, [f"c-{n:04d}" for n in range(1000)], bases)
                entries = store.read_prefix(waiters_prefix("", key_prefix))
                arrival = [entry.key.rsplit("/", 1)[1] for entry in entries]  # by create revision
                assert len(arrival) == 1000
                sem.unlock("seed-holder")
                rng = random.Random(21)
                for turn, head in enumerate(arrival):
                    later = arrival[turn + 1:]
                    if later and turn % 2 == 0:  # one asking out of turn: refused, whichever replica it asks
                        other = rng.choice(later)
                        status, answer = await client.pre_reboot(other, base=rng.choice(bases))
                        assert status == 409 and answer["kind"] == "failed_lock_queued", (turn, other, answer)
                    assert await client.pre_reboot(head, base=rng.choice(bases)) == (200, {}), (turn, head)
                    if later and turn % 25 == 0:
                        status, answer = await client.pre_reboot(later[0], base=rng.choice(bases))
                        assert answer["kind"] == "failed_lock_semaphore_full" and "position 1 of" in answer["value"]
                        assert sem.read().semaphore.holders == (head,)
                    assert await client.steady_state(head, base=rng.choice(bases)) == (200, {})
                assert store.read_prefix(waiters_prefix("", key_prefix)) == []
        finally:
            store.close()

    asyncio.run(scenario())


def test_a_client_that_stops_asking_drops_out_after_grace(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The head stops asking: its place goes with its lease after --grace (3 s here); the client behind it,
    still asking every 0.25 s, keeps its own place and becomes the head; the head's old place is not kept."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        sem.lock("seed-holder")
        try:
            async with running_server(etcd_node.client_urls, key_prefix, grace_s=3) as server, \
                    aiohttp.ClientSession() as session:
                client = Client(session, base_url(server))
                for client_id in ("quiet", "asking", "third"):
                    assert (await client.pre_reboot(client_id))[0] == 409
                sem.unlock("seed-holder")
                status, answer = await client.pre_reboot("asking")
                assert answer["kind"] == "failed_lock_queued" and "position 2 of 3" in answer["value"]
                began = time.monotonic()
                while store.read(waiter_key("quiet", "", key_prefix)) is not None:
                    assert time.monotonic() - began < 6, "the quiet client's place outlived --grace"
                    assert (await client.pre_reboot("asking"))[0] == 409
                    assert (await client.pre_reboot("third"))[0] == 409
                    await asyncio.sleep(0.25)
                assert time.monotonic() - began >= 2.0  # it kept its place for (about) its grace time
                assert await client.pre_reboot("asking") == (200, {})
                assert (await client.pre_reboot("third"))[1]["kind"] == "failed_lock_semaphore_full"
                assert await client.steady_state("asking") == (200, {})
                assert (await client.pre_reboot("quiet"))[0] == 409  # queued again, at the back
                assert await client.pre_reboot("third") == (200, {})
        finally:
            store.close()

    asyncio.run(scenario())


def test_refused_polls_write_nothing_and_keep_alive_once_per_third_of_grace(fresh_etcd_node: EtcdCluster,
                                                                            key_prefix: str) -> None:
    """By etcd's own counters: 300 refused polls of 50 queued clients make no put, no delete, no raft
    proposal and no keep-alive (grace 600 s); with grace 3 s, a client asking every 0.1 s for 3 s costs
    at most one keep-alive per second, not one per poll."""
    cluster = fresh_etcd_node

    async def scenario() -> None:
        store = EtcdStore(etcd_settings(cluster.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        sem.lock("seed-holder")
        try:
            async with running_server(cluster.client_urls, key_prefix) as one, \
                    running_server(cluster.client_urls, key_prefix, grace_s=3) as short, \
                    aiohttp.ClientSession() as session:
                client, bases = Client(session, base_url(one)), [base_url(one)]
                ids = [f"c-{n:02d}" for n in range(50)]
                await _queue(client, ids, bases)
                before = _counters(cluster)
                rng = random.Random(5)
                for _ in range(300):
                    status, answer = await client.pre_reboot(rng.choice(ids))
                    assert status == 409 and answer["kind"] == "failed_lock_semaphore_full"
                after = _counters(cluster)
                assert after == before, (before, after)

                assert (await client.pre_reboot("short", "short", base=base_url(short)))[0] == 200
                assert (await client.pre_reboot("brief", "short", base=base_url(short)))[0] == 409
                before = _counters(cluster)
                began = time.monotonic()
                polls = 0
                while time.monotonic() - began < 3.0:
                    assert (await client.pre_reboot("brief", "short", base=base_url(short)))[0] == 409
                    polls += 1
                    await asyncio.sleep(0.1)
                after = _counters(cluster)
                assert polls >= 20
                assert 1 <= after["keep_alives"] - before["keep_alives"] <= 4, (polls, before, after)
                assert (after["puts"], after["deletes"]) == (before["puts"], before["deletes"])
                assert store.read(waiter_key("brief", "short", key_prefix)) is not None  # its place was kept
        finally:
            store.close()

    asyncio.run(scenario())


def test_no_lease_without_a_key_after_100_cycles(fresh_etcd_node: EtcdCluster, key_prefix: str) -> None:
    """100 pre-reboot and steady-state cycles, half of them queued first behind a held slot (with another
    client queueing and leaving): afterwards etcd holds no lease at all, and never one without a key."""
    cluster = fresh_etcd_node

    async def scenario() -> None:
        store = EtcdStore(etcd_settings(cluster.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        try:
            async with running_server(cluster.client_urls, key_prefix) as server, \
                    aiohttp.ClientSession() as session:
                client = Client(session, base_url(server))
                for n in range(100):
                    if n % 2:
                        sem.lock("other")
                        assert (await client.pre_reboot(f"cycle-{n}"))[0] == 409
                        assert (await client.pre_reboot(f"leaving-{n}"))[0] == 409
                        assert await client.steady_state(f"leaving-{n}") == (200, {})  # leaves the queue
                        assert leases_without_keys(cluster.client_urls[0]) == []
                        sem.unlock("other")
                    assert await client.pre_reboot(f"cycle-{n}") == (200, {})
                    assert await client.steady_state(f"cycle-{n}") == (200, {})
                assert sem.read().semaphore.holders == ()
        finally:
            store.close()

    asyncio.run(scenario())
    assert lease_ids(cluster.client_urls[0]) == []


def test_a_fleetlock_client_behind_a_daemon_follows_it(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A daemon queued first takes the slot first (its GroupQueue records its ticket in ``served``); the
    FleetLock client behind it is then the head, known from ``served`` without reading the queue, and
    takes the slot once the daemon gives it back."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        sem.lock("seed-holder")
        queue = GroupQueue(store, "", key_prefix, retry_max_s=1.0)
        try:
            async with running_server(etcd_node.client_urls, key_prefix) as server, \
                    aiohttp.ClientSession() as session:
                client = Client(session, base_url(server))
                daemon = asyncio.create_task(queue.acquire("daemon-host"))
                began = time.monotonic()
                while store.read(waiter_key("daemon-host", "", key_prefix)) is None:
                    assert time.monotonic() - began < 5, "the daemon never queued"
                    await asyncio.sleep(0.05)
                status, answer = await client.pre_reboot("zincati")
                assert status == 409 and "position 2 of 2" in answer["value"], answer
                sem.unlock("seed-holder")
                assert await asyncio.wait_for(daemon, 10) is True
                mine = json.loads(store.read(waiter_key("zincati", "", key_prefix)).value)  # type: ignore[union-attr]
                served = store.read(served_key("", key_prefix))
                assert served is not None and int(served.value) == mine["follows"]["ticket"]
                status, answer = await client.pre_reboot("zincati")
                assert answer["kind"] == "failed_lock_semaphore_full" and "position 1 of 1" in answer["value"]
                sem.unlock("daemon-host")
                assert await client.pre_reboot("zincati") == (200, {})
                served = store.read(served_key("", key_prefix))
                assert served is not None and served.value == str(mine["ticket"]).encode()  # its ticket now
        finally:
            await queue.close()
            store.close()

    asyncio.run(scenario())


def test_a_client_that_leaves_mid_queue_is_passed_over_once(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The client in the middle stops asking: once its grace ran out, the one behind it reads its place once
    and from then on follows the client ahead of the one that left, keeping the order."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        sem.lock("seed-holder")
        try:
            async with running_server(etcd_node.client_urls, key_prefix, grace_s=2) as server, \
                    aiohttp.ClientSession() as session:
                client = Client(session, base_url(server))
                for client_id in ("first", "middle", "last"):
                    assert (await client.pre_reboot(client_id))[0] == 409
                began = time.monotonic()
                while store.read(waiter_key("middle", "", key_prefix)) is not None:
                    assert time.monotonic() - began < 5, "the middle client's place outlived --grace"
                    for client_id in ("first", "last"):
                        assert (await client.pre_reboot(client_id))[0] == 409
                    await asyncio.sleep(0.2)
                first = store.read(waiter_key("first", "", key_prefix))
                assert first is not None
                status, answer = await client.pre_reboot("last")
                assert status == 409 and "position 2 of" in answer["value"], answer
                mine = json.loads(store.read(waiter_key("last", "", key_prefix)).value)  # type: ignore[union-attr]
                assert mine["follows"]["key"] == waiter_key("first", "", key_prefix)
                sem.unlock("seed-holder")
                assert (await client.pre_reboot("last"))[1]["kind"] == "failed_lock_queued"
                assert await client.pre_reboot("first") == (200, {})
                assert await client.steady_state("first") == (200, {})
                assert await client.pre_reboot("last") == (200, {})
        finally:
            store.close()

    asyncio.run(scenario())
