"""The group's figures (max, holders, waiters, halt, late and stale holders) read from etcd in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from locksmithd.core.holder_record import view_holders
from locksmithd.core.semaphore import Semaphore
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
    record): a rollout that moves keeps it small. ``waiters`` is None when
    the queue was not read (the once-a-minute look of a host that neither
    holds a slot nor heads the queue): its gauge is then absent.
    """

    group: str
    max: int = 0
    holders: int = 0
    waiters: int | None = 0
    halted: bool = False
    overdue: int = 0
    stale: int = 0
    newest_holder_age_s: float | None = None
    corrupt: bool = False


def read_group_figures(client: SemaphoreClient, group: str, key_prefix: str, now: datetime, *,
                       waiters: bool = True) -> GroupFigures:
    """Read the semaphore and halt of ``group`` (one request), its alive keys only when a holder is past its
    deadline (a second one), and with ``waiters`` its waiter keys (keys only).

    Waiters are counted by the one waiter rule (core/waiters.py), as status counts them.

    A corrupt document or halt record gives ``GroupFigures(corrupt=True)``
    (the alert wants a figure, not an error); StoreError subclasses
    propagate when etcd cannot answer.
    """
    try:
        snapshot = client.read()
    except CorruptDocument:
        return GroupFigures(group, corrupt=True, waiters=0 if waiters else None)
    semaphore = snapshot.semaphore
    records = {holder: record for holder in semaphore.holders if (record := semaphore.record(holder)) is not None}
    views = view_holders(semaphore.holders, records, None, now)
    if any(view.overdue is not None for view in views):  # only then can one be stale: read who is alive
        views = read_holder_views(client, semaphore, now)
    counted = _count_waiters(client, semaphore, group, key_prefix) if waiters else None
    ages = [view.age.total_seconds() for view in views if view.age is not None]
    return GroupFigures(
        group, max=semaphore.max, holders=len(semaphore.holders), waiters=counted,
        halted=snapshot.halt is not None or snapshot.halt_corrupt is not None,
        overdue=sum(1 for view in views if view.overdue is not None), stale=sum(1 for view in views if view.stale),
        newest_holder_age_s=min(ages) if ages else None, corrupt=snapshot.halt_corrupt is not None)


def _count_waiters(client: SemaphoreClient, semaphore: Semaphore, group: str, key_prefix: str) -> int:
    """The group's waiters by the one waiter rule; keys only: values (any size) could pass gRPC's reply limit."""
    prefix = waiters_prefix(group, key_prefix)
    return count_waiters(client.store.read_prefix(prefix, keys_only=True), prefix, frozenset(semaphore.holders))
