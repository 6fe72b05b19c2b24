"""The pure semaphore value: operations, encoding and validation of documents."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from locksmithd.errors import CorruptDocument, InvalidMax, NotHolder, SemaphoreFull
from locksmithd.core.semaphore import MAX_DOCUMENT_BYTES, Semaphore, decode, initial_semaphore


def test_initial_value_matches_locksmith() -> None:
    """An absent key reads as one free slot, max one, no holders."""
    assert json.loads(initial_semaphore().encode()) == {"semaphore": 1, "max": 1, "holders": []}


def test_lock_is_idempotent_and_keeps_holders_sorted() -> None:
    """Locking twice uses one slot; holders stay sorted like locksmith's."""
    sem = Semaphore(max=3).lock("b").lock("a").lock("b")
    assert sem.holders == ("a", "b")
    assert sem.available == 1


def test_lock_when_full_names_the_holders() -> None:
    """A full semaphore refuses a new holder with SemaphoreFull."""
    with pytest.raises(SemaphoreFull, match="held by a"):
        Semaphore(max=1).lock("a").lock("b")


def test_unlock_of_non_holder_is_not_holder() -> None:
    """Releasing an id that holds nothing is a clear NotHolder."""
    with pytest.raises(NotHolder):
        Semaphore(max=1).unlock("x")


def test_set_max_below_holders_drains() -> None:
    """set-max below the holder count keeps holders and admits nobody until it drains."""
    sem = Semaphore(max=3).lock("a").lock("b").lock("c").set_max(1)
    assert sem.available == -2
    assert json.loads(sem.encode())["semaphore"] == -2
    with pytest.raises(SemaphoreFull):
        sem.lock("d")
    sem = sem.unlock("a").unlock("b")
    with pytest.raises(SemaphoreFull):
        sem.lock("d")
    assert sem.unlock("c").lock("d").holders == ("d",)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_set_max_rejects_bad_values(bad: object) -> None:
    """Negative and non-integer maxima are InvalidMax."""
    with pytest.raises(InvalidMax):
        Semaphore().set_max(bad)  # type: ignore[arg-type]


def test_holder_info_and_unknown_fields_round_trip() -> None:
    """Extra per-holder facts and unknown top-level fields survive a decode/encode cycle."""
    raw = b'{"semaphore":0,"max":1,"holders":["a"],"holder_info":{"a":{"hostname":"h"}},"future":[1]}'
    sem = decode(raw)
    assert sem.holder_info["a"]["hostname"] == "h"
    assert json.loads(sem.unlock("a").lock("b").encode())["future"] == [1]
    assert "holder_info" not in json.loads(sem.unlock("a").encode())


def test_go_null_holders_decode_as_empty() -> None:
    """Go encodes an empty holder slice as null; locksmith documents must decode."""
    assert decode(b'{"semaphore":1,"max":1,"holders":null}').holders == ()


CORRUPT = {
    "invalid json": (b'{"semaphore":1,', "not valid JSON"),
    "not an object": (b"[1,2]", "not an object"),
    "max missing": (b'{"semaphore":1,"holders":[]}', "'max' is missing"),
    "max wrong type": (b'{"semaphore":1,"max":"1","holders":[]}', "not a whole number"),
    "max bool": (b'{"semaphore":1,"max":true,"holders":[]}', "not a whole number"),
    "max float": (b'{"semaphore":1,"max":1.0,"holders":[]}', "not a whole number"),
    "negative max": (b'{"semaphore":-1,"max":-1,"holders":[]}', "must be >= 0"),
    "holders wrong type": (b'{"semaphore":1,"max":1,"holders":"a"}', "not a list"),
    "holder not string": (b'{"semaphore":0,"max":1,"holders":[1]}', "not a string"),
    "empty holder": (b'{"semaphore":0,"max":1,"holders":[""]}', "empty"),
    "duplicate holders": (b'{"semaphore":0,"max":2,"holders":["a","a"]}', "more than once"),
    "count mismatch": (b'{"semaphore":1,"max":1,"holders":["a"]}', "max - len"),
    "non-utf8": (b'{"semaphore":1,"max":1,"holders":["\xff"]}', "not UTF-8"),
    "huge": (b'{"semaphore":1,"max":1,"holders":[],"pad":"' + b"x" * MAX_DOCUMENT_BYTES + b'"}', "limit"),
    "bad holder_info": (b'{"semaphore":1,"max":1,"holders":[],"holder_info":[]}', "holder_info"),
    "deep nesting": (b"[" * 100000 + b"]" * 100000, "JSON"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_documents_raise_named_error(name: str) -> None:
    """Every invalid document raises CorruptDocument saying what is wrong and how to repair."""
    raw, fragment = CORRUPT[name]
    with pytest.raises(CorruptDocument) as caught:
        decode(raw, key="k")
    assert fragment in str(caught.value)
    assert "locksmithctl reset" in str(caught.value)
    assert "\n" not in caught.value.one_line()


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_decoder_never_crashes_on_arbitrary_bytes(raw: bytes) -> None:
    """Arbitrary bytes either decode to a consistent value or raise CorruptDocument."""
    try:
        sem = decode(raw)
    except CorruptDocument:
        return
    assert sem.available == sem.max - len(sem.holders)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=12,
)


@given(st.fixed_dictionaries({}, optional={"semaphore": json_values, "max": json_values, "holders": json_values,
                                           "holder_info": json_values}))
@settings(max_examples=400)
def test_decoder_never_crashes_on_arbitrary_json(document: dict) -> None:
    """Arbitrary JSON documents either decode consistently or raise CorruptDocument."""
    try:
        sem = decode(json.dumps(document).encode())
    except CorruptDocument:
        return
    assert sem.max >= 0 and len(set(sem.holders)) == len(sem.holders)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("lock"), st.sampled_from("abcdef")),
        st.tuples(st.just("unlock"), st.sampled_from("abcdef")),
        st.tuples(st.just("set_max"), st.integers(0, 4)),
    ),
    max_size=60,
)


@given(st.integers(0, 4), operations)
@settings(max_examples=400)
def test_no_sequence_exceeds_max_or_breaks_the_count(start_max: int, ops: list[tuple[str, object]]) -> None:
    """No sequence of lock/unlock/set-max admits a holder beyond max or breaks the count."""
    sem = Semaphore(max=start_max)
    for name, arg in ops:
        before = sem
        try:
            sem = getattr(sem, name)(arg)
        except (SemaphoreFull, NotHolder):
            continue
        if name == "lock" and not before.holds(str(arg)):
            assert len(sem.holders) <= sem.max, "a lock admitted a holder beyond max"
        assert sem.available == sem.max - len(sem.holders)
        assert list(sem.holders) == sorted(set(sem.holders))
        assert decode(sem.encode()) == sem
