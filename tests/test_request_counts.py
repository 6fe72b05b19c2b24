"""What a coordinated reboot costs etcd, counted by etcd itself (its /metrics), so a removed request cannot come back.

bench/REQUESTS.md lists every request of one coordinated reboot and why it is sent.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from locksmithd.core.halt import Halt
from locksmithd.core.holder_record import HolderRecord
from locksmithd.core.semaphore import Semaphore
from locksmithd.errors import GroupHalted
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.halt import halt_group
from locksmithd.etcd.lock import Change, SemaphoreClient
from harness.etcd import EtcdCluster
from harness.etcd_metrics import requests_by_method
from harness.fleet import HostOptions, SimulatedHost, wait_for

T = TypeVar("T")


def counted(cluster: EtcdCluster, action: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """``action()``'s result and the etcd requests started meanwhile, by method (KV/Txn, ...)."""
    member = cluster.members[0]
    before = member.metrics()
    result = action()
    return result, requests_by_method(before, member.metrics())


@pytest.fixture
def client(etcd_node: EtcdCluster, key_prefix: str) -> SemaphoreClient:
    store = EtcdStore(EtcdSettings(endpoints=parse_endpoints(etcd_node.client_urls, "test", "endpoints"),
                                    request_timeout_s=5.0))
    semaphore = SemaphoreClient(store, "", key_prefix)
    semaphore.reset(2, None)
    return semaphore


def note(holder: str, text: str) -> Change:
    """A change of ``holder``'s record, as the daemon makes after taking its slot."""
    def apply(s: Semaphore) -> Semaphore:
        return s.with_record(holder, (s.record(holder) or HolderRecord()).with_changes(health=text))

    return Change(f"note {holder}", apply, lambda s: (s.record(holder) or HolderRecord()).health == text)


class TestKnownSnapshot:
    """``update(change, known)``: a holder's next change starts from what it just wrote, without a read."""

    def test_a_change_from_the_last_write_is_one_transaction(self, etcd_node: EtcdCluster,
                                                             client: SemaphoreClient) -> None:
        """Lock, then note and unlock from ``last_written``: one Txn each, no read before them."""
        client.lock("a")
        noted, sent = counted(etcd_node, lambda: client.update(note("a", "ok"), client.last_written))
        assert sent == {"KV/Txn": 1} and noted.record("a").health == "ok"  # type: ignore[union-attr]
        freed, sent = counted(etcd_node, lambda: client.unlock("a", known=client.last_written))
        assert sent == {"KV/Txn": 1} and not freed.holds("a") and client.read().semaphore == freed
        _, sent = counted(etcd_node, client.read)
        assert sent == {"KV/Txn": 1}  # a read is a Txn too: without ``known`` each change costs two

    def test_an_old_known_loses_the_race_and_the_change_lands_on_the_newest(self, etcd_node: EtcdCluster,
                                                                          client: SemaphoreClient) -> None:
        """Another writer came between: the guarded write fails (nothing written), a read, then the write."""
        client.lock("a")
        old = client.last_written
        other = SemaphoreClient(client.store, "", client.key_prefix)
        other.lock("b")
        freed, sent = counted(etcd_node, lambda: client.unlock("a", known=old))
        assert sent == {"KV/Txn": 3}
        assert freed.holders == ("b",) and client.read().semaphore.holders == ("b",)

    def test_a_known_that_shows_nothing_to_do_is_checked_on_a_read(self, client: SemaphoreClient) -> None:
        """An old view saying "not a holder" or "already noted" is never trusted: the change still lands."""
        old = client.read()  # "a" holds nothing here
        client.lock("a")
        assert not client.unlock("a", known=old).holds("a") and not client.read().semaphore.holds("a")
        client.lock("a")
        client.update(note("a", "x"))
        noted_old = client.last_written
        client.update(note("a", "y"))
        assert client.update(note("a", "x"), noted_old).record("a").health == "x"  # type: ignore[union-attr]

    def test_a_known_view_never_admits_a_holder_into_a_halted_group(self, etcd_node: EtcdCluster,
                                                                   client: SemaphoreClient) -> None:
        """A halt written after the known view: the write's halt guard refuses, the read says halted."""
        client.lock("a")
        known = client.last_written
        halt = Halt(reason="test", by="operator", since=datetime.now(timezone.utc))
        halt_group(client, halt, [])
        with pytest.raises(GroupHalted):
            client.update(Change("lock b", lambda s: s.lock("b"), lambda s: s.holds("b"), admits_holder=True), known)
        assert client.read().semaphore.holders == ("a",)

    def test_unlock_deletes_its_keys_in_the_same_write(self, etcd_node: EtcdCluster,
                                                       client: SemaphoreClient) -> None:
        """The alive key goes with the release: no DeleteRange of its own."""
        client.lock("a")
        alive = f"{client.key_prefix}alive-a"
        client.store.put(alive, b"a")  # type: ignore[attr-defined]
        _, sent = counted(etcd_node, lambda: client.unlock("a", delete=[alive], known=client.last_written))
        assert sent == {"KV/Txn": 1} and client.store.read(alive) is None


BUDGET = {"KV/Txn": 6, "KV/Put": 2, "KV/DeleteRange": 0, "Lease/LeaseGrant": 2, "Lease/LeaseRevoke": 2,
          "Watch/Watch": 0}
"""One host's coordinated reboot at most (bench/REQUESTS.md says what each is for); no Range outside a Txn."""
SLACK = {"KV/Txn": 1}
"""The daemon's once-a-minute look at the group (one Txn, at a random phase) may fall into the window."""


def test_one_coordinated_reboot_stays_within_its_request_budget(tmp_path: Path, etcd_node: EtcdCluster,
                                                                key_prefix: str) -> None:
    """need_reboot -> queue -> slot -> reboot -> new boot -> healthy -> released, counted by etcd per method.

    The counted reboot is the host's second: the group's tail key then names the key of its first, which
    took its slot (the steady state of a group; a group's very first waiter reads its place once more).
    """
    async def idle_after(boots: int) -> None:
        await wait_for(lambda: host.boots >= boots and host.daemon_state().get("DAEMON_STATE") == "idle", 30,
                       "reboot and release")

    host = SimulatedHost("h-count", tmp_path / "h-count", etcd_node.client_urls,
                         options=HostOptions(key_prefix=key_prefix), reboot_delay_s=0.3)

    async def scenario() -> dict[str, float]:
        await host.start()
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 30, "the first boot idle")
            host.need_reboot()
            await idle_after(2)
            await asyncio.sleep(0.3)
            member = etcd_node.members[0]
            before = member.metrics()
            host.need_reboot()
            await idle_after(3)
            await asyncio.sleep(0.3)
            return requests_by_method(before, member.metrics())
        finally:
            await host.stop()

    sent = asyncio.run(scenario())
    sent.pop("Lease/LeaseKeepAlive", None)  # paced by time, not by the reboot
    over = {method: count for method, count in sent.items()
            if count > BUDGET.get(method, 0) + SLACK.get(method, 0)}
    assert not over, f"over budget: {over} (all: {sent})"
    assert sent.get("KV/Txn", 0) >= BUDGET["KV/Txn"] - 2, f"the count itself looks wrong: {sent}"


def test_an_idle_daemon_renews_no_lease_after_its_release(tmp_path: Path, etcd_node: EtcdCluster,
                                                           key_prefix: str) -> None:
    """Once released, nothing of the host rides on its short lease: it is let expire, not renewed every
    third of its TTL for as long as the daemon stays idle (that was 6 requests a minute per host at 30 s)."""
    host = SimulatedHost("h-idle", tmp_path / "h-idle", etcd_node.client_urls, reboot_delay_s=0.3,
                         options=HostOptions(key_prefix=key_prefix, extra_env={"LOCKSMITHD_QUEUE_DROP_OUT": "3s"}))

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        await host.start()
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 30, "the first boot idle")
            host.need_reboot()
            await wait_for(lambda: host.boots >= 2 and host.daemon_state().get("DAEMON_STATE") == "idle", 30,
                           "reboot and release")
            member = etcd_node.members[0]
            holding = member.metrics()  # the window just after the release may still see the last renewal
            await asyncio.sleep(2.0)
            before = member.metrics()
            await asyncio.sleep(4.0)  # four renewal periods of the 3 s lease
            return requests_by_method(holding, before), requests_by_method(before, member.metrics())
        finally:
            await host.stop()

    _, idle = asyncio.run(scenario())
    assert idle.get("Lease/LeaseKeepAlive", 0) == 0, f"an idle daemon renewed a lease: {idle}"
