"""The FleetLock waiter key's value and the place arithmetic (core/fleetlock_place.py), without I/O."""

from __future__ import annotations

import pytest

from locksmithd.core.fleetlock_place import (
    UNKNOWN,
    Follows,
    WaiterValue,
    decode_value,
    encode_value,
    field_ticket,
    place,
    queued_through_fleetlock,
    ticket,
)


def test_value_round_trip() -> None:
    """What the server writes it reads back; the via mark is there for the daemons and locksmithctl."""
    follows = Follows("g/waiters/a", 17, 4)
    raw = encode_value("2026-12-06T20:00:00.000+00:00", 600, 5, follows)
    assert decode_value(raw) == WaiterValue("2026-12-06T20:00:00.000+00:00", 5, follows)
    assert queued_through_fleetlock(raw) and field_ticket(raw) == 5
    assert decode_value(encode_value("t", 600, 5, None)).follows is None
    unknown = encode_value("t", 600, 0, UNKNOWN)
    assert b"follows" not in unknown and b"ticket" not in unknown and decode_value(unknown).follows is UNKNOWN


@pytest.mark.parametrize("raw", [b"", b"[]", b"\xff", b'{"follows": {"key": 3}}', b'{"follows": {"key": "k"}}',
                                 b'{"follows": {"key": "k", "created": true, "ticket": 1}}',
                                 b'{"ticket": -4, "follows": "x"}'])
def test_values_not_as_written_are_unknown_not_errors(raw: bytes) -> None:
    value = decode_value(raw)
    assert value.ticket == 0 and value.follows is UNKNOWN


@pytest.mark.parametrize(("raw", "expected"), [(b"12", 12), (b"", 0), (b"-1", 0), (b"1e3", 0), (b"9" * 19, 0)])
def test_served_ticket(raw: bytes, expected: int) -> None:
    assert ticket(raw) == expected


@pytest.mark.parametrize(("own", "head", "served", "tail", "expected"), [
    (WaiterValue(None, 10, None), True, 9, 15, (1, 6)),  # the head: exact; 5 arrived after it
    (WaiterValue(None, 10, Follows("k", 1, 9)), False, 7, 10, (3, 3)),  # tickets 8 and 9 ahead, at most
    (WaiterValue(None, 10, Follows("k", 1, 4)), False, 2, 12, (3, 5)),  # located behind ticket 4: at most 3rd
    (WaiterValue(None, 10, Follows("k", 1, 9)), False, 12, 12, (2, 4)),  # tickets out of step: 2 at least
    (WaiterValue(None, 0, UNKNOWN), False, 0, 50, (2, 2)),  # an older key with no ticket
])
def test_place_from_tickets(own: WaiterValue, head: bool, served: int, tail: int, expected: tuple[int, int]) -> None:
    assert place(own, head, served, tail) == expected
