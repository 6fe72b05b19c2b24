"""The etcd options are declared once (settings/etcd_options.py) and reach all three programs alike."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest

from locksmithd.ctl.main import cli as ctl_cli
from locksmithd.daemon.main import cli as daemon_cli
from locksmithd.fleetlock.main import cli as fleetlock_cli
from locksmithd.settings.etcd_options import ETCD_OPTIONS, etcd_keys
from locksmithd.settings.table import ENDPOINT, ETCD_TIMEOUT, SETTINGS

TOOLS = ((ctl_cli, "LOCKSMITHCTL_"), (fleetlock_cli, "LOCKSMITHD_FLEETLOCK_"))


def _option(command: click.Command, flag: str) -> click.Option:
    found = [p for p in command.params if isinstance(p, click.Option) and flag in p.opts]
    assert len(found) == 1, flag
    return found[0]


def test_the_group_is_every_etcd_row_with_an_environment_for_the_tools() -> None:
    """Every row filling EtcdSettings is in the group (the password file, read by the daemon alone, is not)."""
    etcd_rows = {row.key for row in SETTINGS if row.field and row.field.startswith("etcd.")}
    assert {option.row.key for option in ETCD_OPTIONS} == etcd_rows


@pytest.mark.parametrize(("command", "prefix"), TOOLS)
def test_each_tool_has_every_etcd_option_under_its_prefix_with_the_tables_default(
        command: click.Command, prefix: str) -> None:
    for option in ETCD_OPTIONS:
        assert option.row.flag is not None
        param = _option(command, option.row.flag)
        assert param.envvar == prefix + option.row.key.removeprefix("LOCKSMITHD_")
        if option.row is ETCD_TIMEOUT:
            assert param.default == ETCD_TIMEOUT.default_value() == 5.0
        elif option.row is ENDPOINT:
            assert f"[default: {ENDPOINT.default}]" in (param.help or "")
        else:
            assert param.default == option.row.default


def test_the_daemon_has_the_same_flags() -> None:
    for option in ETCD_OPTIONS:
        assert option.row.flag is not None
        _option(daemon_cli, option.row.flag)


def test_error_keys_follow_the_prefix() -> None:
    assert etcd_keys("LOCKSMITHCTL_")["key_prefix"] == "LOCKSMITHCTL_ETCD_KEY_PREFIX"
    assert etcd_keys("LOCKSMITHD_")["cafile"] == "LOCKSMITHD_ETCD_CAFILE"


@pytest.mark.parametrize(("program", "prefix"), (("locksmithd.ctl.main", "LOCKSMITHCTL_"),
                                                 ("locksmithd.fleetlock.main", "LOCKSMITHD_FLEETLOCK_")))
def test_a_bad_value_from_the_environment_is_named_by_its_variable(program: str, prefix: str) -> None:
    """Nothing is contacted: the key prefix is refused before any etcd request, naming the tool's variable."""
    env = {**os.environ, f"{prefix}ETCD_KEY_PREFIX": "tenant", f"{prefix}ENDPOINT": "http://127.0.0.1:9"}
    args = ["status"] if "ctl" in program else []
    result = subprocess.run([sys.executable, "-m", program, *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode in (2, 3), result.stderr
    assert f"{prefix}ETCD_KEY_PREFIX" in result.stderr
    assert 'must end in "/"' in result.stderr
