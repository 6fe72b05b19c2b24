"""The one waiter rule (core/waiters.py), from a table: which keys every reader counts as waiters."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from locksmithd.core.waiters import WaiterKind, classify_waiter, count_waiters

PREFIX = "p/coreos.com/updateengine/rebootlock/waiters/"


@dataclass(frozen=True)
class Key:
    key: str
    lease: int


@pytest.mark.parametrize(("escaped", "lease", "kind", "holder"), [
    ("0123456789abcdef0123456789abcdef", 7, WaiterKind.WAITING, "0123456789abcdef0123456789abcdef"),
    ("a%2Fb", 7, WaiterKind.WAITING, "a/b"),
    ("holder-x", 7, WaiterKind.HOLDER, "holder-x"),  # holds a slot: its leftover key blocks nobody
    ("host-1", 0, WaiterKind.LEASELESS, "host-1"),  # would never expire
    ("holder-x", 0, WaiterKind.LEASELESS, "holder-x"),  # lease-less is reported even for a holder
    ("a%2fb", 7, WaiterKind.BAD_NAME, None),  # lower-case escape: not the key a host writes
    ("a+b", 7, WaiterKind.BAD_NAME, None),  # an escaped space: not a valid id
    ("a%0Ab", 7, WaiterKind.BAD_NAME, None),  # a newline
    ("", 7, WaiterKind.BAD_NAME, None),
    ("x" * 257, 7, WaiterKind.BAD_NAME, None),  # longer than a name may be
    ("%FF", 7, WaiterKind.BAD_NAME, None),  # not UTF-8
])
def test_the_rule(escaped: str, lease: int, kind: WaiterKind, holder: str | None) -> None:
    """Name valid and canonical, on a lease, not a holder: a waiter; anything else says why not."""
    assert classify_waiter(PREFIX + escaped, lease, PREFIX, frozenset({"holder-x"})) == (kind, holder)


def test_a_key_outside_the_prefix_is_no_waiter() -> None:
    assert classify_waiter("elsewhere/host-1", 7, PREFIX, ()) == (WaiterKind.BAD_NAME, None)


def test_count_is_the_waiting_keys_only() -> None:
    """Ten waiters among lease-less, badly named and holder keys count ten (the issue's 15 against 10)."""
    keys = [Key(PREFIX + f"good-{n}", 5) for n in range(10)]
    keys += [Key(PREFIX + f"no-lease-{n}", 0) for n in range(3)]
    keys += [Key(PREFIX + "a%2fb", 5), Key(PREFIX + "a+b", 5), Key(PREFIX + "holder-x", 5)]
    assert count_waiters(keys, PREFIX, frozenset({"holder-x"})) == 10
