"""The one waiter rule: which keys under a group's ``waiters/`` prefix are hosts waiting their turn.

Every reader of the queue applies it (the daemons' queue, the FleetLock
server, ``locksmithctl status`` and ``metrics``, the daemon's group figures),
so they all count the same waiters. A key is a waiter when:

1. it is exactly the escaped key of a valid holder id (``holder_under``:
   names follow core/names.py, and the escape is canonical, so two keys never
   name one host);
2. it is bound to a lease (a key on no lease would never expire: hosts pass
   over it and ``locksmithctl reset`` removes it);
3. its host holds no slot (a holder's leftover key blocks nobody).

Keys failing 1 or 2 are reported (status, the queue's log); a holder's
leftover key is passed over silently.
"""

from __future__ import annotations

import enum
import re
from typing import Container, Iterable, Protocol
from urllib.parse import quote_plus, unquote_plus

from locksmithd.core.names import MAX_NAME_CHARS, name_problem

# An escaped id made only of characters quote_plus never escapes (machine ids, host names) is its
# own escape: canonical, and a valid name when 1 to MAX_NAME_CHARS long. The shortcut of holder_under.
_PLAIN_ID = re.compile(f"[A-Za-z0-9_.~-]{{1,{MAX_NAME_CHARS}}}")


class WaiterKind(enum.Enum):
    """What one key under the waiters prefix is, by the rule above."""

    WAITING = "waiting"
    HOLDER = "holder"  # the key of a host that holds a slot: passed over, not reported
    LEASELESS = "leaseless"  # bound to no lease: reported, passed over
    BAD_NAME = "bad-name"  # not the key of a valid holder id: reported, passed over


class KeyOnLease(Protocol):
    """What the rule reads of a stored key: its name and its lease (0: none)."""

    @property
    def key(self) -> str: ...

    @property
    def lease(self) -> int: ...


def holder_under(key: str, prefix: str) -> str | None:
    """The holder id that waiter key ``key`` (under ``prefix``) names, or None when it names none.

    A valid key is exactly ``prefix + quote_plus(id)`` for an id that follows
    the naming rule; anything else (control characters, bytes that are not
    UTF-8, non-canonical escapes that decode lossily) is not a waiter.
    """
    if not key.startswith(prefix):
        return None
    escaped = key[len(prefix):]
    if _PLAIN_ID.fullmatch(escaped):
        return escaped
    holder = unquote_plus(escaped)
    if name_problem(holder) is not None or quote_plus(holder, safe="") != escaped:
        return None
    return holder


def classify_waiter(key: str, lease: int, prefix: str, holders: Container[str]) -> tuple[WaiterKind, str | None]:
    """(what the key is, the holder id it names or None) for one key under ``prefix``."""
    holder = holder_under(key, prefix)
    if holder is None:
        return WaiterKind.BAD_NAME, None
    if lease == 0:
        return WaiterKind.LEASELESS, holder
    if holder in holders:
        return WaiterKind.HOLDER, holder
    return WaiterKind.WAITING, holder


def count_waiters(entries: Iterable[KeyOnLease], prefix: str, holders: Container[str]) -> int:
    """How many of ``entries`` are waiters by the rule (the figure status, metrics and the daemon report)."""
    return sum(1 for entry in entries
               if classify_waiter(entry.key, entry.lease, prefix, holders)[0] is WaiterKind.WAITING)
