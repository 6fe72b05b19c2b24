"""Which slots and waiter keys a FleetLock request may act on (pure).

A FleetLock request carries no credential a daemon could check, so it acts
only on what FleetLock itself took: a slot whose holder record says
``source: fleetlock`` and a waiter key written by the server
(``via: fleetlock``). Anything else with the same id (a daemon's slot or
key, a slot taken by Go locksmith, which writes no record) is refused and
left as it is: an unauthenticated request must never free a slot while its
host reboots.
"""

from __future__ import annotations

from locksmithd.core.fleetlock_protocol import ErrorKind, ProtocolError
from locksmithd.core.names import shown_value
from locksmithd.core.semaphore import Semaphore
from locksmithd.core.waiter_value import FLEETLOCK, decode_waiter


class ForeignSlot(Exception):
    """The id holds a slot that was not taken through FleetLock (raised from a pure change)."""

    def __init__(self, refusal: ProtocolError) -> None:
        super().__init__(refusal.text)
        self.refusal = refusal


def slot_source_problem(semaphore: Semaphore, client_id: str) -> ProtocolError | None:
    """The refusal when ``client_id`` holds a slot not taken through FleetLock, or None (not held, or ours)."""
    if not semaphore.holds(client_id):
        return None
    try:
        record = semaphore.record(client_id)
    except ValueError:
        record = None
    source = record.source if record is not None else None
    if source == FLEETLOCK:
        return None
    taken_by = "no holder record (locksmith?)" if source is None else f"source {shown_value(source)}"
    return ProtocolError(ErrorKind.NOT_FLEETLOCK_SLOT,
                         f"{client_id} holds a slot that was not taken through FleetLock ({taken_by}); "
                         f"FleetLock requests never act on it (release it with 'locksmithctl unlock')")


def waiter_source_problem(client_id: str, value: bytes) -> ProtocolError | None:
    """The refusal when ``client_id``'s waiter key was not written through FleetLock, or None."""
    if decode_waiter(value).through_fleetlock:
        return None
    return ProtocolError(ErrorKind.NOT_FLEETLOCK_SLOT,
                         f"{client_id} is queued by a daemon, not through FleetLock; "
                         f"FleetLock requests never act on its place in the queue")


def release_ours(semaphore: Semaphore, client_id: str) -> Semaphore:
    """``client_id``'s slot released if FleetLock took it (pure); ForeignSlot otherwise, NotHolder if not held."""
    problem = slot_source_problem(semaphore, client_id)
    if problem is not None:
        raise ForeignSlot(problem)
    return semaphore.unlock(client_id)
