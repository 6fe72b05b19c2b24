"""GroupView, the pure view of one group's semaphore and halt and of where local waiters stand."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from locksmithd.core.queue_view import GroupView
from locksmithd.core.semaphore import Semaphore, initial_semaphore

KEY = "coreos.com/updateengine/rebootlock/semaphore"
HALT = "coreos.com/updateengine/rebootlock/halt"


def view_with(max_slots: int = 1, holders: tuple[str, ...] = (), revision: int = 5,
              heads: tuple[str, ...] = ("a",)) -> GroupView:
    view = GroupView(KEY, halt_key=HALT)
    view.snapshot(revision, (Semaphore(max_slots, holders).encode(), revision), None)
    for head in heads:
        view.place(head, 0, True)
    return view


class TestPlaces:
    def test_empty_view_lets_nobody_attempt(self) -> None:
        """Nobody placed: no position, nobody may try."""
        view = GroupView(KEY)
        assert view.position("a") is None
        assert not view.may_attempt("a")

    def test_place_and_remove(self) -> None:
        """A waiter placed behind another is not a head; removing it is idempotent."""
        view = view_with()
        view.place("b", 1, False)
        assert view.position("b") == 1 and "b" not in view.heads
        view.place("b", 0, True)
        assert view.position("b") == 0 and "b" in view.heads
        view.remove_waiter("b")
        view.remove_waiter("b")
        assert view.position("b") is None and "b" not in view.heads


class TestWhoMayAttempt:
    def test_only_a_head_may_attempt(self) -> None:
        """With a free slot the head may try, a waiter behind it may not."""
        view = view_with(max_slots=2)
        view.place("b", 1, False)
        assert view.may_attempt("a")
        assert not view.may_attempt("b")

    def test_nobody_attempts_without_a_free_slot(self) -> None:
        """All slots taken (or over-subscribed after set-max): the head waits."""
        assert not view_with(max_slots=1, holders=("x",)).may_attempt("a")
        assert not view_with(max_slots=1, holders=("x", "y")).may_attempt("a")

    def test_a_holder_does_not_attempt_again(self) -> None:
        """A head that already holds a slot does not try to take another."""
        assert not view_with(max_slots=2, holders=("a",)).may_attempt("a")

    def test_halt_and_corrupt_halt_block_attempts(self) -> None:
        """A halt record (sound or not) stops the head; its removal lets it go."""
        view = view_with(max_slots=2)
        assert view.changed(HALT, b"not json", 6)
        assert view.halted and not view.may_attempt("a")
        assert view.changed(HALT, None, 7)
        assert view.may_attempt("a")

    def test_corrupt_document_blocks_every_attempt(self) -> None:
        """A document that does not decode is recorded, and nobody may write over it."""
        view = view_with(max_slots=2)
        view.changed(KEY, b'{"semaphore": 5, "max": 1, "holders": []}', 9)
        assert view.corrupt is not None
        assert not view.may_attempt("a")
        view.changed(KEY, Semaphore(1, ()).encode(), 11)
        assert view.corrupt is None and view.may_attempt("a") and view.semaphore_revision == 11


class TestNewsOrder:
    def test_older_news_is_ignored(self) -> None:
        """A snapshot or event older than what the view knows changes nothing."""
        view = view_with(max_slots=1, holders=("x",), revision=10)
        assert not view.changed(KEY, Semaphore(1, ()).encode(), 9)
        view.snapshot(8, (Semaphore(1, ()).encode(), 8), None)
        assert view.semaphore.holders == ("x",) and view.semaphore_revision == 10

    def test_halt_and_semaphore_are_tracked_apart(self) -> None:
        """A halt change seen first does not hide an older semaphore change seen later."""
        view = view_with(max_slots=1, holders=("x",), revision=10)
        assert view.changed(HALT, None, 14)
        assert view.changed(KEY, Semaphore(1, ()).encode(), 12)
        assert view.semaphore.holders == ()

    @given(st.lists(st.tuples(st.integers(1, 100), st.booleans()), max_size=50))
    def test_the_view_keeps_the_newest_document(self, news: list[tuple[int, bool]]) -> None:
        """Whatever order snapshots and events arrive in, the document shown is the newest one."""
        view = GroupView(KEY, halt_key=HALT)
        for revision, as_snapshot in news:
            raw = Semaphore(revision, ()).encode()
            if as_snapshot:
                view.snapshot(revision, (raw, revision), None)
            else:
                view.changed(KEY, raw, revision)
        if news:
            assert view.semaphore.max == max(revision for revision, _ in news)


class TestSemaphoreDocument:
    def test_deleted_document_reads_as_locksmith_initial_value_at_revision_zero(self) -> None:
        """A deleted key is one free slot, and etcd compares an absent key's revision as 0."""
        view = view_with(max_slots=3, holders=("x",))
        view.changed(KEY, None, 17)
        assert view.semaphore == initial_semaphore()
        assert view.semaphore_revision == 0

    def test_document_keeps_its_mod_revision(self) -> None:
        """The revision the next guarded write compares against is the document's."""
        view = view_with(max_slots=2, holders=("x",), revision=42)
        assert view.semaphore_revision == 42
        assert view.semaphore.holders == ("x",)
