"""Waiter keys: a key names a holder only when it is exactly the key that holder writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from locksmithd.core.names import name_problem
from locksmithd.core.waiters import holder_under
from locksmithd.etcd.keys import waiter_holder, waiter_key, waiters_prefix


def by_definition(key: str, group: str, key_prefix: str) -> str | None:
    """The rule spelled out: some valid id whose waiter key is exactly ``key`` (the slow way)."""
    prefix = waiters_prefix(group, key_prefix)
    if not key.startswith(prefix):
        return None
    from urllib.parse import unquote_plus

    holder = unquote_plus(key[len(prefix):])
    return holder if name_problem(holder) is None and waiter_key(holder, group, key_prefix) == key else None


@given(st.text(max_size=300), st.sampled_from(["", "db", "a b/c"]), st.sampled_from(["", "tenant/"]))
def test_a_key_names_a_holder_exactly_when_the_rule_says(tail: str, group: str, key_prefix: str) -> None:
    """Any tail under the prefix: the shortcut for plain ids and the full check agree with the rule."""
    key = waiters_prefix(group, key_prefix) + tail
    assert waiter_holder(key, group, key_prefix) == by_definition(key, group, key_prefix)


@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=260))
def test_every_valid_id_round_trips(holder: str) -> None:
    """The key a valid id writes gives that id back; an invalid id's key gives None."""
    key = waiter_key(holder, "g")
    assert waiter_holder(key, "g") == (holder if name_problem(holder) is None else None)


def test_plain_and_escaped_ids() -> None:
    """Plain ids (the shortcut), escaped ids, non-canonical escapes, length limits and foreign keys."""
    prefix = waiters_prefix()
    assert holder_under(prefix + "0123456789abcdef0123456789abcdef", prefix) == "0123456789abcdef0123456789abcdef"
    assert holder_under(prefix + "host-1.example_com~x", prefix) == "host-1.example_com~x"
    assert holder_under(prefix + "a%2Fb", prefix) == "a/b"
    assert holder_under(prefix + "a%2fb", prefix) is None  # lower-case escape: not the key a host writes
    assert holder_under(prefix + "a+b", prefix) is None  # a space: not a valid id
    assert holder_under(prefix + "a%0Ab", prefix) is None
    assert holder_under(prefix + "x" * 256, prefix) == "x" * 256
    assert holder_under(prefix + "x" * 257, prefix) is None
    assert holder_under(prefix, prefix) is None
    assert holder_under("elsewhere/x", prefix) is None
