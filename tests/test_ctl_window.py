"""locksmithctl window: the real CLI reads the daemon's configuration and prints windows and openings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ctl_runner import run_ctl

# Whatever the caller's environment holds, these start unset (empty means unset for each of them).
CLEAN = {key: "" for key in ("LOCKSMITHD_REBOOT_WINDOWS", "LOCKSMITHD_TIMEZONE", "LOCKSMITHD_REBOOT_WINDOW_START",
                             "LOCKSMITHD_REBOOT_WINDOW_LENGTH", "REBOOT_WINDOW_START", "REBOOT_WINDOW_LENGTH")}
WINDOWS = {"LOCKSMITHD_REBOOT_WINDOWS": "Mon-Fri 03:00 1h; Sat,Sun 22:30 90m", "LOCKSMITHD_TIMEZONE": "Europe/Berlin"}


def window(*args: str, env: dict[str, str] | None = None, conf: str = "/dev/null") -> tuple[int, str, str]:
    """Run ``locksmithctl window``; the CLEAN keys are emptied unless ``conf`` is a real file that sets them."""
    clean = CLEAN if conf == "/dev/null" else {}
    result = run_ctl("window", "--conf", conf, *args, env={**clean, **(env or {})})
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_json_lists_windows_and_the_next_three_openings_across_dst() -> None:
    """Friday before Berlin's spring-forward night: Saturday is +01:00, Sunday evening +02:00."""
    code, out, err = window("--json", "--at", "2024-03-29T12:00:00+00:00", env=WINDOWS)
    assert code == 0, err
    report = json.loads(out)
    assert report["windows"] == ["Mon-Fri 03:00 1h0m0s", "Sat,Sun 22:30 1h30m0s"]
    assert report["timezone"] == "Europe/Berlin"
    assert (report["open_now"], report["always_open"], report["closes_at"]) == (False, False, None)
    assert [(item["local"], item["utc"]) for item in report["next_openings"]] == [
        ("2024-03-30T22:30:00+01:00", "2024-03-30T21:30:00+00:00"),
        ("2024-03-31T22:30:00+02:00", "2024-03-31T20:30:00+00:00"),
        ("2024-04-01T03:00:00+02:00", "2024-04-01T01:00:00+00:00"),
    ]
    assert report["next_openings"][0]["closes"] == "2024-03-31T00:00:00+01:00"


def test_text_says_open_until_and_shows_local_and_utc() -> None:
    code, out, err = window("--at", "2024-03-29T02:30:00+00:00", env=WINDOWS)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["reboot windows (Europe/Berlin):", "  Mon-Fri 03:00 1h0m0s", "  Sat,Sun 22:30 1h30m0s",
                         "open now: yes, until 2024-03-29 04:00 Fri +01:00"]
    assert lines[5] == "  2024-03-30 22:30 Sat +01:00  2024-03-30 21:30 Sat +00:00  2024-03-31 00:00 Sun +01:00"
    assert len(lines) == 8


def test_locksmith_pair_from_update_conf_in_a_named_zone(tmp_path: Path) -> None:
    """REBOOT_WINDOW_START/LENGTH in an update.conf are read as the daemon reads them."""
    conf = tmp_path / "update.conf"
    conf.write_text("GROUP=stable\nREBOOT_WINDOW_START=Thu 04:00\nREBOOT_WINDOW_LENGTH=1h\n")
    code, out, err = window("--json", "--at", "2024-01-01T00:00:00+00:00", conf=str(conf),
                            env={"LOCKSMITHD_TIMEZONE": "America/New_York"})
    assert code == 0, err
    report = json.loads(out)
    assert report["windows"] == ["Thu 04:00 1h0m0s"]
    assert [item["utc"] for item in report["next_openings"]] == [
        "2024-01-04T09:00:00+00:00", "2024-01-11T09:00:00+00:00", "2024-01-18T09:00:00+00:00"]


def test_always_open_and_no_window() -> None:
    code, out, _ = window("--at", "2024-01-01T00:00:00+00:00", env={"LOCKSMITHD_REBOOT_WINDOWS": "00:00 24h",
                                                                    "LOCKSMITHD_TIMEZONE": "UTC"})
    assert code == 0 and "open now: yes (the windows cover the whole week)" in out
    code, out, _ = window()
    assert (code, out) == (0, "no reboot window: reboots may happen at any time\n")


@pytest.mark.parametrize(("env", "needles"), [
    ({"LOCKSMITHD_TIMEZONE": "Europe/Bxerlin", "LOCKSMITHD_REBOOT_WINDOWS": "04:00 1h"},
     ["environment", "LOCKSMITHD_TIMEZONE", "Europe/Bxerlin", "unknown time zone"]),
    ({"LOCKSMITHD_REBOOT_WINDOWS": "04:00 1h", "LOCKSMITHD_REBOOT_WINDOW_START": "05:00",
      "LOCKSMITHD_REBOOT_WINDOW_LENGTH": "1h"}, ["LOCKSMITHD_REBOOT_WINDOWS", "cannot be combined"]),
    ({"LOCKSMITHD_REBOOT_WINDOWS": "Someday 04:00 1h"}, ["LOCKSMITHD_REBOOT_WINDOWS", "'Someday' is not a day"]),
])
def test_bad_settings_exit_3_with_one_line(env: dict[str, str], needles: list[str]) -> None:
    code, out, err = window(env=env)
    assert code == 3 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err


def test_bad_at_is_a_usage_error() -> None:
    code, _, err = window("--at", "yesterday")
    assert code == 2 and "--at" in err
