"""What is recorded with a slot (the holder record), validated on read, and when a holder is stale."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from locksmithd.core.names import shown_value

MAX_FIELD_CHARS = 4096
TIME_FIELDS = ("acquired_at", "deadline", "booted_at")
TEXT_FIELDS = ("hostname", "source", "boot_id", "phase", "health", "reason")

# Phases a daemon writes while it holds a slot.
PHASE_HOLDING = "holding"
PHASE_REBOOTING = "rebooting"
PHASE_CHECKING_HEALTH = "checking-health"
PHASE_UNHEALTHY = "unhealthy"


def format_time(moment: datetime) -> str:
    """UTC, millisecond precision, with a ``Z``: the form stored in etcd."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=timezone.utc)
"""Stored times lie in [EARLIEST_TIME, LATEST_TIME): far enough from datetime's limits (years 1 and 9999)
that converting, formatting and adding any duration a setting allows can never overflow."""


def parse_time(text: str) -> datetime:
    """Parse a stored timestamp into UTC; ValueError unless it is ISO 8601 with a time zone, in range.

    Normalised here, once: a valid ISO 8601 time such as
    ``9999-12-31T23:59:59-23:59`` has no UTC equivalent (OverflowError on
    conversion), so it is refused at decode rather than crashing whatever
    formats or compares it later.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {shown_value(text)} has no time zone")
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"timestamp {shown_value(text)} is out of range") from None
    if not EARLIEST_TIME <= moment < LATEST_TIME:
        raise ValueError(f"timestamp {shown_value(text)} is out of range (years 1970 to 8999 in UTC)")
    return moment


@dataclass(frozen=True)
class HolderRecord:
    """Facts about one holder's slot, kept in the semaphore document's ``holder_info``.

    Every field is optional: documents written by Go locksmith have no record
    at all (no deadline: such a holder is only ever reported). Unknown fields
    are kept in ``extra`` and written back unchanged.
    """

    acquired_at: datetime | None = None
    deadline: datetime | None = None
    booted_at: datetime | None = None
    hostname: str | None = None
    source: str | None = None
    boot_id: str | None = None
    phase: str | None = None
    health: str | None = None
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> HolderRecord:
        """Decode one ``holder_info`` entry; ValueError naming the bad field otherwise."""
        values: dict[str, Any] = {}
        for name in (*TIME_FIELDS, *TEXT_FIELDS):
            if name not in info or info[name] is None:
                continue
            value = info[name]
            if not isinstance(value, str):
                raise ValueError(f"field {name!r} is {shown_value(value)}, not a string")
            if len(value) > MAX_FIELD_CHARS:
                raise ValueError(f"field {name!r} is longer than {MAX_FIELD_CHARS} characters")
            if name in TIME_FIELDS:
                try:
                    values[name] = parse_time(value)
                except ValueError as exc:
                    raise ValueError(f"field {name!r} is not a timestamp: {exc}") from None
            else:
                values[name] = value
        extra = {k: v for k, v in info.items() if k not in TIME_FIELDS and k not in TEXT_FIELDS}
        return cls(**values, extra=extra)

    def to_info(self) -> dict[str, Any]:
        """The JSON-ready entry: known fields that are set, then the unknown ones."""
        info: dict[str, Any] = {}
        for name in (*TIME_FIELDS, *TEXT_FIELDS):
            value = getattr(self, name)
            if value is not None:
                info[name] = format_time(value) if isinstance(value, datetime) else value
        for key, value in self.extra.items():
            info.setdefault(key, value)
        return info

    def with_changes(self, **changes: Any) -> HolderRecord:
        """A copy with some fields changed (``None`` clears one)."""
        return replace(self, **changes)

    def overdue_by(self, now: datetime) -> timedelta | None:
        """How far past its deadline the holder is at ``now``; None without a deadline or before it."""
        if self.deadline is None or now <= self.deadline:
            return None
        return now - self.deadline

    def age(self, now: datetime) -> timedelta | None:
        """How long ago the slot was taken, if recorded."""
        return None if self.acquired_at is None else max(now - self.acquired_at, timedelta(0))


def new_record(*, now: datetime, deadline_after: timedelta | None, hostname: str, source: str,
               boot_id: str | None = None, reason: str | None = None) -> HolderRecord:
    """The record of a slot taken at ``now``; its deadline is ``now + deadline_after`` when given."""
    return HolderRecord(acquired_at=now, deadline=None if deadline_after is None else now + deadline_after,
                        hostname=hostname, source=source, boot_id=boot_id, phase=PHASE_HOLDING, reason=reason)


@dataclass(frozen=True)
class HolderView:
    """One holder as an operator (or the stale-holder policy) sees it at a moment."""

    holder: str
    record: HolderRecord | None
    alive: bool | None
    age: timedelta | None
    overdue: timedelta | None

    @property
    def stale(self) -> bool:
        """Past its deadline with no live daemon: it did not come back."""
        return self.overdue is not None and self.alive is False


def view_holders(holders: tuple[str, ...], records: Mapping[str, HolderRecord], alive: set[str] | None,
                 now: datetime) -> list[HolderView]:
    """Each holder with its age, how late it is and whether it is stale.

    ``alive`` is the set of holders with a live lease-bound key (None when
    unknown, e.g. liveness was not read); a holder without a record has no
    deadline and is never stale, only reported.
    """
    views = []
    for holder in holders:
        record = records.get(holder)
        views.append(HolderView(
            holder=holder, record=record,
            alive=None if alive is None else holder in alive,
            age=record.age(now) if record else None,
            overdue=record.overdue_by(now) if record else None,
        ))
    return views


class AfterBoot(enum.Enum):
    """What a starting daemon finds of the slot it may hold from before."""

    NOT_HOLDING = "not-holding"
    NEW_BOOT = "new-boot"  # rebooted since the slot was taken: release only once healthy
    SAME_BOOT = "same-boot"  # crashed before rebooting: not a reboot, release as locksmith does
    UNKNOWN_BOOT = "unknown-boot"  # no boot id recorded (locksmith, locksmithctl): release as locksmith does
    MAYBE_HELD = "maybe-held"  # the strategy cannot tell (FleetLock has no query): treated as NEW_BOOT, said so


def after_boot(holds: bool, record: HolderRecord | None, current_boot_id: str | None) -> AfterBoot:
    """Classify the slot found at start-up by comparing the recorded boot id with this boot's."""
    if not holds:
        return AfterBoot.NOT_HOLDING
    if record is None or record.boot_id is None or current_boot_id is None:
        return AfterBoot.UNKNOWN_BOOT
    return AfterBoot.SAME_BOOT if record.boot_id == current_boot_id else AfterBoot.NEW_BOOT
