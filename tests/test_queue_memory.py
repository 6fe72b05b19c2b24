"""GroupQueue's logic against the in-memory QueueStore (harness/memory_store.py): fast, no etcd.

Real etcd stays the proof (tests/test_queue_*.py); these check the walk's
logic end to end through the store protocol: order, the limit, a waiter
leaving, a stuck head, a lost lease and broken watches.
"""

from __future__ import annotations

import asyncio
import random
from typing import Awaitable, Callable

import pytest

from harness.memory_store import MemoryQueueStore
from locksmithd.core.semaphore import decode
from locksmithd.errors import StoreUnavailable
from locksmithd.etcd.keys import semaphore_key, tail_key, waiter_key
from locksmithd.etcd.lease import LeaseSession
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.queue import GroupQueue
from locksmithd.etcd.watch import WatchEvent

TIMEOUT_S = 20.0


@pytest.fixture
def store() -> MemoryQueueStore:
    memory = MemoryQueueStore()
    yield memory  # type: ignore[misc]
    memory.close()


def queue_on(store: MemoryQueueStore, seed: int = 1, **options: float) -> GroupQueue:
    return GroupQueue(store, retry_max_s=1.0, session=LeaseSession(store), rng=random.Random(seed), **options)


def watch_limit(store: MemoryQueueStore, max_slots: int) -> list[int]:
    """Record the holder count of every semaphore write (from revision 1): the limit holds throughout."""
    counts: list[int] = []

    def on_events(events: list[WatchEvent], revision: int) -> None:
        counts.extend(len(decode(event.entry.value).holders) for event in events if event.kind == "put")

    key = semaphore_key()
    store.watch_range(key, key + "\0", 1, on_events, lambda error: None)
    return counts


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def queue_in_order(store: MemoryQueueStore, names: list[str],
                         acquire: Callable[[str], Awaitable[bool]]) -> dict[str, asyncio.Task[bool]]:
    """Start each waiter once the one before it has its key: arrival order is the list's."""
    tasks = {}
    for name in names:
        tasks[name] = asyncio.create_task(acquire(name))
        await wait_until(lambda: waiter_key(name) in store.data, f"{name}'s key")
    return tasks


async def serve_all(client: SemaphoreClient, tasks: dict[str, asyncio.Task[bool]]) -> list[str]:
    """Release each holder as soon as it holds; the order slots were taken in."""
    order: list[str] = []
    pending = dict(tasks)
    while pending:
        done, _ = await asyncio.wait(pending.values(), timeout=TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        assert done, f"nobody got a slot; waiting: {sorted(pending)}"
        for name in [name for name, task in pending.items() if task in done]:
            assert pending.pop(name).result() is True
            order.append(name)
        for name in order[-len(done):]:
            await asyncio.to_thread(client.unlock, name)
    return order


@pytest.mark.parametrize("seed", range(3))
def test_five_waiters_two_slots_first_come_first_served(seed: int) -> None:
    """5 waiters, max 2: slots go in arrival order, never more than 2 holders, one place read at most.

    The store delivers each change to its watches in a random order, so only the queue keeps the order.
    """
    store = MemoryQueueStore(shuffle=random.Random(seed))
    try:
        check_five_waiters(store)
    finally:
        store.close()


def check_five_waiters(store: MemoryQueueStore) -> None:
    client = SemaphoreClient(store)
    client.set_max(2)
    counts = watch_limit(store, 2)
    blocker = ["x", "y"]
    for name in blocker:
        client.lock(name)
    names = [f"h{i}" for i in range(5)]
    queues = [queue_on(store, seed) for seed in range(5)]  # one process each, as on real hosts

    async def scenario() -> list[str]:
        tasks = await queue_in_order(store, names, lambda name: queues[names.index(name)].acquire(name))
        for name in blocker:
            await asyncio.to_thread(client.unlock, name)
        try:
            return await serve_all(client, tasks)
        finally:
            for queue in queues:
                await queue.close()

    order = asyncio.run(scenario())
    assert order == names
    assert counts and max(counts) <= 2
    assert store.requests.get("locate", 0) <= 1, store.requests  # only the first, queued behind no tail


def test_a_waiter_leaving_mid_queue_keeps_the_order(store: MemoryQueueStore) -> None:
    """The middle waiter gives up: the ones behind it are still served in arrival order."""
    client = SemaphoreClient(store)
    client.set_max(1)
    client.lock("x")
    queues = [queue_on(store, seed) for seed in range(4)]  # one process each
    names = ["a", "b", "c", "d"]

    async def scenario() -> list[str]:
        tasks = await queue_in_order(store, names, lambda name: queues[names.index(name)].acquire(name))
        tasks.pop("b").cancel()
        await wait_until(lambda: waiter_key("b") not in store.data, "b's key removed")
        await asyncio.to_thread(client.unlock, "x")
        try:
            return await serve_all(client, tasks)
        finally:
            for queue in queues:
                await queue.close()

    assert asyncio.run(scenario()) == ["a", "c", "d"]


def test_a_head_that_never_takes_its_slot_is_skipped(store: MemoryQueueStore) -> None:
    """A foreign head leaving a free slot untaken is removed by the next in line after head_timeout_s."""
    SemaphoreClient(store).set_max(1)
    lease = store.grant_lease(600)
    store.enqueue(waiter_key("stuck"), b'{"since": "then", "after": null}', lease, tail_key())
    queue = queue_on(store, head_timeout_s=0.3, recheck_interval_s=0.2)

    async def scenario() -> bool:
        try:
            return await asyncio.wait_for(queue.acquire("next"), TIMEOUT_S)
        finally:
            await queue.close()

    assert asyncio.run(scenario()) is True
    assert waiter_key("stuck") not in store.data


def test_a_lost_lease_queues_again_and_broken_watches_recover(store: MemoryQueueStore) -> None:
    """Its lease expires: the waiter queues again and gets its slot; so it does after every watch broke."""
    client = SemaphoreClient(store)
    client.set_max(1)
    client.lock("x")
    queue = queue_on(store)

    async def scenario() -> bool:
        task = asyncio.create_task(queue.acquire("w"))
        await wait_until(lambda: waiter_key("w") in store.data, "w's key")
        first = store.data[waiter_key("w")][0]
        store.expire(first.lease)
        queue.session.on_lost()  # what the keep-alive reports when it finds the lease gone
        await wait_until(lambda: waiter_key("w") in store.data
                         and store.data[waiter_key("w")][0].create_revision > first.create_revision, "w queued again")
        store.break_watches(StoreUnavailable("memory store: watch stream lost"))
        await asyncio.to_thread(client.unlock, "x")
        try:
            return await asyncio.wait_for(task, TIMEOUT_S)
        finally:
            await queue.close()

    assert asyncio.run(scenario()) is True
    assert client.read().semaphore.holders == ("w",)


def test_a_host_queueing_behind_one_that_took_its_slot_reads_nothing_more(store: MemoryQueueStore) -> None:
    """The tail names a key whose ticket is ``served``: the enqueue's own reply places the host at the head
    (no snapshot, no locate); behind a key still waiting it reads by name as before."""
    SemaphoreClient(store).set_max(1)

    async def scenario() -> list[dict[str, int]]:
        seen = []
        for holder in ("first", "second"):
            queue = queue_on(store)
            before = dict(store.requests)
            try:
                assert await asyncio.wait_for(queue.acquire(holder), TIMEOUT_S)
            finally:
                await queue.close()
            seen.append({name: count - before.get(name, 0) for name, count in store.requests.items()
                         if count != before.get(name, 0)})
            await asyncio.to_thread(SemaphoreClient(store).unlock, holder)
        return seen

    first, second = asyncio.run(scenario())
    assert first.get("locate") == 1  # the group's very first waiter: an empty tail proves nothing
    assert "locate" not in second and "snapshot" not in second and second["enqueue"] == 1, second
    assert "watch" not in first and "watch" not in second  # a head with a free slot attempts before watching


def test_a_head_that_finds_the_group_full_watches_and_takes_the_freed_slot(store: MemoryQueueStore) -> None:
    """The impossible attempt: the head watches from its read's revision + 1 and wakes on the release."""
    client = SemaphoreClient(store)
    client.set_max(1)
    client.lock("holder")
    queue = queue_on(store)

    async def scenario() -> bool:
        task = asyncio.create_task(queue.acquire("head"))
        try:
            await wait_until(lambda: store.requests.get("watch", 0) >= 1, "the full group's head to watch")
            await asyncio.to_thread(client.unlock, "holder")
            return await asyncio.wait_for(task, TIMEOUT_S)
        finally:
            await queue.close()

    assert asyncio.run(scenario()) is True
    assert client.read().semaphore.holders == ("head",)


def test_close_while_waiting_revokes_the_lease_of_the_waiter_key(store: MemoryQueueStore) -> None:
    """Q4 keeps revoking every lease that may carry a key: a host stopped while it waits leaves no key."""
    client = SemaphoreClient(store)
    client.set_max(1)
    client.lock("holder")
    queue = GroupQueue(store, retry_max_s=1.0, session=LeaseSession(store, 10, 3600), rng=random.Random(1))

    async def scenario() -> None:
        task = asyncio.create_task(queue.acquire("waiting"))
        await wait_until(lambda: waiter_key("waiting") in store.data, "the waiter key")
        await queue.close()  # the daemon's stop: before the acquire's own clean-up
        assert waiter_key("waiting") not in store.data and store.requests.get("revoke_lease", 0) >= 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
