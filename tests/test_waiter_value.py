"""The one waiter-value codec (core/waiter_value.py): daemons' and FleetLock's keys, byte for byte."""

from __future__ import annotations

import json

import pytest

from locksmithd.core.waiter_value import (
    FLEETLOCK,
    UNKNOWN,
    Pointer,
    WaiterValue,
    decode_waiter,
    encode_waiter,
    read_document,
    served_ticket,
)

SINCE = "2026-12-06T20:00:00.000+00:00"


def test_daemon_value_is_written_as_older_daemons_wrote_it() -> None:
    """Field names and order are the wire format older daemons read during a rolling upgrade."""
    raw = encode_waiter(WaiterValue(SINCE, 7, after=Pointer("g/waiters/a", 17, seen=20)))
    assert raw == json.dumps({"since": SINCE, "ticket": 7,
                              "after": {"key": "g/waiters/a", "created": 17, "seen": 20}}).encode()
    assert decode_waiter(raw) == WaiterValue(SINCE, 7, after=Pointer("g/waiters/a", 17, seen=20))
    assert encode_waiter(WaiterValue(SINCE)) == json.dumps({"since": SINCE}).encode()
    assert decode_waiter(encode_waiter(WaiterValue(SINCE, after=None))).after is None


def test_fleetlock_value_is_written_as_the_server_wrote_it() -> None:
    raw = encode_waiter(WaiterValue(SINCE, 5, via=FLEETLOCK, grace_s=600, follows=Pointer("g/waiters/a", 17, ticket=4)))
    assert raw == json.dumps({"since": SINCE, "via": "fleetlock", "grace_s": 600, "ticket": 5,
                              "follows": {"key": "g/waiters/a", "created": 17, "ticket": 4}}).encode()
    value = decode_waiter(raw)
    assert value.through_fleetlock and value.ticket == 5 and value.after is UNKNOWN
    assert value.follows == Pointer("g/waiters/a", 17, ticket=4)
    unknown = encode_waiter(WaiterValue("t", 0, via=FLEETLOCK, grace_s=600))
    assert b"follows" not in unknown and b"ticket" not in unknown and decode_waiter(unknown).follows is UNKNOWN
    assert decode_waiter(encode_waiter(WaiterValue("t", 1, via=FLEETLOCK, follows=None))).follows is None


@pytest.mark.parametrize("raw", [
    b"", b"[]", b"\xff", b"null", b'"text"', b"[" * 100000,
    b'{"after": {"key": 3}, "follows": {"key": 3}}', b'{"after": {"key": "k"}, "follows": {"key": "k"}}',
    b'{"after": {"key": "k", "created": true, "seen": 1}, "follows": {"key": "k", "created": true, "ticket": 1}}',
    b'{"after": {"key": "k", "created": 3, "seen": 0}, "follows": {"key": "k", "created": 3, "ticket": false}}',
    b'{"ticket": -4, "after": "x", "follows": "x", "since": 5, "via": 7, "grace_s": "60"}',
    b'{"ticket": true, "after": [], "follows": 1.5}',
])
def test_values_not_as_written_are_unknown_not_errors(raw: bytes) -> None:
    value = decode_waiter(raw)
    assert (value.since, value.ticket, value.via, value.grace_s) == (None, 0, None, 0)
    assert value.after is UNKNOWN and value.follows is UNKNOWN and not value.through_fleetlock


def test_a_fleetlock_pointer_may_have_ticket_zero_a_daemon_pointer_needs_seen() -> None:
    assert decode_waiter(b'{"follows": {"key": "k", "created": 3, "ticket": 0}}').follows == Pointer("k", 3)
    assert decode_waiter(b'{"after": {"key": "k", "created": 3, "seen": 9}}').after == Pointer("k", 3, seen=9)


def test_unknown_fields_are_ignored_and_documents_read_leniently() -> None:
    assert decode_waiter(b' {"since": "s", "future": 1} ').since == "s"
    assert read_document(b'{"a": 1} trailing') is None
    assert read_document('{"a": "\u00e9"}'.encode("utf-16")) == {"a": "\u00e9"}  # json.loads's verdict: it reads UTF-16


@pytest.mark.parametrize(("raw", "expected"), [(b"12", 12), (b"", 0), (b"-1", 0), (b"1e3", 0), (b"9" * 19, 0),
                                               (b"\xff", 0)])
def test_served_ticket(raw: bytes, expected: int) -> None:
    assert served_ticket(raw) == expected
