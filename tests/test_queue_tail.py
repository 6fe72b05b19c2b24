"""The queue finds its place by name against a real etcd: the tail key, `after` pointers, served checks.

etcd 3.4 reads the whole waiter range for any range bounded by create
revision, so these tests count such reads ("scans") and check that the
usual paths never make one: queueing behind others, handoffs, a restarted
host, recovery after a compaction.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from harness.etcd import EtcdCluster
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import served_key, tail_key, waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.queue import GroupQueue, LeaseSession
from locksmithd.etcd.store import Place, StoredKey
from tests.test_queue_etcd import RETRY_MAX_S, fresh_semaphore, make_store, queued, start_in_order, wait_until


class ScanCountingStore(EtcdStore):
    """Counts the place reads that make etcd scan the queue."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.scans = 0

    def locate(self, *args: Any) -> Place:
        self.scans += 1
        return super().locate(*args)

    def predecessors(self, *args: Any) -> tuple[StoredKey, ...]:
        self.scans += 1
        return super().predecessors(*args)


def counting_store(node: EtcdCluster, key_prefix: str) -> ScanCountingStore:
    return ScanCountingStore(make_store(node, key_prefix).settings)


def after_pointer(store: EtcdStore, holder: str, key_prefix: str) -> Any:
    stored = store.read(waiter_key(holder, "", key_prefix))
    assert stored is not None, f"{holder} has no waiter key"
    return json.loads(stored.value).get("after", "absent")


class TestTail:
    def test_the_tail_names_the_newest_waiter_and_each_value_names_the_one_ahead(
            self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(counting_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        names = ["a", "b", "c", "d"]

        async def scenario() -> None:
            tasks = await start_in_order(store, key_prefix, [(n, lambda n=n: queue.acquire(n)) for n in names])
            await wait_until(lambda: all(after_pointer(store, n, key_prefix) != "absent" for n in names[1:]),
                             "every waiter behind the head to name the one ahead")
            tail = store.read(tail_key("", key_prefix))
            assert tail is not None and tail.value.decode() == waiter_key("d", "", key_prefix)
            created = {e.key: e.create_revision for e in store.read_prefix(waiters_prefix("", key_prefix))}
            assert tail.mod_revision == created[waiter_key("d", "", key_prefix)]
            for ahead, behind in zip(names, names[1:]):
                pointer = after_pointer(store, behind, key_prefix)
                assert pointer["key"] == waiter_key(ahead, "", key_prefix)
                assert pointer["created"] == created[waiter_key(ahead, "", key_prefix)]
                assert pointer["seen"] >= pointer["created"]
            assert queue.store.scans <= 1  # only the first host, queueing behind no tail, read its place
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await queue.close()

        asyncio.run(scenario())
        queue.store.close()
        store.close()


class TestHandoffsByName:
    def test_a_rollout_is_served_in_order_without_reading_the_queue(self, etcd_node: EtcdCluster,
                                                                    key_prefix: str) -> None:
        """Each handoff is found from the deletion of the key ahead and one read of named keys:
        twelve hosts, each in its own queue and lease as on real hosts, served in arrival order,
        with no queue scan after the first host's."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        names = [f"h{i:02d}" for i in range(12)]
        stores = {n: counting_store(etcd_node, key_prefix) for n in names}
        queues = {n: GroupQueue(stores[n], "", key_prefix, retry_max_s=RETRY_MAX_S,
                                session=LeaseSession(stores[n], 10, 600)) for n in names}
        served: list[str] = []

        async def host(name: str) -> None:
            assert await queues[name].acquire(name)
            served.append(name)
            await asyncio.to_thread(client.unlock, name)

        async def scenario() -> None:
            tasks = await start_in_order(store, key_prefix, [(n, lambda n=n: host(n)) for n in names])
            await asyncio.sleep(0.5)
            await asyncio.to_thread(client.unlock, "blocker")
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            for queue in queues.values():
                await queue.close()

        asyncio.run(scenario())
        assert served == names
        scans = {n: s.scans for n, s in stores.items()}
        assert sum(scans.values()) <= 1, scans
        for s in stores.values():
            s.close()
        store.close()

    def test_a_waiter_leaving_the_middle_keeps_the_order(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """A host that gives up in the middle is not served; the hosts behind it keep their order
        (they read their place once, the expensive way: it did not leave by taking a slot)."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(counting_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        names = ["a", "b", "c", "d", "e"]
        served: list[str] = []

        async def host(name: str) -> None:
            assert await queue.acquire(name)
            served.append(name)
            await asyncio.to_thread(client.unlock, name)

        async def scenario() -> None:
            tasks = dict(zip(names, await start_in_order(store, key_prefix,
                                                          [(n, lambda n=n: host(n)) for n in names])))
            await asyncio.sleep(0.5)
            tasks["c"].cancel()
            await wait_until(lambda: "c" not in queued(store, key_prefix), "c to leave the queue")
            await asyncio.to_thread(client.unlock, "blocker")
            await asyncio.wait_for(asyncio.gather(*(t for n, t in tasks.items() if n != "c")), 60)
            await queue.close()

        asyncio.run(scenario())
        assert served == ["a", "b", "d", "e"]
        queue.store.close()
        store.close()


class TestRestart:
    def test_a_restarted_host_keeps_its_place_and_moves_its_key_to_its_new_lease(
            self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        first = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        others = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        key = waiter_key("b", "", key_prefix)

        async def scenario() -> list[str]:
            tasks = await start_in_order(store, key_prefix, [("a", lambda: others.acquire("a")),
                                                              ("b", lambda: first.acquire("b")),
                                                              ("c", lambda: others.acquire("c"))])
            before = store.read_prefix(key)[0]
            # The daemon of b dies without leaving the queue: its key stays on its old lease.
            first._local["b"].create_revision = 0  # noqa: SLF001 - as if the process ended here
            tasks[1].cancel()
            await asyncio.gather(tasks[1], return_exceptions=True)
            restarted = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
            again = asyncio.create_task(restarted.acquire("b"))
            await wait_until(lambda: store.read_prefix(key)[0].lease != before.lease, "b's key on the new lease")
            assert store.read_prefix(key)[0].create_revision == before.create_revision
            order: list[str] = []

            async def serve(name: str, task: asyncio.Task[Any]) -> None:
                assert await task
                order.append(name)
                await asyncio.to_thread(client.unlock, name)

            await asyncio.to_thread(client.unlock, "blocker")
            await asyncio.wait_for(asyncio.gather(serve("a", tasks[0]), serve("b", again), serve("c", tasks[2])), 60)
            for queue in (first, others, restarted):
                await queue.close()
            return order

        assert asyncio.run(scenario()) == ["a", "b", "c"]
        store.close()


class TestOwnKeyRemoved:
    def test_a_waiter_whose_key_an_operator_removed_queues_again_at_once(self, etcd_node: EtcdCluster,
                                                                        key_prefix: str) -> None:
        """A waiter behind others watches its own key's deletion: it queues again (at the back) within
        moments, not at its hourly check."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S,
                           session=LeaseSession(queue_store := make_store(etcd_node, key_prefix), 10, 600))
        key_c = waiter_key("c", "", key_prefix)

        async def scenario() -> None:
            tasks = await start_in_order(store, key_prefix, [(n, lambda n=n: queue.acquire(n)) for n in "abc"])
            await wait_until(lambda: queue.position("c") is not None, "c to be placed")
            before = store.read_prefix(key_c)[0].create_revision
            assert store.delete(key_c)
            await wait_until(lambda: bool(store.read_prefix(key_c)) and
                             store.read_prefix(key_c)[0].create_revision != before, "c to queue again", 10)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await queue.close()

        asyncio.run(scenario())
        queue_store.close()
        store.close()


class TestCompactedPointer:
    def test_a_pointer_seen_before_a_compaction_still_places_the_host_behind(self, fresh_etcd_node: EtcdCluster) -> None:
        """b names a as the key ahead; a takes a slot and etcd is compacted past both; c queues behind b:
        its watch on a cannot replay a's departure, so it reads again and still learns b is the head."""
        store = make_store(fresh_etcd_node, "")
        client = fresh_semaphore(store, "", 1, "blocker")
        queue = GroupQueue(make_store(fresh_etcd_node, ""), "", "", retry_max_s=RETRY_MAX_S)
        late = GroupQueue(make_store(fresh_etcd_node, ""), "", "", retry_max_s=RETRY_MAX_S)

        async def scenario() -> list[str]:
            a, b = await start_in_order(store, "", [("a", lambda: queue.acquire("a")),
                                                    ("b", lambda: queue.acquire("b"))])
            await wait_until(lambda: after_pointer(store, "b", "") != "absent", "b to name a")
            await asyncio.to_thread(client.unlock, "blocker")
            assert await asyncio.wait_for(a, 20)
            for n in range(3):
                store.put(f"filler/{n}", b"x")
            store._call("compact", lambda c: c.compact(store.read_prefix("filler/")[-1].mod_revision))
            (c,) = await start_in_order(store, "", [("c", lambda: late.acquire("c"))])
            await wait_until(lambda: late.position("c") == (2, 0), "c to know it is next in line")
            order = []
            await asyncio.to_thread(client.unlock, "a")
            assert await asyncio.wait_for(b, 20)
            order.append("b")
            await asyncio.to_thread(client.unlock, "b")
            assert await asyncio.wait_for(c, 20)
            order.append("c")
            await queue.close()
            await late.close()
            return order

        assert asyncio.run(scenario()) == ["b", "c"]
        assert SemaphoreClient(store).read().semaphore.holders == ("c",)
        store.close()


class TestHostilePointer:
    def test_a_pointer_no_host_could_have_written_is_not_followed(self, etcd_node: EtcdCluster,
                                                                   key_prefix: str) -> None:
        """A waiter value naming the semaphore as the key ahead (written by hand) is not watched as a waiter:
        the host behind reads its place the expensive way, knows it is next, and is served in order."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        behind = GroupQueue(counting_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        key_a = waiter_key("a", "", key_prefix)

        async def scenario() -> list[str]:
            (a,) = await start_in_order(store, key_prefix, [("a", lambda: queue.acquire("a"))])
            await wait_until(lambda: queue.position("a") == (1, 0), "a to head the queue")
            entry = store.read_prefix(key_a)[0]
            hostile = {"since": "2026-12-01T00:00:00.000+00:00",
                       "after": {"key": client.key, "created": 1, "seen": 1}}
            assert store.reput(key_a, json.dumps(hostile).encode(), entry.lease, entry.create_revision)
            (b,) = await start_in_order(store, key_prefix, [("b", lambda: behind.acquire("b"))])
            await wait_until(lambda: behind.position("b") == (2, 0), "b to know it is next in line")
            assert behind.store.scans >= 1  # it read its place instead of following the pointer
            order = []
            await asyncio.to_thread(client.unlock, "blocker")
            assert await asyncio.wait_for(a, 20)
            order.append("a")
            await asyncio.to_thread(client.unlock, "a")
            assert await asyncio.wait_for(b, 20)
            order.append("b")
            await queue.close()
            await behind.close()
            return order

        assert asyncio.run(scenario()) == ["a", "b"]
        behind.store.close()
        store.close()


class TestPositionBound:
    def test_a_waiter_behind_the_next_knows_an_upper_bound_of_its_place(self, etcd_node: EtcdCluster,
                                                                       key_prefix: str) -> None:
        """Tickets (the tail's version) and the last served ticket bound a waiter's place without reading
        the queue: exact while nobody left without a slot, never below the true place."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)
        names = ["a", "b", "c", "d", "e"]

        async def scenario() -> None:
            tasks = dict(zip(names, await start_in_order(store, key_prefix,
                                                          [(n, lambda n=n: queue.acquire(n)) for n in names])))
            await wait_until(lambda: [queue.position(n) for n in names] == [(i + 1, 0) for i in range(5)],
                             "every place known")
            await asyncio.to_thread(client.unlock, "blocker")
            assert await asyncio.wait_for(tasks["a"], 20)
            assert store.read(served_key("", key_prefix)).value == b"1"  # a's ticket
            await wait_until(lambda: queue.position("b") == (1, 0) and queue.position("c") == (2, 0),
                             "b heads the queue, c next")
            for name, true_place in (("d", 3), ("e", 4)):
                place = queue.position(name)
                assert place is not None and place[0] >= true_place  # an upper bound, maybe not yet refreshed
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            await queue.close()

        asyncio.run(scenario())
        queue.store.close()
        store.close()
