"""Reboot schedules: several weekly windows in one time zone, as pure functions of a given ``now``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Iterator, Protocol

from locksmithd.core.duration import format_duration
from locksmithd.core.window import DAY_NAMES, WEEK, parse_window_length, parse_window_start

UTC = timezone.utc
MAX_WINDOWS = 32
"""More windows than this in one setting is a mistake (and would slow every check)."""
_ALL_DAYS = frozenset(range(7))
_DAY_INDEX = {name.lower(): index for index, name in enumerate(DAY_NAMES)}
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX.update({name: index for index, name in enumerate(_FULL_DAYS)})
_CLOCK = re.compile(r"[0-9]{1,2}:[0-9]{2}")
# Occurrences are generated for local dates this far either side of ``now``: a schedule that
# is not always open has a gap every week, so a run of merged windows is shorter than two weeks.
_DAYS_BEFORE = 16
_DAYS_AFTER = 24


class Window(Protocol):
    """What the daemon asks of a window: locksmith's single ``RebootWindow`` or a ``Schedule``."""

    def contains(self, now: datetime) -> bool: ...

    def seconds_until_open(self, now: datetime) -> float: ...

    def closes_at(self, now: datetime) -> datetime | None: ...


@dataclass(frozen=True)
class WindowSpec:
    """One window: on ``days`` (0 = Monday), opening at hour:minute local time, for ``length``.

    Its period is a day when it opens every day, else a week; a window at
    least as long as its period is always open (locksmith's rule).
    """

    days: frozenset[int]
    hour: int
    minute: int
    length: timedelta

    def __post_init__(self) -> None:
        if not self.days or not self.days <= _ALL_DAYS:
            raise ValueError(f"days {sorted(self.days)} must be a non-empty subset of 0-6")
        if not 0 <= self.hour <= 23 or not 0 <= self.minute <= 59:
            raise ValueError(f"time {self.hour}:{self.minute:02d} is not a valid HH:MM")
        if self.length <= timedelta(0):
            raise ValueError("window length must be positive")

    @property
    def period(self) -> timedelta:
        return timedelta(days=1) if self.days == _ALL_DAYS else WEEK

    def __str__(self) -> str:
        return f"{_days_text(self.days)}{self.hour:02d}:{self.minute:02d} {format_duration(self.length)}"


def parse_windows(text: str) -> tuple[WindowSpec, ...]:
    """Parse "Mon-Fri 03:00 1h; Sat,Sun 22:30 90m" (";"-separated, days optional = every day).

    Days are names (short or full, any case), comma-separated, with ranges
    ("Mon-Fri", "Sat-Mon" wraps). Raises ValueError quoting the bad entry.
    """
    entries = [entry.strip() for entry in text.split(";")]
    entries = [entry for entry in entries if entry]
    if not entries:
        raise ValueError("no window given; expected e.g. 'Mon-Fri 03:00 1h; Sat,Sun 22:30 90m'")
    if len(entries) > MAX_WINDOWS:
        raise ValueError(f"{len(entries)} windows; at most {MAX_WINDOWS}")
    return tuple(_parse_entry(entry) for entry in entries)


def _parse_entry(entry: str) -> WindowSpec:
    parts = entry.split()
    if len(parts) == 2 and _CLOCK.fullmatch(parts[0]):
        days, (clock, length) = _ALL_DAYS, parts
    elif len(parts) == 3:
        days, clock, length = _parse_days(parts[0], entry), parts[1], parts[2]
    else:
        raise ValueError(f"window {entry!r}: expected '[days] HH:MM length', such as 'Mon-Fri 03:00 1h'")
    if not _CLOCK.fullmatch(clock):
        raise ValueError(f"window {entry!r}: time {clock!r} is not HH:MM")
    try:
        _, hour, minute = parse_window_start(clock)
        return WindowSpec(days, hour, minute, parse_window_length(length))
    except ValueError as exc:
        raise ValueError(f"window {entry!r}: {exc}") from None


def _parse_days(text: str, entry: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if first.lower() not in _DAY_INDEX or (dash and last.lower() not in _DAY_INDEX):
            raise ValueError(f"window {entry!r}: {part!r} is not a day or a range of days (use Mon, Tue, ... Sun, "
                             "or Mon-Fri)")
        start = _DAY_INDEX[first.lower()]
        end = _DAY_INDEX[last.lower()] if dash else start
        days.update((start + offset) % 7 for offset in range((end - start) % 7 + 1))
    return frozenset(days)


def _days_text(days: frozenset[int]) -> str:
    """"" for every day, else runs of days as ranges: "Mon-Fri ", "Sat,Sun ", "Mon,Wed-Fri "."""
    if days == _ALL_DAYS:
        return ""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = [f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}" if len(run) > 2 else ",".join(DAY_NAMES[d] for d in run)
             for run in runs]
    return ",".join(parts) + " "


def first_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The first instant (UTC) at which the clock of ``zone`` reads ``wall`` (naive) or later.

    An existing time gives its first occurrence (the earlier one in a repeated
    hour); a time skipped by a forward jump gives the moment of the jump.
    """
    early = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(early, zone) == wall:
        return early
    # In a gap: fold=1 reads it with the offset after the jump (an earlier instant, before the
    # jump), fold=0 with the offset before (later, after the jump). Search between them.
    low, high = sorted((wall.replace(tzinfo=zone, fold=1).astimezone(UTC), early))
    low_s, high_s = math.floor(low.timestamp()), math.ceil(high.timestamp())  # zones change offset on whole seconds
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        if _wall(datetime.fromtimestamp(middle, UTC), zone) >= wall:
            high_s = middle
        else:
            low_s = middle
    return datetime.fromtimestamp(high_s, UTC)


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


@dataclass(frozen=True)
class Schedule:
    """The union of ``windows`` on the wall clock of ``zone``; open at ``now`` if any window is.

    A window opens at the first instant the clock reads its start on one of
    its days and closes at the first instant the clock reads start + length:
    across a forward jump it opens at the jump (and is shorter); across a
    repeated hour it stays open once through it (and is longer), never twice.
    Windows that overlap or touch merge into one. The answers are the same
    interface as locksmith's single window (``contains``, ``seconds_until_open``,
    ``closes_at``); each requires a timezone-aware ``now`` (any zone) and
    raises ValueError for a naive one. Returned instants are in ``now``'s zone.
    """

    windows: tuple[WindowSpec, ...]
    zone: tzinfo
    zone_name: str = ""

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("a schedule needs at least one window")

    @property
    def always_open(self) -> bool:
        """True when some window covers its whole period, or together they cover the whole week."""
        if any(spec.length >= spec.period for spec in self.windows):
            return True
        return _covers_week(self.windows)

    def contains(self, now: datetime) -> bool:
        """True if a window is open at ``now``."""
        return self.always_open or self._run_at(now) is not None

    def closes_at(self, now: datetime) -> datetime | None:
        """When the (merged) window open at ``now`` closes; None if closed or always open."""
        if self.always_open:
            return None
        run = self._run_at(now)
        return None if run is None else run[1].astimezone(now.tzinfo)

    def seconds_until_open(self, now: datetime) -> float:
        """Seconds from ``now`` until a window opens; 0.0 while one is open."""
        return (self.next_open(now) - now).total_seconds()

    def next_open(self, now: datetime) -> datetime:
        """``now`` if a window is open, else the next opening (always > now)."""
        if self.contains(now):
            return now
        return next(self.openings(now))

    def openings(self, now: datetime) -> Iterator[datetime]:
        """The openings of merged windows after ``now`` (in ``now``'s zone), soonest first.

        Yields nothing for an always-open schedule. A window open at ``now`` is
        not included: its opening is in the past.
        """
        _require_aware(now)
        if self.always_open:
            return
        day, last = _local_date(now, self.zone), now
        while True:
            for start, _ in self._runs(day):
                if start > last:
                    last = start
                    yield start.astimezone(now.tzinfo)
            day += timedelta(days=14)  # runs are shorter than two weeks: no opening is missed or repeated

    def _run_at(self, now: datetime) -> tuple[datetime, datetime] | None:
        _require_aware(now)
        for start, end in self._runs(_local_date(now, self.zone)):
            if start <= now < end:
                return start, end
        return None

    def _runs(self, around: date) -> list[tuple[datetime, datetime]]:
        """Merged (open, close) instants in UTC of the windows opening near local date ``around``."""
        spans: list[tuple[datetime, datetime]] = []
        for offset in range(-_DAYS_BEFORE, _DAYS_AFTER + 1):
            day = around + timedelta(days=offset)
            for spec in self.windows:
                if day.weekday() in spec.days:
                    start = datetime.combine(day, time(spec.hour, spec.minute))
                    spans.append((first_instant(start, self.zone), first_instant(start + spec.length, self.zone)))
        spans.sort()
        merged: list[tuple[datetime, datetime]] = []
        for start, end in spans:
            if end <= start:
                continue  # a window entirely inside a skipped hour never opens
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def __str__(self) -> str:
        return "; ".join(str(spec) for spec in self.windows) + f" ({self.zone_name or self.zone})"


def _covers_week(windows: tuple[WindowSpec, ...]) -> bool:
    """True if the windows' wall-clock spans, folded onto one week, leave no gap."""
    week_s = int(WEEK.total_seconds())
    spans: list[tuple[int, int]] = []
    for spec in windows:
        for day in spec.days:
            start = day * 86400 + spec.hour * 3600 + spec.minute * 60
            end = start + int(spec.length.total_seconds())
            spans.append((start, min(end, week_s)))
            if end > week_s:
                spans.append((0, end - week_s))
    reached = 0
    for start, end in sorted(spans):
        if start > reached:
            return False
        reached = max(reached, end)
    return reached >= week_s


def _local_date(now: datetime, zone: tzinfo) -> date:
    return now.astimezone(zone).date()


def _require_aware(now: datetime) -> None:
    """Refuse naive datetimes: a schedule compares instants."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
