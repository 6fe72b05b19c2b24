"""The queue walk's decisions on time and change: pauses, a stuck head, watch events, and what to watch.

Pure like ``queue_walk.py`` (whose docstring holds the design): the caller
passes monotonic ``now`` and a random source, and does the I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Protocol, Sequence

from locksmithd.core.queue_walk import NEAR_POSITIONS, Action, Entry, Walk, gone
from locksmithd.core.waiter_value import UNKNOWN, Pointer, decode_waiter

FAR_RECHECK_S = 3600.0
"""Safety-net one-key read of a waiter on the long lease, about hourly (its watch on its own key's deletion
tells it sooner): with its lease's keep-alive, about 0.07 requests a minute."""

RECOVERY_JITTER_MAX_S = 5.0
"""Longest pause before a waiter that is not the head re-reads after a broken watch."""


class Draws(Protocol):
    """The random source (random.Random is one)."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...


class Change(Protocol):
    """A watch event (etcd/watch.py's WatchEvent is one): ``kind`` is "put" or "delete"."""

    @property
    def kind(self) -> str: ...

    @property
    def entry(self) -> Entry: ...


WatchSpec = tuple[str, bool, int]
"""One watch wanted, by its first key: (end key, deletes only, start revision)."""


def heads_by_departure(walk: Walk, departed: Mapping[str, int], watching_head: bool) -> bool:
    """True when the one ahead was the head and left: this waiter heads the queue now (watch the head's keys)."""
    pred = walk.predecessor
    return (pred is not None and pred.key in departed and walk.second_known and walk.second is None
            and not watching_head)


def names_to_read(walk: Walk, own_key: str, semaphore_key: str, halt_key: str, served_key: str) -> list[str]:
    """The keys READ_BY_NAME reads (at most six)."""
    return [own_key, semaphore_key, halt_key, served_key,
            *(entry.key for entry in (walk.predecessor, walk.second) if entry)]


def wants_short_lease(walk: Walk, far: bool) -> bool:
    """Near the head (head or next in line) a key on the long lease moves to the short one."""
    return walk.ahead < NEAR_POSITIONS and far


def own_key_after(walk: Walk, lease_id: int) -> tuple[Walk, Action]:
    """REWRITE_OWN_KEY with the key's new ``after`` (to write on ``lease_id``), or NOTHING when nothing changed.

    The head keeps a pointer it has: hosts queueing behind it see the key it
    names leave (replayed by their watch) by taking a slot; one it lacks
    becomes null ("the head"). Others name their predecessor.
    """
    pred = walk.predecessor
    if pred is None:
        after = None if walk.after is UNKNOWN else walk.after
    else:
        after = Pointer(pred.key, pred.create_revision, seen=walk.located_at)
    stored = walk.after if isinstance(walk.after, Pointer) else None
    if lease_id == walk.lease_id and walk.after is not UNKNOWN and (after is None) == (walk.after is None) and (
            after is None or (stored is not None and (stored.key, stored.created) == (after.key, after.created))):
        return walk, Action.NOTHING
    return replace(walk, after=after), Action.REWRITE_OWN_KEY


def stuck_head(walk: Walk, *, slot_free: bool, head_via_fleetlock: bool, now: float,
               head_timeout_s: float) -> tuple[Walk, Action]:
    """Next in line: SKIP_HEAD for a head seen leaving a free slot untaken at two looks ``head_timeout_s`` apart.

    A FleetLock client's key is never skipped: its lease bounds it already.
    """
    head = walk.predecessor
    if head is None or walk.ahead != 1 or not slot_free or head_via_fleetlock:
        return replace(walk, suspect=None), Action.NOTHING
    if walk.suspect is None or walk.suspect[:2] != (head.key, head.create_revision):
        return replace(walk, suspect=(head.key, head.create_revision, now)), Action.NOTHING  # look again later
    if now - walk.suspect[2] < head_timeout_s:
        return walk, Action.NOTHING  # an earlier look (a broken watch, a lost reply): the head still has time
    return replace(walk, suspect=None), Action.SKIP_HEAD


def minds_stale(walk: Walk, *, has_policy: bool, halted: bool, available: int) -> bool:
    """True at the head of a full, not halted group with a stale policy: it minds holders' deadlines."""
    return has_policy and walk.predecessor is None and not halted and available <= 0


def stale_action(walk: Walk, *, has_policy: bool, halted: bool, available: int, deadline_passed: bool) -> Action:
    """ACT_ON_STALE when this waiter minds stale holders and a holder's deadline has passed, else NOTHING."""
    if minds_stale(walk, has_policy=has_policy, halted=halted, available=available) and deadline_passed:
        return Action.ACT_ON_STALE
    return Action.NOTHING


def pause_s(walk: Walk, *, recheck_interval_s: float, far: bool, slot_free: bool, head_timeout_s: float,
            now: float, stale_in_s: float | None, rng: Draws) -> float:
    """How long to SLEEP: the recheck pause; shorter next in line behind a free slot, and before a deadline.

    ``stale_in_s``: at the head of a full group with a stale policy, seconds
    until the next holder's deadline (None otherwise).
    """
    pause = recheck_interval_s * (0.8 + 0.4 * rng.random())
    if far:
        # Far from the head the watch is enough for longer; a random phase spreads a fleet's re-reads.
        pause = max(recheck_interval_s, FAR_RECHECK_S) * rng.uniform(0.5, 1.5)
    if walk.suspect is not None:  # wake when the head's time is up (a small margin past it)
        left_s = walk.suspect[2] + head_timeout_s - now
        pause = min(pause, max(left_s, 0.0) + 0.05)
    elif walk.predecessor is not None and walk.ahead == 1 and slot_free:
        pause = min(pause, head_timeout_s)
    if stale_in_s is not None and stale_in_s > 0:
        pause = min(pause, stale_in_s + 0.5 + rng.random())
    return pause


def quiet(walk: Walk, far: bool) -> tuple[Walk, Action]:
    """A quiet period ended: far back only check the key lives (VERIFY), else read again."""
    if far and walk.located:
        return replace(walk, verify=True), Action.VERIFY  # far back the watch covers the place
    return replace(walk, located=False), Action.READ_BY_NAME if walk.cheap else Action.READ_PLACE


def watch_news(walk: Walk, events: Sequence[Change]) -> dict[str, int] | None:
    """A waiter's (not the head's) watch events: the keys seen deleted (-> revision), or None if nothing new.

    A deletion ahead (took a slot, gave up, crashed) or the predecessor
    naming the key ahead of it (other puts: a lease move) calls for
    READ_BY_NAME.
    """
    departed: dict[str, int] = {}
    news = False
    for event in events:
        if event.kind == "delete":
            departed[event.entry.key] = event.entry.mod_revision
            news = True
        elif walk.predecessor is not None and event.entry.key == walk.predecessor.key \
                and decode_waiter(event.entry.value).after is not UNKNOWN:
            news = True
    return departed if news else None


def read_again(walk: Walk) -> Walk:
    """News arrived: the place must be read again."""
    return replace(walk, located=False)


def watch_broken(walk: Walk, rng: Draws, retry_max_s: float) -> Walk:
    """A watch broke: read by name again, forgetting ``second_from``; the head at once, others jittered."""
    walk = replace(walk, located=False, second_from=0)  # events may be lost: re-read the second by name too
    if walk.predecessor is not None:
        walk = replace(walk, jitter_s=rng.uniform(0.0, min(RECOVERY_JITTER_MAX_S, retry_max_s)))
    return walk


def lease_lost(walk: Walk, rng: Draws, retry_max_s: float) -> Walk:
    """The key went with the lease: queue again (at the back) after a jittered pause."""
    return replace(gone(walk), jitter_s=rng.uniform(0.0, min(RECOVERY_JITTER_MAX_S, retry_max_s)))


def wanted_watches(walk: Walk, *, own_key: str, halt_key: str, semaphore_key: str, start_revision: int,
                   may_attempt: bool = False) -> Mapping[str, WatchSpec]:
    """The head watches [halt, semaphore]; any other waiter the deletion of the (at most) two keys ahead
    and of its own key.

    A head that ``may_attempt`` (a slot free in what it just read) watches
    nothing yet: it attempts first, and a won slot needs no watch. A lost
    or impossible attempt reads again, and that read's placing starts the
    watch from its revision + 1, so no change after the read is missed.

    Watching two keys, not one, tells the waiter next in line at once
    that the head left, so it always knows when it is next (to move to
    the short lease, and to skip a head that leaves a free slot untaken).
    While the predecessor's own predecessor is unknown, its puts are
    watched too (its host writes ``after`` once it has located itself).
    """
    if walk.predecessor is None:
        return {} if may_attempt else {halt_key: (semaphore_key + "\0", False, start_revision)}  # halt < semaphore
    pred = walk.predecessor
    wanted: dict[str, WatchSpec] = {
        pred.key: (pred.key + "\0", walk.second_known, start_revision),
        own_key: (own_key + "\0", True, start_revision)}  # removed by an operator: queue again
    if walk.second is not None:
        wanted[walk.second.key] = (walk.second.key + "\0", True, walk.second_from or start_revision)
    return wanted


def jitter_first(walk: Walk) -> tuple[Walk, float]:
    """A pending recovery pause (PAUSE), taken once."""
    return replace(walk, jitter_s=0.0), walk.jitter_s

