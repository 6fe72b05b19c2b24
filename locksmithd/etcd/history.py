"""Reading a group's history ring: every event, oldest first."""

from __future__ import annotations

from locksmithd.core.history import HistoryEvent, decode_event
from locksmithd.etcd.keys import history_prefix
from locksmithd.etcd.store import KeyValueStore


def read_history(store: KeyValueStore, group: str, key_prefix: str) -> tuple[list[HistoryEvent], int]:
    """The group's recorded events in the order they were written, and how many could not be read.

    One range read of the ring (at most the history limit, 1,000 by
    default). Order is the etcd revision each slot was last written at, so
    it is exact whatever the ring position. An entry that does not decode is
    counted, never fatal: history is shown, never acted on.
    """
    events: list[HistoryEvent] = []
    unreadable = 0
    for entry in sorted(store.read_prefix(history_prefix(group, key_prefix)), key=lambda e: e.mod_revision):
        try:
            events.append(decode_event(entry.value))
        except ValueError:
            unreadable += 1
    return events, unreadable
