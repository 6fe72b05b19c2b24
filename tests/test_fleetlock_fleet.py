"""FleetLock clients and locksmithd daemons on one semaphore: replicas, grace expiry, a mixed fleet."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost, wait_for
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import waiter_key
from locksmithd.etcd.lock import SemaphoreClient
from tests.fleetlock_support import Client, base_url, etcd_settings, running_server


def test_two_replicas_with_alternating_requests(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """One client's requests alternate between two replicas: same answers as from one server."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        try:
            async with running_server(etcd_node.client_urls, key_prefix) as one, \
                    running_server(etcd_node.client_urls, key_prefix) as two, aiohttp.ClientSession() as session:
                client = Client(session, base_url(one))
                a, b = base_url(one), base_url(two)
                sem.lock("daemon-host")
                first = store.read_prefix(waiter_key("z-1", "", key_prefix))
                assert first == []
                assert (await client.pre_reboot("z-1", base=a))[1]["kind"] == "failed_lock_semaphore_full"
                created = store.read_prefix(waiter_key("z-1", "", key_prefix))[0]
                assert (await client.pre_reboot("z-1", base=b))[1]["kind"] == "failed_lock_semaphore_full"
                again = store.read_prefix(waiter_key("z-1", "", key_prefix))[0]
                assert (again.create_revision, again.lease) == (created.create_revision, created.lease)  # one place
                sem.unlock("daemon-host")
                assert await client.pre_reboot("z-1", base=b) == (200, {})
                assert await client.pre_reboot("z-1", base=a) == (200, {})  # recursive through the other
                assert await client.steady_state("z-1", base=a) == (200, {})
                assert await client.steady_state("z-1", base=b) == (200, {})
                assert sem.read().semaphore.holders == ()
        finally:
            store.close()

    asyncio.run(scenario())


def test_concurrent_clients_on_two_replicas_never_exceed_max(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Eight clients hammering two replicas at once, max 2: never more than 2 holders, everyone served."""
    store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
    SemaphoreClient(store, "", key_prefix).set_max(2)
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=2)
    monitor.start()

    async def scenario() -> None:
        async with running_server(etcd_node.client_urls, key_prefix) as one, \
                running_server(etcd_node.client_urls, key_prefix) as two, aiohttp.ClientSession() as session:
            bases = [base_url(one), base_url(two)]
            client = Client(session, bases[0])

            async def zincati(n: int) -> None:
                turn = n
                while (await client.pre_reboot(f"c-{n}", base=bases[turn % 2]))[0] != 200:
                    turn += 1
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                assert (await client.steady_state(f"c-{n}", base=bases[(turn + 1) % 2]))[0] == 200

            await asyncio.wait_for(asyncio.gather(*(zincati(n) for n in range(8))), 120)

    try:
        asyncio.run(scenario())
        assert monitor.violations == []
        assert monitor.max_holders_seen == 2
        assert monitor.history[-1][3] == ()
    finally:
        monitor.stop()
        store.close()


def test_grace_expiry_gives_the_head_place_back(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A client that keeps asking keeps its place past the grace time; one that stops drops out after it."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        try:
            async with running_server(etcd_node.client_urls, key_prefix, grace_s=2) as server, \
                    aiohttp.ClientSession() as session:
                client = Client(session, base_url(server))
                sem.lock("daemon-host")
                assert (await client.pre_reboot("gone"))[0] == 409  # queued first, then never asks again
                assert (await client.pre_reboot("keeps-asking"))[0] == 409
                sem.unlock("daemon-host")
                status, error = await client.pre_reboot("keeps-asking")
                assert error["kind"] == "failed_lock_queued"  # the free slot is kept for the head
                started = time.monotonic()
                while True:  # ask every 0.5 s, as Zincati would (more slowly)
                    status, error = await client.pre_reboot("keeps-asking")
                    if status == 200:
                        break
                    assert time.monotonic() - started < 15, error
                    await asyncio.sleep(0.5)
                waited = time.monotonic() - started
                assert 1.0 <= waited <= 10.0, waited  # about the grace time, as etcd expires leases
                assert store.read_prefix(waiter_key("gone", "", key_prefix)) == []
                assert sem.read().semaphore.holders == ("keeps-asking",)
        finally:
            store.close()

    asyncio.run(scenario())


def test_daemon_does_not_overtake_a_queued_fleetlock_client(tmp_path: Path, etcd_node: EtcdCluster,
                                                            key_prefix: str) -> None:
    """A daemon that queues after a FleetLock client waits for it, although it learns of the free slot first."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        sem = SemaphoreClient(store, "", key_prefix)
        host = SimulatedHost("daemon-late", tmp_path / "h", etcd_node.client_urls,
                             options=HostOptions(key_prefix=key_prefix), reboot_delay_s=0.5)
        try:
            async with running_server(etcd_node.client_urls, key_prefix, grace_s=30) as server, \
                    aiohttp.ClientSession() as session:
                client = Client(session, base_url(server))
                sem.lock("blocker")
                assert (await client.pre_reboot("zincati-early"))[0] == 409
                await host.start(needs_reboot=True)
                await wait_for(lambda: store.read_prefix(waiter_key("daemon-late", "", key_prefix)) != [], 20,
                               "the daemon queued")
                sem.unlock("blocker")
                await asyncio.sleep(2.0)  # the daemon's watch saw the free slot long ago
                assert sem.read().semaphore.holders == ()
                assert host.logind.reboots == []
                assert await client.pre_reboot("zincati-early") == (200, {})
                assert await client.steady_state("zincati-early") == (200, {})
                await wait_for(lambda: len(host.logind.reboots) == 1, 30, "the daemon's turn")
        finally:
            await host.stop()
            store.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_mixed_fleet_shares_one_budget(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Three locksmithd daemons and three simulated Zincati hosts, max 2: never more than 2 down, each
    host reboots exactly once, and every Zincati host gets its turn (no starvation)."""
    store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
    SemaphoreClient(store, "", key_prefix).set_max(2)
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=2)
    monitor.start()
    reboots: dict[str, int] = {}
    refusals: list[str] = []

    async def zincati(client: Client, name: str) -> None:
        """Zincati's loop: pre-reboot on every tick until granted, reboot, then steady-state until 200."""
        while (answer := await client.pre_reboot(name))[0] != 200:
            refusals.append(answer[1]["kind"])
            await asyncio.sleep(0.5)
        reboots[name] = reboots.get(name, 0) + 1
        await asyncio.sleep(1.0)  # "rebooting"
        while (await client.steady_state(name))[0] != 200:
            await asyncio.sleep(0.5)

    async def scenario() -> None:
        hosts = [SimulatedHost(f"daemon-{i}", tmp_path / f"h{i}", etcd_node.client_urls,
                               options=HostOptions(key_prefix=key_prefix), reboot_delay_s=1.0) for i in range(3)]
        await asyncio.gather(*(h.start() for h in hosts))
        try:
            async with running_server(etcd_node.client_urls, key_prefix, grace_s=10) as server, \
                    aiohttp.ClientSession() as session:
                client = Client(session, base_url(server))
                await wait_for(lambda: all(h.daemon_state().get("DAEMON_STATE") == "idle" for h in hosts), 20, "idle")
                for host in hosts:
                    host.need_reboot()
                clients = [asyncio.create_task(zincati(client, f"zincati-{i}")) for i in range(3)]
                await asyncio.wait_for(asyncio.gather(*clients), 120)
                await wait_for(lambda: all(_settled(h) for h in hosts), 120, "every daemon host rebooted")
                await asyncio.sleep(1.0)
                assert [len(h.logind.reboots) for h in hosts] == [1, 1, 1]
                assert reboots == {f"zincati-{i}": 1 for i in range(3)}
        finally:
            await asyncio.gather(*(h.stop() for h in hosts))

    try:
        asyncio.run(scenario())
        assert monitor.violations == []
        assert monitor.max_holders_seen == 2
        assert monitor.history[-1][3] == ()
        holders_seen = {h for observation in monitor.history for h in observation[3]}
        assert {f"zincati-{i}" for i in range(3)} | {f"daemon-{i}" for i in range(3)} <= holders_seen
        assert refusals and set(refusals) <= {"failed_lock_semaphore_full", "failed_lock_queued"}  # they did queue
    finally:
        monitor.stop()
        store.close()


def _settled(host: SimulatedHost) -> bool:
    return len(host.logind.reboots) >= 1 and host.boots >= 2 and host.daemon_state().get("DAEMON_STATE") == "idle"
