"""etcd key layout, identical to locksmith's, with an optional tenant prefix."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote_plus

from locksmithd.core.waiters import holder_under

ROOT = "coreos.com/updateengine/rebootlock"


def _group_root(group: str, key_prefix: str = "") -> str:
    if group == "":
        return f"{key_prefix}{ROOT}"
    # Go's url.QueryEscape: unreserved -_.~ and alphanumerics kept, space as '+'.
    return f"{key_prefix}{ROOT}/groups/{quote_plus(group, safe='')}"


def semaphore_key(group: str = "", key_prefix: str = "") -> str:
    """The semaphore document's key for ``group`` ("" is locksmith's default group)."""
    return f"{_group_root(group, key_prefix)}/semaphore"


def waiters_prefix(group: str = "", key_prefix: str = "") -> str:
    """The prefix under which hosts queue for ``group``'s slots (one key per waiter)."""
    return f"{_group_root(group, key_prefix)}/waiters/"


def waiter_key(holder: str, group: str = "", key_prefix: str = "") -> str:
    """The queue key of one waiter; the holder id is escaped like a group name."""
    return f"{waiters_prefix(group, key_prefix)}{quote_plus(holder, safe='')}"


def waiter_holder(key: str, group: str = "", key_prefix: str = "") -> str | None:
    """The holder id a waiter key names, or None when the key is not one a host would write.

    The rule is core/waiters.py's ``holder_under``: anything else is not a
    waiter; the queue passes over it and ``locksmithctl status`` reports it.
    """
    return holder_under(key, waiters_prefix(group, key_prefix))


def prefix_end(prefix: str) -> str:
    """The exclusive end of the key range that starts with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode("utf-8", errors="surrogateescape")


def tail_key(group: str = "", key_prefix: str = "") -> str:
    """The key naming the newest waiter key of ``group``'s queue (its mod revision is that key's create revision).

    Every host that creates a waiter key rewrites it in the same transaction
    and gets the old value back: the waiter just ahead of it, found without
    reading the queue. It sorts after ``semaphore``, so the head's watch on
    [halt, semaphore] never sees it.
    """
    return f"{_group_root(group, key_prefix)}/tail"


def served_key(group: str = "", key_prefix: str = "") -> str:
    """The key holding the ticket of the last waiter that took a slot through the queue (see GroupQueue).

    Written in the taking transaction; waiters read it with their own keys to
    bound their place. It sorts after ``semaphore``, outside the head's watch.
    """
    return f"{_group_root(group, key_prefix)}/served"


def halt_key(group: str = "", key_prefix: str = "") -> str:
    """The key of ``group``'s halt record; while it exists nobody in the group takes a slot."""
    return f"{_group_root(group, key_prefix)}/halt"


def alive_prefix(group: str = "", key_prefix: str = "") -> str:
    """The prefix of holders' liveness keys (one per running holder daemon, bound to its lease)."""
    return f"{_group_root(group, key_prefix)}/alive/"


def alive_key(holder: str, group: str = "", key_prefix: str = "") -> str:
    """The liveness key of one holder; the holder id is escaped like a group name."""
    return f"{alive_prefix(group, key_prefix)}{quote_plus(holder, safe='')}"


def history_prefix(group: str = "", key_prefix: str = "") -> str:
    """The prefix of the group's history ring (``events/<slot>``).

    It sorts before ``halt``, so the queue's watch on [halt, waiters/] never
    sees history writes.
    """
    return f"{_group_root(group, key_prefix)}/events/"


def history_key(slot: int, group: str = "", key_prefix: str = "") -> str:
    """The key of one history ring slot, zero-padded so keys sort by slot."""
    return f"{history_prefix(group, key_prefix)}{slot:06d}"


@dataclass(frozen=True)
class GroupKeys:
    """The keys of one group's semaphore and queue, spelled once for the code that uses several of them."""

    semaphore: str
    halt: str
    tail: str
    served: str
    waiters: str  # the prefix of the waiter keys

    @classmethod
    def of(cls, group: str = "", key_prefix: str = "") -> GroupKeys:
        return cls(semaphore_key(group, key_prefix), halt_key(group, key_prefix), tail_key(group, key_prefix),
                   served_key(group, key_prefix), waiters_prefix(group, key_prefix))
