"""The queue's reads and writes of one waiter's place: the requests the pure walk asks for, in order.

Each method does the I/O of one step of ``core/queue_walk.py`` (a thread
hop per request) and hands what it read to the walk's pure functions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timezone

from locksmithd.core import queue_pause, queue_walk
from locksmithd.core.queue_view import GroupView
from locksmithd.core.queue_walk import Action, Entry
from locksmithd.core.waiter_value import decode_waiter, encode_waiter, served_ticket
from locksmithd.core.waiters import WaiterKind, classify_waiter
from locksmithd.errors import LeaseLost
from locksmithd.etcd.keys import GroupKeys
from locksmithd.etcd.lease import LeaseSession
from locksmithd.etcd.queue_store import QueueStore
from locksmithd.etcd.queue_watches import QueueWatches, Waiter
from locksmithd.etcd.store import Place, Snapshot, StoredKey

log = logging.getLogger("locksmithd.queue")

WATCH_SETUP_WAIT_S = 0.5
"""Longest wait for etcd to set up a new head's watch before reading the semaphore (normally a millisecond);
past it the head reads at once and again when the watch is set up."""


class QueueReads:
    """Finding, checking and writing down one's place in a group's queue (for GroupQueue)."""

    def __init__(self, store: QueueStore, session: LeaseSession, view: GroupView, watches: QueueWatches, *,
                 keys: GroupKeys) -> None:
        self.store = store
        self.session = session
        self.view = view
        self.watches = watches
        self.keys = keys
        self._reported_keys: set[tuple[str, int]] = set()

    async def enqueue(self, me: Waiter) -> None:
        """Create the waiter key at the back (one request), learning the waiter just ahead from the tail key."""
        lease_id = await self.session.ensure(far=True)  # the short one without tiers; moved when near the head
        me.walk = queue_walk.queueing(me.walk, datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
        self.session.carry(me.key, lease_id)
        news = me.news
        try:
            result = await asyncio.to_thread(self.store.enqueue, me.key, self._value(me), lease_id, self.keys.tail,
                                             self.keys.semaphore, self.keys.halt, self.keys.served)
        except LeaseLost:
            self.session.invalidate(lease_id)
            raise
        entry = result.entry
        self.session.settled(me.key, entry.lease)
        me.departed = {}
        me.walk, action = queue_walk.enqueued(
            me.walk, create_revision=entry.create_revision, lease_id=lease_id, created=result.created,
            previous=result.previous, ticket=result.ticket,
            stored=None if result.created else decode_waiter(entry.value),
            group_read_at=result.revision if result.group_read else 0,
            served=served_ticket(result.served.value) if result.served else 0,
            served_at=result.served.mod_revision if result.served else 0)
        if action is Action.PLACED:  # behind one that took its slot: the head, the group read with it
            sem, halt = result.semaphore, result.halt
            self.view.snapshot(result.revision, (sem.value, sem.mod_revision) if sem else None,
                               halt.value if halt else None)
            self.watches.wake_heads()
            await self._placed(me, news)
        # ours from before (a lost reply, a restart): keep its place, move it to our lease
        if not result.created and entry.lease != lease_id and not await self._rewrite(me, lease_id):
            me.walk = replace(me.walk, create_revision=0)

    async def _rewrite(self, me: Waiter, lease_id: int) -> bool:
        """Write the key's value (``since``, ``after``) on ``lease_id``, keeping its place; False if it is gone."""
        self.session.carry(me.key, lease_id)
        try:
            done = await asyncio.to_thread(self.store.reput, me.key, self._value(me), lease_id,
                                           me.walk.create_revision)
        except LeaseLost:
            self.session.invalidate(lease_id)
            raise
        self.session.settled(me.key, lease_id if done else None)
        if done:
            me.walk = replace(me.walk, lease_id=lease_id)
        return done

    @staticmethod
    def _value(me: Waiter) -> bytes:
        return encode_waiter(queue_walk.own_value(me.walk))

    def _report_gone(self, me: Waiter) -> None:
        """Say that the key is gone (the walk has moved to NOT_QUEUED)."""
        log.warning("the queue key of %s is gone (lease expired or removed); queueing again", me.holder)

    async def verify(self, me: Waiter) -> None:
        """The far waiter's safety net: one read of its key and ``served`` (a place read makes etcd scan the queue)."""
        me.walk = replace(me.walk, verify=False)
        snapshot = await asyncio.to_thread(self.store.snapshot, [me.key, self.keys.served])
        mine = snapshot.keys.get(me.key)
        me.walk, action = queue_walk.verified(me.walk, mine_created=mine.create_revision if mine else 0,
                                              served=self._served(snapshot))
        if action is Action.QUEUE_AGAIN:
            self._report_gone(me)
            self.watches.stop(me)
        elif action is Action.PLACED:
            self.view.place(me.holder, me.walk.ahead, False)

    async def locate(self, me: Waiter) -> None:
        """Read where ``me`` stands, by name when the keys ahead are known, and watch accordingly."""
        news, departed, me.departed = me.news, me.departed, {}
        if queue_pause.heads_by_departure(me.walk, departed, self.keys.halt in me.watches):
            # The one ahead was the head and left: this host heads the queue now. Watch the semaphore
            # from now (a watch from a past revision waits for etcd's catch-up, every 100 ms) and read
            # it once etcd has set the watch up, so that no change falls between the two.
            created = asyncio.get_running_loop().create_future()
            self.watches.add(me, self.keys.halt, self.keys.semaphore + "\0", False, 0, created)
            try:
                async with asyncio.timeout(WATCH_SETUP_WAIT_S):
                    await asyncio.shield(created)
            except TimeoutError:  # a busy stream: read now, and again once the watch is set up
                created.add_done_callback(lambda _: self.watches.read_again(me))
        if not (me.walk.cheap and await self._step(me, departed)):
            if me.walk.create_revision == 0:
                return
            await self._read_place(me)
            if me.walk.create_revision == 0:
                return
        await self._placed(me, news)

    async def _placed(self, me: Waiter, news: int) -> None:
        """The place is read: record it, watch from the read's revision, write the key's value if due."""
        me.walk = queue_walk.settled(me.walk, quiet=me.news == news)  # an event during the read: read again
        walk = me.walk
        self.view.place(me.holder, walk.ahead, walk.predecessor is None)
        # Watch first: an event between the read and the watch's creation would reach us only by
        # etcd's catch-up of lagging watches, which runs every 100 ms. A head with a slot free
        # attempts first and watches only after a lost or impossible attempt (its next read).
        self.watches.start(me, walk.located_at + 1, may_attempt=self.view.may_attempt(me.holder))
        if walk.predecessor is not None:
            await self.write_own_key(me)  # the head writes after trying for a slot: a won slot deletes the key

    async def write_own_key(self, me: Waiter) -> bool:
        """Near the head, move the key to the short lease; record who is ahead in its value. False if it is gone.

        Writes only what changed: usually nothing, one put when the waiter
        ahead changed or the key moves to the short lease (its place is kept).
        """
        me.walk = replace(me.walk, rewrite_due=False)
        lease_id = me.walk.lease_id
        if queue_pause.wants_short_lease(me.walk, self.session.is_far(lease_id)):
            lease_id = await self.session.ensure()
        new, action = queue_pause.own_key_after(me.walk, lease_id)
        if action is not Action.REWRITE_OWN_KEY:
            return True
        me.walk = new
        if await self._rewrite(me, lease_id):
            return True
        self._report_gone(me)
        self.watches.stop(me)
        me.walk = queue_walk.gone(me.walk)
        return False

    async def _step(self, me: Waiter, departed: dict[str, int]) -> bool:
        """Re-read the keys ahead by name (one request, at most six keys); False when that cannot place ``me``."""
        names = queue_pause.names_to_read(me.walk, me.key, self.keys.semaphore, self.keys.halt, self.keys.served)
        snapshot = await asyncio.to_thread(self.store.snapshot, names, self.keys.semaphore,
                                           sorted(departed.values()))
        self._snapshot(snapshot.revision, snapshot.keys.get(self.keys.semaphore), snapshot.keys.get(self.keys.halt))
        me.walk, action = queue_walk.stepped(
            me.walk, own_key=me.key, revision=snapshot.revision, keys=snapshot.keys,
            written_at=snapshot.semaphore_written_at, departed=departed, served=self._served(snapshot),
            waits=self._waits, prefix=self.keys.waiters)
        if action is Action.QUEUE_AGAIN:
            self._report_gone(me)
        return action is Action.PLACED

    def _served(self, snapshot: Snapshot) -> int:
        served = snapshot.keys.get(self.keys.served)
        return served_ticket(served.value) if served else 0

    async def _read_place(self, me: Waiter) -> None:
        """Read where ``me`` stands the expensive way (etcd reads the queue); rarely needed."""
        place = await asyncio.to_thread(self.store.locate, me.key, me.walk.create_revision, self.keys.semaphore,
                                        self.keys.halt, self.keys.waiters)
        sem, halt = place.semaphore, place.halt
        self.view.snapshot(place.revision, (sem.value, sem.mod_revision) if sem else None,
                           halt.value if halt else None)
        self.watches.wake_heads()
        if place.mine is None or place.mine.create_revision != me.walk.create_revision:
            self._report_gone(me)
            me.walk = queue_walk.gone(me.walk)  # (its place was unknown already)
            return
        ahead = await self._waiters_ahead(place)
        me.walk = queue_walk.placed_by_read(me.walk, list(ahead), place.revision)

    def _snapshot(self, revision: int, semaphore: StoredKey | None, halt: StoredKey | None) -> None:
        self.view.snapshot(revision, (semaphore.value, semaphore.mod_revision) if semaphore else None,
                           halt.value if halt else None)
        self.watches.wake_heads()  # a newer view than theirs: let them decide again

    async def _waiters_ahead(self, place: Place) -> list[StoredKey]:
        """The (at most two) nearest waiters ahead, newest first, passing over keys no host waits on.

        One more request (two keys) per pair of keys passed over: normally none.
        """
        ahead: list[StoredKey] = []
        batch = place.before
        while True:
            ahead += [entry for entry in batch if not self._passed_over(entry)]
            if len(ahead) >= 2 or len(batch) < 2:
                return ahead[:2]
            batch = await asyncio.to_thread(self.store.predecessors, self.keys.waiters, batch[-1].create_revision,
                                            place.revision)

    def _waits(self, entry: Entry) -> bool:
        """True for a key that is a host waiting its turn (the one waiter rule; nothing reported)."""
        return classify_waiter(entry.key, entry.lease, self.keys.waiters, self.view.semaphore.holders)[0] \
            is WaiterKind.WAITING

    def _passed_over(self, entry: StoredKey) -> bool:
        """True for a key ahead that is no waiter to wait for (reported once per key, a holder's silently)."""
        kind, _ = classify_waiter(entry.key, entry.lease, self.keys.waiters, self.view.semaphore.holders)
        if kind in (WaiterKind.WAITING, WaiterKind.HOLDER):
            return kind is WaiterKind.HOLDER  # a holder's leftover key blocks nobody
        mark = (entry.key, entry.create_revision)
        if mark not in self._reported_keys:
            self._reported_keys.add(mark)
            if kind is WaiterKind.LEASELESS:
                why, remedy = "is bound to no lease, so it would never expire", "'locksmithctl reset' or 'etcdctl del'"
            else:
                why, remedy = "does not name a valid holder id", "'etcdctl del'"
            log.warning("ignoring queue key %r: it %s (remove it with %s)", entry.key, why, remedy)
        return True
