"""The O(1) queue against a real etcd: events per handoff, keys no host waits on, a stuck head, compaction."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import pytest

from harness.etcd import EtcdCluster
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.queue import GroupQueue, LeaseSession
from locksmithd.etcd.watch import RangeWatch, WatchEvent
from tests.test_queue_etcd import RETRY_MAX_S, fresh_semaphore, make_store, queued, start_in_order, wait_until


def events_sent(node: EtcdCluster) -> float:
    """etcd's count of watch events sent to watchers (all members)."""
    return sum(member.metrics().get("etcd_debugging_mvcc_events_total", 0.0) for member in node.members)


class TestCostPerHandoff:
    @pytest.mark.parametrize("waiting", [8, 32])
    def test_events_per_acquisition_do_not_grow_with_the_queue(self, fresh_etcd_node: EtcdCluster,
                                                               waiting: int) -> None:
        """Each waiter watches only the one ahead (the head the semaphore): at most 4 events per handoff,
        at 8 and at 32 waiters alike (watching the group sent about 1.5 x N)."""
        store = make_store(fresh_etcd_node, "")
        client = fresh_semaphore(store, "", 1, "blocker")
        queue = GroupQueue(make_store(fresh_etcd_node, ""), "", "", retry_max_s=RETRY_MAX_S)
        served: list[str] = []

        async def host(name: str) -> None:
            assert await queue.acquire(name)
            served.append(name)
            await asyncio.to_thread(client.unlock, name)

        async def scenario() -> float:
            names = [f"h{i:02d}" for i in range(waiting)]
            tasks = [asyncio.create_task(host(name)) for name in names]
            await wait_until(lambda: len(queued(store, "")) == waiting, "every host to queue")
            await asyncio.sleep(0.5)  # the last locates and watch set-ups land before counting
            before = events_sent(fresh_etcd_node)
            await asyncio.to_thread(client.unlock, "blocker")
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            after = events_sent(fresh_etcd_node)
            await queue.close()
            queue.store.close()
            return after - before

        events = asyncio.run(scenario())
        assert len(served) == waiting
        print(f"N={waiting}: {events / waiting:.2f} events per acquisition")
        assert events / waiting <= 4
        store.close()


class TestKeysNoHostWaitsOn:
    @pytest.mark.parametrize("kind", ["no-lease", "bad-name"])
    def test_a_key_at_the_head_that_no_host_waits_on_is_passed_over_and_reported(
            self, etcd_node: EtcdCluster, key_prefix: str, kind: str, caplog: pytest.LogCaptureFixture) -> None:
        """A waiter key bound to no lease, or one whose id breaks the naming rule, does not hold a free
        slot back: the host behind it takes the slot and the key is reported (and left for the operator)."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1)
        planted = (waiter_key("forgotten", "", key_prefix) if kind == "no-lease"
                   else waiters_prefix("", key_prefix) + "bad%0Aname")
        store.put(planted, b"{}")  # lease 0: it would never expire
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> bool:
            acquired = await asyncio.wait_for(queue.acquire("next"), 20)
            await queue.close()
            queue.store.close()
            return acquired

        with caplog.at_level(logging.WARNING, logger="locksmithd.queue"):
            assert asyncio.run(scenario())
        assert client.read().semaphore.holders == ("next",)
        assert any("ignoring queue key" in r.getMessage() and planted in r.getMessage() for r in caplog.records)
        assert store.read(planted) is not None
        store.close()


class TestStuckHead:
    def test_a_head_that_leaves_a_free_slot_untaken_is_skipped(self, etcd_node: EtcdCluster, key_prefix: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
        """A head whose key lives on (its lease kept alive) but which never takes the free slot is removed
        by the waiter behind it after head_timeout_s, reported, and that waiter is served."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1)
        lease = store.grant_lease(60)
        stuck = waiter_key("wedged", "", key_prefix)
        store.put(stuck, b"{}", lease)
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S,
                           head_timeout_s=1.0)

        async def scenario() -> bool:
            acquired = await asyncio.wait_for(queue.acquire("patient"), 30)
            await queue.close()
            queue.store.close()
            return acquired

        with caplog.at_level(logging.WARNING, logger="locksmithd.queue"):
            assert asyncio.run(scenario())
        assert client.read().semaphore.holders == ("patient",)
        assert store.read(stuck) is None
        assert any("skipped the head of the queue" in r.getMessage() for r in caplog.records)
        store.revoke_lease(lease)
        store.close()

    def test_a_head_waiting_for_a_full_group_is_not_skipped(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """Without a free slot the head is waiting, not stuck: the waiter behind it leaves it in place."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "blocker")
        lease = store.grant_lease(60)
        head = waiter_key("first", "", key_prefix)
        store.put(head, b"{}", lease)
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S,
                           head_timeout_s=0.2, recheck_interval_s=0.2)

        async def scenario() -> None:
            waiting = asyncio.create_task(queue.acquire("second"))
            await wait_until(lambda: queue.view.position("second") == 1, "second to queue behind first")
            await asyncio.sleep(1.5)  # several head timeouts and rechecks pass
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await queue.close()
            queue.store.close()

        asyncio.run(scenario())
        assert store.read(head) is not None
        store.revoke_lease(lease)
        store.close()


    def test_a_fleetlock_head_is_not_skipped(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """A head queued through the FleetLock server takes its slot when its client next polls: the waiter
        behind it never removes it (the key's grace lease bounds how long a silent client keeps a slot free)."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1)
        lease = store.grant_lease(60)
        head = waiter_key("zincati-1", "", key_prefix)
        store.put(head, b'{"since": "2026-01-01T00:00:00+00:00", "via": "fleetlock", "grace_s": 600}', lease)
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S,
                           head_timeout_s=0.2, recheck_interval_s=0.2)

        async def scenario() -> None:
            waiting = asyncio.create_task(queue.acquire("daemon-1"))
            await wait_until(lambda: queue.view.position("daemon-1") == 1, "the daemon to queue behind it")
            await asyncio.sleep(1.5)  # several head timeouts pass with a free slot
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await queue.close()
            queue.store.close()

        asyncio.run(scenario())
        assert store.read(head) is not None
        store.revoke_lease(lease)
        store.close()


class TestHandoffCount:
    def test_the_head_counts_the_release_it_is_woken_by(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """handoffs_observed (exported as a metric) counts releases seen by a waiting head."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "holder")
        queue = GroupQueue(make_store(etcd_node, key_prefix), "", key_prefix, retry_max_s=RETRY_MAX_S)

        async def scenario() -> None:
            waiting = asyncio.create_task(queue.acquire("next"))
            await wait_until(lambda: queue.view.position("next") == 0, "next to be the head")
            assert queue.handoffs_observed == 0
            await asyncio.to_thread(client.unlock, "holder")
            assert await asyncio.wait_for(waiting, 15)
            await queue.close()
            queue.store.close()

        asyncio.run(scenario())
        assert queue.handoffs_observed == 1
        store.close()


class CompactedStartStore(EtcdStore):
    """Starts the first queue watch at revision 1, after etcd was compacted past it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.compacted_watches = 0
        self.compaction_error: BaseException | None = None

    def watch_range(self, start_key: str, end_key: str, start_revision: int,
                    on_events: Callable[[list[WatchEvent], int], None],
                    on_broken: Callable[[BaseException], None], **options: Any) -> RangeWatch:
        if not self.compacted_watches:
            self.compacted_watches += 1
            start_revision = 1

            def broken(error: BaseException) -> None:
                self.compaction_error = error
                on_broken(error)

            return super().watch_range(start_key, end_key, start_revision, on_events, broken, **options)
        return super().watch_range(start_key, end_key, start_revision, on_events, on_broken, **options)


class TestCompaction:
    def test_a_watch_whose_start_revision_was_compacted_is_re_established(self, fresh_etcd_node: EtcdCluster) -> None:
        """The head's watch starts below the compacted revision: etcd refuses it, the queue reads its place
        again (one request) and watches from there, and the release that follows still wakes it."""
        store = make_store(fresh_etcd_node, "")
        client = fresh_semaphore(store, "", 1, "blocker")
        for n in range(5):
            store.put(f"filler/{n}", b"x")
        store._call("compact", lambda c: c.compact(store.read_prefix("filler/")[-1].mod_revision))
        settings = make_store(fresh_etcd_node, "").settings
        compacting = CompactedStartStore(settings)
        queue = GroupQueue(compacting, "", "", retry_max_s=RETRY_MAX_S)

        async def scenario() -> bool:
            (waiting,) = await start_in_order(store, "", [("a", lambda: queue.acquire("a"))])
            await wait_until(lambda: compacting.compaction_error is not None, "the compacted watch to be refused")
            await asyncio.to_thread(client.unlock, "blocker")
            acquired = bool(await asyncio.wait_for(waiting, 20))
            await queue.close()
            return acquired

        assert asyncio.run(scenario())
        assert "compaction" in str(compacting.compaction_error)
        assert SemaphoreClient(store).read().semaphore.holders == ("a",)
        compacting.close()
        store.close()


class TestSharedLease:
    def test_many_waiters_of_one_process_keep_one_lease(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """Each waiter has its own watch, but the waiters of a process share one lease."""
        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "blocker")
        queue = GroupQueue(store, "", key_prefix, session=LeaseSession(store), retry_max_s=RETRY_MAX_S)

        async def scenario() -> set[int]:
            tasks = [asyncio.create_task(queue.acquire(f"h{i}")) for i in range(10)]
            await wait_until(lambda: len(queued(store, key_prefix)) == 10, "10 waiters")
            await wait_until(lambda: len(queue.view.positions) == 10, "10 waiters placed")
            # The next in line learns it is next once the head has written its `after` pointer.
            await wait_until(lambda: sorted(queue.view.positions.values())[:2] == [0, 1], "head and next known")
            leases = {e.lease for e in store.read_prefix(waiters_prefix("", key_prefix))}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await queue.close()
            return leases

        assert len(asyncio.run(scenario())) == 1
        store.close()


class TestTieredLeases:
    def test_far_waiters_keep_the_long_lease_and_move_to_the_short_one_near_the_head(
            self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """The head and the next one are on the short lease, the rest on the long one; as the queue moves,
        the waiter that becomes next in line moves its key to the short lease, keeping its place."""
        store = make_store(etcd_node, key_prefix)
        client = fresh_semaphore(store, key_prefix, 1, "blocker")
        session = LeaseSession(store, 10, 600)
        queue = GroupQueue(store, "", key_prefix, session=session, retry_max_s=RETRY_MAX_S)
        names = [f"h{i}" for i in range(6)]

        def leases() -> dict[str, int]:
            prefix = waiters_prefix("", key_prefix)
            return {e.key[len(prefix):]: e.lease for e in store.read_prefix(prefix)}

        async def scenario() -> tuple[dict[str, int], dict[str, int], int, int]:
            tasks = await start_in_order(store, key_prefix, [(n, lambda n=n: queue.acquire(n)) for n in names])
            near = await session.ensure()
            far = await session.ensure(far=True)
            await wait_until(lambda: list(leases().values()).count(near) == 2, "two waiters on the short lease")
            before = leases()
            await asyncio.to_thread(client.unlock, "blocker")
            assert await asyncio.wait_for(tasks[0], 20)  # h0 holds the only slot now; h1 is the head
            await wait_until(lambda: leases().get("h2") == near, "h2 to move to the short lease")
            after = leases()
            order = queued(store, key_prefix)
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
            await queue.close()
            assert order == names[1:]
            return before, after, near, far

        before, after, near, far = asyncio.run(scenario())
        assert near != far
        assert before == {"h0": near, "h1": near, "h2": far, "h3": far, "h4": far, "h5": far}
        assert after == {"h1": near, "h2": near, "h3": far, "h4": far, "h5": far}
        store.close()


class TestOperatorView:
    def test_status_reports_a_leaseless_waiter_and_reset_removes_it(self, etcd_node: EtcdCluster,
                                                                    key_prefix: str) -> None:
        """`status` summarises without listing waiters, warns about a waiter key bound to no lease, and
        `reset --yes` removes that key but leaves a live waiter's key alone."""
        import os
        import subprocess
        import sys
        from pathlib import Path

        store = make_store(etcd_node, key_prefix)
        fresh_semaphore(store, key_prefix, 1, "holder-x")
        forgotten = waiter_key("forgotten", "", key_prefix)
        store.put(forgotten, b'{"since": "2026-01-01T00:00:00+00:00"}')
        lease = store.grant_lease(60)
        live = waiter_key("live", "", key_prefix)
        store.put(live, b'{"since": "2026-01-01T00:00:00+00:00"}', lease)
        ctl = [str(Path(sys.executable).parent / "locksmithctl"), "--endpoint", etcd_node.client_urls[0],
               "--etcd-key-prefix", key_prefix]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
        status = subprocess.run(ctl + ["status"], capture_output=True, text=True, env=env, timeout=30, check=True)
        reset = subprocess.run(ctl + ["reset", "--max", "1", "--yes"], capture_output=True, text=True, env=env,
                               timeout=30, check=True)
        assert "bound to no lease" in status.stderr and forgotten in status.stderr
        assert "Waiting: 1 (head live," in status.stdout
        assert "WAITING" not in status.stdout  # listed only with --waiters
        assert "Removed 1 waiter key(s) bound to no lease" in reset.stdout
        assert store.read(forgotten) is None and store.read(live) is not None
        store.revoke_lease(lease)
        store.close()
