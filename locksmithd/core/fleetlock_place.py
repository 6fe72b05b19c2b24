"""A FleetLock client's place in the shared queue, from tickets (pure arithmetic).

The server (``etcd/remote_waiter.py``) keeps in each FleetLock waiter key the
client's ticket (its number in the order of arrival) and the waiter just
ahead of it when last known (``follows``; the codec is core/waiter_value.py).
With ``served`` (the ticket of the last waiter that took a slot) these give
the client's place without reading the queue: exact at the head, an upper
bound further back.
"""

from __future__ import annotations

from locksmithd.core.waiter_value import Pointer, WaiterValue


def place(own: WaiterValue, head: bool, served: int, tail_ticket: int) -> tuple[int, int]:
    """(position, queue length): exact at the head; further back upper bounds from tickets, exact unless
    waiters ahead left without a slot (with tickets unknown: position 2)."""
    position = 1
    if not head:
        position = 2
        if own.ticket > served:
            bound = own.ticket - served
            if isinstance(own.follows, Pointer) and own.follows.ticket > served:
                bound = min(bound, own.follows.ticket - served + 1)
            position = max(2, bound)
    behind = tail_ticket - own.ticket if own.ticket and tail_ticket > own.ticket else 0
    return position, position + behind

