"""GroupView, the pure view of one group's semaphore and FIFO queue: order, head, who may try."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from locksmithd.core.queue_view import GroupView
from locksmithd.core.semaphore import Semaphore, initial_semaphore

KEY = "coreos.com/updateengine/rebootlock/semaphore"


def view_with(max_slots: int = 1, holders: tuple[str, ...] = (), waiters: dict[str, int] | None = None,
              revision: int = 5) -> GroupView:
    view = GroupView(KEY)
    view.set_semaphore(Semaphore(max_slots, holders).encode(), revision)
    for holder, create_revision in (waiters or {}).items():
        view.add_waiter(holder, create_revision)
    return view


class TestOrder:
    def test_empty_view_has_no_head(self) -> None:
        """Nobody waiting: no head, an empty queue, nobody may try."""
        view = GroupView(KEY)
        assert view.head() is None
        assert view.queue() == []
        assert not view.may_attempt("a")

    def test_waiters_are_ordered_by_create_revision(self) -> None:
        """Waiters seen out of order (a late watch event) still queue by arrival."""
        view = view_with(waiters={"c": 30, "a": 10})
        view.add_waiter("b", 20)
        assert view.queue() == ["a", "b", "c"]
        assert view.head() == "a"

    def test_reput_with_same_revision_keeps_the_place(self) -> None:
        """A waiter putting its key again (etcd keeps the create revision) does not move."""
        view = view_with(waiters={"a": 10, "b": 20})
        view.add_waiter("a", 10)
        assert view.queue() == ["a", "b"]

    def test_recreated_key_goes_to_the_back(self) -> None:
        """A key deleted and created again (a new create revision) queues anew, last."""
        view = view_with(waiters={"a": 10, "b": 20})
        view.add_waiter("a", 40)
        assert view.queue() == ["b", "a"]

    def test_remove_waiter_is_idempotent(self) -> None:
        """Removing a waiter twice, or one never seen, changes nothing else."""
        view = view_with(waiters={"a": 10, "b": 20})
        view.remove_waiter("a")
        view.remove_waiter("a")
        view.remove_waiter("nobody")
        assert view.queue() == ["b"]

    def test_position_is_zero_based_and_none_when_absent(self) -> None:
        """position() counts only hosts without a slot."""
        view = view_with(max_slots=2, holders=("a",), waiters={"a": 10, "b": 20, "c": 30})
        assert view.position("b") == 0
        assert view.position("c") == 1
        assert view.position("a") is None
        assert view.position("zz") is None

    @given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 1000), st.booleans()), max_size=60))
    def test_queue_is_always_sorted_by_arrival(self, operations: list[tuple[str, int, bool]]) -> None:
        """After any sequence of puts and deletes, the queue is in create-revision order."""
        view = GroupView(KEY)
        for holder, create_revision, is_put in operations:
            if is_put:
                view.add_waiter(holder, create_revision)
            else:
                view.remove_waiter(holder)
        revisions = list(view.waiters.values())
        assert revisions == sorted(revisions)


class TestWhoMayAttempt:
    def test_only_the_head_may_attempt(self) -> None:
        """With a free slot the oldest waiter may try, the others may not."""
        view = view_with(max_slots=2, waiters={"a": 10, "b": 20})
        assert view.may_attempt("a")
        assert not view.may_attempt("b")

    def test_nobody_attempts_without_a_free_slot(self) -> None:
        """All slots taken (or over-subscribed after set-max): the head waits."""
        full = view_with(max_slots=1, holders=("x",), waiters={"a": 10})
        over = view_with(max_slots=1, holders=("x", "y"), waiters={"a": 10})
        assert not full.may_attempt("a")
        assert not over.may_attempt("a")

    def test_a_queued_holder_is_skipped(self) -> None:
        """A host that holds a slot and still has a waiter key is not the head."""
        view = view_with(max_slots=2, holders=("a",), waiters={"a": 10, "b": 20})
        assert view.head() == "b"
        assert view.queue() == ["b"]
        assert not view.may_attempt("a")
        assert view.may_attempt("b")

    def test_corrupt_document_blocks_every_attempt(self) -> None:
        """A document that does not decode is recorded, and nobody may write over it."""
        view = view_with(max_slots=2, waiters={"a": 10})
        view.set_semaphore(b'{"semaphore": 5, "max": 1, "holders": []}', 9)
        assert view.corrupt is not None
        assert not view.may_attempt("a")

    def test_a_sound_document_clears_corruption(self) -> None:
        """After an operator's reset the queue moves again."""
        view = view_with(waiters={"a": 10})
        view.set_semaphore(b"not json", 9)
        view.set_semaphore(Semaphore(1, ()).encode(), 11)
        assert view.corrupt is None
        assert view.may_attempt("a")
        assert view.semaphore_revision == 11


class TestSemaphoreDocument:
    def test_deleted_document_reads_as_locksmith_initial_value_at_revision_zero(self) -> None:
        """A deleted key is one free slot, and etcd compares an absent key's revision as 0."""
        view = view_with(max_slots=3, holders=("x",))
        view.set_semaphore(None, 17)
        assert view.semaphore == initial_semaphore()
        assert view.semaphore_revision == 0

    def test_document_keeps_its_mod_revision(self) -> None:
        """The revision the next guarded write compares against is the document's."""
        view = view_with(max_slots=2, holders=("x",), revision=42)
        assert view.semaphore_revision == 42
        assert view.semaphore.holders == ("x",)
