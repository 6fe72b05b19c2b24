"""Holder records, halt records and history events: pure values validated on read."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from locksmithd.core.halt import OPERATOR, Halt, decode_halt
from locksmithd.core.history import DEFAULT_LIMIT, HistoryEvent, decode_event, ring_slot
from locksmithd.core.holder_record import HolderRecord, new_record, view_holders
from locksmithd.core.semaphore import Semaphore, decode
from locksmithd.errors import CorruptDocument

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)


def test_record_round_trips_and_keeps_unknown_fields() -> None:
    """A record encodes to locksmith-style strings and decodes back; unknown fields survive."""
    record = new_record(now=T0, deadline_after=timedelta(hours=1), hostname="h1", source="locksmithd",
                        boot_id="b1", reason="update-engine 1.2.3")
    info = {**record.to_info(), "future_field": [1, 2]}
    again = HolderRecord.from_info(info)
    assert again == record
    assert again.to_info()["future_field"] == [1, 2]
    assert info["deadline"] == "2026-12-01T04:00:00.000Z"


@pytest.mark.parametrize("info, problem", [
    ({"deadline": 5}, "not a string"),
    ({"acquired_at": "yesterday"}, "not a timestamp"),
    ({"booted_at": "2026-12-01T03:00:00"}, "no time zone"),
    ({"phase": "x" * 5000}, "longer than"),
])
def test_bad_records_are_refused(info: dict[str, object], problem: str) -> None:
    """A mistyped known field is an error naming the field."""
    with pytest.raises(ValueError, match=problem):
        HolderRecord.from_info(info)


def test_a_bad_record_makes_the_document_corrupt() -> None:
    """decode refuses a semaphore whose holder record is mistyped, naming the holder."""
    raw = json.dumps({"semaphore": 0, "max": 1, "holders": ["a"], "holder_info": {"a": {"deadline": 7}}}).encode()
    with pytest.raises(CorruptDocument, match="holder record of 'a'"):
        decode(raw, "k")


def test_stale_needs_a_deadline_passed_and_no_live_key() -> None:
    """Only a holder past its deadline without a live daemon is stale; one without a record never is."""
    late = new_record(now=T0, deadline_after=timedelta(minutes=10), hostname="h", source="locksmithd")
    now = T0 + timedelta(minutes=25)
    views = {v.holder: v for v in view_holders(("dead", "alive", "legacy"), {"dead": late, "alive": late},
                                                {"alive"}, now)}
    assert views["dead"].stale and views["dead"].overdue == timedelta(minutes=15)
    assert not views["alive"].stale and views["alive"].overdue == timedelta(minutes=15)
    assert not views["legacy"].stale and views["legacy"].overdue is None
    assert views["dead"].age == timedelta(minutes=25)


def test_history_sequence_lives_in_the_document() -> None:
    """with_events reserves numbers; the counter is stored and validated like the other fields."""
    semaphore, first = Semaphore(max=2).with_events(2)
    assert first == 0 and semaphore.history_seq == 2
    assert decode(semaphore.encode()).history_seq == 2
    with pytest.raises(CorruptDocument, match="history_seq"):
        decode(b'{"semaphore":1,"max":1,"holders":[],"history_seq":-1}')


def test_halt_round_trip_and_corruption() -> None:
    """A halt decodes to what was written; bad records are corrupt documents naming the halt."""
    halt = Halt(reason="health check 10-disk failed", by=OPERATOR, since=T0, group="g")
    assert decode_halt(halt.encode(), "k") == halt
    for raw in (b"", b"[]", b'{"reason":1,"by":"x","since":"2026-12-01T03:00:00Z"}',
                b'{"reason":"r","by":"a b","since":"2026-12-01T03:00:00Z"}',
                b'{"reason":"r","by":"x","since":"soon"}', b"\xff"):
        with pytest.raises(CorruptDocument, match="halt record at k is corrupt"):
            decode_halt(raw, "k")


def test_history_events_and_ring() -> None:
    """Events round-trip; the ring overwrites the oldest of ``limit`` events."""
    event = HistoryEvent(at=T0, host="h1", event="slot-taken", detail="max 2")
    assert decode_event(event.encode()) == event
    with pytest.raises(ValueError):
        HistoryEvent(at=T0, host="h1", event="exploded")
    assert [ring_slot(n, 3) for n in range(5)] == [0, 1, 2, 0, 1]
    assert ring_slot(DEFAULT_LIMIT, DEFAULT_LIMIT) == 0
