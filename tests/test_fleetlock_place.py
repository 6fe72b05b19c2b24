"""The place arithmetic of a FleetLock client (core/fleetlock_place.py), without I/O."""

from __future__ import annotations

import pytest

from locksmithd.core.fleetlock_place import place
from locksmithd.core.waiter_value import UNKNOWN, Pointer, WaiterValue


def _client(ticket: int, follows: object) -> WaiterValue:
    return WaiterValue(None, ticket, via="fleetlock", grace_s=600, follows=follows)


@pytest.mark.parametrize(("own", "head", "served", "tail", "expected"), [
    (_client(10, None), True, 9, 15, (1, 6)),  # the head: exact; 5 arrived after it
    (_client(10, Pointer("k", 1, ticket=9)), False, 7, 10, (3, 3)),  # tickets 8 and 9 ahead, at most
    (_client(10, Pointer("k", 1, ticket=4)), False, 2, 12, (3, 5)),  # located behind ticket 4: at most 3rd
    (_client(10, Pointer("k", 1, ticket=9)), False, 12, 12, (2, 4)),  # tickets out of step: 2 at least
    (_client(0, UNKNOWN), False, 0, 50, (2, 2)),  # an older key with no ticket
])
def test_place_from_tickets(own: WaiterValue, head: bool, served: int, tail: int, expected: tuple[int, int]) -> None:
    assert place(own, head, served, tail) == expected
