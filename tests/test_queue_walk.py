"""The queue walk's states and transitions, from tables of cases (as h11 tests its _state.py): no etcd, no clock."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import pytest

from locksmithd.core import queue_pause as qp
from locksmithd.core import queue_walk as qw
from locksmithd.core.queue_walk import Action, KeyRef, Mode, Walk, mode_of
from locksmithd.core.waiter_value import UNKNOWN, Pointer, WaiterValue, encode_waiter

PREFIX = "g/waiters/"
ME, SEM, HALT, SERVED = PREFIX + "me", "g/semaphore", "g/halt", "g/served"


def key(name: str, created: int, value: bytes = b"", lease: int = 7, mod: int = 0) -> KeyRef:
    return KeyRef(PREFIX + name, value, created, mod or created, lease)


def told(after: object = UNKNOWN, via: str | None = None) -> bytes:
    """A waiter value naming ``after`` (a Pointer, None at the head, or UNKNOWN: not written yet)."""
    return encode_waiter(WaiterValue("2026-12-06T00:00:00.000+00:00", 3, after=after, via=via))


A, B = key("a", 10), key("b", 15)
MINE = key("me", 20)
# The states of the docstring's table, one typical walk each.
NOT_QUEUED = Walk(ticket=9)
PLACE_UNKNOWN = Walk(create_revision=20, lease_id=5)
KNOWN_BY_NAME = Walk(create_revision=20, cheap=True, predecessor=B, second=A, second_known=True, lease_id=5)
VERIFY_ONLY = Walk(create_revision=20, located=True, verify=True, cheap=True, predecessor=B, second=A,
                   ahead=5, ticket=30, served_ticket=20, lease_id=5)
AT_HEAD = Walk(create_revision=20, located=True, cheap=True, lease_id=5)
NEXT_IN_LINE = Walk(create_revision=20, located=True, cheap=True, predecessor=B, ahead=1, lease_id=5)
FAR = Walk(create_revision=20, located=True, cheap=True, predecessor=B, second=A, ahead=4, ticket=30,
           served_ticket=25, lease_id=5)


def test_every_state_has_a_typical_walk() -> None:
    """mode_of classifies each state's example as that state, and the examples cover every Mode."""
    examples = {NOT_QUEUED: Mode.NOT_QUEUED, PLACE_UNKNOWN: Mode.PLACE_UNKNOWN, KNOWN_BY_NAME: Mode.KNOWN_BY_NAME,
                VERIFY_ONLY: Mode.VERIFY_ONLY, AT_HEAD: Mode.AT_HEAD, NEXT_IN_LINE: Mode.NEXT_IN_LINE, FAR: Mode.FAR}
    assert {mode_of(walk): mode for walk, mode in examples.items()} == {mode: mode for mode in Mode}


@dataclass(frozen=True)
class Snap:
    """What a READ_BY_NAME read: the keys found, at ``revision``, and the revisions the semaphore was written at."""

    keys: tuple[KeyRef, ...]
    revision: int = 40
    written_at: frozenset[int] = frozenset()
    departed: tuple[tuple[str, int], ...] = ()
    leaseless: tuple[str, ...] = ()


def by_name(snap: Snap) -> Callable[[Walk], tuple[Walk, Action]]:
    """READ_BY_NAME's read, then (when it placed the waiter) settled as the I/O side does."""
    def event(walk: Walk) -> tuple[Walk, Action]:
        walk, action = qw.stepped(walk, own_key=ME, revision=snap.revision, keys={e.key: e for e in snap.keys},
                                  written_at=snap.written_at, departed=dict(snap.departed), served=0,
                                  waits=lambda e: e.key not in snap.leaseless, prefix=PREFIX)
        return (qw.settled(walk, quiet=True), action) if action is Action.PLACED else (walk, action)
    return event


def place_read(*ahead: KeyRef) -> Callable[[Walk], tuple[Walk, Action]]:
    return lambda walk: (qw.settled(qw.placed_by_read(walk, list(ahead), 40), quiet=True), Action.PLACED)


def enqueue(created: bool, previous: KeyRef | None, stored: WaiterValue | None = None,
            group_read_at: int = 0, served: int = 0, served_at: int = 18) -> Callable[[Walk], tuple[Walk, Action]]:
    """The enqueue txn's reply (with the group read at ``group_read_at``), then settled as the I/O side does."""
    def event(walk: Walk) -> tuple[Walk, Action]:
        walk, action = qw.enqueued(qw.queueing(walk, "now"), create_revision=20, lease_id=6, created=created,
                                   previous=previous, ticket=31, stored=stored, group_read_at=group_read_at,
                                   served=served, served_at=served_at)
        return (qw.settled(walk, quiet=True), action) if action is Action.PLACED else (walk, action)
    return event


def verify(mine_created: int, served: int = 0) -> Callable[[Walk], tuple[Walk, Action]]:
    return lambda walk: qw.verified(walk, mine_created=mine_created, served=served)


def plain(change: Callable[[Walk], Walk]) -> Callable[[Walk], tuple[Walk, Action]]:
    return lambda walk: (change(walk), Action.NOTHING)


class Rng:
    """A random source that always draws the middle (0.5 of the range)."""

    def random(self) -> float:
        return 0.5

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


@dataclass(frozen=True)
class Event:
    kind: str
    entry: KeyRef


def watch(*events: Event) -> Callable[[Walk], tuple[Walk, Action]]:
    """A non-head waiter's watch delivery: news makes it read again by name."""
    def event(walk: Walk) -> tuple[Walk, Action]:
        departed = qp.watch_news(walk, events)
        return (qp.read_again(walk), Action.READ_BY_NAME) if departed is not None else (walk, Action.NOTHING)
    return event


def stuck(now: float, slot_free: bool = True, fleetlock: bool = False) -> Callable[[Walk], tuple[Walk, Action]]:
    return lambda walk: qp.stuck_head(walk, slot_free=slot_free, head_via_fleetlock=fleetlock, now=now,
                                      head_timeout_s=60.0)


SERVED_AT = frozenset({35})
TRANSITIONS = [
    # NOT_QUEUED
    pytest.param(NOT_QUEUED, enqueue(True, B), Mode.KNOWN_BY_NAME, Action.READ_BY_NAME,
                 lambda w: w.predecessor == B and not w.second_known and w.ticket == 31, id="enqueued-behind-tail"),
    pytest.param(NOT_QUEUED, enqueue(True, B, group_read_at=20, served=29), Mode.KNOWN_BY_NAME,
                 Action.READ_BY_NAME, lambda w: w.predecessor == B and w.located_at == 0,
                 id="enqueued-behind-tail-not-served-yet"),
    pytest.param(NOT_QUEUED, enqueue(True, B, group_read_at=20, served=30), Mode.AT_HEAD, Action.PLACED,
                 lambda w: (w.predecessor, w.ahead, w.located_at, w.second_from, w.served_ticket)
                 == (None, 0, 20, 21, 30),
                 id="enqueued-behind-one-served-is-head"),
    pytest.param(NOT_QUEUED, enqueue(True, B, group_read_at=20, served=30, served_at=12), Mode.KNOWN_BY_NAME,
                 Action.READ_BY_NAME, None, id="enqueued-behind-a-ticket-served-before-its-key-was-created"),
    pytest.param(NOT_QUEUED, enqueue(True, B, served=30), Mode.KNOWN_BY_NAME, Action.READ_BY_NAME,
                 None, id="enqueued-behind-one-served-but-group-not-read"),
    pytest.param(NOT_QUEUED, enqueue(True, None), Mode.PLACE_UNKNOWN, Action.READ_PLACE,
                 lambda w: w.ticket == 31 and w.since == "now", id="enqueued-first-ever"),
    pytest.param(NOT_QUEUED, enqueue(True, None, group_read_at=20, served=30), Mode.PLACE_UNKNOWN,
                 Action.READ_PLACE, None, id="enqueued-at-empty-tail-keys-without-tail-may-wait"),
    pytest.param(NOT_QUEUED, enqueue(False, None, WaiterValue("before", 4, after=None)), Mode.PLACE_UNKNOWN,
                 Action.READ_PLACE, lambda w: (w.since, w.ticket, w.after) == ("before", 4, None),
                 id="enqueue-found-own-key-restart"),
    pytest.param(NOT_QUEUED, enqueue(False, B, WaiterValue("before", 4, after=None), group_read_at=20, served=30),
                 Mode.PLACE_UNKNOWN, Action.READ_PLACE, lambda w: w.located_at == 0,
                 id="enqueue-found-own-key-never-placed-by-the-reply"),
    pytest.param(NOT_QUEUED, enqueue(False, None, WaiterValue(None)), Mode.PLACE_UNKNOWN, Action.READ_PLACE,
                 lambda w: (w.since, w.ticket, w.after) == ("now", 0, UNKNOWN), id="enqueue-found-older-version-key"),
    # KNOWN_BY_NAME: one read of named keys
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE, A, B))), Mode.FAR, Action.PLACED,
                 lambda w: w.second_from == 41 and w.located_at == 40, id="by-name-unchanged"),
    pytest.param(replace(KNOWN_BY_NAME, second=None), by_name(Snap((MINE,), departed=((B.key, 30),))),
                 Mode.AT_HEAD, Action.PLACED, None, id="by-name-head-left"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE, A), written_at=SERVED_AT, departed=((B.key, 35),))),
                 Mode.AT_HEAD, Action.PLACED, None, id="by-name-pred-left-by-slot"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE, B), written_at=SERVED_AT, departed=((A.key, 35),))),
                 Mode.NEXT_IN_LINE, Action.PLACED, lambda w: w.predecessor == B, id="by-name-second-left-by-slot"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE, replace(A, value=told(None))), departed=((B.key, 33),))),
                 Mode.NEXT_IN_LINE, Action.PLACED, lambda w: w.predecessor.key == A.key, id="by-name-pred-crashed"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE, replace(A, value=told(Pointer(PREFIX + "z", 5, 9)))),
                                             departed=((B.key, 33),))),
                 Mode.FAR, Action.PLACED, lambda w: w.second.key == PREFIX + "z" and w.second_from == 10,
                 id="by-name-pred-crashed-learn-second"),
    pytest.param(replace(KNOWN_BY_NAME, second=None, second_known=False), by_name(Snap((MINE, B))), Mode.FAR,
                 Action.PLACED, lambda w: not w.second_known and w.ahead == 2, id="by-name-pred-names-nothing-yet"),
    pytest.param(replace(KNOWN_BY_NAME, second=None, second_known=False),
                 by_name(Snap((MINE, replace(B, value=told(Pointer(A.key, 10, 12)))))), Mode.FAR, Action.PLACED,
                 lambda w: w.second == KeyRef(A.key, b"", 10, 10, 0), id="by-name-learns-second"),
    pytest.param(replace(KNOWN_BY_NAME, second=None, second_known=False),
                 by_name(Snap((MINE, replace(B, value=told(via="fleetlock"))))), Mode.KNOWN_BY_NAME,
                 Action.READ_PLACE, None, id="by-name-fleetlock-pred-names-nobody"),
    pytest.param(replace(KNOWN_BY_NAME, second=None, second_known=False),
                 by_name(Snap((MINE, replace(B, value=told(Pointer("elsewhere/x", 3, 4)))))), Mode.KNOWN_BY_NAME,
                 Action.READ_PLACE, None, id="by-name-bad-after"),
    pytest.param(replace(KNOWN_BY_NAME, second=None, second_known=False),
                 by_name(Snap((MINE, replace(B, value=told(Pointer(A.key, 16, 17)))))), Mode.KNOWN_BY_NAME,
                 Action.READ_PLACE, None, id="by-name-after-not-older"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE, A, B), leaseless=(B.key,))), Mode.KNOWN_BY_NAME,
                 Action.READ_PLACE, None, id="by-name-pred-passed-over"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE,), departed=((B.key, 33), (A.key, 34)))), Mode.KNOWN_BY_NAME,
                 Action.READ_PLACE, None, id="by-name-both-gone"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((MINE, B), departed=((A.key, 33),))), Mode.KNOWN_BY_NAME,
                 Action.READ_PLACE, None, id="by-name-second-left-without-slot"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((A, B))), Mode.NOT_QUEUED, Action.QUEUE_AGAIN, None,
                 id="by-name-own-key-gone"),
    pytest.param(KNOWN_BY_NAME, by_name(Snap((key("me", 21), A, B))), Mode.NOT_QUEUED, Action.QUEUE_AGAIN, None,
                 id="by-name-own-key-created-anew"),
    pytest.param(replace(KNOWN_BY_NAME, predecessor=None, second=None), by_name(Snap((MINE,))), Mode.AT_HEAD,
                 Action.PLACED, None, id="by-name-head-stays-head"),
    # PLACE_UNKNOWN: the expensive read
    pytest.param(PLACE_UNKNOWN, place_read(), Mode.AT_HEAD, Action.PLACED, lambda w: w.cheap, id="place-head"),
    pytest.param(PLACE_UNKNOWN, place_read(B), Mode.NEXT_IN_LINE, Action.PLACED, None, id="place-next"),
    pytest.param(PLACE_UNKNOWN, place_read(B, A), Mode.FAR, Action.PLACED, lambda w: w.ahead == 2, id="place-far"),
    pytest.param(PLACE_UNKNOWN, plain(qw.gone), Mode.NOT_QUEUED, Action.NOTHING, None, id="place-own-key-gone"),
    # VERIFY_ONLY: far back, a quiet period passed
    pytest.param(VERIFY_ONLY, verify(20, served=28), Mode.FAR, Action.PLACED, lambda w: w.ahead == 2,
                 id="verify-bound-renewed"),
    pytest.param(VERIFY_ONLY, verify(20, served=10), Mode.FAR, Action.PLACED, lambda w: w.ahead == 9,
                 id="verify-bound-from-older-served"),
    pytest.param(replace(VERIFY_ONLY, second=None, second_known=False), verify(20), Mode.PLACE_UNKNOWN,
                 Action.READ_PLACE, None, id="verify-second-never-named"),
    pytest.param(VERIFY_ONLY, verify(0), Mode.NOT_QUEUED, Action.QUEUE_AGAIN, None, id="verify-own-key-gone"),
    pytest.param(replace(VERIFY_ONLY, ahead=1, second=None), verify(20), Mode.NEXT_IN_LINE, Action.NOTHING, None,
                 id="verify-near-nothing-to-bound"),
    # AT_HEAD: the guarded write
    pytest.param(AT_HEAD, plain(qw.gone), Mode.NOT_QUEUED, Action.NOTHING, None, id="head-won-slot"),
    pytest.param(AT_HEAD, plain(qp.read_again), Mode.KNOWN_BY_NAME, Action.NOTHING, None,
                 id="head-lost-race-or-reply"),
    # watch events
    pytest.param(FAR, watch(Event("delete", replace(B, mod_revision=33))), Mode.KNOWN_BY_NAME, Action.READ_BY_NAME,
                 None, id="watch-key-ahead-deleted"),
    pytest.param(replace(FAR, second=None, second_known=False), watch(Event("put", replace(B, value=told(None)))),
                 Mode.KNOWN_BY_NAME, Action.READ_BY_NAME, None, id="watch-pred-names-after"),
    pytest.param(NEXT_IN_LINE, watch(Event("put", replace(B, value=told()))), Mode.NEXT_IN_LINE, Action.NOTHING, None,
                 id="watch-pred-lease-move-ignored"),
    pytest.param(NEXT_IN_LINE, watch(Event("put", replace(A, value=told(None)))), Mode.NEXT_IN_LINE, Action.NOTHING,
                 None, id="watch-other-put-ignored"),
    # NEXT_IN_LINE: a stuck head
    pytest.param(NEXT_IN_LINE, stuck(100.0), Mode.NEXT_IN_LINE, Action.NOTHING,
                 lambda w: w.suspect == (B.key, 15, 100.0), id="stuck-first-look"),
    pytest.param(replace(NEXT_IN_LINE, suspect=(B.key, 15, 100.0)), stuck(159.0), Mode.NEXT_IN_LINE, Action.NOTHING,
                 lambda w: w.suspect is not None, id="stuck-head-still-has-time"),
    pytest.param(replace(NEXT_IN_LINE, suspect=(B.key, 15, 100.0)), stuck(160.0), Mode.NEXT_IN_LINE, Action.SKIP_HEAD,
                 lambda w: w.suspect is None, id="stuck-head-skipped"),
    pytest.param(replace(NEXT_IN_LINE, suspect=(B.key, 14, 0.0)), stuck(160.0), Mode.NEXT_IN_LINE, Action.NOTHING,
                 lambda w: w.suspect == (B.key, 15, 160.0), id="stuck-head-is-a-new-key"),
    pytest.param(replace(NEXT_IN_LINE, suspect=(B.key, 15, 0.0)), stuck(160.0, fleetlock=True), Mode.NEXT_IN_LINE,
                 Action.NOTHING, lambda w: w.suspect is None, id="stuck-fleetlock-head-never-skipped"),
    pytest.param(replace(NEXT_IN_LINE, suspect=(B.key, 15, 0.0)), stuck(160.0, slot_free=False), Mode.NEXT_IN_LINE,
                 Action.NOTHING, lambda w: w.suspect is None, id="stuck-no-free-slot"),
    pytest.param(FAR, stuck(160.0), Mode.FAR, Action.NOTHING, lambda w: w.suspect is None, id="stuck-far-never-skips"),
    # quiet periods
    pytest.param(FAR, lambda w: qp.quiet(w, far=True), Mode.VERIFY_ONLY, Action.VERIFY, None, id="quiet-far"),
    pytest.param(NEXT_IN_LINE, lambda w: qp.quiet(w, far=False), Mode.KNOWN_BY_NAME, Action.READ_BY_NAME, None,
                 id="quiet-near"),
    pytest.param(replace(FAR, cheap=False), lambda w: qp.quiet(w, far=False), Mode.PLACE_UNKNOWN, Action.READ_PLACE,
                 None, id="quiet-place-unknown"),
    # recovery: broken watch, lost lease, store error
    pytest.param(AT_HEAD, plain(lambda w: qp.watch_broken(w, Rng(), 30.0)), Mode.KNOWN_BY_NAME, Action.NOTHING,
                 lambda w: w.jitter_s == 0.0, id="broken-watch-head-at-once"),
    pytest.param(replace(FAR, second_from=17), plain(lambda w: qp.watch_broken(w, Rng(), 30.0)), Mode.KNOWN_BY_NAME,
                 Action.NOTHING, lambda w: w.jitter_s == 2.5 and w.second_from == 0, id="broken-watch-others-jittered"),
    pytest.param(NEXT_IN_LINE, plain(lambda w: qp.watch_broken(w, Rng(), 1.0)), Mode.KNOWN_BY_NAME, Action.NOTHING,
                 lambda w: w.jitter_s == 0.5, id="broken-watch-jitter-capped-by-retry-max"),
    pytest.param(FAR, plain(lambda w: qp.lease_lost(w, Rng(), 30.0)), Mode.NOT_QUEUED, Action.NOTHING,
                 lambda w: w.jitter_s == 2.5, id="lease-lost"),
    pytest.param(AT_HEAD, plain(lambda w: qp.lease_lost(w, Rng(), 30.0)), Mode.NOT_QUEUED, Action.NOTHING,
                 lambda w: w.jitter_s == 2.5, id="lease-lost-head"),
    pytest.param(NEXT_IN_LINE, plain(qp.read_again), Mode.KNOWN_BY_NAME, Action.NOTHING, None, id="store-error"),
]


@pytest.mark.parametrize(("before", "event", "state", "action", "check"), TRANSITIONS)
def test_transition(before: Walk, event: Callable[[Walk], tuple[Walk, Action]], state: Mode, action: Action,
                    check: Callable[[Walk], bool] | None) -> None:
    """Each row of the docstring's transition table: from a state, an event leads to a state and an action."""
    after, done = event(before)
    assert (mode_of(after), done) == (state, action)
    assert check is None or check(after)


@pytest.mark.parametrize(("walk", "lease_id", "action", "after"), [
    pytest.param(AT_HEAD, 5, Action.REWRITE_OWN_KEY, None, id="head-without-pointer-writes-null"),
    pytest.param(replace(AT_HEAD, after=None), 5, Action.NOTHING, None, id="head-already-null"),
    pytest.param(replace(AT_HEAD, after=Pointer(A.key, 10, 12)), 5, Action.NOTHING, Pointer(A.key, 10, 12),
                 id="head-keeps-its-pointer"),
    pytest.param(replace(AT_HEAD, after=None), 8, Action.REWRITE_OWN_KEY, None, id="head-moves-lease"),
    pytest.param(replace(NEXT_IN_LINE, located_at=40), 5, Action.REWRITE_OWN_KEY, Pointer(B.key, 15, 40),
                 id="names-new-predecessor"),
    pytest.param(replace(NEXT_IN_LINE, after=Pointer(B.key, 15, 22), located_at=40), 5, Action.NOTHING,
                 Pointer(B.key, 15, 22), id="same-predecessor-no-write"),
    pytest.param(replace(NEXT_IN_LINE, after=Pointer(A.key, 10, 22), located_at=40), 5, Action.REWRITE_OWN_KEY,
                 Pointer(B.key, 15, 40), id="predecessor-changed"),
    pytest.param(replace(NEXT_IN_LINE, after=None, located_at=40), 5, Action.REWRITE_OWN_KEY,
                 Pointer(B.key, 15, 40), id="was-head-now-behind"),
])
def test_own_key_write(walk: Walk, lease_id: int, action: Action, after: Pointer | None) -> None:
    """REWRITE_OWN_KEY only when the pointer or the lease changed: usually nothing is written."""
    new, done = qp.own_key_after(walk, lease_id)
    assert (done, new.after) == (action, after)


def test_own_value_is_the_wire_format() -> None:
    """The key's value is the codec's: since, ticket and after, in that order (older daemons read it)."""
    walk = replace(NEXT_IN_LINE, since="s", ticket=3, after=Pointer(B.key, 15, 40))
    assert encode_waiter(qw.own_value(walk)) == (
        b'{"since": "s", "ticket": 3, "after": {"key": "g/waiters/b", "created": 15, "seen": 40}}')
    assert encode_waiter(qw.own_value(qw.queueing(walk, "t"))) == b'{"since": "t", "ticket": 3}'


@pytest.mark.parametrize(("ticket", "served", "bound"), [(0, 0, 2), (30, 0, 29), (30, 25, 4), (30, 28, 2),
                                                         (30, 30, 2), (30, 40, 2)])
def test_bound_ahead(ticket: int, served: int, bound: int) -> None:
    """Behind the next in line: arrivals since the last host served, at least 2 (2 when unknown)."""
    assert qw.bound_ahead(Walk(ticket=ticket, served_ticket=served)) == bound


@pytest.mark.parametrize(("walk", "far", "wants"), [(NEXT_IN_LINE, True, True), (AT_HEAD, True, True),
                                                    (FAR, True, False), (NEXT_IN_LINE, False, False)])
def test_short_lease_near_the_head(walk: Walk, far: bool, wants: bool) -> None:
    """The head and the next in line move their key from the long lease to the short one."""
    assert qp.wants_short_lease(walk, far) is wants


@pytest.mark.parametrize(("walk", "wanted"), [
    pytest.param(AT_HEAD, {HALT: (SEM + "\0", False, 41)}, id="head-watches-halt-and-semaphore"),
    pytest.param(NEXT_IN_LINE, {B.key: (B.key + "\0", True, 41), ME: (ME + "\0", True, 41)}, id="next-in-line"),
    pytest.param(replace(FAR, second_from=30), {B.key: (B.key + "\0", True, 41), ME: (ME + "\0", True, 41),
                                                A.key: (A.key + "\0", True, 30)}, id="far-watches-two-ahead"),
    pytest.param(replace(FAR, second=None, second_known=False), {B.key: (B.key + "\0", False, 41),
                                                                 ME: (ME + "\0", True, 41)},
                 id="pred-puts-watched-until-it-names-second"),
])
def test_wanted_watches(walk: Walk, wanted: dict[str, tuple[str, bool, int]]) -> None:
    """The head watches [halt, semaphore]; others the deletion of the keys ahead and of their own key."""
    assert qp.wanted_watches(walk, own_key=ME, halt_key=HALT, semaphore_key=SEM, start_revision=41) == wanted


@pytest.mark.parametrize(("walk", "wanted"), [
    pytest.param(AT_HEAD, {}, id="head-with-a-free-slot-attempts-before-watching"),
    pytest.param(NEXT_IN_LINE, {B.key: (B.key + "\0", True, 41), ME: (ME + "\0", True, 41)},
                 id="only-the-head-attempts"),
])
def test_a_head_that_may_attempt_watches_nothing_yet(walk: Walk, wanted: dict[str, tuple[str, bool, int]]) -> None:
    """Q2: a won slot needs no watch; a lost or impossible attempt reads again and that read starts the watch."""
    assert qp.wanted_watches(walk, own_key=ME, halt_key=HALT, semaphore_key=SEM, start_revision=41,
                             may_attempt=True) == wanted


@pytest.mark.parametrize(("walk", "departed", "watching", "heads"), [
    (replace(NEXT_IN_LINE, second_known=True), {B.key: 30}, False, True),
    (replace(NEXT_IN_LINE, second_known=True), {B.key: 30}, True, False),
    (FAR, {B.key: 30}, False, False),
    (replace(NEXT_IN_LINE, second_known=False), {B.key: 30}, False, False),
    (NEXT_IN_LINE, {A.key: 30}, False, False),
    (AT_HEAD, {}, False, False),
])
def test_heads_by_departure(walk: Walk, departed: dict[str, int], watching: bool, heads: bool) -> None:
    """Only the next in line whose head left starts the head's watch before it reads."""
    assert qp.heads_by_departure(walk, departed, watching) is heads


@pytest.mark.parametrize(("walk", "policy", "halted", "available", "passed", "action"), [
    (AT_HEAD, True, False, 0, True, Action.ACT_ON_STALE),
    (AT_HEAD, True, False, 0, False, Action.NOTHING),
    (AT_HEAD, True, False, 1, True, Action.NOTHING),
    (AT_HEAD, True, True, 0, True, Action.NOTHING),
    (AT_HEAD, False, False, 0, True, Action.NOTHING),
    (NEXT_IN_LINE, True, False, 0, True, Action.NOTHING),
])
def test_stale_holders(walk: Walk, policy: bool, halted: bool, available: int, passed: bool, action: Action) -> None:
    """Only the head of a full, running group with a stale policy acts on a holder past its deadline."""
    assert qp.stale_action(walk, has_policy=policy, halted=halted, available=available,
                           deadline_passed=passed) is action


@pytest.mark.parametrize(("walk", "far", "slot_free", "stale_in_s", "pause"), [
    pytest.param(AT_HEAD, False, False, None, 300.0, id="recheck-interval-jittered"),
    pytest.param(FAR, True, False, None, 3600.0, id="far-hourly"),
    pytest.param(NEXT_IN_LINE, False, True, None, 60.0, id="next-behind-free-slot-head-timeout"),
    pytest.param(replace(NEXT_IN_LINE, suspect=(B.key, 15, 980.0)), False, True, None, 40.05,
                 id="suspect-head-wake-when-time-is-up"),
    pytest.param(replace(NEXT_IN_LINE, suspect=(B.key, 15, 0.0)), False, True, None, 0.05, id="suspect-overdue"),
    pytest.param(AT_HEAD, False, False, 10.0, 11.0, id="stale-deadline-soon"),
    pytest.param(AT_HEAD, False, False, -5.0, 300.0, id="stale-deadline-passed"),
])
def test_pause(walk: Walk, far: bool, slot_free: bool, stale_in_s: float | None, pause: float) -> None:
    """How long to sleep, with now=1000 and a random source at the middle of its range."""
    assert qp.pause_s(walk, recheck_interval_s=300.0, far=far, slot_free=slot_free, head_timeout_s=60.0,
                      now=1000.0, stale_in_s=stale_in_s, rng=Rng()) == pytest.approx(pause)
