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

Finding one's place costs etcd a constant amount of work, whatever the
queue length (a range bounded by create revision would make etcd read the
whole queue). Creating a waiter key also sets the group's tail key and reads
its old value back: the waiter just ahead. Each waiter then records in its
own key's value the waiter ahead of it (``after``: key, create revision and
a revision at which it existed; null at the head), so the host behind it
learns the second key ahead from one key read. When a key ahead is deleted,
one read of a handful of named keys tells whether it left by taking a slot
(the semaphore was written at the revision of the deletion): then the host
behind it is the new head, or the new next in line. Only when a waiter in the
middle of the queue leaves otherwise (crashed, gave up, removed) do the two
hosts behind it read their place the expensive way (``EtcdStore.locate``),
once. Every recovery (broken watch, lost lease, leader change) is the same
read of named keys, after a jittered pause so that a fleet does not come
back all at once. Keys no host could have written are passed over and
reported: a waiter key bound to no lease (it would never expire) and one
whose id breaks the naming rule. The waiter next in line checks every
``head_timeout_s`` that the head takes a free slot, and removes a head that
did not (reporting it), so no single key can stall a group. A waiter's place
is exact at the head and next in line; further back it is bounded by tickets:
each new key's number in the order of arrival (the tail key's version), and
the ticket of the last host that took a slot (``served``, written with it).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from locksmithd.core.backoff import Backoff
from locksmithd.core.history import HistoryEvent
from locksmithd.core.names import printable
from locksmithd.core.queue_view import GroupView
from locksmithd.core.waiter_value import UNKNOWN, Pointer, WaiterValue, decode_waiter, encode_waiter, served_ticket
from locksmithd.core.waiters import WaiterKind, classify_waiter
from locksmithd.errors import AmbiguousWrite, LeaseLost, StoreError
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import served_key, tail_key, waiter_holder, waiter_key, waiters_prefix
from locksmithd.etcd.lease import LeaseSession
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.stale import StaleHolders, next_deadline
from locksmithd.etcd.store import Place, Snapshot, StoredKey
from locksmithd.etcd.watch import WatchEvent

__all__ = ["GroupQueue", "LeaseSession"]

log = logging.getLogger("locksmithd.queue")

NEAR_POSITIONS = 2
"""The head and the next one keep their keys on the short lease (and so drop out quickly if they crash)."""

FAR_RECHECK_S = 3600.0
"""Safety-net one-key read of a waiter on the long lease, about hourly (its watch on its own key's deletion
tells it sooner): with its lease's keep-alive, about 0.07 requests a minute."""

WATCH_SETUP_WAIT_S = 0.5
"""Longest wait for etcd to set up a new head's watch before reading the semaphore (normally a millisecond);
past it the head reads at once and again when the watch is set up."""

RECOVERY_JITTER_MAX_S = 5.0
"""Longest pause before a waiter that is not the head re-reads after a broken watch."""


@dataclass(frozen=True)
class _Watch:
    """One watch of a waiter; ``token`` tells its deliveries from those of a watch already replaced."""

    handle: Any
    token: object
    deletes_only: bool


@dataclass
class _Waiter:
    """One local host in the queue, what it knows of the keys ahead, and the watches it keeps."""

    holder: str
    key: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    create_revision: int = 0  # 0: no key in etcd (not queued yet, or the key is gone)
    located: bool = False  # False: the place must be read (again) before acting
    cheap: bool = False  # True: the keys ahead are known well enough to re-read them by name
    predecessor: StoredKey | None = None  # the waiter just ahead (None: this one is the head)
    second: StoredKey | None = None  # the waiter ahead of the predecessor (None: the predecessor is the head)
    second_known: bool = True  # False: the predecessor's own predecessor is not known yet
    second_from: int = 0  # the revision from which to watch ``second`` (its deletion since then matters)
    departed: dict[str, int] = field(default_factory=dict)  # keys ahead seen deleted -> revision of the deletion
    watches: dict[str, _Watch] = field(default_factory=dict)  # by first key watched
    retiring: list[_Watch] = field(default_factory=list)  # replaced, delivering until the new one is set up
    news: int = 0  # counts watch events that call for a new read (one arriving during a read is not lost)
    ahead: int = 0  # keys ahead: exact at the head (0) and next in line (1); further back an upper bound (>= 2)
    ticket: int = 0  # its number in the order of arrival (0: unknown), kept in the key's value
    served_ticket: int = 0  # the newest ``served`` ticket read: hosts up to it have taken their slots
    lease_id: int = 0  # the lease the key is on (a tiered session: the long one far from the head)
    since: str = ""  # when it queued (kept in the key's value, which also carries ``after``)
    after: Any = UNKNOWN  # the ``after`` pointer stored in the key's value (Pointer, None, or UNKNOWN)
    jitter_s: float = 0.0  # pause before the next read (recovery without a herd)
    verify: bool = False  # the next pass checks only that the key still exists (one key read)
    suspect: tuple[str, int, float] | None = None  # a head seen not taking a free slot: key, create revision,
    # and when it was first seen so (the event loop's clock)
    located_at: int = 0  # the revision of the last read of the keys ahead
    rewrite_due: bool = False  # the key's value or lease may need writing (see _write_own_key)


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
        self.tail_key = tail_key(group, key_prefix)
        self.served_key = served_key(group, key_prefix)
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
                    if me.rewrite_due and not await self._write_own_key(me):
                        continue  # our key is gone: queue again
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

        The place is exact at the head (1) and next in line (2); further back
        it is an upper bound, the arrivals since the last host that took a
        slot, as of the waiter's last read (3 when the tickets are unknown):
        etcd ignores a create-revision bound when it counts, so counting the
        keys ahead would read the whole queue. The queue's length is not known
        either, so the second number is 0.
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
        """Create the waiter key at the back (one request), learning the waiter just ahead from the tail key."""
        lease_id = await self.session.ensure(far=True)  # the short one without tiers; moved when near the head
        me.since = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        me.after = UNKNOWN
        try:
            result = await asyncio.to_thread(self.store.enqueue, me.key, self._value(me), lease_id, self.tail_key)
        except LeaseLost:
            self.session.invalidate(lease_id)
            raise
        entry = result.entry
        me.create_revision, me.located, me.lease_id, me.departed = entry.create_revision, False, lease_id, {}
        me.predecessor, me.second, me.second_known = result.previous, None, False
        me.cheap = result.created and result.previous is not None
        me.ticket = result.ticket
        if not result.created:  # ours from before (a lost reply, a restart): keep its place, move it to our lease
            stored = decode_waiter(entry.value)
            me.since, me.after, me.ticket = stored.since or me.since, stored.after, stored.ticket
            if entry.lease != lease_id and not await self._rewrite(me, lease_id):
                me.create_revision = 0

    async def _rewrite(self, me: _Waiter, lease_id: int) -> bool:
        """Write the key's value (``since``, ``after``) on ``lease_id``, keeping its place; False if it is gone."""
        try:
            done = await asyncio.to_thread(self.store.reput, me.key, self._value(me), lease_id, me.create_revision)
        except LeaseLost:
            self.session.invalidate(lease_id)
            raise
        if done:
            me.lease_id = lease_id
        return done

    @staticmethod
    def _value(me: _Waiter) -> bytes:
        return encode_waiter(WaiterValue(me.since, me.ticket, after=me.after))

    async def _verify(self, me: _Waiter) -> None:
        """The far waiter's safety net: one read of its key and ``served`` (a place read makes etcd scan the queue)."""
        me.verify = False
        snapshot = await asyncio.to_thread(self.store.snapshot, [me.key, self.served_key])
        self._note_served(me, snapshot)
        mine = snapshot.keys.get(me.key)
        if (mine.create_revision if mine else 0) != me.create_revision:
            log.warning("the queue key of %s is gone (lease expired or removed); queueing again", me.holder)
            self._stop_watch(me)
            me.create_revision, me.located = 0, False
        elif not me.second_known:  # the host ahead never said who is ahead of it: read the place once
            me.located, me.cheap = False, False
        elif me.ahead >= 2:
            me.ahead = self._bound_ahead(me)
            self.view.place(me.holder, me.ahead, False)

    async def _locate(self, me: _Waiter) -> None:
        """Read where ``me`` stands, by name when the keys ahead are known, and watch accordingly."""
        news, departed, me.departed = me.news, me.departed, {}
        if (me.predecessor is not None and me.predecessor.key in departed and me.second_known
                and me.second is None and self.halt_key not in me.watches):
            # The one ahead was the head and left: this host heads the queue now. Watch the semaphore
            # from now (a watch from a past revision waits for etcd's catch-up, every 100 ms) and read
            # it once etcd has set the watch up, so that no change falls between the two.
            created = asyncio.get_running_loop().create_future()
            self._add_watch(me, self.halt_key, self.semaphore_key + "\0", False, 0, created)
            try:
                async with asyncio.timeout(WATCH_SETUP_WAIT_S):
                    await asyncio.shield(created)
            except TimeoutError:  # a busy stream: read now, and again once the watch is set up
                created.add_done_callback(lambda _: self._read_again(me))
        if not (me.cheap and await self._step(me, departed)):
            if me.create_revision == 0:
                return
            await self._read_place(me)
            if me.create_revision == 0:
                return
        me.ahead = 0 if me.predecessor is None else 1 if me.second is None and me.second_known else \
            self._bound_ahead(me)
        if me.predecessor is None or me.predecessor.key != (me.suspect or ("", 0))[0]:
            me.suspect = None
        self.view.place(me.holder, me.ahead, me.predecessor is None)
        # Watch first: an event between the read and the watch's creation would reach us only by
        # etcd's catch-up of lagging watches, which runs every 100 ms.
        self._start_watch(me, me.located_at + 1)
        me.located, me.rewrite_due = me.news == news, True  # an event during the read: read again
        if me.predecessor is not None:
            await self._write_own_key(me)  # the head writes after trying for a slot: a won slot deletes the key

    async def _write_own_key(self, me: _Waiter) -> bool:
        """Near the head, move the key to the short lease; record who is ahead in its value. False if it is gone.

        Writes only what changed: usually nothing, one put when the waiter
        ahead changed or the key moves to the short lease (its place is kept).
        """
        me.rewrite_due = False
        near = me.ahead < NEAR_POSITIONS
        lease_id = await self.session.ensure() if near and self.session.is_far(me.lease_id) else me.lease_id
        if me.predecessor is None:
            # The head keeps a pointer it has: hosts queueing behind it see the key it names leave
            # (replayed by their watch) by taking a slot. One it lacks becomes null ("the head").
            after = None if me.after is UNKNOWN else me.after
        else:
            after = Pointer(me.predecessor.key, me.predecessor.create_revision, seen=me.located_at)
        stored = me.after if isinstance(me.after, Pointer) else None
        if lease_id == me.lease_id and me.after is not UNKNOWN and (after is None) == (me.after is None) and (
                after is None or (stored is not None and (stored.key, stored.created) == (after.key, after.created))):
            return True
        me.after = after
        if await self._rewrite(me, lease_id):
            return True
        log.warning("the queue key of %s is gone (lease expired or removed); queueing again", me.holder)
        self._stop_watch(me)
        me.create_revision, me.located = 0, False
        return False

    async def _step(self, me: _Waiter, departed: dict[str, int]) -> bool:
        """Re-read the keys ahead by name (one request, at most six keys); False when that cannot place ``me``.

        Knows the new place without reading the queue in the usual cases: the
        key ahead (or the one ahead of it) took a slot, so it was the head; or
        the key ahead left and the one ahead of it is still there.
        """
        pred, second = me.predecessor, me.second
        names = [me.key, self.semaphore_key, self.halt_key, self.served_key,
                 *(entry.key for entry in (pred, second) if entry)]
        snapshot = await asyncio.to_thread(self.store.snapshot, names, self.semaphore_key,
                                           sorted(departed.values()))
        self._snapshot(snapshot.revision, snapshot.keys.get(self.semaphore_key), snapshot.keys.get(self.halt_key))
        self._note_served(me, snapshot)
        mine = snapshot.keys.get(me.key)
        if mine is None or mine.create_revision != me.create_revision:
            log.warning("the queue key of %s is gone (lease expired or removed); queueing again", me.holder)
            me.create_revision = 0
            return False
        me.located_at = snapshot.revision
        pred_now, second_now = _same(snapshot, pred), _same(snapshot, second)
        if second_now is not None:
            me.second_from = snapshot.revision + 1  # it existed then: watching from there misses nothing

        def left_served(entry: StoredKey | None) -> bool:
            return entry is not None and departed.get(entry.key, 0) in snapshot.semaphore_written_at

        if pred is None:
            return True  # the head stays the head
        if pred_now is None:
            # It was the head (as known, or because it, or the one ahead of it, left by taking a slot).
            if (me.second_known and second is None) or left_served(pred) or left_served(second):
                me.predecessor, me.second, me.second_known = None, None, True
                return True
            if second_now is None or not self._waits(second_now):
                return False  # both gone, the one ahead of it unknown or passed over: read the place
            me.predecessor = second_now
            return self._learn_second(me, second_now, snapshot)
        if not self._waits(pred_now):
            return False  # passed over: only a place read finds who is really ahead
        me.predecessor = pred_now
        if second is not None and second_now is None:
            if not left_served(second):
                return False
            me.second, me.second_known = None, True  # it took a slot: the predecessor is the head now
            return True
        if not me.second_known:
            return self._learn_second(me, pred_now, snapshot)
        return True

    def _note_served(self, me: _Waiter, snapshot: Snapshot) -> None:
        served = snapshot.keys.get(self.served_key)
        me.served_ticket = max(me.served_ticket, served_ticket(served.value) if served else 0)

    @staticmethod
    def _bound_ahead(me: _Waiter) -> int:
        """Keys ahead of a waiter behind the next in line, at most: arrivals after the last host served.

        Hosts that left without a slot (or took one through FleetLock) since
        are still counted, so it is an upper bound; 2 when its ticket is
        unknown (a key from an older version).
        """
        if me.ticket > me.served_ticket:  # none served yet (0): every arrival before it
            return max(2, me.ticket - me.served_ticket - 1)
        return 2

    def _learn_second(self, me: _Waiter, pred: StoredKey, snapshot: Snapshot) -> bool:
        """Take the predecessor's ``after`` pointer as the second key ahead; False when only a place read will do."""
        told = decode_waiter(pred.value)
        pointer = told.after
        if pointer is UNKNOWN:
            if told.via is not None:
                return False  # queued through FleetLock: its value never names the key ahead of it
            me.second, me.second_known = None, False  # its host has not written it yet: watch for it
            return True
        if pointer is None:
            me.second, me.second_known = None, True
            return True
        if waiter_holder(pointer.key, self.group, self.key_prefix) is None or pointer.created >= pred.create_revision:
            return False  # not a key its host could have named (written by hand?): read the place
        me.second = StoredKey(pointer.key, b"", pointer.created, pointer.created, 0)
        me.second_known, me.second_from = True, min(pointer.seen, snapshot.revision) + 1
        return True

    async def _read_place(self, me: _Waiter) -> None:
        """Read where ``me`` stands the expensive way (etcd reads the queue); rarely needed."""
        place = await asyncio.to_thread(self.store.locate, me.key, me.create_revision, self.semaphore_key,
                                        self.halt_key, self.prefix)
        sem, halt = place.semaphore, place.halt
        self.view.snapshot(place.revision, (sem.value, sem.mod_revision) if sem else None,
                           halt.value if halt else None)
        self._wake_heads()
        if place.mine is None or place.mine.create_revision != me.create_revision:
            log.warning("the queue key of %s is gone (lease expired or removed); queueing again", me.holder)
            me.create_revision = 0
            return
        ahead = await self._waiters_ahead(place)
        me.predecessor = ahead[0] if ahead else None
        me.second = ahead[1] if len(ahead) > 1 else None
        me.second_known, me.second_from, me.located_at, me.cheap = True, place.revision + 1, place.revision, True

    def _snapshot(self, revision: int, semaphore: StoredKey | None, halt: StoredKey | None) -> None:
        self.view.snapshot(revision, (semaphore.value, semaphore.mod_revision) if semaphore else None,
                           halt.value if halt else None)
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

    def _waits(self, entry: StoredKey) -> bool:
        """True for a key that is a host waiting its turn (the one waiter rule; nothing reported)."""
        return classify_waiter(entry.key, entry.lease, self.prefix, self.view.semaphore.holders)[0] \
            is WaiterKind.WAITING

    def _passed_over(self, entry: StoredKey) -> bool:
        """True for a key ahead that is no waiter to wait for (reported once per key, a holder's silently)."""
        kind, _ = classify_waiter(entry.key, entry.lease, self.prefix, self.view.semaphore.holders)
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

    # -- watches -------------------------------------------------------------

    def _start_watch(self, me: _Waiter, start_revision: int) -> None:
        """The head watches [halt, semaphore]; any other waiter the deletion of the (at most) two keys ahead
        and of its own key.

        Watching two keys, not one, tells the waiter next in line at once
        that the head left, so it always knows when it is next (to move to
        the short lease, and to skip a head that leaves a free slot untaken).
        While the predecessor's own predecessor is unknown, its puts are
        watched too (its host writes ``after`` once it has located itself).
        Watches already in place are kept: one created from a past revision
        is served by etcd's catch-up of lagging watches, every 100 ms.
        """
        if me.predecessor is None:
            wanted = {self.halt_key: (self.semaphore_key + "\0", False, start_revision)}  # halt < semaphore < waiters/
        else:
            wanted = {me.predecessor.key: (me.predecessor.key + "\0", me.second_known, start_revision),
                      me.key: (me.key + "\0", True, start_revision)}  # removed by an operator: queue again
            if me.second is not None:
                wanted[me.second.key] = (me.second.key + "\0", True, me.second_from or start_revision)
        for key in [key for key in me.watches if key not in wanted]:
            me.watches.pop(key).handle.cancel()
        for key, (end, deletes_only, since) in wanted.items():
            kept = me.watches.get(key)
            if kept is not None and kept.deletes_only == deletes_only:
                continue
            if kept is None:
                self._add_watch(me, key, end, deletes_only, since)
                continue
            # Watched already in another mode: the new watch starts now, and the old one keeps
            # delivering until etcd has set the new one up, so that no change falls between them.
            me.retiring.append(kept)
            self._add_watch(me, key, end, deletes_only, 0, retire=kept)

    def _add_watch(self, me: _Waiter, start: str, end: str, deletes_only: bool, since: int,
                   created: asyncio.Future[int] | None = None, retire: _Watch | None = None) -> None:
        loop = self._loop
        assert loop is not None
        token = object()
        head = start == self.halt_key

        def on_events(events: list[WatchEvent], revision: int) -> None:
            loop.call_soon_threadsafe(self._apply, me, token, head, events)

        def settle(revision: int) -> None:
            if created is not None and not created.done():
                created.set_result(revision)
            if retire is not None and retire in me.retiring:
                me.retiring.remove(retire)
                retire.handle.cancel()

        def on_broken(error: BaseException) -> None:
            loop.call_soon_threadsafe(settle, 0)  # the read below goes ahead without it
            loop.call_soon_threadsafe(self._watch_broken, me, token, error)

        def on_created(revision: int) -> None:
            loop.call_soon_threadsafe(settle, revision)

        handle = self.store.watch_range(start, end, since, on_events, on_broken, deletes_only=deletes_only,
                                        on_created=on_created if created is not None or retire else None)
        me.watches[start] = _Watch(handle, token, deletes_only)

    def _stop_watch(self, me: _Waiter) -> None:
        for watch in (*me.watches.values(), *me.retiring):
            watch.handle.cancel()
        me.watches, me.retiring = {}, []

    def _current(self, me: _Waiter, token: object) -> bool:
        """False for a late delivery of a watch already stopped."""
        return self._local.get(me.holder) is me and any(
            watch.token is token for watch in (*me.watches.values(), *me.retiring))

    def _apply(self, me: _Waiter, token: object, head: bool, events: list[WatchEvent]) -> None:
        if not self._current(me, token):
            return
        if not head:
            news = False
            for event in events:
                if event.kind == "delete":  # a key ahead left (took a slot, gave up, crashed): look again
                    me.departed[event.entry.key] = event.entry.mod_revision
                    news = True
                elif me.predecessor is not None and event.entry.key == me.predecessor.key \
                        and decode_waiter(event.entry.value).after is not UNKNOWN:
                    news = True  # the predecessor named the key ahead of it (other puts: a lease move)
            if news:
                me.news += 1
                me.located = False
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

    def _read_again(self, me: _Waiter) -> None:
        """Make ``me`` read its place again (a change may have fallen between a read and a watch)."""
        if self._local.get(me.holder) is me:
            me.news += 1
            me.located = False
            me.wake.set()

    def _wake_heads(self) -> None:
        """Wake local heads and local hosts that now hold a slot (O(local heads + holders))."""
        for holder in (*self.view.heads, *self.view.semaphore.holders):
            other = self._local.get(holder)
            if other is not None:
                other.wake.set()

    def _watch_broken(self, me: _Waiter, token: object, error: BaseException) -> None:
        if not self._current(me, token):
            return
        message = error.one_line() if hasattr(error, "one_line") else printable(str(error) or repr(error), 300)
        log.warning("queue watch of %s broke (%s); re-reading", me.holder, message)
        self._stop_watch(me)
        me.located, me.second_from = False, 0  # events may be lost: re-read the second key ahead by name too
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
        # Stop watching first, so that etcd does not send this write back to us (one event less per
        # handoff); a lost race reads the group again and watches anew.
        self._stop_watch(me)
        me.located = False
        try:
            revision, new = await asyncio.to_thread(
                self.semaphore.write, new, self.view.semaphore_revision, delete=(me.key,), events=(taken,),
                puts=[(self.served_key, str(me.ticket).encode())] if me.ticket else (), admits_holder=True)
        except AmbiguousWrite:
            log.warning("slot request for %s: reply lost; reading back", me.holder)
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
            text = (f"the group is halted since {view.halt.since.isoformat()} by {printable(view.halt.by, 64)}: "
                    f"{printable(view.halt.reason, 500)}")
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
        now = asyncio.get_running_loop().time()
        if me.suspect is None or me.suspect[:2] != (head.key, head.create_revision):
            me.suspect = (head.key, head.create_revision, now)  # first look: check again after head_timeout_s
            return
        if now - me.suspect[2] < self.head_timeout_s:
            return  # an earlier look (a broken watch, a lost reply): the head still has time
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
            pause = max(self.recheck_interval_s, FAR_RECHECK_S) * self._rng.uniform(0.5, 1.5)
        view = self.view
        if me.suspect is not None:  # wake when the head's time is up (a small margin past it)
            left_s = me.suspect[2] + self.head_timeout_s - asyncio.get_running_loop().time()
            pause = min(pause, max(left_s, 0.0) + 0.05)
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
    return decode_waiter(head.value).through_fleetlock


def _same(snapshot: Snapshot, entry: StoredKey | None) -> StoredKey | None:
    """``entry``'s key as read in ``snapshot`` if it is still the key created then, else None."""
    if entry is None:
        return None
    found = snapshot.keys.get(entry.key)
    return found if found is not None and found.create_revision == entry.create_revision else None

