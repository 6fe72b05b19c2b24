"""locksmithctl window: this host's reboot windows, read from the daemon's own configuration."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import click

from locksmithd.core.holder_record import EARLIEST_TIME, LATEST_TIME
from locksmithd.core.names import printable
from locksmithd.core.schedule import Schedule
from locksmithd.ctl.context import handled
from locksmithd.errors import UsageError

SHOWN_OPENINGS = 3


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--conf", "conf_paths", multiple=True, metavar="PATH",
              help="read these KEY=value files (which must exist) instead of the daemon's defaults")
@click.option("--at", "at_text", hidden=True, help="answer for this ISO 8601 moment instead of now (tests)")
@handled
def window(as_json: bool, conf_paths: tuple[str, ...], at_text: str | None) -> None:
    """Show this host's reboot windows, whether one is open now and the next openings.

    The windows are read like locksmithd reads them: update.conf files,
    /etc/locksmithd/locksmithd.conf, then LOCKSMITHD_* (and locksmith's
    REBOOT_WINDOW_*) environment variables. A bad setting exits 3.
    """
    from locksmithd.host.reads import HOST_READS
    from locksmithd.settings import DEFAULT_CONF_PATHS, load_settings

    now = _moment(at_text)
    # The environment is read as the daemon reads it (the same keys, the same priority).
    settings = load_settings(os.environ, {}, conf_paths=conf_paths or DEFAULT_CONF_PATHS,
                             host=HOST_READS, conf_must_exist=bool(conf_paths), identity=False)
    report = describe(settings.window, now)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render(report))


def _moment(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {printable(text, 80)!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise UsageError(f"--at {printable(text, 80)!r} needs a UTC offset")
    try:
        in_utc = moment.astimezone(timezone.utc)
    except OverflowError:
        in_utc = None
    if in_utc is None or not EARLIEST_TIME <= in_utc < LATEST_TIME:
        raise UsageError(f"--at {printable(text, 80)!r} is out of range (years 1970 to 8999 in UTC)")
    return moment


def describe(schedule: Schedule | None, now: datetime) -> dict[str, Any]:
    """The window report as plain data (the JSON output); times are ISO 8601."""
    if schedule is None:
        return {"windows": [], "timezone": None, "always_open": True, "open_now": True, "closes_at": None,
                "next_openings": []}
    local = now.astimezone(schedule.zone)
    closes = schedule.closes_at(local)
    openings = []
    for opening in islice(schedule.openings(local), SHOWN_OPENINGS):
        closing = schedule.closes_at(opening)
        openings.append({"local": opening.isoformat(), "utc": opening.astimezone(timezone.utc).isoformat(),
                         "closes": closing.isoformat() if closing else None})
    return {"windows": [str(spec) for spec in schedule.windows], "timezone": schedule.zone_name or str(schedule.zone),
            "always_open": schedule.always_open, "open_now": schedule.contains(local),
            "closes_at": closes.isoformat() if closes else None, "next_openings": openings}


def render(report: dict[str, Any]) -> str:
    """The report for a terminal: windows, open or not, then one line per opening (local and UTC)."""
    if not report["windows"]:
        return "no reboot window: reboots may happen at any time"
    lines = [f"reboot windows ({report['timezone']}):"]
    lines += [f"  {window}" for window in report["windows"]]
    if report["always_open"]:
        lines.append("open now: yes (the windows cover the whole week)")
    elif report["open_now"]:
        lines.append(f"open now: yes, until {_clock(report['closes_at'])}")
    else:
        lines.append("open now: no")
    if report["next_openings"]:
        lines.append("next openings (local, UTC, closes):")
        lines += [f"  {_clock(item['local'])}  {_clock(item['utc'])}  {_clock(item['closes'])}"
                  for item in report["next_openings"]]
    return "\n".join(lines)


def _clock(iso: str | None) -> str:
    """"2024-01-06 22:30 Sat +01:00" from an ISO 8601 time."""
    if iso is None:
        return "-"
    moment = datetime.fromisoformat(iso)
    return moment.strftime("%Y-%m-%d %H:%M %a ") + moment.isoformat()[-6:]
