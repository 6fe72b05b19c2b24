"""Fair, watch-driven acquisition of reboot slots: the queue walk's I/O (its design: core/queue_walk.py)."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone
from typing import Any, Mapping

from locksmithd.core import queue_pause, queue_walk
from locksmithd.core.backoff import Backoff
from locksmithd.core.history import HistoryEvent
from locksmithd.core.names import printable
from locksmithd.core.queue_view import GroupView
from locksmithd.core.queue_walk import Action, Entry
from locksmithd.core.waiter_value import decode_waiter
from locksmithd.errors import AmbiguousWrite, LeaseLost, StoreError
from locksmithd.etcd.keys import GroupKeys, waiter_key
from locksmithd.etcd.lease import LeaseSession
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.queue_reads import QueueReads
from locksmithd.etcd.queue_store import QueueStore
from locksmithd.etcd.queue_watches import QueueWatches, Waiter
from locksmithd.etcd.stale import StaleHolders, next_deadline

__all__ = ["GroupQueue", "LeaseSession"]

log = logging.getLogger("locksmithd.queue")


class GroupQueue:
    """Waits in one group's FIFO queue on behalf of local holders (usually one).

    ``acquire`` returns True once the holder has a slot, False when the
    deadline passes first (its waiter key is then removed). Safety rests on
    the guarded write alone: the view only decides who may try.
    ``retry_max_s`` caps the pause after a store failure; the caller passes
    the daemon's setting (the settings module owns its default).
    ``head_timeout_s`` is how long a head may leave a free slot untaken
    before the waiter behind it removes its key.
    """

    def __init__(self, store: QueueStore, group: str = "", key_prefix: str = "", *, retry_max_s: float,
                 session: LeaseSession | None = None, recheck_interval_s: float = 300.0,
                 head_timeout_s: float = 60.0, rng: random.Random | None = None) -> None:
        self.store = store
        self.group = group
        self.key_prefix = key_prefix
        self.semaphore = SemaphoreClient(store, group, key_prefix)
        self.keys = GroupKeys.of(group, key_prefix)
        self.semaphore_key = self.keys.semaphore
        self.session = session or LeaseSession(store)
        self.view = GroupView(self.keys.semaphore, halt_key=self.keys.halt)
        self.recheck_interval_s = recheck_interval_s
        self.retry_max_s = retry_max_s
        self.head_timeout_s = head_timeout_s
        self._rng = rng or random.Random()
        self._local: dict[str, Waiter] = {}
        self.watches = QueueWatches(store, self.view, self._local, keys=self.keys, rng=self._rng,
                                    retry_max_s=retry_max_s)
        self.session.on_lost = self.watches.lease_lost
        self.reads = QueueReads(store, self.session, self.view, self.watches, keys=self.keys)
        self._reported_corruption: str | None = None
        self.stale: StaleHolders | None = None  # set by the strategy: the head acts on stale holders

    @property
    def handoffs_observed(self) -> int:
        """Slots released, as seen by a head's watch (for metrics)."""
        return self.watches.handoffs_observed

    async def acquire(self, holder: str, info: Mapping[str, Any] | None = None,
                      deadline: datetime | None = None) -> bool:
        """Queue ``holder`` and return True once it holds a slot, False at ``deadline``.

        Raises StoreDenied on permission errors and DocumentTooLarge when
        taking the slot would make the document too large (nothing written);
        other store failures are retried with backoff until the deadline.
        """
        self.watches.loop = asyncio.get_running_loop()
        me = self._local.setdefault(holder, Waiter(holder, waiter_key(holder, self.group, self.key_prefix)))
        acquired = False
        backoff = Backoff(0.25, self.retry_max_s, self._rng)
        try:
            while True:
                try:
                    if me.walk.jitter_s > 0:
                        me.walk, pause = queue_pause.jitter_first(me.walk)
                        if not await self._sleep_until(me, deadline, pause):
                            return False
                    if me.walk.create_revision == 0:
                        await self.reads.enqueue(me)
                    if me.walk.verify:
                        await self.reads.verify(me)
                    if me.walk.create_revision == 0:
                        continue  # known gone (the restart's reput or the check found no key): queue again
                    if not me.walk.located:
                        await self.reads.locate(me)
                        if me.walk.create_revision == 0:
                            continue  # our key is gone (lease lost, removed): queue again
                    if self.view.semaphore.holds(holder):
                        acquired = True
                        return True
                    if self.view.may_attempt(holder) and await self._attempt(me, info):
                        acquired = True  # the winning transaction deleted the waiter key
                        return True
                    if me.walk.rewrite_due and not await self.reads.write_own_key(me):
                        continue  # our key is gone: queue again
                    self._report_corruption(me)
                    await self._mind_stale_holders(me)
                    await self._mind_stuck_head(me)
                    backoff.reset()
                    if not me.walk.located:  # a reply was lost or a watch broke: read back now
                        continue
                except LeaseLost:  # _enqueue has dropped the dead lease
                    me.walk = queue_walk.gone(me.walk)
                    continue
                except StoreError as error:
                    if error.kind == "denied":
                        raise
                    pause = backoff.next_delay_s()
                    log.warning("waiting for a slot: %s; retrying in %.1fs", error.one_line(), pause)
                    me.walk = queue_pause.read_again(me.walk)
                    if not await self._sleep_until(me, deadline, pause):
                        return False
                    continue
                if not await self._sleep_until(me, deadline, self._pause_for(me), relocate_on_timeout=True):
                    return False
        finally:
            self._local.pop(holder, None)
            self.watches.stop(me)
            self.view.remove_waiter(holder)
            if me.walk.create_revision:  # still queued: gave up, or already held a slot
                await self._leave(me)

    def position(self, holder: str) -> tuple[int, int] | None:
        """(1-based place, 0) of a local waiter while its place is known, else None.

        The place is exact at the head (1) and next in line (2); further back
        it is an upper bound, the arrivals since the last host that took a
        slot, as of the waiter's last read (3 when the tickets are unknown):
        etcd ignores a create-revision bound when it counts, so counting the
        keys ahead would read the whole queue. The queue's length is not known
        either, so the second number is 0.
        """
        me = self._local.get(holder)
        ahead = self.view.position(holder)
        if me is None or not me.walk.located or ahead is None:
            return None
        return ahead + 1, 0

    async def close(self) -> None:
        """Stop watching and revoke the session's leases that may still carry a key (LeaseSession.close)."""
        for me in list(self._local.values()):
            self.watches.stop(me)
        await self.session.close()

    # -- at the head ---------------------------------------------------------

    async def _attempt(self, me: Waiter, info: Mapping[str, Any] | None) -> bool:
        new = self.view.semaphore.lock(me.holder, info)
        taken = HistoryEvent(at=datetime.now(timezone.utc), host=me.holder, event="slot-taken",
                             detail=f"{len(new.holders)} of max {new.max} held")
        # Stop watching first, so that etcd does not send this write back to us (one event less per
        # handoff); a lost race reads the group again and watches anew.
        self.watches.stop(me)
        me.walk = queue_pause.read_again(me.walk)
        ticket = me.walk.ticket
        try:
            revision, new = await asyncio.to_thread(
                self.semaphore.write, new, self.view.semaphore_revision, delete=(me.key,), events=(taken,),
                puts=[(self.keys.served, str(ticket).encode())] if ticket else (), admits_holder=True)
        except AmbiguousWrite:
            log.warning("slot request for %s: reply lost; reading back", me.holder)
            return False
        if not revision:
            return False
        me.walk = queue_walk.gone(me.walk)  # the winning write deleted the key
        self.session.settled(me.key, None)  # its lease carries it no more: close need not revoke it
        # Apply our own write unless the watch already delivered it or later changes:
        # document and revision must always match, since the next attempt is guarded
        # by that revision and writes that document.
        self.view.changed(self.semaphore_key, new.encode(), revision)
        return True

    def _report_corruption(self, me: Waiter) -> None:
        """At the head, say once why no slot is taken: a corrupt document or halt record, or a halt."""
        if me.walk.predecessor is not None:
            return
        view = self.view
        problem = view.corrupt or view.halt_corrupt
        text = problem.one_line() if problem else None
        if text is None and view.halt is not None:
            text = (f"the group is halted since {view.halt.since.isoformat()} by {printable(view.halt.by, 64)}: "
                    f"{printable(view.halt.reason, 500)}")
        if text and text != self._reported_corruption:
            log.error("not taking a slot: %s", text)
        self._reported_corruption = text

    async def _mind_stale_holders(self, me: Waiter) -> None:
        """At the head of a full (not halted) group, act on holders past their deadline."""
        view = self.view
        if self.stale is None or not queue_pause.minds_stale(me.walk, has_policy=True, halted=view.halted,
                                                             available=view.semaphore.available):
            return
        due = next_deadline(view.semaphore)
        if queue_pause.stale_action(me.walk, has_policy=True, halted=view.halted, available=view.semaphore.available,
                                    deadline_passed=due is not None and datetime.now(timezone.utc) >= due) \
                is Action.ACT_ON_STALE:
            await asyncio.to_thread(self.stale.act)

    async def _mind_stuck_head(self, me: Waiter) -> None:
        """Next in line: remove a head seen leaving a free slot untaken at two looks ``head_timeout_s`` apart."""
        head = me.walk.predecessor
        me.walk, action = queue_pause.stuck_head(
            me.walk, slot_free=self.view.slot_free(),
            head_via_fleetlock=head is not None and _bounded_by_its_lease(head),
            now=asyncio.get_running_loop().time(), head_timeout_s=self.head_timeout_s)
        if action is not Action.SKIP_HEAD or head is None:
            return
        if await asyncio.to_thread(self.store.delete_if_created, head.key, head.create_revision):
            log.warning("skipped the head of the queue %r: it left a free slot untaken for %.0fs",
                        head.key, self.head_timeout_s)
        me.walk = queue_pause.read_again(me.walk)

    # -- waiting -------------------------------------------------------------

    def _pause_for(self, me: Waiter) -> float:
        """The recheck pause (queue_pause.pause_s), with the clocks read here."""
        view = self.view
        stale_in_s = None
        if self.stale is not None and me.walk.predecessor is None and view.semaphore.available <= 0:
            due = next_deadline(view.semaphore)
            if due is not None:
                stale_in_s = (due - datetime.now(timezone.utc)).total_seconds()
        return queue_pause.pause_s(me.walk, recheck_interval_s=self.recheck_interval_s,
                                   far=self.session.is_far(me.walk.lease_id), slot_free=view.slot_free(),
                                   head_timeout_s=self.head_timeout_s, now=asyncio.get_running_loop().time(),
                                   stale_in_s=stale_in_s, rng=self._rng)

    async def _sleep_until(self, me: Waiter, deadline: datetime | None, pause_s: float,
                           relocate_on_timeout: bool = False) -> bool:
        """Wait for a wake-up or ``pause_s``; False if ``deadline`` passed meanwhile.

        With ``relocate_on_timeout`` a quiet period ends in a fresh read (the
        safety net against a silently stalled watch; one request).
        """
        if deadline is not None:
            left = (deadline - datetime.now(deadline.tzinfo)).total_seconds()
            if left <= 0:
                return False
            pause_s = min(pause_s, left)
        try:
            # asyncio.timeout, not wait_for: wait_for (before 3.12) can swallow a cancellation
            # that arrives as the event is set, and the waiter would never leave.
            async with asyncio.timeout(pause_s):
                await me.wake.wait()
        except TimeoutError:
            if relocate_on_timeout:
                me.walk, _ = queue_pause.quiet(me.walk, self.session.is_far(me.walk.lease_id))
        me.wake.clear()
        if deadline is not None and datetime.now(deadline.tzinfo) >= deadline:
            return False
        return True

    async def _leave(self, me: Waiter) -> None:
        try:
            await asyncio.to_thread(self.store.delete, me.key)
            self.session.settled(me.key, None)
        except StoreError as error:
            log.info("could not remove queue key of %s (its lease will): %s", me.holder, error.one_line())


def _bounded_by_its_lease(head: Entry) -> bool:
    """True for a head queued through the FleetLock server: it is never skipped here.

    Such a client takes its slot when it next polls; its key's lease (TTL =
    the server's grace time, renewed by each poll) already bounds how long a
    client that stopped asking can keep a slot free.
    """
    return decode_waiter(head.value).through_fleetlock
