"""Fair, watch-driven acquisition of reboot slots (one hub per group per process).

A host that wants a slot puts a waiter key bound to the process's lease
(a crashed host drops out when the lease expires), and one watch on the
group keeps a GroupView current. When the view says a local waiter is at the
head and a slot is free, that waiter alone tries the one guarded write of
``lock.py`` once: write the semaphore guarded by the revision the view holds,
deleting its waiter key in the same transaction. A lost race needs no retry
loop here: the watch delivers the newer document and the view decides again.
Nobody polls; a periodic re-read with jitter is only a safety net.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from locksmithd.core.backoff import Backoff
from locksmithd.core.history import HistoryEvent
from locksmithd.etcd.stale import StaleHolders, next_deadline
from locksmithd.errors import AmbiguousWrite, LeaseLost, StoreError
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import holder_from_waiter_key, prefix_end, waiter_key, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.store import ABSENT, StoredKey, Versioned
from locksmithd.etcd.watch import WatchEvent
from locksmithd.core.queue_view import GroupView

log = logging.getLogger("locksmithd.queue")


class LeaseSession:
    """One lease per process, kept alive by one task, shared by all its waiters."""

    def __init__(self, store: EtcdStore, ttl_s: int = 10) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.lease_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._granting = asyncio.Lock()  # concurrent waiters must share one lease, not grant one each
        self.on_lost: Callable[[], None] = lambda: None

    async def ensure(self) -> int:
        """The current lease id, granting a new lease (and starting keep-alives) if needed."""
        async with self._granting:
            if self.lease_id is None:
                self.lease_id = await asyncio.to_thread(self.store.grant_lease, self.ttl_s)
                if self._task is None or self._task.done():
                    self._task = asyncio.create_task(self._keep_alive(), name="lease keep-alive")
            return self.lease_id

    def invalidate(self, lease_id: int | None = None) -> None:
        """Forget the lease (only if it is still ``lease_id``: a newer one granted meanwhile stays)."""
        if lease_id is None or self.lease_id == lease_id:
            self.lease_id = None

    async def close(self) -> None:
        """Stop keep-alives and revoke the lease (its waiter keys go with it); best effort."""
        if self._task is not None:
            self._task.cancel()
        lease_id, self.lease_id = self.lease_id, None
        if lease_id is not None:
            try:
                await asyncio.to_thread(self.store.revoke_lease, lease_id)
            except StoreError as error:
                log.info("could not revoke lease %x (it expires by itself): %s", lease_id, error.one_line())

    async def _keep_alive(self) -> None:
        period_s = max(self.ttl_s / 3.0, 0.5)
        while True:
            await asyncio.sleep(period_s)
            lease_id = self.lease_id
            if lease_id is None:
                continue
            try:
                remaining = await asyncio.to_thread(self.store.keep_alive, lease_id)
            except StoreError as error:
                log.warning("lease keep-alive failed: %s", error.one_line())
                continue
            if remaining <= 0 and self.lease_id == lease_id:
                log.warning("lease %x expired; waiting hosts will queue again", lease_id)
                self.lease_id = None
                self.on_lost()


class GroupQueue:
    """Waits in one group's FIFO queue on behalf of local holders (usually one).

    ``acquire`` returns True once the holder has a slot, False when the
    deadline passes first (its waiter key is then removed). Safety rests on
    the guarded write alone: the view only decides who may try.
    ``retry_max_s`` caps the pause after a store failure; the caller passes
    the daemon's setting (the settings module owns its default).
    """

    def __init__(self, store: EtcdStore, group: str = "", key_prefix: str = "", *, retry_max_s: float,
                 session: LeaseSession | None = None, recheck_interval_s: float = 300.0,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.group = group
        self.key_prefix = key_prefix
        self.semaphore = SemaphoreClient(store, group, key_prefix)
        self.semaphore_key = self.semaphore.key
        self.halt_key = self.semaphore.halt_key
        self.prefix = waiters_prefix(group, key_prefix)
        self.session = session or LeaseSession(store)
        self.session.on_lost = self._lease_lost
        self.view = GroupView(self.semaphore_key, halt_key=self.halt_key)
        self.recheck_interval_s = recheck_interval_s
        self.retry_max_s = retry_max_s
        self._rng = rng or random.Random()
        self._local: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: Any = None
        self._synced = False
        self._reported_corruption: str | None = None
        self.stale: StaleHolders | None = None  # set by the strategy: the head acts on stale holders
        self.handoffs_observed = 0  # slots released, as seen by the watch (for metrics)

    async def acquire(self, holder: str, info: Mapping[str, Any] | None = None,
                      deadline: datetime | None = None) -> bool:
        """Queue ``holder`` and return True once it holds a slot, False at ``deadline``.

        Raises StoreDenied on permission errors and DocumentTooLarge when
        taking the slot would make the document too large (nothing written);
        other store failures are retried with backoff until the deadline.
        """
        self._loop = asyncio.get_running_loop()
        wake = self._local.setdefault(holder, asyncio.Event())
        enqueued = acquired = False
        backoff = Backoff(0.25, self.retry_max_s, self._rng)
        try:
            while True:
                try:
                    if not self._synced or holder not in self.view.waiters and not self.view.semaphore.holds(holder):
                        await self._enqueue_and_sync(holder)
                        enqueued = True
                    if self.view.semaphore.holds(holder):
                        await self._leave(holder)
                        acquired = True
                        return True
                    if self.view.may_attempt(holder) and await self._attempt(holder, info):
                        acquired = True  # the winning transaction deleted the waiter key
                        return True
                    self._report_corruption()
                    await self._mind_stale_holders(holder)
                    backoff.reset()
                    if not self._synced:  # a reply was lost or the watch broke: read back now, not at recheck
                        continue
                except LeaseLost:  # _enqueue_and_sync has dropped the dead lease
                    self._synced = False
                    continue
                except StoreError as error:
                    if error.kind == "denied":
                        raise
                    pause = backoff.next_delay_s()
                    log.warning("waiting for a slot: %s; retrying in %.1fs", error.one_line(), pause)
                    self._synced = False
                    if not await self._sleep_until(wake, deadline, pause):
                        return False
                    continue
                if not await self._sleep_until(wake, deadline, self._pause_for(holder), resync_on_timeout=True):
                    return False
        finally:
            self._local.pop(holder, None)
            if enqueued and not acquired:
                await self._leave(holder)
            if not self._local:
                self._stop_watch()

    def position(self, holder: str) -> tuple[int, int] | None:
        """(1-based place, queue length) of ``holder`` while the view is current, else None."""
        if not self._synced:
            return None
        place = self.view.position(holder)
        return None if place is None else (place + 1, len(self.view.queue()))

    async def close(self) -> None:
        """Stop watching and revoke the session lease."""
        self._stop_watch()
        await self.session.close()

    async def _attempt(self, holder: str, info: Mapping[str, Any] | None) -> bool:
        new = self.view.semaphore.lock(holder, info)
        taken = HistoryEvent(at=datetime.now(timezone.utc), host=holder, event="slot-taken",
                             detail=f"{len(new.holders)} of max {new.max} held")
        try:
            revision, new = await asyncio.to_thread(
                self.semaphore.write, new, self.view.semaphore_revision,
                delete=(waiter_key(holder, self.group, self.key_prefix),), events=(taken,), admits_holder=True)
        except AmbiguousWrite:
            log.warning("slot request for %s: reply lost; reading back", holder)
            self._synced = False
            return False
        if not revision:
            return False
        self.view.remove_waiter(holder)
        # Apply our own write now unless the watch already delivered it or later
        # changes: document and revision must always match, since the next
        # attempt is guarded by that revision and writes that document.
        if revision > self.view.semaphore_revision:
            self.view.semaphore, self.view.semaphore_revision, self.view.corrupt = new, revision, None
        return True

    async def _enqueue_and_sync(self, holder: str) -> None:
        """Put the waiter key; the first waiter of a process also reads the group and starts the watch.

        Later waiters only put their key (O(1)): the running watch keeps the
        view current, so re-reading the whole queue per waiter would make
        queueing N hosts cost O(N^2).
        """
        lease_id = await self.session.ensure()
        since = json.dumps({"since": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}).encode()
        key = waiter_key(holder, self.group, self.key_prefix)
        try:
            if self._synced:
                entry = await asyncio.to_thread(self.store.enqueue, key, since, lease_id)
                if self._synced:  # else a resync is under way and its snapshot holds the key
                    self.view.add_waiter(holder, entry.create_revision)
                return
            revision, stored, halt, entries = await asyncio.to_thread(
                self.store.enqueue_and_read, key, since, lease_id, self.semaphore_key, self.prefix, self.halt_key)
        except LeaseLost:
            self.session.invalidate(lease_id)
            raise
        if not self._synced:
            self._rebuild(revision, stored, halt, entries)
            self._start_watch(revision + 1)
            self._synced = True
        else:
            for entry in entries:
                if holder_from_waiter_key(entry.key, self.group, self.key_prefix) == holder:
                    self.view.add_waiter(holder, entry.create_revision)

    def _rebuild(self, revision: int, stored: Versioned | None, halt: Versioned | None,
                 entries: list[StoredKey]) -> None:
        view = GroupView(self.semaphore_key, revision=revision, halt_key=self.halt_key)
        view.set_semaphore(stored.value if stored else None, stored.mod_revision if stored else ABSENT)
        view.set_halt(halt.value if halt else None)
        for entry in entries:
            view.add_waiter(holder_from_waiter_key(entry.key, self.group, self.key_prefix), entry.create_revision)
        self.view = view

    def _start_watch(self, start_revision: int) -> None:
        self._stop_watch()
        loop = self._loop
        assert loop is not None

        def on_events(events: list[WatchEvent], revision: int) -> None:
            loop.call_soon_threadsafe(self._apply, events, revision)

        def on_broken(error: BaseException) -> None:
            loop.call_soon_threadsafe(self._watch_broken, error)

        # [halt, waiters/]: the halt key, the semaphore and the queue (history keys sort before halt).
        self._watch = self.store.watch_range(self.halt_key, prefix_end(self.prefix), start_revision,
                                             on_events, on_broken)

    def _stop_watch(self) -> None:
        # Without the watch the view goes stale: the next acquire must read afresh
        # (a stale view could still show this host holding a slot it gave back).
        self._synced = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _apply(self, events: list[WatchEvent], revision: int) -> None:
        removed: list[str] = []
        for event in events:
            entry = event.entry
            if entry.key == self.semaphore_key:
                before = set(self.view.semaphore.holders)
                self.view.set_semaphore(entry.value if event.kind == "put" else None, entry.mod_revision)
                self.handoffs_observed += len(before - set(self.view.semaphore.holders))
            elif entry.key == self.halt_key:
                self.view.set_halt(entry.value if event.kind == "put" else None)
                if not self.view.halted:
                    log.info("the group was resumed")
            elif entry.key.startswith(self.prefix):
                holder = holder_from_waiter_key(entry.key, self.group, self.key_prefix)
                if event.kind == "put":
                    self.view.add_waiter(holder, entry.create_revision)
                else:
                    self.view.remove_waiter(holder)
                    removed.append(holder)
        self.view.revision = max(self.view.revision, revision)
        self._wake_head(removed)

    def _wake_head(self, removed: list[str]) -> None:
        """Wake only local waiters that may act now: the head, new holders, those whose key went.

        Costs O(holders + removed keys), not O(local waiters): a process may
        wait on behalf of many hosts (tests, benchmarks).
        """
        head = self.view.head()
        if head in self._local and self.view.semaphore.available > 0 and not self.view.halted:
            self._local[head].set()
        for holder in (*self.view.semaphore.holders, *removed):
            event = self._local.get(holder)
            if event is not None:
                event.set()

    def _watch_broken(self, error: BaseException) -> None:
        message = error.one_line() if hasattr(error, "one_line") else repr(error)
        log.warning("group watch broke (%s); re-reading", message)
        self._watch = None
        self._lease_lost()

    def _lease_lost(self) -> None:
        """The view can no longer be trusted: every local waiter re-reads."""
        self._synced = False
        for event in self._local.values():
            event.set()

    def _report_corruption(self) -> None:
        """Say once why no slot is taken: a corrupt document or halt record, or a halt."""
        view = self.view
        problem = view.corrupt or view.halt_corrupt
        text = problem.one_line() if problem else None
        if text is None and view.halt is not None:
            text = f"the group is halted since {view.halt.since.isoformat()} by {view.halt.by}: {view.halt.reason}"
        if text and text != self._reported_corruption:
            log.error("not taking a slot: %s", text)
        self._reported_corruption = text

    async def _mind_stale_holders(self, holder: str) -> None:
        """At the head of a full (not halted) group, act on holders past their deadline."""
        view = self.view
        if self.stale is None or view.head() != holder or view.halted or view.semaphore.available > 0:
            return
        due = next_deadline(view.semaphore)
        if due is not None and datetime.now(timezone.utc) >= due:
            await asyncio.to_thread(self.stale.act)

    def _pause_for(self, holder: str) -> float:
        """The recheck pause, shortened at the head so the earliest holder deadline is looked at on time."""
        pause = self._recheck_pause()
        view = self.view
        if self.stale is not None and view.head() == holder and view.semaphore.available <= 0:
            due = next_deadline(view.semaphore)
            if due is not None:
                until_s = (due - datetime.now(timezone.utc)).total_seconds()
                if until_s > 0:
                    pause = min(pause, until_s + 0.5 + self._rng.random())
        return pause

    def _recheck_pause(self) -> float:
        return self.recheck_interval_s * (0.8 + 0.4 * self._rng.random())

    async def _sleep_until(self, wake: asyncio.Event, deadline: datetime | None, pause_s: float,
                           resync_on_timeout: bool = False) -> bool:
        """Wait for ``wake`` or ``pause_s``; False if ``deadline`` passed meanwhile.

        With ``resync_on_timeout`` a quiet period ends in a fresh read (the
        safety net against a silently stalled watch).
        """
        if deadline is not None:
            left = (deadline - datetime.now(deadline.tzinfo)).total_seconds()
            if left <= 0:
                return False
            pause_s = min(pause_s, left)
        try:
            await asyncio.wait_for(wake.wait(), timeout=pause_s)
        except asyncio.TimeoutError:
            if resync_on_timeout:
                self._synced = False
        wake.clear()
        if deadline is not None and datetime.now(deadline.tzinfo) >= deadline:
            return False
        return True

    async def _leave(self, holder: str) -> None:
        try:
            await asyncio.to_thread(self.store.delete, waiter_key(holder, self.group, self.key_prefix))
        except StoreError as error:
            log.info("could not remove queue key of %s (its lease will): %s", holder, error.one_line())
        self.view.remove_waiter(holder)
