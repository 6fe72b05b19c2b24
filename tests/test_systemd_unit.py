"""The shipped systemd unit: it verifies, and its contract with the daemon holds."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from locksmithd.errors import ExitCode

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "locksmithd.service"


def load_unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit with ExecStart pointing at this venv's daemon."""
    daemon = Path(sys.executable).with_name("locksmithd")
    unit = tmp_path / "locksmithd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/locksmithd", str(daemon)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "locksmithd.service" in line and "update-engine.service" not in line]
    assert result.returncode == 0 or not problems, result.stdout + result.stderr
    assert problems == [], problems


def test_unit_contract() -> None:
    """Ordering, environment files, restart policy, memory budget and sandbox as the daemon needs them."""
    raw = UNIT.read_text()
    unit = load_unit()
    assert "update-engine.service" in unit.get("Unit", "After")
    for path in ("/usr/share/coreos/update.conf", "/etc/coreos/update.conf",
                 "/usr/share/flatcar/update.conf", "/etc/flatcar/update.conf"):
        assert f"EnvironmentFile=-{path}" in raw
    assert unit.get("Service", "Restart") == "on-failure"
    prevented = {int(code) for code in unit.get("Service", "RestartPreventExitStatus").split()}
    assert {ExitCode.CONFIG, ExitCode.IDENTITY, ExitCode.ALREADY_RUNNING} <= prevented
    assert unit.get("Service", "MemoryMax")
    assert "AF_UNIX" in unit.get("Service", "RestrictAddressFamilies")  # D-Bus to logind
    assert "DeviceAllow=char-pts rw" in raw  # reboot notices on pseudo terminals
    assert "ReadWritePaths=/run/update-engine" in raw


def test_unit_agrees_with_the_settings_table() -> None:
    """The unit's config files, state directory and runtime directory are the daemon's defaults."""
    import os

    from locksmithd.settings import DEFAULT_CONF_PATHS
    from locksmithd.settings.table import STATE_FILE

    raw = UNIT.read_text()
    files = [line.removeprefix("EnvironmentFile=-") for line in raw.splitlines()
             if line.startswith("EnvironmentFile=")]
    assert files == [path for path in DEFAULT_CONF_PATHS if path.endswith("update.conf")]
    assert STATE_FILE.default is not None
    state_dir = os.path.dirname(STATE_FILE.default)
    unit = load_unit()
    assert unit.get("Service", "ReadWritePaths") == state_dir
    assert unit.get("Service", "RuntimeDirectory") == os.path.basename(state_dir)
    assert os.path.dirname(state_dir) == "/run"  # RuntimeDirectory= lives in /run


def test_unit_has_a_watchdog_the_daemon_feeds() -> None:
    """Type=notify with WatchdogSec=: the daemon pings at half the period (tests/test_watchdog.py)."""
    from locksmithd.daemon.supervise import watchdog_interval_s

    unit = load_unit()
    assert unit.get("Service", "Type") == "notify"
    assert unit.get("Service", "NotifyAccess") == "main"
    watchdog = unit.get("Service", "WatchdogSec")
    assert watchdog.endswith("s") and int(watchdog[:-1]) >= 30
    assert watchdog_interval_s(int(watchdog[:-1]) * 1_000_000, None, 1) == int(watchdog[:-1]) / 2
