"""Go duration syntax: parsing, formatting and refusal of bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locksmithd.core.duration import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("+0", timedelta(0)),
        ("0s", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("300ms", timedelta(milliseconds=300)),
        ("5m", timedelta(minutes=5)),
        ("+5m", timedelta(minutes=5)),
        (".5s", timedelta(milliseconds=500)),
        ("5.s", timedelta(seconds=5)),
        ("1h0m0.5s", timedelta(hours=1, milliseconds=500)),
        ("2us", timedelta(microseconds=2)),
        ("2\u00b5s", timedelta(microseconds=2)),
        ("2\u03bcs", timedelta(microseconds=2)),
        ("1500ns", timedelta(microseconds=1)),
        ("300ns", timedelta(0)),
        ("168h", timedelta(days=7)),
        ("1m1m", timedelta(minutes=2)),
    ],
)
def test_parses_go_syntax(text: str, expected: timedelta) -> None:
    """Every form Go's time.ParseDuration accepts (non-negative) parses to the same amount."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected a number and a unit"),
        ("-1h", "negative"),
        ("-0", "negative"),
        ("1", "missing unit"),
        ("1hx", "unknown unit 'hx'"),
        ("1d", "unknown unit 'd'"),
        ("h", "expected a number"),
        (".", "expected a number"),
        ("1.5.3h", "missing unit"),
        ("1 h", "unknown unit"),
        (" 1h", "expected a number"),
        ("2562048h", "too large"),
        ("9" * 5000 + "s", "too large"),
        ("\u0663s", "expected a number"),
    ],
)
def test_rejects_bad_input_with_a_clear_message(text: str, fragment: str) -> None:
    """Bad input raises ValueError that quotes the input and says what is wrong."""
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=1, minutes=30), "1h30m0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(milliseconds=300), "300ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=7), "7\u00b5s"),
        (timedelta(days=7), "168h0m0s"),
        (timedelta(minutes=-5), "-5m0s"),
    ],
)
def test_formats_like_go(duration: timedelta, expected: str) -> None:
    """format_duration matches Go's Duration.String for the same amount."""
    assert format_duration(duration) == expected


@given(st.text())
def test_arbitrary_text_only_raises_value_error(text: str) -> None:
    """No input makes the parser raise anything but ValueError."""
    try:
        result = parse_duration(text)
    except ValueError:
        return
    assert result >= timedelta(0)


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100_000)))
def test_format_then_parse_round_trips(duration: timedelta) -> None:
    """Whatever format_duration writes, parse_duration reads back to the same value."""
    assert parse_duration(format_duration(duration)) == duration
