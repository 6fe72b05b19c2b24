"""Structured journal entries: LOCKSMITHD_* fields on every line and a fixed MESSAGE_ID per event kind.

The MESSAGE_IDs are part of the interface (README "Observe"): never change
one, add new ones. ``journalctl MESSAGE_ID=<id>`` finds that event on every
host, e.g. every coordinated reboot of a fleet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

MESSAGE_IDS: Mapping[str, str] = {
    "reboot-needed": "bf7cf1b965434db89d2cb16fb36eceeb",
    "slot-taken": "1f27f45d78ab426ca14f281f2fbc121a",
    "reboot-requested": "3985772a2ae04d10b1706e3d65ff0c43",
    "slot-released": "9070c4891e3b4e1f94ef2ffe4798c711",
    "reboot-done": "b215b27408e24665bb6de0a4ff708ea0",
    "health-failed": "1c49476821de4c0092686cb0ea5370de",
}
"""Event kind -> MESSAGE_ID (32 hex digits, as journalctl matches it)."""

_TEXT = {
    "reboot-needed": "a reboot is needed (source: {detail})",
    "slot-taken": "took a reboot slot",
    "reboot-requested": "asking logind to reboot",
    "slot-released": "released the reboot slot",
    "reboot-done": "coordinated reboot done: the slot taken before it is released",
    "health-failed": "health checks failed after boot: {detail}",
}

events_log = logging.getLogger("locksmithd.events")


class JournalFields(logging.Filter):
    """Adds LOCKSMITHD_GROUP, LOCKSMITHD_HOLDER and LOCKSMITHD_STATE to every record it filters.

    journald's handler sends a record's upper-case attributes as fields;
    stderr's formatter ignores them. The state follows ``set_state``.
    """

    def __init__(self, group: str, holder: str) -> None:
        super().__init__()
        self.fields = {"LOCKSMITHD_GROUP": group, "LOCKSMITHD_HOLDER": holder, "LOCKSMITHD_STATE": "starting"}

    def set_state(self, state: str) -> None:
        self.fields["LOCKSMITHD_STATE"] = state

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def journal_listener(fields: JournalFields) -> Callable[[str, str], None]:
    """An ``Observers`` listener: tracks the state and logs one structured entry per event kind."""

    def listen(kind: str, detail: str) -> None:
        if kind == "state":
            fields.set_state(detail)
            return
        message_id = MESSAGE_IDS.get(kind)
        if message_id is None:
            return  # errors and the like are logged where they happen
        events_log.info(_TEXT[kind].format(detail=detail or "-"),
                        extra={"MESSAGE_ID": message_id, "LOCKSMITHD_EVENT": kind})

    return listen

