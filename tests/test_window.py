"""The reboot window: parsing, and open/next/close answers for a given ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locksmithd.core.window import RebootWindow

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def at(day: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0, tz: tzinfo = UTC) -> datetime:
    """A moment in January 2024, which starts on a Monday: day 4 is a Thursday, 7 a Sunday."""
    return datetime(2024, 1, day, hour, minute, second, micro, tzinfo=tz)


class TestParse:
    """Parsing locksmith's REBOOT_WINDOW_START and REBOOT_WINDOW_LENGTH."""

    @pytest.mark.parametrize(
        ("start", "weekday", "hour", "minute"),
        [
            ("04:00", None, 4, 0),
            ("4:00", None, 4, 0),
            ("23:59", None, 23, 59),
            ("0:00", None, 0, 0),
            ("Thu 04:00", 3, 4, 0),
            ("thu 04:00", 3, 4, 0),
            ("THU 4:05", 3, 4, 5),
            ("Thursday 04:00", 3, 4, 0),
            ("  Sun   23:00 ", 6, 23, 0),
            ("Mon 00:00", 0, 0, 0),
        ],
    )
    def test_accepts_daily_and_weekly_starts(self, start: str, weekday: int | None, hour: int, minute: int) -> None:
        """Daily "H:MM"/"HH:MM" and weekly "Day HH:MM" with any-case short or full day names."""
        window = RebootWindow.parse(start, "1h")
        assert (window.weekday, window.hour, window.minute) == (weekday, hour, minute)
        assert window.length == timedelta(hours=1)

    @pytest.mark.parametrize(
        ("start", "length", "fragment"),
        [
            ("Thu 25:00", "1h", "invalid window start 'Thu 25:00': hour 25"),
            ("Thu 12:60", "1h", "invalid window start 'Thu 12:60': minute 60"),
            ("Funday 04:00", "1h", "unknown day 'Funday'"),
            ("noon", "1h", "invalid window start 'noon'"),
            ("", "1h", "invalid window start ''"),
            ("04:0", "1h", "is not HH:MM"),
            ("004:00", "1h", "is not HH:MM"),
            ("Thu 04:00 UTC", "1h", "expected HH:MM or 'Day HH:MM'"),
            ("04:00", "1hx", "invalid window length"),
            ("04:00", "-1h", "negative"),
            ("04:00", "0", "window length must be positive"),
            ("04:00", "0s", "window length must be positive"),
            ("04:00", "", "invalid window length"),
        ],
    )
    def test_rejects_bad_values_naming_the_bad_part(self, start: str, length: str, fragment: str) -> None:
        """The ValueError says whether the start or the length is wrong, and why."""
        with pytest.raises(ValueError) as info:
            RebootWindow.parse(start, length)
        assert fragment in str(info.value)

    def test_constructor_checks_fields(self) -> None:
        """A window cannot be built with out-of-range fields or a non-positive length."""
        with pytest.raises(ValueError, match="weekday"):
            RebootWindow(7, 4, 0, timedelta(hours=1))
        with pytest.raises(ValueError, match="HH:MM"):
            RebootWindow(None, 24, 0, timedelta(hours=1))
        with pytest.raises(ValueError, match="must be positive"):
            RebootWindow(None, 4, 0, timedelta(0))

    @pytest.mark.parametrize(
        ("start", "length", "text"),
        [("thu 4:00", "90m", "Thu 04:00 for 1h30m0s"), ("04:00", "30m", "04:00 for 30m0s")],
    )
    def test_str(self, start: str, length: str, text: str) -> None:
        """str() shows the window the way an operator writes it."""
        assert str(RebootWindow.parse(start, length)) == text


class TestWeekly:
    """locksmith's weekly example "Thu 04:00" for "1h", and the Sunday-to-Monday wrap."""

    window = RebootWindow.parse("Thu 04:00", "1h")

    def test_start_is_inclusive_and_end_exclusive(self) -> None:
        """Open from 04:00:00 up to, not including, 05:00:00 on Thursday."""
        assert not self.window.contains(at(4, 3, 59, 59, 999_999))
        assert self.window.contains(at(4, 4))
        assert self.window.contains(at(4, 4, 59, 59, 999_999))
        assert not self.window.contains(at(4, 5))

    def test_closed_on_other_days_at_the_same_time(self) -> None:
        """Only Thursday opens the window."""
        assert not self.window.contains(at(3, 4, 30))
        assert not self.window.contains(at(5, 4, 30))

    def test_next_open_before_and_after(self) -> None:
        """Before the window it opens this Thursday; after, next Thursday."""
        assert self.window.next_open(at(1, 12)) == at(4, 4)
        assert self.window.next_open(at(4, 5)) == at(11, 4)
        assert self.window.next_open(at(4, 4, 30)) == at(4, 4, 30)

    def test_closes_at_and_current_start(self) -> None:
        """Inside the window, it closes at start + length; outside, closes_at is None."""
        assert self.window.closes_at(at(4, 4, 30)) == at(4, 5)
        assert self.window.closes_at(at(4, 5)) is None
        assert self.window.current_or_next_start(at(4, 4, 30)) == at(4, 4)
        assert self.window.current_or_next_start(at(4, 5)) == at(11, 4)

    def test_seconds_until_open(self) -> None:
        """Zero while open, else the time to the next start."""
        assert self.window.seconds_until_open(at(4, 4, 10)) == 0.0
        assert self.window.seconds_until_open(at(4, 3, 30)) == 1800.0
        assert self.window.seconds_until_open(at(4, 5)) == 7 * 86400 - 3600

    def test_sunday_window_wraps_into_monday(self) -> None:
        """"Sun 23:00" for "2h" is open until Monday 01:00."""
        window = RebootWindow.parse("Sun 23:00", "2h")
        assert window.contains(at(7, 23, 30))
        assert window.contains(at(8, 0, 30))
        assert window.closes_at(at(8, 0, 30)) == at(8, 1)
        assert window.current_or_next_start(at(8, 0, 30)) == at(7, 23)
        assert not window.contains(at(8, 1))
        assert window.next_open(at(8, 1)) == at(14, 23)
        assert window.current_or_next_start(at(1, 0, 30)) == datetime(2023, 12, 31, 23, tzinfo=UTC)


class TestDaily:
    """locksmith's daily example "04:00" for "30m", and a window crossing midnight."""

    def test_daily_window(self) -> None:
        """Open every day from 04:00 to 04:30."""
        window = RebootWindow.parse("04:00", "30m")
        for day in (1, 4, 7):
            assert window.contains(at(day, 4, 15))
            assert not window.contains(at(day, 4, 30))
        assert window.next_open(at(4, 4, 30)) == at(5, 4)
        assert window.next_open(at(4, 3)) == at(4, 4)
        assert window.closes_at(at(4, 4)) == at(4, 4, 30)

    def test_window_crossing_midnight(self) -> None:
        """"23:30" for "1h" is open until 00:30 the next day."""
        window = RebootWindow.parse("23:30", "1h")
        assert window.contains(at(4, 23, 45))
        assert window.contains(at(5, 0, 15))
        assert window.closes_at(at(5, 0, 15)) == at(5, 0, 30)
        assert window.current_or_next_start(at(5, 0, 15)) == at(4, 23, 30)
        assert not window.contains(at(5, 0, 30))
        assert window.next_open(at(5, 0, 30)) == at(5, 23, 30)


class TestAlwaysOpen:
    """Windows at least as long as their period never close."""

    @pytest.mark.parametrize(
        ("start", "length"),
        [("Thu 04:00", "168h"), ("Thu 04:00", "200h"), ("04:00", "24h"), ("04:00", "168h")],
    )
    def test_always_open(self, start: str, length: str) -> None:
        """Open at every moment; never closes; nothing to wait for."""
        window = RebootWindow.parse(start, length)
        assert window.always_open
        for moment in (at(1, 0), at(4, 3, 59), at(4, 4), at(7, 23, 59, 59)):
            assert window.contains(moment)
            assert window.closes_at(moment) is None
            assert window.next_open(moment) == moment
            assert window.seconds_until_open(moment) == 0.0

    def test_weekly_day_long_window_is_not_always_open(self) -> None:
        """A weekly window of 24h is open only that day."""
        window = RebootWindow.parse("Thu 00:00", "24h")
        assert not window.always_open
        assert window.contains(at(4, 23, 59))
        assert not window.contains(at(5, 0))


class TestTimezones:
    """The window is read in the timezone of ``now``."""

    def test_interpreted_in_the_timezone_of_now(self) -> None:
        """04:00 in Berlin is 03:00 UTC in winter."""
        window = RebootWindow.parse("Thu 04:00", "1h")
        assert window.contains(at(4, 4, 30, tz=BERLIN))
        assert window.next_open(at(4, 1, tz=BERLIN)) == at(4, 4, tz=BERLIN)
        assert window.next_open(at(4, 1, tz=BERLIN)) == at(4, 3, tz=UTC)
        assert not window.contains(at(4, 4, 30, tz=BERLIN).astimezone(timezone(timedelta(hours=-8))))

    def test_naive_now_is_refused(self) -> None:
        """A naive datetime has no timezone to read the window in."""
        with pytest.raises(ValueError, match="timezone-aware"):
            RebootWindow.parse("04:00", "1h").contains(datetime(2024, 1, 4, 4))


windows = st.builds(
    RebootWindow,
    weekday=st.none() | st.integers(0, 6),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    length=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=9)),
)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, BERLIN, timezone(timedelta(hours=-5, minutes=-30))]),
)


class TestProperties:
    """Invariants over arbitrary windows, moments and input text."""

    @given(st.text(), st.text())
    def test_parse_only_raises_value_error(self, start: str, length: str) -> None:
        """No text makes RebootWindow.parse raise anything but ValueError."""
        try:
            RebootWindow.parse(start, length)
        except ValueError:
            pass

    @given(windows, moments)
    def test_next_open_is_not_before_now_and_is_open(self, window: RebootWindow, now: datetime) -> None:
        """next_open(now) >= now, the window is open then, and within one period."""
        opens = window.next_open(now)
        assert now <= opens < now + window.period
        assert window.contains(opens)
        assert window.seconds_until_open(now) == (opens - now).total_seconds()
        assert (opens == now) == window.contains(now)

    @given(windows, moments)
    def test_open_window_closes_later(self, window: RebootWindow, now: datetime) -> None:
        """If open (and not always open), it closes after now and is closed at that moment."""
        closes = window.closes_at(now)
        if not window.contains(now) or window.always_open:
            assert closes is None
            return
        assert closes is not None
        assert now < closes <= now + window.length
        assert not window.contains(closes)
        assert window.current_or_next_start(now) <= now

    @given(windows, moments)
    def test_closed_window_next_start_is_next_open(self, window: RebootWindow, now: datetime) -> None:
        """While closed, the next start is where it opens."""
        if not window.contains(now):
            assert window.current_or_next_start(now) == window.next_open(now) > now
