"""The reboot semaphore as a pure value with locksmith's JSON encoding.

A document looks like locksmith's::

    {"semaphore": 1, "max": 2, "holders": ["a"], "holder_info": {"a": {...}}}

``semaphore`` (free slots) is always ``max - len(holders)``; it is negative
after ``set_max`` below the holder count, exactly as in locksmith, and then no
new holder is admitted until enough holders leave. ``holder_info`` is our
addition (acquired-at time, hostname, boot id per holder) kept in the same
document so one compare-and-swap keeps it consistent with ``holders``; readers
such as Go locksmith ignore it. Unknown top-level fields are kept on write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from locksmithd.core.holder_record import HolderRecord
from locksmithd.core.names import name_problem, printable, shown_value
from locksmithd.errors import CorruptDocument, DocumentTooLarge, InvalidMax, InvalidName, NotHolder, SemaphoreFull

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_SLOTS = 1_000_000
_KNOWN_FIELDS = ("semaphore", "max", "holders", "holder_info", "history_seq")


@dataclass(frozen=True)
class Semaphore:
    """An immutable counting semaphore; operations return a new value.

    ``holders`` is sorted and unique. ``holder_info`` maps a holder id to a
    small dict of facts about its acquisition (its HolderRecord); entries for
    ids that are not holders are dropped on construction. ``history_seq``
    numbers the group's history events (each write that records events
    advances it, so two writers can never fill the same history slot).
    """

    max: int = 1
    holders: tuple[str, ...] = ()
    holder_info: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    extra_fields: Mapping[str, Any] = field(default_factory=dict)
    history_seq: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        info = {h: dict(v) for h, v in self.holder_info.items() if h in self.holders}
        object.__setattr__(self, "holder_info", MappingProxyType(info))
        object.__setattr__(self, "extra_fields", MappingProxyType(dict(self.extra_fields)))

    @property
    def available(self) -> int:
        """Free slots: ``max - len(holders)``; negative while over-subscribed."""
        return self.max - len(self.holders)

    def holds(self, holder: str) -> bool:
        return holder in self.holders

    def lock(self, holder: str, info: Mapping[str, Any] | None = None) -> Semaphore:
        """Return the value with ``holder`` added.

        Idempotent: an id that already holds keeps its single slot and its
        original info. Raises SemaphoreFull when no slot is free and
        InvalidName for an id that breaks the naming rule.
        """
        problem = name_problem(holder)
        if problem is not None:
            raise InvalidName(f"{problem}: {shown_value(holder)}")
        if holder in self.holders:
            return self
        if self.available <= 0:
            raise SemaphoreFull(
                f"semaphore is full: {len(self.holders)} of max {self.max} slots held "
                f"by {printable(', '.join(self.holders), 200) or 'nobody'}"
            )
        holders = tuple(sorted((*self.holders, holder)))
        new_info = dict(self.holder_info)
        if info:
            new_info[holder] = dict(info)
        return replace(self, holders=holders, holder_info=new_info)

    def unlock(self, holder: str) -> Semaphore:
        """Return the value without ``holder``; raise NotHolder if it holds no slot."""
        if holder not in self.holders:
            raise NotHolder(f"{holder!r} is not a holder of the semaphore")
        holders = tuple(h for h in self.holders if h != holder)
        return replace(self, holders=holders)

    def set_max(self, new_max: int) -> Semaphore:
        """Return the value with a new maximum.

        A maximum below the current holder count is allowed: nobody is evicted
        and no new holder is admitted until the count drains below it.
        Raises InvalidMax for negative or out-of-range values.
        """
        if isinstance(new_max, bool) or not isinstance(new_max, int):
            raise InvalidMax(f"max must be a whole number, got {new_max!r}")
        if new_max < 0 or new_max > MAX_SLOTS:
            raise InvalidMax(f"max must be between 0 and {MAX_SLOTS}, got {new_max}")
        return replace(self, max=new_max)

    def record(self, holder: str) -> HolderRecord | None:
        """The holder record of ``holder`` (None if it holds no slot or has no record)."""
        info = self.holder_info.get(holder)
        return None if info is None else HolderRecord.from_info(info)

    def with_record(self, holder: str, record: HolderRecord) -> Semaphore:
        """The value with ``holder``'s record replaced; NotHolder if it holds no slot."""
        if holder not in self.holders:
            raise NotHolder(f"{shown_value(holder)} is not a holder of the semaphore")
        return replace(self, holder_info={**self.holder_info, holder: record.to_info()})

    def with_events(self, count: int) -> tuple[Semaphore, int]:
        """Reserve ``count`` history sequence numbers; returns the value and the first number."""
        return replace(self, history_seq=self.history_seq + count), self.history_seq

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document, locksmith's fields first."""
        document: dict[str, Any] = dict(self.extra_fields)
        document.update(semaphore=self.available, max=self.max, holders=list(self.holders))
        if self.history_seq:
            document["history_seq"] = self.history_seq
        else:
            document.pop("history_seq", None)
        if self.holder_info:
            document["holder_info"] = {h: dict(v) for h, v in sorted(self.holder_info.items())}
        else:
            document.pop("holder_info", None)
        return document

    def encode(self) -> bytes:
        """Compact JSON bytes, as stored in etcd.

        Raises DocumentTooLarge when the result would exceed the 1 MiB that
        ``decode`` accepts: no writer may store a document its readers refuse.
        """
        raw = json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False).encode()
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise DocumentTooLarge(
                f"the semaphore document would be {len(raw)} bytes, over the {MAX_DOCUMENT_BYTES}-byte "
                f"limit; nothing was written (make room: release holders with 'locksmithctl unlock ID', "
                f"or remove large unknown fields)"
            )
        return raw


def initial_semaphore() -> Semaphore:
    """The value locksmith creates when the key is absent: one slot, no holders."""
    return Semaphore(max=1, holders=())


def decode(raw: bytes, key: str | None = None) -> Semaphore:
    """Decode and validate a stored document.

    Raises CorruptDocument (naming ``key`` and the fault) for: a document over
    1 MiB, non-UTF-8 bytes, invalid JSON, a non-object, missing or mistyped
    fields, ``max < 0``, holder ids that break the naming rule, duplicate
    holders, a holder record with a mistyped field, and
    ``semaphore != max - len(holders)``. Nothing is repaired silently.
    """
    document = _parse_json_object(raw, key)
    max_slots = _whole_number(document, "max", key)
    free = _whole_number(document, "semaphore", key)
    if max_slots < 0:
        raise CorruptDocument(f"max is {max_slots}, must be >= 0", key)
    if max_slots > MAX_SLOTS:
        raise CorruptDocument(f"max is {max_slots}, larger than the limit {MAX_SLOTS}", key)
    holders = _holder_list(document, key)
    if free != max_slots - len(holders):
        raise CorruptDocument(
            f"semaphore is {free} but max - len(holders) is {max_slots} - {len(holders)} = "
            f"{max_slots - len(holders)}",
            key,
        )
    info = _holder_info(document, key)
    history_seq = document.get("history_seq", 0)
    if isinstance(history_seq, bool) or not isinstance(history_seq, int) or history_seq < 0:
        raise CorruptDocument(f"field 'history_seq' is {shown_value(history_seq)}, not a whole number >= 0", key)
    extra = {k: v for k, v in document.items() if k not in _KNOWN_FIELDS}
    return Semaphore(max_slots, tuple(sorted(holders)), info, extra, history_seq)


def _parse_json_object(raw: bytes, key: str | None) -> dict[str, Any]:
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise CorruptDocument(f"document is {len(raw)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit", key)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptDocument(f"document is not UTF-8 (bad byte at offset {exc.start})", key) from exc
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise CorruptDocument(f"document is not valid JSON ({reason})", key) from exc
    if not isinstance(document, dict):
        raise CorruptDocument(f"document is a JSON {type(document).__name__}, not an object", key)
    return document


def _whole_number(document: Mapping[str, Any], name: str, key: str | None) -> int:
    if name not in document:
        raise CorruptDocument(f"field {name!r} is missing", key)
    value = document[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptDocument(f"field {name!r} is {value!r}, not a whole number", key)
    return value


def _holder_list(document: Mapping[str, Any], key: str | None) -> list[str]:
    if "holders" not in document:
        raise CorruptDocument("field 'holders' is missing", key)
    holders = document["holders"]
    if holders is None:  # Go encodes an empty (nil) slice as null.
        return []
    if not isinstance(holders, list):
        raise CorruptDocument(f"field 'holders' is a {type(holders).__name__}, not a list", key)
    seen: set[str] = set()
    for index, holder in enumerate(holders):
        problem = name_problem(holder)
        if problem is not None:
            raise CorruptDocument(f"holders[{index}] {shown_value(holder)}: {problem}", key)
        if holder in seen:
            raise CorruptDocument(f"holder {shown_value(holder)} appears more than once", key)
        seen.add(holder)
    return list(holders)


def _holder_info(document: Mapping[str, Any], key: str | None) -> dict[str, Mapping[str, Any]]:
    info = document.get("holder_info")
    if info is None:
        return {}
    if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
        raise CorruptDocument("field 'holder_info' is not an object of objects", key)
    for holder, entry in info.items():
        try:
            HolderRecord.from_info(entry)
        except ValueError as exc:
            raise CorruptDocument(f"holder record of {shown_value(holder)}: {exc}", key) from None
    return info
