"""Go ``time.ParseDuration`` syntax ("1h30m", "1.5h", "300ms") for non-negative durations."""

from __future__ import annotations

import re
from datetime import timedelta

_NS_PER_UNIT: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN, as Go spells it
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU, also accepted by Go
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
# Go keeps durations in a signed 64-bit count of nanoseconds (about 292 years).
MAX_NS = 2**63 - 1
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_UNITS_HELP = "ns, us, ms, s, m, h"


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration such as "1h30m", "90s", "1.5h", "300ms" or "0".

    A leading "+" is allowed; negative durations are refused. Precision below a
    microsecond is truncated (timedelta cannot hold it). Raises ValueError,
    whose message quotes ``text``, for anything else.
    """
    body = text
    if body.startswith("-"):
        raise ValueError(f"invalid duration {_quote(text)}: negative durations are not allowed")
    if body.startswith("+"):
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if body == "":
        raise ValueError(f"invalid duration {_quote(text)}: expected a number and a unit, such as 90s or 1h30m")
    total_ns = 0
    pos = 0
    while pos < len(body):
        match = _COMPONENT.match(body, pos)
        assert match is not None  # the pattern can match the empty string
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not fraction:
            raise ValueError(f"invalid duration {_quote(text)}: expected a number at {_quote(body[pos:])}")
        if not unit:
            raise ValueError(f"invalid duration {_quote(text)}: missing unit (one of {_UNITS_HELP})")
        scale = _NS_PER_UNIT.get(unit)
        if scale is None:
            raise ValueError(f"invalid duration {_quote(text)}: unknown unit {_quote(unit)} (use one of {_UNITS_HELP})")
        total_ns += _component_ns(text, whole, fraction or "", scale)
        if total_ns > MAX_NS:
            raise ValueError(f"invalid duration {_quote(text)}: too large")
        pos = match.end()
    return timedelta(microseconds=total_ns // 1_000)


def _component_ns(text: str, whole: str, fraction: str, scale: int) -> int:
    """Nanoseconds of one "<whole>.<fraction><unit>" component, fraction truncated like Go."""
    if len(whole.lstrip("0")) > 20:
        raise ValueError(f"invalid duration {_quote(text)}: too large")
    value = int(whole or "0") * scale
    digits = fraction[:20]  # more digits cannot change a nanosecond count below 2**63
    if digits:
        value += int(digits) * scale // 10 ** len(digits)
    return value


def _quote(text: str) -> str:
    """``text`` quoted for an error message, shortened if it is very long."""
    return repr(text) if len(text) <= 64 else repr(text[:61] + "...")


def format_duration(duration: timedelta) -> str:
    """Format like Go's ``Duration.String``: "1h30m0s", "1m30s", "1.5s", "300ms", "0s"."""
    total_us = duration // timedelta(microseconds=1)
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    if total_us == 0:
        return "0s"
    if total_us < 1_000:
        return f"{sign}{total_us}\u00b5s"
    if total_us < 1_000_000:
        return f"{sign}{_decimal(total_us, 1_000)}ms"
    hours, rest_us = divmod(total_us, 3_600_000_000)
    minutes, rest_us = divmod(rest_us, 60_000_000)
    seconds = f"{_decimal(rest_us, 1_000_000)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` written exactly, without trailing zeros ("1.5", "2", "0.25")."""
    whole, rest = divmod(value, unit)
    if rest == 0:
        return str(whole)
    width = len(str(unit)) - 1
    return f"{whole}.{rest:0{width}d}".rstrip("0")
