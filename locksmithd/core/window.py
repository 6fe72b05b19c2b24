"""locksmith's daily or weekly reboot window, as pure functions of a given ``now``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from locksmithd.core.duration import format_duration, parse_duration

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAYS: dict[str, int] = {
    **{name.lower(): index for index, name in enumerate(DAY_NAMES)},
    **{name: index for index, name in enumerate(_FULL_DAY_NAMES)},
}
# locksmith reads the time with Sscanf("%d:%d"): "4:00" and "04:00" both work.
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})")


def parse_window_start(text: str) -> tuple[int | None, int, int]:
    """Parse "HH:MM" (daily) or "Day HH:MM" (weekly) into (weekday, hour, minute).

    ``weekday`` is None for a daily window, else 0 (Monday) to 6 (Sunday). Day
    names are case-insensitive, short ("Thu") as in locksmith or full
    ("Thursday"). The hour may have one digit ("4:00"); minutes have two.
    Raises ValueError whose message quotes ``text`` and names the bad part.
    """
    parts = text.split()
    if len(parts) == 1:
        weekday, clock = None, parts[0]
    elif len(parts) == 2:
        day = parts[0].lower()
        if day not in _WEEKDAYS:
            raise ValueError(f"invalid window start {text!r}: unknown day {parts[0]!r} (use Mon, Tue, ... Sun)")
        weekday, clock = _WEEKDAYS[day], parts[1]
    else:
        raise ValueError(f"invalid window start {text!r}: expected HH:MM or 'Day HH:MM', such as 'Thu 04:00'")
    match = _CLOCK.fullmatch(clock)
    if match is None:
        raise ValueError(f"invalid window start {text!r}: time {clock!r} is not HH:MM")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23:
        raise ValueError(f"invalid window start {text!r}: hour {hour} is not in 0-23")
    if minute > 59:
        raise ValueError(f"invalid window start {text!r}: minute {minute} is not in 0-59")
    return weekday, hour, minute


def parse_window_length(text: str) -> timedelta:
    """Parse a positive Go duration ("1h", "90m"); raise ValueError quoting ``text`` otherwise."""
    try:
        length = parse_duration(text.strip())
    except ValueError as exc:
        raise ValueError(f"invalid window length: {exc}") from exc
    if length <= timedelta(0):
        raise ValueError(f"invalid window length {text!r}: window length must be positive")
    return length


@dataclass(frozen=True)
class RebootWindow:
    """A window opening every day (``weekday`` None) or every week at hour:minute.

    Times are wall-clock times in the timezone of the ``now`` given to each
    method (local time in production); DST transitions are not special-cased.
    The start is inclusive and the end exclusive. A window whose length is at
    least its period (a day, or a week) is always open. Every method requires a
    timezone-aware ``now`` and raises ValueError for a naive one.
    """

    weekday: int | None
    hour: int
    minute: int
    length: timedelta

    def __post_init__(self) -> None:
        if self.weekday is not None and not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday {self.weekday} is not in 0-6")
        if not 0 <= self.hour <= 23 or not 0 <= self.minute <= 59:
            raise ValueError(f"time {self.hour}:{self.minute:02d} is not a valid HH:MM")
        if self.length <= timedelta(0):
            raise ValueError("window length must be positive")

    @classmethod
    def parse(cls, start: str, length: str) -> RebootWindow:
        """Build a window from locksmith's REBOOT_WINDOW_START and REBOOT_WINDOW_LENGTH.

        Raises ValueError whose message says whether the start or the length is bad.
        """
        weekday, hour, minute = parse_window_start(start)
        return cls(weekday, hour, minute, parse_window_length(length))

    @property
    def period(self) -> timedelta:
        """How often the window opens: a day or a week."""
        return DAY if self.weekday is None else WEEK

    @property
    def always_open(self) -> bool:
        """True when the window is at least as long as its period."""
        return self.length >= self.period

    def last_start(self, now: datetime) -> datetime:
        """The latest start at or before ``now``, whether or not the window is still open."""
        _require_aware(now)
        start = now.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        if self.weekday is not None:
            start -= timedelta(days=(now.weekday() - self.weekday) % 7)
        if start > now:
            start -= self.period
        return start

    def contains(self, now: datetime) -> bool:
        """True if the window is open at ``now``."""
        return self.always_open or now < self.last_start(now) + self.length

    def current_or_next_start(self, now: datetime) -> datetime:
        """The start of the window open at ``now``, else the next start after ``now``."""
        start = self.last_start(now)
        return start if self.contains(now) else start + self.period

    def next_open(self, now: datetime) -> datetime:
        """``now`` if the window is open, else the next moment it opens (always > now)."""
        return now if self.contains(now) else self.last_start(now) + self.period

    def closes_at(self, now: datetime) -> datetime | None:
        """The end of the window open at ``now``; None if it is closed or always open."""
        if self.always_open or not self.contains(now):
            return None
        return self.last_start(now) + self.length

    def seconds_until_open(self, now: datetime) -> float:
        """Seconds from ``now`` until the window opens; 0.0 while it is open."""
        return (self.next_open(now) - now).total_seconds()

    def __str__(self) -> str:
        day = "" if self.weekday is None else f"{DAY_NAMES[self.weekday]} "
        return f"{day}{self.hour:02d}:{self.minute:02d} for {format_duration(self.length)}"


def _require_aware(now: datetime) -> None:
    """Refuse naive datetimes: the window is defined in ``now``'s timezone."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
