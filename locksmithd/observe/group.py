"""The group's figures (max, holders, waiters, halt, late and stale holders) read from etcd in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from locksmithd.core.waiters import count_waiters
from locksmithd.errors import CorruptDocument
from locksmithd.etcd.keys import waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.stale import read_holder_views


@dataclass(frozen=True)
class GroupFigures:
    """One group at one moment, as numbers.

    ``corrupt`` is True (and the other figures zero) when the semaphore
    document or the halt record does not decode. ``newest_holder_age_s`` is
    the age of the most recently taken slot (None with no holder or no
    record): a rollout that moves keeps it small.
    """

    group: str
    max: int = 0
    holders: int = 0
    waiters: int = 0
    halted: bool = False
    overdue: int = 0
    stale: int = 0
    newest_holder_age_s: float | None = None
    corrupt: bool = False


def read_group_figures(client: SemaphoreClient, group: str, key_prefix: str, now: datetime) -> GroupFigures:
    """Read the semaphore, halt, alive keys and waiter keys (keys only) of ``group``.

    Waiters are counted by the one waiter rule (core/waiters.py), as status counts them.

    A corrupt document or halt record gives ``GroupFigures(corrupt=True)``
    (the alert wants a figure, not an error); StoreError subclasses
    propagate when etcd cannot answer.
    """
    try:
        snapshot = client.read()
    except CorruptDocument:
        return GroupFigures(group, corrupt=True)
    semaphore = snapshot.semaphore
    views = read_holder_views(client, semaphore, now)
    prefix = waiters_prefix(group, key_prefix)
    # Keys only: a count needs no value, and values (any size) could pass gRPC's reply limit.
    waiters = count_waiters(client.store.read_prefix(prefix, keys_only=True), prefix, frozenset(semaphore.holders))
    ages = [view.age.total_seconds() for view in views if view.age is not None]
    return GroupFigures(
        group, max=semaphore.max, holders=len(semaphore.holders), waiters=waiters,
        halted=snapshot.halt is not None or snapshot.halt_corrupt is not None,
        overdue=sum(1 for view in views if view.overdue is not None), stale=sum(1 for view in views if view.stale),
        newest_holder_age_s=min(ages) if ages else None, corrupt=snapshot.halt_corrupt is not None)
