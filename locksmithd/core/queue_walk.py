"""The queue walk: one waiter's states and the pure decisions that move it through a group's FIFO queue.

Everything that decides what a waiter does next lives here (and in
``queue_pause.py``: pauses, watches, events); ``etcd/queue.py`` only does
the I/O these functions ask for (transactions, watches, thread hops) and
feeds back what it read. Nothing here reads the clock or draws randomness:
``now`` and a random source are arguments.

How the queue works
-------------------
A host that wants a slot puts a waiter key bound to its process's lease (a
crashed host drops out when the lease expires); its create revision is its
place. Like etcd's own lock recipe, each waiter then follows only the waiter
just ahead of it (its predecessor): one watch on one key, so a handoff sends
one event to one waiter, not one to every waiter. Only the head (no
predecessor) tries the one guarded write of ``etcd/lock.py``: the semaphore
guarded by the revision it holds, its waiter key deleted and history recorded
in the same transaction, refused while halted. It watches the halt record and
the semaphore only when it cannot (or did not) win: a lost race reads again,
watches from that read and decides again, with no retry loop.

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

Invariants
----------
1. Never more than ``max`` holders. This rests on the one guarded write of
   ``etcd/lock.py`` alone: the semaphore is written only if it is still at
   the revision the new document was computed from, and only while the halt
   key is absent. Nothing here can break it: a wrong state makes a host try
   too early (the write fails) or too late (a slower handoff), never admits
   one host too many.
2. One guarded write per acquisition: the head's attempt takes the slot,
   deletes its own waiter key, records ``served`` and history, all at once.
3. First come first served: only the head (no waiter key created before its
   own that a host still waits on) may attempt. The order is broken only
   (a) when the head leaves a free slot untaken for ``head_timeout_s``
   (``stuck_head``: the next in line deletes it, guarded by its create
   revision, and says so in the log), but never a FleetLock client's key
   (its lease, the server's grace time, bounds it already);
   (b) by stale holders: the head of a full group acts on holders past their
   deadline (``minds_stale``), by the group's stale policy;
   (c) by FleetLock clients, which take their slot through the server when
   they next poll, so a daemon behind them waits for that poll;
   (d) during a rolling upgrade from a version without the tail key, old and
   new daemons may be served out of arrival order between each other (``max``
   still holds); a key without ticket or ``after`` only costs the hosts
   behind it a place read (far back, at their hourly check) and a bound of 2.
   Keys no host waits on (no lease, a bad id, a holder's leftover) are passed
   over and do not count as ahead.

States (``Mode``, derived from ``Walk`` by ``mode_of``)
-------------------------------------------------------
======================  ==========================================  =====================================
state                   what the waiter knows                       next request
======================  ==========================================  =====================================
NOT_QUEUED              no key in etcd (new, gone, lease lost)      enqueue: put key + tail, one txn
VERIFY_ONLY             far back, a quiet period passed             verify: read own key and ``served``
PLACE_UNKNOWN           the keys ahead are not known by name        read place: ``locate`` (etcd scans)
KNOWN_BY_NAME           keys ahead known by name, maybe moved       read by name: snapshot of <= 6 keys
AT_HEAD                 located, nobody ahead                       ATTEMPT when a slot is free, else watch
NEXT_IN_LINE            located, exactly one waiter ahead           watch; skip a stuck head
FAR                     located, two or more ahead (a bound)        watch; rare VERIFY
======================  ==========================================  =====================================

Transitions (event -> next state)
---------------------------------
==================  ==========================================================  ==============================
from                event                                                       to
==================  ==========================================================  ==============================
NOT_QUEUED          enqueued, created behind a tail key                         KNOWN_BY_NAME
NOT_QUEUED          enqueued behind a key that took its slot (``served``)       AT_HEAD
NOT_QUEUED          enqueued, created with no tail (first ever)                 PLACE_UNKNOWN
NOT_QUEUED          enqueue found its own key (lost reply, daemon restart)      PLACE_UNKNOWN
KNOWN_BY_NAME       snapshot: pred and second unchanged                         same place (by ``ahead``)
KNOWN_BY_NAME       snapshot: pred gone, it was the head / left by a slot       AT_HEAD
KNOWN_BY_NAME       snapshot: second left by a slot, pred stays                 NEXT_IN_LINE
KNOWN_BY_NAME       snapshot: pred gone otherwise, second waits                 pred := second, learn its after
KNOWN_BY_NAME       snapshot: pred names nothing yet (after unknown)            FAR (bound), watch its puts
KNOWN_BY_NAME       snapshot: a key ahead passed over / both gone / bad after   PLACE_UNKNOWN (READ_PLACE)
KNOWN_BY_NAME       snapshot: own key gone                                      NOT_QUEUED
PLACE_UNKNOWN       place read: 0 / 1 / 2+ waiters ahead                        AT_HEAD / NEXT_IN_LINE / FAR
PLACE_UNKNOWN       place read: own key gone                                    NOT_QUEUED
VERIFY_ONLY         own key still there                                         FAR (bound renewed)
VERIFY_ONLY         own key there, second key ahead never named                 PLACE_UNKNOWN
VERIFY_ONLY         own key gone                                                NOT_QUEUED
AT_HEAD             won the guarded write                                       done (holds a slot)
AT_HEAD             lost the race / reply lost (AmbiguousWrite)                 KNOWN_BY_NAME (read back)
any located         watch: a key ahead deleted / pred names its after           KNOWN_BY_NAME
NEXT_IN_LINE        head leaves a free slot past ``head_timeout_s``             SKIP_HEAD, then KNOWN_BY_NAME
any located         quiet period (no event), near the head                      KNOWN_BY_NAME (or PLACE_UNKNOWN)
FAR                 quiet period (no event), on the long lease                  VERIFY_ONLY
any                 watch broke (compaction, leader lost, endpoint down)        KNOWN_BY_NAME after jitter
any                 lease lost (keep-alive says expired)                        NOT_QUEUED after jitter
any                 store error (not denied)                                    KNOWN_BY_NAME after backoff
==================  ==========================================================  ==============================

Recovery cases
--------------
- Lost reply / AmbiguousWrite: ``enqueue`` is create-if-absent, so a retry
  finds its own key and keeps its place; a lost slot write stops the watch
  and reads back by name; ``reput`` is guarded by the create revision.
- Daemon restart finding its own key: enqueue returns it as stored; its
  ``since``, ``after`` and ticket are kept and the key moves to the new
  lease with one ``reput`` (place kept).
- Compaction of a watch's start revision: the watch breaks; the waiter
  forgets ``second_from`` (watches restart at the read's revision) and reads
  by name, jittered unless it is the head.
- A host leaving mid-queue (crash, gave up, removed): its deletion reaches
  the one or two hosts behind; a deletion not at a semaphore write means
  "left without a slot": the next host takes the second key ahead as its
  predecessor, or reads its place once.
- A FleetLock waiter ahead: its value carries ``via`` and no ``after``, so
  the host behind reads its place; it is never skipped as a stuck head.
- Lease lost: every local key is gone; each waiter queues again at the back.
- Broken watch: see compaction; the same read by name.

Every etcd request of one coordinated reboot
--------------------------------------------
Listed, each with its reason, in ``bench/REQUESTS.md``; tests/test_request_counts.py holds the budget.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Protocol

from locksmithd.core.waiter_value import UNKNOWN, Pointer, WaiterValue, decode_waiter
from locksmithd.core.waiters import holder_under

NEAR_POSITIONS = 2
"""The head and the next one keep their keys on the short lease (and so drop out quickly if they crash)."""


class Entry(Protocol):
    """A stored waiter key as the walk reads it (etcd/store.py's StoredKey is one)."""

    @property
    def key(self) -> str: ...

    @property
    def value(self) -> bytes: ...

    @property
    def create_revision(self) -> int: ...

    @property
    def mod_revision(self) -> int: ...

    @property
    def lease(self) -> int: ...


@dataclass(frozen=True)
class KeyRef:
    """A key ahead known only by name and create revision (from an ``after`` pointer)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


class Mode(enum.Enum):
    """The waiter's state: see the tables above."""

    NOT_QUEUED = "not-queued"
    VERIFY_ONLY = "verify-only"
    PLACE_UNKNOWN = "place-unknown"
    KNOWN_BY_NAME = "known-by-name"
    AT_HEAD = "at-head"
    NEXT_IN_LINE = "next-in-line"
    FAR = "far"


class Action(enum.Enum):
    """What the I/O side does next, as a transition returns it."""

    NOTHING = "nothing"
    PLACED = "placed"  # the place is known: watch, then act by the new state
    READ_BY_NAME = "read-by-name"
    READ_PLACE = "read-place"
    VERIFY = "verify"
    QUEUE_AGAIN = "queue-again"
    REWRITE_OWN_KEY = "rewrite-own-key"
    SKIP_HEAD = "skip-head"
    ACT_ON_STALE = "act-on-stale"


@dataclass(frozen=True)
class Walk:
    """What one waiter knows of its place; every change is a new value."""

    create_revision: int = 0  # 0: no key in etcd (not queued yet, or the key is gone)
    located: bool = False  # False: the place must be read (again) before acting
    cheap: bool = False  # True: the keys ahead are known well enough to re-read them by name
    predecessor: Entry | None = None  # the waiter just ahead (None: this one is the head)
    second: Entry | None = None  # the waiter ahead of the predecessor (None: the predecessor is the head)
    second_known: bool = True  # False: the predecessor's own predecessor is not known yet
    second_from: int = 0  # the revision from which to watch ``second`` (its deletion since then matters)
    ahead: int = 0  # keys ahead: exact at the head (0) and next in line (1); further back an upper bound
    ticket: int = 0  # its number in the order of arrival (0: unknown), kept in the key's value
    served_ticket: int = 0  # the newest ``served`` ticket read: hosts up to it have taken their slots
    lease_id: int = 0  # the lease the key is on (a tiered session: the long one far from the head)
    since: str = ""  # when it queued (kept in the key's value, which also carries ``after``)
    after: Any = UNKNOWN  # the ``after`` pointer stored in the key's value (Pointer, None, or UNKNOWN)
    jitter_s: float = 0.0  # pause before the next read (recovery without a herd)
    verify: bool = False  # the next pass checks only that the key still exists (one key read)
    suspect: tuple[str, int, float] | None = None  # a head seen not taking a free slot: key, create
    # revision, and when it was first seen so (monotonic time passed in)
    located_at: int = 0  # the revision of the last read of the keys ahead
    rewrite_due: bool = False  # the key's value or lease may need writing (see own_key_after)


def mode_of(walk: Walk) -> Mode:
    """The waiter's state, from what it knows."""
    if walk.create_revision == 0:
        return Mode.NOT_QUEUED
    if walk.verify:
        return Mode.VERIFY_ONLY
    if not walk.located:
        return Mode.KNOWN_BY_NAME if walk.cheap else Mode.PLACE_UNKNOWN
    if walk.predecessor is None:
        return Mode.AT_HEAD
    return Mode.NEXT_IN_LINE if walk.ahead == 1 else Mode.FAR


def gone(walk: Walk) -> Walk:
    """Its key is gone (lease expired, removed, or taken out with a slot): queue again."""
    return replace(walk, create_revision=0, located=False)


def queueing(walk: Walk, since: str) -> Walk:
    """Before the put: the value written carries ``since`` and no ``after`` (the old ticket, as always)."""
    return replace(walk, since=since, after=UNKNOWN)


def own_value(walk: Walk) -> WaiterValue:
    """What the waiter's own key says (written by ENQUEUE and REWRITE_OWN_KEY)."""
    return WaiterValue(walk.since, walk.ticket, after=walk.after)


def enqueued(walk: Walk, *, create_revision: int, lease_id: int, created: bool, previous: Entry | None,
             ticket: int, stored: WaiterValue | None, group_read_at: int = 0,
             served: int = 0, served_at: int = 0) -> tuple[Walk, Action]:
    """After the put: created at the back behind ``previous``, or found as ``stored`` (its place kept).

    PLACED at the head, with no read of the keys ahead, when created behind
    a predecessor that took its slot already (``served``, read in the same
    request at revision ``group_read_at`` with the semaphore and the halt,
    is its ticket, one before ours, written at ``served_at``, after that key
    was created: it was the head then, the rule of ``stepped``; an older
    ``served`` is from before a deleted tail key); else READ_BY_NAME (behind a
    tail key) or READ_PLACE. An empty tail proves nothing (older versions).
    """
    walk = replace(walk, create_revision=create_revision, located=False, lease_id=lease_id,
                   predecessor=previous, second=None, second_known=False,
                   cheap=created and previous is not None, ticket=ticket)
    if not created and stored is not None:
        walk = replace(walk, since=stored.since or walk.since, after=stored.after, ticket=stored.ticket)
    if created and previous is not None and group_read_at and served > 0 and served == ticket - 1 \
            and served_at > previous.create_revision:
        return replace(walk, predecessor=None, cheap=True, second_known=True, located_at=group_read_at,
                       second_from=group_read_at + 1, served_ticket=max(walk.served_ticket, served)), Action.PLACED
    return walk, Action.READ_BY_NAME if walk.cheap else Action.READ_PLACE


def verified(walk: Walk, *, mine_created: int, served: int) -> tuple[Walk, Action]:
    """After VERIFY: QUEUE_AGAIN (key gone), READ_PLACE (second never named), PLACED (bound renewed) or NOTHING."""
    walk = replace(walk, verify=False, served_ticket=max(walk.served_ticket, served))
    if mine_created != walk.create_revision:
        return gone(walk), Action.QUEUE_AGAIN
    if not walk.second_known:
        return replace(walk, located=False, cheap=False), Action.READ_PLACE
    if walk.ahead >= 2:
        return replace(walk, ahead=bound_ahead(walk)), Action.PLACED
    return walk, Action.NOTHING


def _same(keys: Mapping[str, Entry], entry: Entry | None) -> Entry | None:
    """``entry``'s key as read if it is still the key created then, else None."""
    if entry is None:
        return None
    found = keys.get(entry.key)
    return found if found is not None and found.create_revision == entry.create_revision else None


def stepped(walk: Walk, *, own_key: str, revision: int, keys: Mapping[str, Entry], written_at: frozenset[int],
            departed: Mapping[str, int], served: int, waits: Callable[[Entry], bool],
            prefix: str) -> tuple[Walk, Action]:
    """After READ_BY_NAME: PLACED, READ_PLACE (only a place read will do) or QUEUE_AGAIN.

    Knows the new place without reading the queue in the usual cases: the
    key ahead (or the one ahead of it) took a slot, so it was the head; or
    the key ahead left and the one ahead of it is still there. ``waits``
    applies the one waiter rule.
    """
    walk = replace(walk, served_ticket=max(walk.served_ticket, served))
    mine = keys.get(own_key)
    if mine is None or mine.create_revision != walk.create_revision:
        return replace(walk, create_revision=0), Action.QUEUE_AGAIN
    walk = replace(walk, located_at=revision)
    pred, second = walk.predecessor, walk.second
    pred_now, second_now = _same(keys, pred), _same(keys, second)
    if second_now is not None:
        walk = replace(walk, second_from=revision + 1)  # it existed then: watching from there misses nothing

    def left_served(entry: Entry | None) -> bool:
        return entry is not None and departed.get(entry.key, 0) in written_at

    if pred is None:
        return walk, Action.PLACED  # the head stays the head
    if pred_now is None:
        # It was the head (as known, or because it, or the one ahead of it, left by taking a slot).
        if (walk.second_known and second is None) or left_served(pred) or left_served(second):
            return replace(walk, predecessor=None, second=None, second_known=True), Action.PLACED
        if second_now is None or not waits(second_now):
            return walk, Action.READ_PLACE  # both gone, the one ahead of it unknown or passed over
        return learn_second(replace(walk, predecessor=second_now), second_now, revision, prefix=prefix)
    if not waits(pred_now):
        return walk, Action.READ_PLACE  # passed over: only a place read finds who is really ahead
    walk = replace(walk, predecessor=pred_now)
    if second is not None and second_now is None:
        if not left_served(second):
            return walk, Action.READ_PLACE
        return replace(walk, second=None, second_known=True), Action.PLACED  # the predecessor heads now
    if not walk.second_known:
        return learn_second(walk, pred_now, revision, prefix=prefix)
    return walk, Action.PLACED


def learn_second(walk: Walk, pred: Entry, revision: int, *, prefix: str) -> tuple[Walk, Action]:
    """Take the predecessor's ``after`` pointer as the second key ahead: PLACED, or READ_PLACE."""
    told = decode_waiter(pred.value)
    pointer = told.after
    if pointer is UNKNOWN:
        if told.via is not None:
            return walk, Action.READ_PLACE  # queued through FleetLock: its value never names the key ahead
        return replace(walk, second=None, second_known=False), Action.PLACED  # not written yet: watch for it
    if pointer is None:
        return replace(walk, second=None, second_known=True), Action.PLACED
    assert isinstance(pointer, Pointer)
    if holder_under(pointer.key, prefix) is None or pointer.created >= pred.create_revision:
        return walk, Action.READ_PLACE  # not a key its host could have named (written by hand?)
    second = KeyRef(pointer.key, b"", pointer.created, pointer.created, 0)
    return replace(walk, second=second, second_known=True,
                   second_from=min(pointer.seen, revision) + 1), Action.PLACED


def placed_by_read(walk: Walk, ahead: list[Entry], revision: int) -> Walk:
    """After READ_PLACE: the (at most two) nearest waiters ahead, newest first, read at ``revision``."""
    return replace(walk, predecessor=ahead[0] if ahead else None, second=ahead[1] if len(ahead) > 1 else None,
                   second_known=True, second_from=revision + 1, located_at=revision, cheap=True)


def settled(walk: Walk, *, quiet: bool) -> Walk:
    """Placed: the number ahead, a suspect head forgotten if it is no longer ahead, the key's value due.

    ``quiet``: no watch event arrived during the read (otherwise read again).
    """
    pred = walk.predecessor
    ahead = 0 if pred is None else 1 if walk.second is None and walk.second_known else bound_ahead(walk)
    suspect = walk.suspect
    if pred is None or pred.key != (suspect or ("", 0))[0]:
        suspect = None
    return replace(walk, ahead=ahead, suspect=suspect, located=quiet, rewrite_due=True)


def bound_ahead(walk: Walk) -> int:
    """Keys ahead of a waiter behind the next in line, at most: arrivals after the last host served.

    Hosts that left without a slot (or took one through FleetLock) since
    are still counted, so it is an upper bound; 2 when its ticket is
    unknown (a key from an older version).
    """
    if walk.ticket > walk.served_ticket:  # none served yet (0): every arrival before it
        return max(2, walk.ticket - walk.served_ticket - 1)
    return 2
