"""GroupQueue against a real etcd: FIFO order, crashed and expired waiters, groups, deadlines, safety."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from etcd3 import etcdrpc

from locksmithd.errors import AmbiguousWrite
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.queue import GroupQueue, LeaseSession
from locksmithd.core.semaphore import decode
from harness.etcd import EtcdCluster
from harness.fleet import SemaphoreMonitor

LOCKSMITHCTL = str(Path(sys.executable).parent / "locksmithctl")
RETRY_MAX_S = 30.0  # the daemon passes LOCKSMITHD_RETRY_MAX; tests pick their own


def make_store(node: EtcdCluster, key_prefix: str) -> EtcdStore:
    endpoints = parse_endpoints(node.client_urls[0], "test", "endpoint")
    return EtcdStore(EtcdSettings(endpoints=endpoints, key_prefix=key_prefix, request_timeout_s=5.0))


def fresh_semaphore(store: EtcdStore, key_prefix: str, max_slots: int, *holders: str,
                    group: str = "") -> SemaphoreClient:
    """An empty semaphore of ``max_slots`` in ``group``, then locked for ``holders``."""
    client = SemaphoreClient(store, group, key_prefix)
    client.reset(max_slots, client.read_raw())
    for holder in holders:
        client.lock(holder)
    return client


def queued(store: EtcdStore, key_prefix: str, group: str = "") -> list[str]:
    """Holder ids with a waiter key, oldest first (straight from etcd)."""
    prefix = waiters_prefix(group, key_prefix)
    return [e.key[len(prefix):] for e in store.read_prefix(prefix)]


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    """Poll ``predicate`` (bounded); AssertionError naming ``what`` when it never holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


Start = Callable[[], Coroutine[Any, Any, Any]]


async def start_in_order(store: EtcdStore, key_prefix: str, starts: list[tuple[str, Start]],
                         group: str = "") -> list[asyncio.Task[Any]]:
    """Start each waiter only once the previous one's key is in etcd, so arrival order is known."""
    tasks: list[asyncio.Task[Any]] = []
    for holder, start in starts:
        tasks.append(asyncio.create_task(start()))
        await wait_until(lambda: holder in queued(store, key_prefix, group), f"{holder} to queue")
    return tasks


class TestOrder:
    def test_waiters_are_served_in_arrival_order(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """Hosts in different processes (stores) and sharing one process are served first come, first served."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        shared = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        own = {h: GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S) for h in ("h0", "h2", "h4")}
        queues = {"h0": own["h0"], "h1": shared, "h2": own["h2"], "h3": shared, "h4": own["h4"]}
        served: list[str] = []

        async def host(name: str) -> None:
            assert await queues[name].acquire(name)
            served.append(name)
            await asyncio.to_thread(client.unlock, name)

        async def scenario() -> None:
            starts: list[tuple[str, Start]] = [(h, functools.partial(host, h)) for h in queues]
            tasks = await start_in_order(store, key_prefix, starts)
            await asyncio.to_thread(client.unlock, "blocker")
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
            for queue in {id(q): q for q in queues.values()}.values():
                await queue.close()
                queue.store.close()

        asyncio.run(scenario())
        assert served == ["h0", "h1", "h2", "h3", "h4"]
        assert queued(store, key_prefix) == []
        store.close()

    def test_concurrent_waiters_of_one_process_share_one_lease(self, etcd_node: EtcdCluster,
                                                                key_prefix: str) -> None:
        """Many hosts queueing at once through one GroupQueue put their keys on one lease."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(store, "", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> set[int]:
            tasks = [asyncio.create_task(queue.acquire(f"h{i}")) for i in range(20)]
            await wait_until(lambda: len(queued(store, key_prefix)) == 20, "20 waiters")
            leases = {e.lease for e in store.read_prefix(waiters_prefix("", key_prefix))}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await queue.close()
            return leases

        leases = asyncio.run(scenario())
        assert len(leases) == 1 and 0 not in leases
        store.close()


CRASHING_WAITER = """
import asyncio, sys
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.queue import GroupQueue, LeaseSession
from locksmithd.core.semaphore import decode
store = EtcdStore(EtcdSettings(
    request_timeout_s=5.0, endpoints=parse_endpoints(sys.argv[1], "t", "k"), key_prefix=sys.argv[2]))
queue = GroupQueue(store, "", sys.argv[2], session=LeaseSession(store, ttl_s=2), retry_max_s=30.0)
asyncio.run(queue.acquire("crashed"))
"""


class TestDeparture:
    def test_crashed_waiter_drops_out_when_its_lease_expires(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """A SIGKILLed head of the queue blocks nobody for longer than its lease TTL."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        crashing = subprocess.Popen([sys.executable, "-c", CRASHING_WAITER, etcd_node.client_urls[0], key_prefix],
                                    stdin=subprocess.DEVNULL)
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> bool:
            await wait_until(lambda: queued(store, key_prefix) == ["crashed"], "the doomed waiter to queue")
            waiting = asyncio.create_task(queue.acquire("next"))
            await wait_until(lambda: queue.view.position("next") == 1, "next to queue behind the doomed waiter")
            crashing.send_signal(signal.SIGKILL)  # no revoke, no delete: only the lease can clean up
            await asyncio.to_thread(crashing.wait)
            await asyncio.to_thread(client.unlock, "blocker")
            acquired = await asyncio.wait_for(waiting, 20)
            await queue.close()
            queue.store.close()
            return acquired

        try:
            assert asyncio.run(scenario())
        finally:
            if crashing.poll() is None:
                crashing.kill()
                crashing.wait()
        assert client.read().semaphore.holders == ("next",)
        assert queued(store, key_prefix) == []
        store.close()

    def test_deadline_passing_removes_the_waiter_key(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """acquire returns False at the deadline and leaves the queue."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(store, "", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> bool:
            deadline = datetime.now(timezone.utc) + timedelta(seconds=0.5)
            result = await queue.acquire("late", deadline=deadline)
            await queue.close()
            return result

        assert asyncio.run(scenario()) is False
        assert queued(store, key_prefix) == []
        store.close()

    def test_holder_that_is_also_queued_is_skipped_and_its_key_removed(self, etcd_node: EtcdCluster,
                                                                       key_prefix: str) -> None:
        """A holder's waiter key at the head blocks nobody; its own acquire succeeds and removes the key."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 2, "a")
        session = LeaseSession(store)
        queue = GroupQueue(store, "", key_prefix, session=session, retry_max_s=RETRY_MAX_S)
        other = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> tuple[bool, bool]:
            lease = await session.ensure()
            await asyncio.to_thread(store.put, waiter_key("a", "", key_prefix), b"{}", lease)
            b_acquired = await asyncio.wait_for(other.acquire("b"), 10)  # a's key is older, but a holds
            a_acquired = await asyncio.wait_for(queue.acquire("a"), 10)
            await other.close()
            other.store.close()
            await queue.close()
            return b_acquired, a_acquired

        assert asyncio.run(scenario()) == (True, True)
        assert client.read().semaphore.holders == ("a", "b")
        assert queued(store, key_prefix) == []
        store.close()

    def test_reacquire_in_the_same_process_reads_afresh(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """After a slot was given back and taken by another host, a second acquire waits instead of
        trusting the view it had when its watch stopped."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1)
        queue = GroupQueue(store, "", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> tuple[bool, bool]:
            first = await queue.acquire("a")
            await asyncio.to_thread(client.unlock, "a")
            await asyncio.to_thread(client.lock, "b")
            second = await queue.acquire("a", deadline=datetime.now(timezone.utc) + timedelta(seconds=0.5))
            await queue.close()
            return first, second

        assert asyncio.run(scenario()) == (True, False)
        assert client.read().semaphore.holders == ("b",)
        store.close()


class SlowReplyStore(EtcdStore):
    """Delays the reply of the first winning slot request (a guarded write that also deletes a
    waiter key) until the winner has been released and the watch has delivered that release
    (the reply of a slot race can lose to the watch)."""

    def __init__(self, settings: EtcdSettings, release: Callable[[str], object]) -> None:
        super().__init__(settings)
        self.release = release
        self.queue: GroupQueue | None = None
        self.delayed = False

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             **guarded: Any) -> int:
        revision = super().swap(key, value, expected_mod_revision, delete=delete, **guarded)
        if revision and delete and not self.delayed:
            self.delayed = True
            self.release(delete[0].rsplit("/", 1)[-1])
            deadline = time.monotonic() + 10
            assert self.queue is not None
            while self.queue.view.semaphore_revision <= revision and time.monotonic() < deadline:
                time.sleep(0.01)
        return revision


class LostReplyStore(EtcdStore):
    """The first slot request (guarded write with a waiter-key delete) reports a lost reply;
    ``lands`` says whether the write happened."""

    def __init__(self, settings: EtcdSettings, lands: bool) -> None:
        super().__init__(settings)
        self.lands = lands
        self.lost = 0

    def swap(self, key: str, value: bytes, expected_mod_revision: int, *, delete: Sequence[str] = (),
             **guarded: Any) -> int:
        if self.lost or not delete:
            return super().swap(key, value, expected_mod_revision, delete=delete, **guarded)
        self.lost += 1
        if self.lands:
            super().swap(key, value, expected_mod_revision, delete=delete, **guarded)
        raise AmbiguousWrite("reply lost (test)")


class TestLostReply:
    @pytest.mark.parametrize("lands", [True, False], ids=["write-landed", "write-lost"])
    def test_lost_reply_is_resolved_by_reading_back_at_once(self, etcd_node: EtcdCluster, key_prefix: str,
                                                            lands: bool) -> None:
        """After an ambiguous slot request the waiter reads back right away (not at the next recheck):
        it holds exactly one slot either way."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        endpoints = parse_endpoints(etcd_node.client_urls[0], "test", "endpoint")
        lossy = LostReplyStore(EtcdSettings(request_timeout_s=5.0, endpoints=endpoints, key_prefix=key_prefix), lands)
        queue = GroupQueue(lossy, "", key_prefix, recheck_interval_s=300, retry_max_s=RETRY_MAX_S)

        async def scenario() -> bool:
            (waiting,) = await start_in_order(store, key_prefix, [("a", lambda: queue.acquire("a"))])
            await asyncio.sleep(0.3)  # the watch is open and quiet: only the release will wake "a"
            await asyncio.to_thread(client.unlock, "blocker")
            acquired = bool(await asyncio.wait_for(waiting, 10))
            await queue.close()
            return acquired

        assert asyncio.run(scenario())
        assert lossy.lost == 1
        assert client.read().semaphore.holders == ("a",)
        assert queued(store, key_prefix) == []
        lossy.close()
        store.close()


class TestSafety:
    def test_a_reply_that_loses_to_the_watch_does_not_stale_the_view(self, etcd_node: EtcdCluster,
                                                                     key_prefix: str) -> None:
        """A winning reply that arrives after later changes (here the winner's own release) must not
        leave the view with a document etcd never held at the view's revision: the next guarded write
        would then be built on it (e.g. with a released host in it). The head stops watching while it
        writes, so the view keeps the winner's document at the write's own revision; either way the
        pair must match etcd's history."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        endpoints = parse_endpoints(etcd_node.client_urls[0], "test", "endpoint")
        slow = SlowReplyStore(EtcdSettings(
            request_timeout_s=5.0, endpoints=endpoints, key_prefix=key_prefix), client.unlock)
        queue = GroupQueue(slow, "", key_prefix, retry_max_s=RETRY_MAX_S)
        slow.queue = queue

        async def scenario() -> None:
            (waiting,) = await start_in_order(store, key_prefix, [("a", lambda: queue.acquire("a"))])
            await asyncio.to_thread(client.unlock, "blocker")
            assert await asyncio.wait_for(waiting, 20)
            await queue.close()

        asyncio.run(scenario())
        assert slow.delayed
        at_view = store.snapshot([], client.key, [queue.view.semaphore_revision])
        assert at_view.semaphore_written_at == {queue.view.semaphore_revision}
        held = store._call("read at", lambda c: c.kvstub.Range(  # noqa: SLF001 - a historical read
            etcdrpc.RangeRequest(key=client.key.encode(), revision=queue.view.semaphore_revision), c.timeout))
        assert queue.view.semaphore == decode(bytes(held.kvs[0].value))
        assert SemaphoreClient(store, "", key_prefix).read().semaphore.holders == ()
        slow.close()
        store.close()

    def test_never_more_holders_than_max_under_many_waiters(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """60 hosts in 3 processes race for 3 slots; a watch checks holders <= max at every revision."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 3)
        monitor = SemaphoreMonitor(etcd_node.client_urls[:1], key_prefix=key_prefix)
        monitor.start()
        queues = [GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S) for _ in range(3)]
        releasers = [SemaphoreClient(q.store, "", key_prefix) for q in queues]
        served: list[str] = []

        async def host(index: int) -> None:
            name = f"h{index:02d}"
            queue, releaser = queues[index % 3], releasers[index % 3]
            assert await queue.acquire(name)
            served.append(name)
            await asyncio.sleep((index % 4) * 0.005)
            await asyncio.to_thread(releaser.unlock, name)

        async def scenario() -> None:
            await asyncio.wait_for(asyncio.gather(*(host(i) for i in range(60))), 60)
            for queue in queues:
                await queue.close()
                queue.store.close()
            await wait_until(lambda: bool(monitor.history) and not monitor.history[-1][3], "the last release to be seen")

        try:
            asyncio.run(scenario())
        finally:
            monitor.stop()
        assert sorted(served) == [f"h{i:02d}" for i in range(60)]
        assert monitor.violations == []
        assert 1 <= monitor.max_holders_seen <= 3
        acquisitions = sum(len(set(b[3]) - set(a[3])) for a, b in zip(monitor.history, monitor.history[1:]))
        assert acquisitions == 60  # every hand-off was seen, none twice
        assert client.read().semaphore.holders == ()
        store.close()


class TestGroups:
    def test_waiters_in_one_group_do_not_block_another(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """A full group with a queue leaves a second group's slot free for its own waiter."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "blocker", group="alpha")
        beta = fresh_semaphore(store, key_prefix, 1, group="beta")
        alpha_queue = GroupQueue(make_store(etcd_node, key_prefix), "alpha", key_prefix, retry_max_s=RETRY_MAX_S)
        beta_queue = GroupQueue(make_store(etcd_node, key_prefix), "beta", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> bool:
            stuck = asyncio.create_task(alpha_queue.acquire("a1"))
            await wait_until(lambda: queued(store, key_prefix, "alpha") == ["a1"], "a1 to queue in alpha")
            acquired = await asyncio.wait_for(beta_queue.acquire("b1"), 10)
            stuck.cancel()
            await asyncio.gather(stuck, return_exceptions=True)
            for queue in (alpha_queue, beta_queue):
                await queue.close()
                queue.store.close()
            return acquired

        assert asyncio.run(scenario())
        assert beta.read().semaphore.holders == ("b1",)
        assert queued(store, key_prefix, "alpha") == [] and queued(store, key_prefix, "beta") == []
        store.close()


class TestStatus:
    def test_status_shows_the_waiting_queue(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """`locksmithctl status` summarises the queue; --waiters lists waiters with position, since and age;
        --json has them under "waiting"."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "holder-x")
        queue = GroupQueue(store, "", key_prefix, retry_max_s=RETRY_MAX_S)
        base = [LOCKSMITHCTL, "--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix, "status"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}

        async def scenario() -> tuple[str, str]:
            tasks = await start_in_order(store, key_prefix, [("w-1", lambda: queue.acquire("w-1")),
                                                              ("w-2", lambda: queue.acquire("w-2"))])
            text = await asyncio.to_thread(subprocess.run, base + ["--waiters"], capture_output=True, text=True,
                                           env=env, timeout=30, check=True)
            as_json = await asyncio.to_thread(subprocess.run, base + ["--json"], capture_output=True, text=True,
                                              env=env, timeout=30, check=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await queue.close()
            return text.stdout, as_json.stdout

        text, raw = asyncio.run(scenario())
        rows = [line.split() for line in text.splitlines()]
        assert any(r[:4] == ["Waiting:", "2", "(head", "w-1,"] for r in rows)
        assert ["WAITING", "POSITION", "SINCE", "AGE"] in rows
        waiting_rows = [r for r in rows if r and r[0].startswith("w-")]
        assert [(r[0], r[1]) for r in waiting_rows] == [("w-1", "1"), ("w-2", "2")]
        assert all(datetime.fromisoformat(r[2]) for r in waiting_rows)
        document = json.loads(raw)
        assert document["holders"] == ["holder-x"]
        assert [(w["id"], w["position"]) for w in document["waiting"]] == [("w-1", 1), ("w-2", 2)]
        assert all(datetime.fromisoformat(w["since"]) for w in document["waiting"])
        assert all(w["age_s"] >= 0 for w in document["waiting"])
        store.close()


def test_a_predecessor_value_nested_too_deep_does_not_stop_the_queue(etcd_node: EtcdCluster,
                                                                     key_prefix: str) -> None:
    """Waiter keys ahead whose values are 100,000 nested arrays (json raises RecursionError): the host behind
    them keeps waiting while a slot is free and the head is such a key, and takes the slot once they go."""
    store = make_store(etcd_node, key_prefix)
    client = fresh_semaphore(store, key_prefix, 1, "blocker")
    queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
    lease = store.grant_lease(60)
    for name in ("hostile-1", "hostile-2"):
        store.put(waiter_key(name, "", key_prefix), b"[" * 100_000, lease)

    async def scenario() -> bool:
        task = asyncio.create_task(queue.acquire("h1"))
        try:
            await wait_until(lambda: "h1" in queued(store, key_prefix), "h1 to queue")
            await asyncio.to_thread(client.unlock, "blocker")  # a slot is free: the head's value is read
            await asyncio.sleep(1.0)
            await asyncio.to_thread(store.delete, waiter_key("hostile-1", "", key_prefix))
            await asyncio.sleep(1.0)  # now h1 is next behind hostile-2, with a slot free
            assert not task.done(), task  # a crash reading a key ahead would have ended it
            await asyncio.to_thread(store.revoke_lease, lease)
            return await asyncio.wait_for(task, 20)
        finally:
            await queue.close()
            queue.store.close()

    try:
        assert asyncio.run(scenario())
        assert client.read().semaphore.holders == ("h1",)
    finally:
        store.close()
