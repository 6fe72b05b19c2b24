"""Parsers for the values of the settings table: each takes a RawSetting and returns the typed value.

A parser raises ValueError with the problem (the loader turns it into a
ConfigError naming source, key and value, hiding secrets) or a ConfigError
of its own when it must word the value itself.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Callable, Sequence
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from locksmithd.core.host_defaults import HOLDER_ID_MODES
from locksmithd.core.duration import format_duration, parse_duration
from locksmithd.core.file_kinds import file_kind
from locksmithd.core.fleetlock_protocol import group_problem as fleetlock_group_problem
from locksmithd.core.names import group_problem, name_problem
from locksmithd.core.etcd_config import Endpoint, parse_endpoints, request_timeout_problem
from locksmithd.settings.etcd_checks import check_readable_file
from locksmithd.settings.raw import RawSetting
from locksmithd.core.strategy_labels import ALIASES as STRATEGY_ALIASES
from locksmithd.core.strategy_labels import LABELS, resolve_label
from locksmithd.core.health_policy import parse_check_dir, parse_system_states, parse_units
from locksmithd.core.stale_policy import StalePolicy, parse_stale_policy
from locksmithd.observe.address import MetricsAddress, parse_metrics_address

if TYPE_CHECKING:
    from locksmithd.core.schedule import WindowSpec

MAX_INTERVAL = timedelta(hours=24)
"""Longest login delay, recheck interval or retry pause: beyond a day they only hide a typo."""

MIN_INTERVAL = timedelta(seconds=1)
"""Shortest period or timeout of the daemon's loops (recheck, retries, the check command, hooks, health).

Each of those loops runs one thing at a time, so at 1s a check command starts
at most once a second and etcd sees at most one re-read a second per host.
Nothing is gained below it (a reboot waits for a window and a slot, minutes),
and a smaller value is a typo ("1ms" for "1m" ran the command 1,500 times in 3 s).
"""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# D-Bus address values: optionally-escaped bytes or %XX (the subset dbus_fast accepts).
_BUS_VALUE = re.compile(r"(?:[-0-9A-Za-z_/.]|%[0-9A-Fa-f]{2})*")


def text(raw: RawSetting) -> str:
    """The value as given (empty allowed)."""
    return raw.value


def optional_text(raw: RawSetting) -> str | None:
    """The value, or None when empty: an empty value unsets what a lower source gave."""
    return raw.value or None


def strategy(raw: RawSetting) -> str:
    """A label of the strategy registry, any case, aliases resolved."""
    label = resolve_label(raw.value)
    if label is None:
        aliases = ", ".join(f"{alias} means {target}" for alias, target in STRATEGY_ALIASES.items())
        raise ValueError(f"unknown strategy; use one of {', '.join(LABELS)} ({aliases})")
    return label


def group(raw: RawSetting) -> str:
    """A group name under the one naming rule; "" is locksmith's default group."""
    problem = group_problem(raw.value)
    if problem is not None:
        raise ValueError(problem)
    return raw.value


def fleetlock_url(raw: RawSetting) -> str | None:
    """A FleetLock server's base URL (http or https, with a host), without a trailing slash; None if empty."""
    if not raw.value:
        return None
    parts = urlsplit(raw.value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://fleetlock.example:8080")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, a fragment or credentials")
    try:
        parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return raw.value.rstrip("/")


def fleetlock_group(raw: RawSetting) -> str:
    """A FleetLock group name (``[a-zA-Z0-9.-]+``, the protocol's rule)."""
    problem = fleetlock_group_problem(raw.value)
    if problem is not None:
        raise ValueError(problem)
    return raw.value
def holder_id_mode(raw: RawSetting) -> str:
    """``machine-id`` or ``app-specific`` (any case)."""
    mode = raw.value.strip().lower()
    if mode not in HOLDER_ID_MODES:
        raise ValueError(f"use one of {', '.join(HOLDER_ID_MODES)}")
    return mode


def holder_id(raw: RawSetting) -> str:
    """A holder id under the one naming rule (``core.names.name_problem``)."""
    problem = name_problem(raw.value)
    if problem is not None:
        raise ValueError(problem)
    return raw.value


def endpoints(raw: RawSetting) -> tuple[Endpoint, ...]:
    """Comma-separated etcd URLs (ConfigError from the etcd settings' own parser)."""
    return parse_endpoints(raw.value, raw.source, raw.key)


def readable_file(raw: RawSetting) -> str | None:
    """A readable regular file, or None when empty."""
    return check_readable_file(raw.value, raw.source, raw.key)


def path(raw: RawSetting) -> str:
    """A path that must not be empty; whether it exists is checked when it is used."""
    if raw.value.strip() == "":
        raise ValueError("the path must not be empty")
    return raw.value


def state_file(raw: RawSetting) -> str:
    """The coordinator state file: not a directory, in a directory that exists or whose parent does.

    Only the last directory is created at start-up (as systemd's
    RuntimeDirectory would), never a whole path: a typo must not plant a tree
    of directories as root.
    """
    given = path(raw)
    if os.path.isdir(given):
        raise ValueError("is a directory; give the path of the state file itself")
    parent = os.path.dirname(os.path.abspath(given))
    if os.path.isdir(parent):
        return given
    if os.path.lexists(parent):
        raise ValueError(f"{parent} is not a directory")
    if not os.path.isdir(os.path.dirname(parent)):
        raise ValueError(f"neither {parent} nor its parent exists (only the last directory is created)")
    return given


def duration_s(raw: RawSetting, *, allow_zero: bool = False, most: timedelta = MAX_INTERVAL) -> float:
    """A Go duration in seconds, at most ``most``; zero only if ``allow_zero``."""
    length = parse_duration(raw.value.strip())
    if length == timedelta(0) and not allow_zero:
        raise ValueError("must be greater than zero")
    if length > most:
        raise ValueError(f"must be at most {format_duration(most)}")
    return length.total_seconds()


def interval_s(raw: RawSetting) -> float:
    """A Go duration from MIN_INTERVAL (1s) to a day, in seconds: a period or timeout of the daemon's loops."""
    seconds = duration_s(raw)
    if seconds < MIN_INTERVAL.total_seconds():
        raise ValueError(f"must be at least {format_duration(MIN_INTERVAL)}: a shorter period or timeout only "
                         f"makes the daemon spin (run a command, ask etcd or retry many times a second)")
    return seconds


def drop_out_s(raw: RawSetting) -> float:
    """A Go duration from 2s (etcd's shortest lease) to 1h, in seconds."""
    seconds = duration_s(raw)
    if not 2 <= seconds <= 3600:
        raise ValueError("must be between 2s and 1h")
    return seconds


def delay_s(raw: RawSetting) -> float:
    """A Go duration of at most a day, in seconds; zero allowed."""
    return duration_s(raw, allow_zero=True)


def request_timeout_s(raw: RawSetting) -> float:
    """A Go duration within the one bound for etcd requests (``request_timeout_problem``)."""
    seconds = parse_duration(raw.value.strip()).total_seconds()
    if seconds == 0:
        raise ValueError("must be greater than zero")
    problem = request_timeout_problem(seconds)
    if problem is not None:
        raise ValueError(problem)
    return seconds


def boolean(raw: RawSetting) -> bool:
    """1/0, true/false, yes/no, on/off in any case."""
    word = raw.value.strip().lower()
    if word not in _TRUE | _FALSE:
        raise ValueError("expected a boolean: 1/0, true/false, yes/no or on/off")
    return word in _TRUE


def bus_address(raw: RawSetting) -> str | None:
    """A D-Bus address (``unix:path=...``, ``unix:abstract=...``, ``tcp:host=...,port=N``, ``;``-separated).

    Empty means the default system bus. An address that parses but does not
    answer is not an error here: the daemon retries it at start-up.
    """
    if raw.value == "":
        return None
    addresses = [part for part in raw.value.split(";") if part]
    if not addresses:
        raise ValueError("not a D-Bus address: expected transport:key=value,...")
    for address in addresses:
        problem = _bus_address_problem(address)
        if problem is not None:
            raise ValueError(f"not a D-Bus address: {problem}")
    return raw.value


def _bus_address_problem(address: str) -> str | None:
    """Why one ``transport:key=value,...`` address cannot be used, or None."""
    transport, colon, rest = address.partition(":")
    if not colon:
        return "no transport (expected e.g. unix:path=/run/dbus/system_bus_socket)"
    options: dict[str, str] = {}
    for pair in filter(None, rest.split(",")):
        key, equals, value = pair.partition("=")
        if not equals or not key:
            return f"option {pair!r} is not key=value"
        if not _BUS_VALUE.fullmatch(value):
            return f"option {key!r} has characters that must be %-escaped"
        options[key] = value
    if transport == "unix":
        if "path" not in options and "abstract" not in options:
            return "a unix address needs path= or abstract="
        return None
    if transport == "tcp":
        port = options.get("port", "0")
        if not port.isascii() or not port.isdigit() or int(port) > 65535:
            return f"tcp port {port!r} is not a number from 0 to 65535"
        return None
    return f"unsupported transport {transport!r} (use unix or tcp)"


def stale_policy(raw: RawSetting) -> StalePolicy:
    """``halt`` or ``reclaim``."""
    return parse_stale_policy(raw.value)


def health_states(raw: RawSetting) -> frozenset[str] | None:
    """systemd states counted healthy (comma-separated), or None for ``any``."""
    return parse_system_states(raw.value)


def health_units(raw: RawSetting) -> tuple[str, ...]:
    """Unit names that must be active (space-separated)."""
    return parse_units(raw.value)


def health_dir(raw: RawSetting) -> str:
    """An absolute directory of check commands (it may be missing: then there are none)."""
    return parse_check_dir(raw.value)


def directory_problem(path: str) -> str | None:
    """Why ``path`` cannot be a directory of commands (None if it is one, or is missing: no commands).

    A file where a directory of commands is expected would fail every run
    (the health checks would halt the group, the hooks give the slot back
    again and again). Symlinks are followed.
    """
    return _kind_problem(path, stat.S_ISDIR, "a directory")


def regular_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be read as a small file (None if it is a regular file, or missing)."""
    return _kind_problem(path, stat.S_ISREG, "a regular file")


def _kind_problem(path: str, is_kind: Callable[[int], bool], kind: str) -> str | None:
    """Why ``path`` (symlinks followed) is not of ``kind``; None when it is, or when it is missing."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be examined: {exc.strerror or exc}"
    return None if is_kind(mode) else f"is {file_kind(mode)}, not {kind}"


def reboot_required_problem(path: str) -> str | None:
    """Why ``path`` cannot be the file of source ``reboot-required`` (None if it can).

    A directory is always there, so it would mean "reboot needed" at every
    start: a reboot loop (``/`` included).
    """
    if path.endswith("/") or os.path.isdir(path):
        return ("names a directory, which always exists (a reboot at every start); give the file, "
                "e.g. /run/reboot-required")
    return None


def metrics_address(raw: RawSetting) -> MetricsAddress | None:
    """``host:port`` or ``unix:/path`` for the metrics endpoint; empty turns it off."""
    return parse_metrics_address(raw.value) if raw.value else None


def watchdog_usec(raw: RawSetting) -> int | None:
    """systemd's WATCHDOG_USEC: a positive whole number of microseconds; empty or 0 means none."""
    if not raw.value or raw.value == "0":
        return None
    if not raw.value.isascii() or not raw.value.isdigit():
        raise ValueError("must be a whole number of microseconds")
    return int(raw.value)


def windows(raw: RawSetting) -> tuple[WindowSpec, ...] | None:
    """Reboot windows ("Mon-Fri 03:00 1h; Sat,Sun 22:30 90m"), or None when empty."""
    if raw.value.strip() == "":
        return None
    from locksmithd.core.schedule import parse_windows  # here: locksmithctl's etcd options need no schedules

    return parse_windows(raw.value)


def time_zone(raw: RawSetting) -> tuple[tzinfo, str] | None:
    """An IANA time zone name ("Europe/Berlin", "UTC") and its name, or None when empty (host's zone)."""
    name = raw.value.strip()
    if name == "":
        return None
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("unknown time zone; use an IANA name such as Europe/Berlin, America/New_York "
                         "or UTC (see timedatectl list-timezones)") from None


def reboot_sources(names: Sequence[str]) -> Callable[[RawSetting], tuple[str, ...]]:
    """The parser of comma-separated source names among ``names``, each once, at least one."""

    def parse(raw: RawSetting) -> tuple[str, ...]:
        given = [name.strip().lower() for name in raw.value.split(",") if name.strip()]
        if not given:
            raise ValueError(f"no source given; use one or more of {', '.join(names)}")
        for name in given:
            if name not in names:
                raise ValueError(f"unknown source {name!r}; use one or more of {', '.join(names)}")
        return tuple(dict.fromkeys(given))

    return parse


def absolute_path(raw: RawSetting) -> str:
    """An absolute path (whether it exists is checked when it is used)."""
    given = path(raw)
    if not os.path.isabs(given):
        raise ValueError("must be an absolute path")
    return given


def command_line(raw: RawSetting) -> tuple[str, ...] | None:
    """A command and its arguments, split as a shell would (no shell runs it); None when empty."""
    try:
        argv = shlex.split(raw.value)
    except ValueError as exc:
        raise ValueError(f"cannot be split into words: {exc}") from None
    return tuple(argv) or None
