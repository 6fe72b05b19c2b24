"""The reboot windows from either form (LOCKSMITHD_REBOOT_WINDOWS, or locksmith's START/LENGTH pair) in their zone."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import tzinfo

from locksmithd.core.schedule import Schedule, WindowSpec
from locksmithd.core.window import parse_window_length, parse_window_start
from locksmithd.errors import ConfigError
from locksmithd.settings import table
from locksmithd.settings.raw import RawSetting
from locksmithd.settings.table import hidden, parse_row


def schedule(given: Mapping[str, RawSetting], host_zone: Callable[[], tuple[tzinfo, str]]) -> Schedule | None:
    """The reboot windows of either form in their zone; None for any time; ConfigError for both forms."""
    windows_raw = given.get(table.WINDOWS.key)
    windows = parse_row(table.WINDOWS, windows_raw) if windows_raw is not None else None
    legacy = _window(given.get(table.WINDOW_START.key), given.get(table.WINDOW_LENGTH.key))
    zone_raw = given.get(table.TIMEZONE.key)
    named = parse_row(table.TIMEZONE, zone_raw) if zone_raw is not None else None
    if windows is not None and legacy is not None:
        assert windows_raw is not None
        pair = given.get(table.WINDOW_START.key) or given.get(table.WINDOW_LENGTH.key)
        assert pair is not None
        raise ConfigError(windows_raw.source, windows_raw.key, windows_raw.value,
                          f"cannot be combined with {pair.key} (from {pair.source}): use one form or the other")
    chosen = windows if windows is not None else legacy
    if chosen is None:
        return None
    zone, name = named if named is not None else host_zone()
    return Schedule(chosen, zone, name)


def _window(start: RawSetting | None, length: RawSetting | None) -> tuple[WindowSpec, ...] | None:
    """locksmith's window if both halves are set (non-empty), None if neither; else ConfigError.

    A daily window opens every day; a weekly one on its day (same meaning as locksmith).
    """
    start_set = start is not None and start.value.strip() != ""
    length_set = length is not None and length.value.strip() != ""
    if not start_set and not length_set:
        return None
    if start is None or length is None or start_set != length_set:
        given = start if start_set else length
        assert given is not None
        other = given.key.replace("START", "LENGTH") if start_set else given.key.replace("LENGTH", "START")
        raise ConfigError(given.source, given.key, given.value,
                          f"{other} must be set too: give both the window start and length, or neither")
    try:
        weekday, hour, minute = parse_window_start(start.value)
    except ValueError as exc:
        raise ConfigError(start.source, start.key, hidden(start.key, start.value), str(exc)) from exc
    try:
        days = frozenset(range(7)) if weekday is None else frozenset({weekday})
        return (WindowSpec(days, hour, minute, parse_window_length(length.value)),)
    except ValueError as exc:
        raise ConfigError(length.source, length.key, hidden(length.key, length.value), str(exc)) from exc
