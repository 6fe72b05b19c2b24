"""Structured journal fields, checked at the send boundary (the JournalHandler's sender; no journald here)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd.journal import _valid_field_name  # type: ignore[attr-defined]

from locksmithd.host.journal import setup_logging
from locksmithd.host.journal_events import MESSAGE_IDS, JournalFields, journal_listener

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def sent(tmp_path: Path) -> Iterator[list[dict[str, Any]]]:
    """Route locksmithd's logging to a JournalHandler whose sender records each entry."""
    socket_path = tmp_path / "journal.socket"
    socket_path.touch()  # setup_logging only checks that journald's socket exists
    records: list[dict[str, Any]] = []

    def sender(MESSAGE: str, **fields: Any) -> None:  # systemd.journal.send's signature
        records.append({"MESSAGE": MESSAGE, **fields})

    root = logging.getLogger("locksmithd")
    saved = (root.handlers[:], root.level, root.propagate)
    fields = JournalFields("web", "host-1")
    assert setup_logging(False, "8:1234", str(socket_path), fields=fields, sender=sender)
    records.append({"_fields": fields})
    try:
        yield records
    finally:
        root.handlers[:], root.level, root.propagate = saved


def test_every_line_carries_group_holder_and_state(sent: list[dict[str, Any]]) -> None:
    fields: JournalFields = sent.pop()["_fields"]
    listen = journal_listener(fields)
    logging.getLogger("locksmithd.daemon").info("something %s", "happened")
    listen("state", "waiting-for-lock")
    logging.getLogger("locksmithd.daemon").warning("then this")
    first, second = sent
    assert first["MESSAGE"] == "something happened" and first["SYSLOG_IDENTIFIER"] == "locksmithd"
    assert (first["LOCKSMITHD_GROUP"], first["LOCKSMITHD_HOLDER"], first["LOCKSMITHD_STATE"]) == \
        ("web", "host-1", "starting")
    assert second["LOCKSMITHD_STATE"] == "waiting-for-lock" and second["PRIORITY"] == "4"


def test_each_event_kind_has_its_message_id(sent: list[dict[str, Any]]) -> None:
    fields: JournalFields = sent.pop()["_fields"]
    listen = journal_listener(fields)
    listen("state", "holding")
    for kind in MESSAGE_IDS:
        listen(kind, "detail")
    listen("error", "unavailable")  # logged where it happens, not as an event entry
    assert [entry["LOCKSMITHD_EVENT"] for entry in sent] == list(MESSAGE_IDS)
    for entry in sent:
        kind = entry["LOCKSMITHD_EVENT"]
        assert entry["MESSAGE_ID"] == MESSAGE_IDS[kind]
        assert entry["LOCKSMITHD_STATE"] == "holding" and entry["LOCKSMITHD_HOLDER"] == "host-1"
        assert entry["PRIORITY"] == "6"
        journal_keys = [key for key in entry if key.isupper()]
        assert all(_valid_field_name(key) for key in journal_keys), journal_keys


def test_message_ids_are_fixed_distinct_and_documented() -> None:
    ids = list(MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", message_id) for message_id in ids)
    assert all(message_id[12] == "4" for message_id in ids)  # random (v4) UUIDs
    readme = README.read_text()
    for kind, message_id in MESSAGE_IDS.items():
        assert f"| `{kind}` | `{message_id}` |" in readme, kind


def test_stderr_without_journald(tmp_path: Path) -> None:
    root = logging.getLogger("locksmithd")
    saved = (root.handlers[:], root.level, root.propagate)
    try:
        assert setup_logging(False, None, str(tmp_path / "absent")) is False
        assert setup_logging(False, "8:1", str(tmp_path / "absent")) is False
        assert isinstance(root.handlers[0], logging.StreamHandler)
    finally:
        root.handlers[:], root.level, root.propagate = saved
