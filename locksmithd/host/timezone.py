"""The host's local time zone, as glibc finds it: the TZ variable, else /etc/localtime."""

from __future__ import annotations

import os
from datetime import timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_LOCALTIME = "/etc/localtime"
_MARKER = "/zoneinfo/"


def local_zone(tz: str | None = None, path: str = DEFAULT_LOCALTIME) -> tuple[tzinfo, str]:
    """The zone named by ``tz`` (the TZ variable, when set) or by ``path``, and its name.

    ``tz`` may be an IANA name, ":name" or ":/path/to/TZif"; "" means UTC (as
    in glibc); one zoneinfo cannot read (a POSIX rule string) falls back to
    ``path``. ``path`` is a link into a zoneinfo tree or a TZif file; missing
    or unreadable means UTC, as for glibc and systemd. Never raises.
    """
    if tz is not None:
        name = tz.removeprefix(":")
        if name == "":
            return timezone.utc, "UTC"
        found = _from_file(name) if name.startswith("/") else _from_key(name)
        if found is not None:
            return found
    target = os.path.realpath(path)
    if _MARKER in target:
        found = _from_key(target.rsplit(_MARKER, 1)[1])
        if found is not None:
            return found
    return _from_file(path) or (timezone.utc, "UTC")


def _from_key(key: str) -> tuple[tzinfo, str] | None:
    try:
        return ZoneInfo(key), key
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _from_file(path: str) -> tuple[tzinfo, str] | None:
    try:
        with open(path, "rb") as file:
            return ZoneInfo.from_file(file, key=path), f"local time ({path})"
    except (OSError, ValueError):
        return None
