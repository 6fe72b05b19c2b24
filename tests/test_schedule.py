"""Reboot schedules: parsing, merging, DST, and agreement with locksmith's single window.

Expected openings come from a hand-written table and from an independent
oracle that steps minute by minute through UTC with zoneinfo: a window is
open while the highest wall-clock reading seen so far lies in [start, end).
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locksmithd.core.schedule import Schedule, WindowSpec, first_instant, parse_windows
from locksmithd.core.window import RebootWindow

UTC = timezone.utc
MINUTE = timedelta(minutes=1)
WEEKDAYS = frozenset(range(5))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(text: str, zone: str) -> Schedule:
    return Schedule(parse_windows(text), ZoneInfo(zone), zone)


def oracle_runs(text: str, zone_name: str, begin: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Open intervals in [begin, end) found by stepping minutes; independent of the code under test."""
    zone = ZoneInfo(zone_name)
    specs = parse_windows(text)
    spans = []
    first_day = (begin - timedelta(days=10)).date()
    for offset in range((end - begin).days + 20):
        day = first_day + timedelta(days=offset)
        for spec in specs:
            if day.weekday() in spec.days:
                start = datetime(day.year, day.month, day.day, spec.hour, spec.minute)
                spans.append((start, start + spec.length))
    highest = (begin - timedelta(days=1)).astimezone(zone).replace(tzinfo=None)
    runs: list[tuple[datetime, datetime]] = []
    moment = begin - timedelta(days=1)
    while moment < end:
        highest = max(highest, moment.astimezone(zone).replace(tzinfo=None))
        is_open = any(low <= highest < high for low, high in spans)
        if moment >= begin and is_open:
            if runs and runs[-1][1] == moment:
                runs[-1] = (runs[-1][0], moment + MINUTE)
            else:
                runs.append((moment, moment + MINUTE))
        moment += MINUTE
    return runs


# (windows, zone, now (UTC), the next three openings (UTC), computed by hand)
OPENINGS = [
    # Two windows in Berlin (UTC+1 in January); Sunday 22:30 + 90m ends at Monday 00:00, apart from 03:00.
    ("Mon-Fri 03:00 1h; Sat,Sun 22:30 90m", "Europe/Berlin", "2024-01-05T12:00",
     ["2024-01-06T21:30", "2024-01-07T21:30", "2024-01-08T02:00"]),
    # New York springs forward on 2024-03-10 at 02:00 EST (07:00 UTC): 02:30 does not exist that day,
    # the window opens at the jump (03:00 EDT) and closes at 03:30 EDT as on any day.
    ("Sun 02:30 1h", "America/New_York", "2024-03-09T00:00",
     ["2024-03-10T07:00", "2024-03-17T06:30", "2024-03-24T06:30"]),
    # Berlin springs forward on 2024-03-31 at 01:00 UTC: 02:15-02:45 is skipped entirely, so no opening.
    ("Sun 02:15 30m", "Europe/Berlin", "2024-03-30T00:00",
     ["2024-04-07T00:15", "2024-04-14T00:15", "2024-04-21T00:15"]),
    # New York falls back on 2024-11-03 at 02:00 EDT (06:00 UTC): 01:30 is first read at 05:30 UTC,
    # and the window stays open through the repeated hour (no second opening at 06:30 UTC).
    ("Sun 01:30 1h", "America/New_York", "2024-11-02T00:00",
     ["2024-11-03T05:30", "2024-11-10T06:30", "2024-11-17T06:30"]),
    # Touching windows merge: Mon 03:00-04:00 and 04:00-05:00 are one opening a week.
    ("Mon 03:00 1h; Mon 04:00 1h", "UTC", "2024-01-01T00:00",
     ["2024-01-01T03:00", "2024-01-08T03:00", "2024-01-15T03:00"]),
    # Daily windows: every day, including the weekend, in Sydney (UTC+11 in January).
    ("23:00 30m", "Australia/Sydney", "2024-01-01T00:00",
     ["2024-01-01T12:00", "2024-01-02T12:00", "2024-01-03T12:00"]),
    # Lord Howe Island moves by 30 minutes (UTC+11 -> +10:30 on 2024-04-07 at 02:00 local).
    ("Sun 01:45 30m", "Australia/Lord_Howe", "2024-04-06T00:00",
     ["2024-04-06T14:45", "2024-04-13T15:15", "2024-04-20T15:15"]),
    # A window wrapping the week: Sun 23:00 for 2h ends on Monday 01:00.
    ("Sun 23:00 2h; Mon 00:30 1h", "UTC", "2024-01-01T00:00",
     ["2024-01-07T23:00", "2024-01-14T23:00", "2024-01-21T23:00"]),
]


@pytest.mark.parametrize(("text", "zone", "now", "expected"), OPENINGS, ids=[row[1] + " " + row[0] for row in OPENINGS])
def test_next_openings_match_the_hand_table(text: str, zone: str, now: str, expected: list[str]) -> None:
    found = list(itertools.islice(schedule(text, zone).openings(utc(now)), 3))
    assert found == [utc(item) for item in expected]


@pytest.mark.parametrize(("text", "zone", "now", "expected"), OPENINGS, ids=[row[1] + " " + row[0] for row in OPENINGS])
def test_the_oracle_agrees_with_the_hand_table(text: str, zone: str, now: str, expected: list[str]) -> None:
    """The brute-force oracle is itself right on the hand-computed cases."""
    begin = utc(now)
    starts = [start for start, _ in oracle_runs(text, zone, begin, utc(expected[-1]) + MINUTE) if start > begin]
    assert starts[:3] == [utc(item) for item in expected]


DST_CASES = [
    ("Sun 02:30 1h", "America/New_York", "2024-03-03T00:00"),
    ("Sun 01:30 1h; Sun 00:45 30m", "America/New_York", "2024-10-27T00:00"),
    ("Mon-Fri 03:00 1h; Sat,Sun 22:30 90m; Sun 02:00 1h", "Europe/Berlin", "2024-03-24T00:00"),
    ("Sun 02:00 90m; Sat 23:00 3h", "Europe/Berlin", "2024-10-20T00:00"),
    ("01:45 30m", "Australia/Lord_Howe", "2024-03-31T00:00"),
    ("Sun 02:00 1h; 23:30 1h", "America/Santiago", "2024-04-01T00:00"),
]


@pytest.mark.parametrize(("text", "zone", "begin"), DST_CASES, ids=[c[1] + " " + c[0] for c in DST_CASES])
def test_runs_and_contains_match_the_oracle_across_dst(text: str, zone: str, begin: str) -> None:
    """Over three weeks around a transition: same openings, same closings, same answer at each edge."""
    subject = schedule(text, zone)
    start, end = utc(begin), utc(begin) + timedelta(days=21)
    expected = oracle_runs(text, zone, start, end)
    assert expected, "the case has openings"
    for low, high in expected:
        if low > start:
            assert subject.next_open(low - MINUTE) == low
            assert subject.seconds_until_open(low - MINUTE) == 60.0
            assert not subject.contains(low - timedelta(seconds=1))
        assert subject.contains(low) and subject.contains(high - timedelta(seconds=1))
        if high < end:
            assert subject.closes_at(low) == high
            assert not subject.contains(high)
    found = [moment for moment in itertools.takewhile(lambda m: m < end, subject.openings(start))]
    assert found == [low for low, _ in expected if low > start]


@pytest.mark.parametrize(("text", "zone", "begin"), DST_CASES, ids=[c[1] + " " + c[0] for c in DST_CASES])
def test_never_open_outside_the_oracle_runs(text: str, zone: str, begin: str) -> None:
    """Every 7 minutes over the three weeks, ``contains`` agrees with the oracle."""
    subject = schedule(text, zone)
    start = utc(begin)
    runs = oracle_runs(text, zone, start, start + timedelta(days=21))
    moment = start
    while moment < start + timedelta(days=21):
        assert subject.contains(moment) == any(low <= moment < high for low, high in runs), moment
        moment += timedelta(minutes=7)


def test_answers_do_not_depend_on_the_zone_of_now() -> None:
    """A Berlin schedule asked with a New York (or UTC) ``now`` gives the same instants."""
    subject = schedule("Mon-Fri 03:00 1h", "Europe/Berlin")
    inside = utc("2024-01-08T02:30")
    for zone in (UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")):
        now = inside.astimezone(zone)
        assert subject.contains(now)
        closes = subject.closes_at(now)
        assert closes == utc("2024-01-08T03:00") and closes is not None and closes.tzinfo is zone


class TestMergeAndAlwaysOpen:
    def test_overlapping_windows_close_at_the_later_end(self) -> None:
        subject = schedule("Mon 03:00 2h; Mon 04:00 2h", "UTC")
        assert subject.closes_at(utc("2024-01-01T03:10")) == utc("2024-01-01T06:00")

    def test_touching_windows_across_midnight_merge(self) -> None:
        subject = schedule("Mon 22:00 2h; Tue 00:00 1h", "UTC")
        assert subject.closes_at(utc("2024-01-01T22:00")) == utc("2024-01-02T01:00")

    @pytest.mark.parametrize("text", ["00:00 24h", "12:00 25h", "Thu 04:00 168h", "Mon-Fri 00:00 24h; Sat,Sun 00:00 24h",
                                      "Mon-Sun 06:00 12h; 18:00 12h"])
    def test_covering_schedules_are_always_open(self, text: str) -> None:
        subject = schedule(text, "America/New_York")
        for now in (utc("2024-03-10T06:59"), utc("2024-11-03T06:30"), utc("2024-06-01T12:00")):
            assert subject.contains(now) and subject.closes_at(now) is None
            assert subject.seconds_until_open(now) == 0.0
        assert list(subject.openings(utc("2024-01-01T00:00"))) == []

    def test_a_window_with_a_gap_is_not_always_open(self) -> None:
        assert not schedule("Mon-Fri 00:00 24h; Sat 00:00 24h", "UTC").always_open


@given(st.one_of(st.none(), st.integers(0, 6)), st.integers(0, 23), st.integers(0, 59),
       st.integers(1, 8 * 24 * 60), st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1)),
       st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]))
def test_locksmith_pair_keeps_its_meaning(weekday: int | None, hour: int, minute: int, length_min: int,
                                          naive: datetime, zone: timezone) -> None:
    """Where clocks do not jump, a schedule made of the pair answers exactly as locksmith's window."""
    length = timedelta(minutes=length_min)
    legacy = RebootWindow(weekday, hour, minute, length)
    days = frozenset(range(7)) if weekday is None else frozenset({weekday})
    subject = Schedule((WindowSpec(days, hour, minute, length),), zone)
    now = naive.replace(tzinfo=zone)
    assert subject.contains(now) == legacy.contains(now)
    assert subject.seconds_until_open(now) == legacy.seconds_until_open(now)
    assert subject.closes_at(now) == legacy.closes_at(now)


class TestParse:
    def test_days_ranges_and_lists(self) -> None:
        assert parse_windows("Mon-Fri 03:00 1h; Sat,Sun 22:30 90m") == (
            WindowSpec(WEEKDAYS, 3, 0, timedelta(hours=1)), WindowSpec(frozenset({5, 6}), 22, 30, timedelta(minutes=90)))

    def test_wrapping_range_full_names_and_daily(self) -> None:
        assert parse_windows("sat-MON 4:00 2h;")[0].days == frozenset({5, 6, 0})
        assert parse_windows("Tuesday,thu 01:00 1h")[0].days == frozenset({1, 3})
        assert parse_windows("04:00 30m")[0].days == frozenset(range(7))

    def test_str_round_trips(self) -> None:
        text = "Mon-Fri 03:00 1h0m0s; Sat,Sun 22:30 1h30m0s; 04:00 30m0s"
        assert "; ".join(str(spec) for spec in parse_windows(text)) == text
        assert str(schedule("Mon,Wed-Fri 03:00 1h", "Europe/Berlin")) == "Mon,Wed-Fri 03:00 1h0m0s (Europe/Berlin)"

    @pytest.mark.parametrize(("text", "problem"), [
        ("", "no window given"), (" ; ", "no window given"), ("Mon 03:00", "expected '[days] HH:MM length'"),
        ("Mon-Fry 03:00 1h", "'Mon-Fry' is not a day"), ("Mon 24:00 1h", "hour 24"), ("Mon 03:60 1h", "minute 60"),
        ("Mon 3h 1h", "is not HH:MM"), ("Mon 03:00 -1h", "invalid"), ("Mon 03:00 0s", "must be positive"),
        ("Mon 03:00 1h extra", "expected"), (";".join(["04:00 1h"] * 33), "at most 32"),
    ])
    def test_bad_text_names_the_problem(self, text: str, problem: str) -> None:
        with pytest.raises(ValueError, match=None) as caught:
            parse_windows(text)
        assert problem in str(caught.value)


def test_first_instant_in_a_gap_is_the_jump() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert first_instant(datetime(2024, 3, 31, 2, 30), berlin) == utc("2024-03-31T01:00")
    assert first_instant(datetime(2024, 10, 27, 2, 30), berlin) == utc("2024-10-27T00:30")  # first of two
    assert first_instant(datetime(2024, 1, 1, 2, 30), berlin) == utc("2024-01-01T01:30")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule("04:00 1h", "UTC").contains(datetime(2024, 1, 1))
    assert date(2024, 1, 1).weekday() == 0  # the tables above rely on 2024-01-01 being a Monday
