"""Fair, watch-driven acquisition of reboot slots, at O(1) etcd cost per waiter and per handoff.

A host that wants a slot puts a waiter key bound to its process's lease (a
crashed host drops out when the lease expires); its create revision is its
place. Like etcd's own lock recipe, each waiter then follows only the waiter
just ahead of it (its predecessor): one watch on one key, so a handoff sends
one event to one waiter, not one to every waiter. Only the head (no
predecessor) watches the halt record and the semaphore, and only the head
tries the one guarded write of ``lock.py``: the semaphore guarded by the
revision it holds, its waiter key deleted and history recorded in the same
transaction, refused while the group is halted. A lost race needs no retry
loop: the watch delivers the newer document and the head decides again.

Finding one's place (``EtcdStore.locate``) is one request reading at most
five keys, whatever the queue length; so is every recovery (broken watch,
lost lease, leader change), after a jittered pause so that a fleet does not
come back all at once. Keys no host could have written are passed over and
reported: a waiter key bound to no lease (it would never expire) and one
whose id breaks the naming rule. The waiter next in line checks every
``head_timeout_s`` that the head takes a free slot, and removes a head that
did not (reporting it), so no single key can stall a group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from locksmithd.core.backoff import Backoff
from locksmithd.core.history import HistoryEvent
from locksmithd.core.queue_view import GroupView
from locksmithd.errors import AmbiguousWrite, LeaseLost, StoreError
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import waiter_holder, waiter_key, waiters_prefix
from locksmithd.etcd.lease import LeaseSession
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.stale import StaleHolders, next_deadline
from locksmithd.etcd.store import Place, StoredKey
from locksmithd.etcd.watch import WatchEvent

__all__ = ["GroupQueue", "LeaseSession"]

log = logging.getLogger("locksmithd.queue")

NEAR_POSITIONS = 2
"""The head and the next one keep their keys on the short lease (and so drop out quickly if they crash)."""

FAR_RECHECK_S = 900.0
"""Safety-net re-read of a waiter on the long lease: with its keep-alive, about 0.17 requests a minute."""

RECOVERY_JITTER_MAX_S = 5.0
"""Longest pause before a waiter that is not the head re-reads after a broken watch."""


@dataclass
class _Waiter:
    """One local host in the queue and the one watch it keeps."""

    holder: str
    key: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    create_revision: int = 0  # 0: no key in etcd (not queued yet, or the key is gone)
    located: bool = False  # False: the place must be read (again) before acting
    predecessor: StoredKey | None = None
    second: StoredKey | None = None  # the waiter ahead of the predecessor (None: the predecessor is the head)
    watches: list[Any] = field(default_factory=list)
    generation: int = 0  # which watch is current: late deliveries of a stopped one are dropped
    ahead: int = 0  # waiter keys ahead when it queued, less departures seen (see _locate)
    lease_id: int = 0  # the lease the key is on (a tiered session: the long one far from the head)
    since: bytes = b""  # the key's value, kept when the key moves to another lease
    jitter_s: float = 0.0  # pause before the next read (recovery without a herd)
    verify: bool = False  # the next pass checks only that the key still exists (one key read)
    suspect: tuple[str, int] | None = None  # a head seen not taking a free slot (key, create revision)


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

    def __init__(self, store: EtcdStore, group: str = "", key_prefix: str = "", *, retry_max_s: float,
                 session: LeaseSession | None = None, recheck_interval_s: float = 300.0,
                 head_timeout_s: float = 60.0, rng: random.Random | None = None) -> None:
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
        self.head_timeout_s = head_timeout_s
        self._rng = rng or random.Random()
        self._local: dict[str, _Waiter] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reported_corruption: str | None = None
        self._reported_keys: set[tuple[str, int]] = set()
        self.stale: StaleHolders | None = None  # set by the strategy: the head acts on stale holders
        self.handoffs_observed = 0  # slots released, as seen by a head's watch (for metrics)

    async def acquire(self, holder: str, info: Mapping[str, Any] | None = None,
                      deadline: datetime | None = None) -> bool:
        """Queue ``holder`` and return True once it holds a slot, False at ``deadline``.

        Raises StoreDenied on permission errors and DocumentTooLarge when
        taking the slot would make the document too large (nothing written);
        other store failures are retried with backoff until the deadline.
        """
        self._loop = asyncio.get_running_loop()
        me = self._local.setdefault(holder, _Waiter(holder, waiter_key(holder, self.group, self.key_prefix)))
        acquired = False
        backoff = Backoff(0.25, self.retry_max_s, self._rng)
        try:
            while True:
                try:
                    if me.jitter_s > 0:
                        pause, me.jitter_s = me.jitter_s, 0.0
                        if not await self._sleep_until(me, deadline, pause):
                            return False
                    if me.create_revision == 0:
                        await self._enqueue(me)
                    if me.verify:
                        await self._verify(me)
                    if not me.located:
                        await self._locate(me)
                        if me.create_revision == 0:
                            continue  # our key is gone (lease lost, removed): queue again
                    if self.view.semaphore.holds(holder):
                        acquired = True
                        return True
                    if self.view.may_attempt(holder) and await self._attempt(me, info):
                        acquired = True  # the winning transaction deleted the waiter key
                        return True
                    self._report_corruption(me)
                    await self._mind_stale_holders(me)
                    await self._mind_stuck_head(me)
                    backoff.reset()
                    if not me.located:  # a reply was lost or a watch broke: read back now
                        continue
                except LeaseLost:  # _enqueue has dropped the dead lease
                    me.create_revision, me.located = 0, False
                    continue
                except StoreError as error:
                    if error.kind == "denied":
                        raise
                    pause = backoff.next_delay_s()
                    log.warning("waiting for a slot: %s; retrying in %.1fs", error.one_line(), pause)
                    me.located = False
                    if not await self._sleep_until(me, deadline, pause):
                        return False
                    continue
                if not await self._sleep_until(me, deadline, self._pause_for(me), relocate_on_timeout=True):
                    return False
        finally:
            self._local.pop(holder, None)
            self._stop_watch(me)
            self.view.remove_waiter(holder)
            if me.create_revision:  # still queued: gave up, or already held a slot
                await self._leave(me)

    def position(self, holder: str) -> tuple[int, int] | None:
        """(1-based place, 0) of a local waiter while its place is known, else None.

        Only the place is known (exactly at the head and next, an upper bound
        further back); the queue's length would cost reading the whole queue,
        so the second number is 0 ("unknown").
        """
        me = self._local.get(holder)
        ahead = self.view.position(holder)
        if me is None or not me.located or ahead is None:
            return None
        return ahead + 1, 0

    async def close(self) -> None:
        """Stop watching and revoke the session lease."""
        for me in list(self._local.values()):
            self._stop_watch(me)
        await self.session.close()

    # -- finding one's place -------------------------------------------------

    async def _enqueue(self, me: _Waiter) -> None:
        """Put the waiter key (one request); its create revision is the place in the queue."""
        lease_id = await self.session.ensure(far=True)  # the short one without tiers; moved when near the head
        me.since = json.dumps({"since": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}).encode()
        try:
            entry, count = await asyncio.to_thread(self.store.enqueue, me.key, me.since, lease_id, self.prefix)
        except LeaseLost:
            self.session.invalidate(lease_id)
            raise
        me.create_revision, me.located, me.ahead, me.lease_id = entry.create_revision, False, count, lease_id

    async def _move_near(self, me: _Waiter) -> bool:
        """Near the head, put the key on the short lease (its place is kept); False if the key was gone."""
        lease_id = await self.session.ensure()
        try:
            entry, _ = await asyncio.to_thread(self.store.enqueue, me.key, me.since, lease_id, self.prefix)
        except LeaseLost:
            self.session.invalidate(lease_id)
            raise
        me.lease_id = lease_id
        if entry.create_revision != me.create_revision:  # gone meanwhile: this put queued it anew, at the back
            me.create_revision, me.located = entry.create_revision, False
            return False
        return True

    async def _verify(self, me: _Waiter) -> None:
        """The far waiter's safety net: one single-key read (a place read makes etcd scan the queue)."""
        me.verify = False
        if await asyncio.to_thread(self.store.created_revision, me.key) != me.create_revision:
            log.warning("the queue key of %s is gone (lease expired or removed); queueing again", me.holder)
            self._stop_watch(me)
            me.create_revision, me.located = 0, False

    async def _locate(self, me: _Waiter) -> None:
        """Read where ``me`` stands (one request; one more per key passed over) and watch accordingly."""
        self._stop_watch(me)
        place = await asyncio.to_thread(self.store.locate, me.key, me.create_revision, self.semaphore_key,
                                        self.halt_key, self.prefix)
        self._snapshot(place)
        if place.mine is None or place.mine.create_revision != me.create_revision:
            log.warning("the queue key of %s is gone (lease expired or removed); queueing again", me.holder)
            me.create_revision = 0
            return
        ahead = await self._waiters_ahead(place)
        me.predecessor = ahead[0] if ahead else None
        me.second = ahead[1] if len(ahead) > 1 else None
        if me.predecessor is None or me.predecessor.key != (me.suspect or ("", 0))[0]:
            me.suspect = None
        # Exact at the head (0) and next in line (1); further back, the count when it queued,
        # less the departures it saw (an upper bound: etcd cannot count keys by create revision).
        position = len(ahead) if len(ahead) < 2 else max(2, me.ahead)
        me.ahead = position
        if position < NEAR_POSITIONS and self.session.is_far(me.lease_id) and not await self._move_near(me):
            return
        self.view.place(me.holder, position, me.predecessor is None)
        self._start_watch(me, place.revision + 1)
        me.located = True

    def _snapshot(self, place: Place) -> None:
        sem = place.semaphore
        self.view.snapshot(place.revision, (sem.value, sem.mod_revision) if sem else None,
                           place.halt.value if place.halt else None)
        self._wake_heads()  # a newer view than theirs: let them decide again

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
            batch = await asyncio.to_thread(self.store.predecessors, self.prefix, batch[-1].create_revision,
                                            place.revision)

    def _passed_over(self, entry: StoredKey) -> bool:
        """True for a key ahead that is no waiter to wait for (reported once per key)."""
        holder = waiter_holder(entry.key, self.group, self.key_prefix)
        if holder is not None and entry.lease != 0:
            return self.view.semaphore.holds(holder)  # a holder's leftover key blocks nobody
        mark = (entry.key, entry.create_revision)
        if mark not in self._reported_keys:
            self._reported_keys.add(mark)
            why = "is bound to no lease, so it would never expire" if holder else "does not name a valid holder id"
            log.warning("ignoring queue key %r: it %s (remove it with 'locksmithctl reset' or 'etcdctl del')",
                        entry.key, why)
        return True

    # -- watches -------------------------------------------------------------

    def _start_watch(self, me: _Waiter, start_revision: int) -> None:
        """The head watches [halt, semaphore]; any other waiter the deletion of the (at most) two keys ahead.

        Watching two keys, not one, tells the waiter next in line at once
        that the head left, so it always knows when it is next (to move to
        the short lease, and to skip a head that leaves a free slot untaken).
        """
        loop = self._loop
        assert loop is not None
        if me.predecessor is None:
            ranges = [(self.halt_key, self.semaphore_key + "\0", False)]  # halt < semaphore < waiters/
        else:
            ranges = [(entry.key, entry.key + "\0", True) for entry in (me.predecessor, me.second) if entry]

        me.generation += 1
        generation = me.generation

        def on_events(events: list[WatchEvent], revision: int) -> None:
            loop.call_soon_threadsafe(self._apply, me, generation, events)

        def on_broken(error: BaseException) -> None:
            loop.call_soon_threadsafe(self._watch_broken, me, generation, error)

        me.watches = [self.store.watch_range(start, end, start_revision, on_events, on_broken, deletes_only=only)
                      for start, end, only in ranges]

    def _stop_watch(self, me: _Waiter) -> None:
        for watch in me.watches:
            watch.cancel()
        me.watches = []

    def _current(self, me: _Waiter, generation: int) -> bool:
        """False for a late delivery of a watch already stopped."""
        return bool(me.watches) and me.generation == generation and self._local.get(me.holder) is me

    def _apply(self, me: _Waiter, generation: int, events: list[WatchEvent]) -> None:
        if not self._current(me, generation):
            return
        if me.predecessor is not None:
            if any(event.kind == "delete" for event in events):
                me.located = False  # the one ahead left (took a slot, gave up, crashed): look again
                me.ahead -= 1
                me.wake.set()
            return
        for event in events:
            entry = event.entry
            before = set(self.view.semaphore.holders)
            self.view.changed(entry.key, entry.value if event.kind == "put" else None, entry.mod_revision)
            self.handoffs_observed += len(before - set(self.view.semaphore.holders))
        # Wake this head even when another waiter's read already brought the view this far:
        # it may have been asleep on the older view.
        me.wake.set()
        self._wake_heads()

    def _wake_heads(self) -> None:
        """Wake local heads and local hosts that now hold a slot (O(local heads + holders))."""
        for holder in (*self.view.heads, *self.view.semaphore.holders):
            other = self._local.get(holder)
            if other is not None:
                other.wake.set()

    def _watch_broken(self, me: _Waiter, generation: int, error: BaseException) -> None:
        if not self._current(me, generation):
            return
        message = error.one_line() if hasattr(error, "one_line") else repr(error)
        log.warning("queue watch of %s broke (%s); re-reading", me.holder, message)
        self._stop_watch(me)
        me.located = False
        if me.predecessor is not None:  # the head comes back at once, the others spread out
            me.jitter_s = self._rng.uniform(0.0, min(RECOVERY_JITTER_MAX_S, self.retry_max_s))
        me.wake.set()

    def _lease_lost(self) -> None:
        """Every local waiter key went with the lease: queue again (at the back)."""
        for me in self._local.values():
            me.create_revision, me.located = 0, False
            me.jitter_s = self._rng.uniform(0.0, min(RECOVERY_JITTER_MAX_S, self.retry_max_s))
            me.wake.set()

    # -- at the head ---------------------------------------------------------

    async def _attempt(self, me: _Waiter, info: Mapping[str, Any] | None) -> bool:
        new = self.view.semaphore.lock(me.holder, info)
        taken = HistoryEvent(at=datetime.now(timezone.utc), host=me.holder, event="slot-taken",
                             detail=f"{len(new.holders)} of max {new.max} held")
        try:
            revision, new = await asyncio.to_thread(
                self.semaphore.write, new, self.view.semaphore_revision,
                delete=(me.key,), events=(taken,), admits_holder=True)
        except AmbiguousWrite:
            log.warning("slot request for %s: reply lost; reading back", me.holder)
            me.located = False
            return False
        if not revision:
            return False
        me.create_revision = 0
        # Apply our own write unless the watch already delivered it or later changes:
        # document and revision must always match, since the next attempt is guarded
        # by that revision and writes that document.
        self.view.changed(self.semaphore_key, new.encode(), revision)
        return True

    def _report_corruption(self, me: _Waiter) -> None:
        """At the head, say once why no slot is taken: a corrupt document or halt record, or a halt."""
        if me.predecessor is not None:
            return
        view = self.view
        problem = view.corrupt or view.halt_corrupt
        text = problem.one_line() if problem else None
        if text is None and view.halt is not None:
            text = f"the group is halted since {view.halt.since.isoformat()} by {view.halt.by}: {view.halt.reason}"
        if text and text != self._reported_corruption:
            log.error("not taking a slot: %s", text)
        self._reported_corruption = text

    async def _mind_stale_holders(self, me: _Waiter) -> None:
        """At the head of a full (not halted) group, act on holders past their deadline."""
        view = self.view
        if self.stale is None or me.predecessor is not None or view.halted or view.semaphore.available > 0:
            return
        due = next_deadline(view.semaphore)
        if due is not None and datetime.now(timezone.utc) >= due:
            await asyncio.to_thread(self.stale.act)

    async def _mind_stuck_head(self, me: _Waiter) -> None:
        """Next in line: remove a head seen leaving a free slot untaken at two looks ``head_timeout_s`` apart."""
        head = me.predecessor
        if head is None or me.ahead != 1 or not self.view.slot_free() or _bounded_by_its_lease(head):
            me.suspect = None
            return
        mark = (head.key, head.create_revision)
        if me.suspect != mark:
            me.suspect = mark  # first look: check again after head_timeout_s
            return
        me.suspect = None
        if await asyncio.to_thread(self.store.delete_if_created, head.key, head.create_revision):
            log.warning("skipped the head of the queue %r: it left a free slot untaken for %.0fs",
                        head.key, self.head_timeout_s)
        me.located = False

    # -- waiting -------------------------------------------------------------

    def _pause_for(self, me: _Waiter) -> float:
        """The recheck pause; shorter next in line behind a free slot, and at the head before a deadline."""
        pause = self.recheck_interval_s * (0.8 + 0.4 * self._rng.random())
        if self.session.is_far(me.lease_id):
            # Far from the head the watch is enough for longer; a random phase spreads a fleet's re-reads.
            pause = max(self.recheck_interval_s, FAR_RECHECK_S) * self._rng.uniform(0.1, 1.2)
        view = self.view
        if me.suspect is not None:
            pause = min(pause, self.head_timeout_s)
        elif me.predecessor is not None and me.ahead == 1 and view.slot_free():
            pause = min(pause, self.head_timeout_s)
        if self.stale is not None and me.predecessor is None and view.semaphore.available <= 0:
            due = next_deadline(view.semaphore)
            if due is not None:
                until_s = (due - datetime.now(timezone.utc)).total_seconds()
                if until_s > 0:
                    pause = min(pause, until_s + 0.5 + self._rng.random())
        return pause

    async def _sleep_until(self, me: _Waiter, deadline: datetime | None, pause_s: float,
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
            if relocate_on_timeout and self.session.is_far(me.lease_id) and me.located:
                me.verify = True  # far back the watch covers the place: only check the key still lives
            elif relocate_on_timeout:
                me.located = False
        me.wake.clear()
        if deadline is not None and datetime.now(deadline.tzinfo) >= deadline:
            return False
        return True

    async def _leave(self, me: _Waiter) -> None:
        try:
            await asyncio.to_thread(self.store.delete, me.key)
        except StoreError as error:
            log.info("could not remove queue key of %s (its lease will): %s", me.holder, error.one_line())


def _bounded_by_its_lease(head: StoredKey) -> bool:
    """True for a head queued through the FleetLock server: it is never skipped here.

    Such a client takes its slot when it next polls; its key's lease (TTL =
    the server's grace time, renewed by each poll) already bounds how long a
    client that stopped asking can keep a slot free.
    """
    try:
        value = json.loads(head.value)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(value, dict) and value.get("via") == "fleetlock"
