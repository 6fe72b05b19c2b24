"""Pure helpers for the benchmark: percentiles, slot handoff pairing, fairness, request counts."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from harness.etcd_metrics import requests_by_method as requests_by_method  # re-exported for the benchmarks


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of durations given in seconds, in milliseconds."""
    return {"n": len(seconds), "p50_ms": percentile(seconds, 0.50) * 1000,
            "p99_ms": percentile(seconds, 0.99) * 1000, "max_ms": max(seconds, default=math.nan) * 1000}


@dataclass(frozen=True)
class Doc:
    """One observed version of the semaphore document."""

    revision: int
    max: int
    holders: frozenset[str]


@dataclass(frozen=True)
class SlotEvent:
    """A change of the semaphore: ``kind`` is "acquire", "release" or "grow" (max raised)."""

    revision: int
    kind: str
    holder: str | None


def slot_events(history: Iterable[Doc]) -> list[SlotEvent]:
    """Acquisitions, releases and max increases in revision order, from consecutive documents.

    A raise of ``max`` by k yields k "grow" events (k slots freed at once).
    """
    events: list[SlotEvent] = []
    previous: Doc | None = None
    for doc in sorted(history, key=lambda d: d.revision):
        if previous is not None:
            for holder in sorted(previous.holders - doc.holders):
                events.append(SlotEvent(doc.revision, "release", holder))
            events.extend(SlotEvent(doc.revision, "grow", None) for _ in range(max(0, doc.max - previous.max)))
            for holder in sorted(doc.holders - previous.holders):
                events.append(SlotEvent(doc.revision, "acquire", holder))
        previous = doc
    return events


def pair_handoffs(events: Sequence[SlotEvent], initially_free: int = 0) -> list[tuple[SlotEvent, SlotEvent]]:
    """Pair each slot freed (release or grow) with the acquisition that took it, first come first paired.

    The first ``initially_free`` acquisitions took slots free from the start
    and pair with nothing. While waiters are queued, a slot is taken only
    after it was freed, so the k-th freed slot is the one the k-th later
    acquirer took; the pair's time difference is that handoff's gap.
    """
    freed = [e for e in events if e.kind in ("release", "grow")]
    taken = [e for e in events if e.kind == "acquire"][max(0, initially_free):]
    return list(zip(freed, taken))


def max_overtakes(arrival: Mapping[str, int], served: Sequence[str]) -> int:
    """The largest number of later arrivals served before any one earlier arrival.

    ``arrival`` maps a waiter to its arrival rank (e.g. its key's create
    revision); ``served`` lists waiters in the order they got a slot. Waiters
    never served count as served last.
    """
    order = list(served) + sorted(set(arrival) - set(served), key=lambda h: arrival[h])
    seen: list[int] = []  # arrival ranks of waiters served so far, sorted
    worst = 0
    for holder in order:
        rank = arrival[holder]
        later_served_before = len(seen) - bisect.bisect_right(seen, rank)
        worst = max(worst, later_served_before)
        bisect.insort(seen, rank)
    return worst



METHOD_ORDER = ("KV/Range", "KV/Txn", "KV/Put", "KV/DeleteRange", "Lease/LeaseGrant", "Lease/LeaseKeepAlive",
                "Lease/LeaseRevoke", "Lease/LeaseTimeToLive", "Watch/Watch")


def per_reboot(requests: Mapping[str, float], messages: Mapping[str, float],
               reboots: int) -> list[tuple[str, float, float, float, float]]:
    """Rows of (method, calls, messages, calls per reboot, messages per reboot), known methods first, then a total.

    ``requests`` counts calls started (a unary call, or a stream opened), ``messages`` the messages etcd
    received (a unary call is one; each watch create or cancel, or keep-alive, on a stream is one).
    """
    methods = [m for m in METHOD_ORDER if m in requests or m in messages]
    methods += sorted((set(requests) | set(messages)) - set(methods))
    rows = [(m, requests.get(m, 0.0), messages.get(m, 0.0)) for m in methods]
    rows.append(("total", sum(requests.values()), sum(messages.values())))
    n = max(reboots, 1)
    return [(m, calls, msgs, calls / n, msgs / n) for m, calls, msgs in rows]
