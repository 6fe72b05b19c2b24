"""Least privilege: sysusers entry, polkit rule, the unprivileged unit's exposure, etcd credentials from files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from locksmithd.errors import ConfigError, ExitCode
from locksmithd.etcd.client import EtcdStore
from locksmithd.settings import load_settings
from harness.etcd import EtcdCluster
from harness.ports import free_port
from tests.test_systemd_unit import load_unit

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
ROOT_UNIT = SYSTEMD / "locksmithd.service"
USER_UNIT = SYSTEMD / "locksmithd-unprivileged.service"
SYSUSERS = SYSTEMD / "sysusers.d" / "locksmithd.conf"
POLKIT = SYSTEMD / "polkit" / "50-locksmithd.rules"
DAEMON = str(Path(sys.executable).with_name("locksmithd"))
CTL = str(Path(sys.executable).with_name("locksmithctl"))
MACHINE = {"LOCKSMITHD_MACHINE_ID": "host-1"}
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def unit_values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def exposure(unit: Path, tmp_path: Path) -> float:
    local = tmp_path / unit.name
    local.write_text(unit.read_text().replace("/usr/local/bin/locksmithd", DAEMON))
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(local)],
                            capture_output=True, text=True, timeout=120)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


@needs_analyze
def test_exposure_of_both_units(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true`: at most 2.7 as root, at most 2.0 unprivileged."""
    assert exposure(ROOT_UNIT, tmp_path) <= 2.7
    assert exposure(USER_UNIT, tmp_path) <= 2.0


@needs_analyze
def test_unprivileged_unit_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "locksmithd.service"
    unit.write_text(USER_UNIT.read_text().replace("/usr/local/bin/locksmithd", DAEMON))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "locksmithd.service" in line and "update-engine.service" not in line]
    assert problems == [], problems


def test_unprivileged_unit_is_the_root_unit_without_privilege() -> None:
    """Same contract as the root unit (files, restart, watchdog, sandbox) but a dedicated user and no capability."""
    root, user = unit_values(ROOT_UNIT), unit_values(USER_UNIT)
    parsed = load_unit()
    assert parsed.get("Service", "ExecStart") == user["ExecStart"]
    for key in ("Type", "Restart", "RestartPreventExitStatus", "WatchdogSec", "ReadWritePaths", "RuntimeDirectory",
                "ProtectSystem", "NoNewPrivileges", "MemoryMax", "RestrictAddressFamilies"):
        assert user[key] == root[key], key
    assert "User" not in root  # the default stays root, for locksmith compatibility
    sysusers_name = SYSUSERS.read_text().split("\nu ", 1)[1].split()[0]
    assert user["User"] == user["Group"] == sysusers_name == "locksmithd"
    assert user["CapabilityBoundingSet"] == "" and user["AmbientCapabilities"] == ""
    assert "tty" in user["SupplementaryGroups"].split()


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_sysusers_entry_creates_a_locked_system_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    entry = next(line for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
                 if line.startswith("locksmithd:"))
    name, _, uid, _, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and shell == "/usr/sbin/nologin" and home == "/nonexistent"
    assert "locksmithd:!" in (tmp_path / "etc" / "shadow").read_text()  # no password login


POLKIT_HARNESS = """
const fs = require("fs");
const rules = [];
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: null}, addRule: (f) => rules.push(f)};
new Function("polkit", fs.readFileSync(process.argv[1], "utf8"))(polkit);
const cases = JSON.parse(process.argv[2]);
const answers = cases.map(([user, action]) => {
  for (const rule of rules) {
    const answer = rule({id: action}, {user: user});
    if (answer !== null && answer !== undefined) return answer;
  }
  return null;
});
console.log(JSON.stringify({rules: rules.length, answers: answers}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node (to run polkit's JavaScript) is not installed")
def test_polkit_rule_allows_exactly_reboot_for_the_user() -> None:
    login1 = "org.freedesktop.login1."
    cases = [("locksmithd", login1 + "reboot"), ("locksmithd", login1 + "reboot-multiple-sessions"),
             ("locksmithd", login1 + "reboot-ignore-inhibit"), ("locksmithd", login1 + "power-off"),
             ("locksmithd", login1 + "set-wall-message"), ("locksmithd", "org.freedesktop.systemd1.manage-units"),
             ("alice", login1 + "reboot"), ("root", login1 + "reboot")]
    result = subprocess.run(["node", "-e", POLKIT_HARNESS, str(POLKIT), json.dumps(cases)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict == {"rules": 1, "answers": ["yes", "yes", None, None, None, None, None, None]}


# -- etcd credentials from files ------------------------------------------------

def test_password_file_and_systemd_credentials(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("s3cret\n")
    settings = load_settings({**MACHINE, "LOCKSMITHD_ETCD_USERNAME": "u",
                              "LOCKSMITHD_ETCD_PASSWORD_FILE": str(password_file)}, conf_paths=[])
    assert settings.etcd.password == "s3cret"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "etcd-username").write_text("locksmith")
    (creds / "etcd-password").write_text("from-credential")
    settings = load_settings({**MACHINE, "CREDENTIALS_DIRECTORY": str(creds)}, conf_paths=[])
    assert (settings.etcd.username, settings.etcd.password) == ("locksmith", "from-credential")
    assert "from-credential" not in repr(settings)
    given = load_settings({**MACHINE, "CREDENTIALS_DIRECTORY": str(creds), "LOCKSMITHD_ETCD_PASSWORD": "explicit"},
                          conf_paths=[])
    assert given.etcd.password == "explicit"  # an explicit value wins over a credential


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "is empty"), (b"two\nlines\n", "one non-empty line"), (b"\xff\xfe\n", "not valid UTF-8"),
    (b"x" * 5000, "longer than 4096 bytes")])
def test_bad_password_file_is_a_config_error_that_hides_it(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "pw"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_settings({**MACHINE, "LOCKSMITHD_ETCD_USERNAME": "u", "LOCKSMITHD_ETCD_PASSWORD_FILE": str(path)},
                      conf_paths=[])
    assert problem in caught.value.one_line() and "LOCKSMITHD_ETCD_PASSWORD_FILE" in caught.value.one_line()
    assert "lines" not in caught.value.one_line().split(str(path))[0]


def test_password_and_password_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("a")
    with pytest.raises(ConfigError, match="not both"):
        load_settings({**MACHINE, "LOCKSMITHD_ETCD_USERNAME": "u", "LOCKSMITHD_ETCD_PASSWORD": "b",
                       "LOCKSMITHD_ETCD_PASSWORD_FILE": str(path)}, conf_paths=[])


def test_credentials_authenticate_to_a_real_etcd(tmp_path: Path, etcd_auth_node: EtcdCluster) -> None:
    """TLS CA, user and password all from $CREDENTIALS_DIRECTORY: requests are accepted."""
    auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
    assert auth is not None and pki is not None
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "etcd-username").write_text(auth.user + "\n")
    (creds / "etcd-password").write_text(auth.password + "\n")
    shutil.copy(pki.ca_cert, creds / "etcd-ca.pem")
    settings = load_settings({**MACHINE, "CREDENTIALS_DIRECTORY": str(creds),
                              "LOCKSMITHD_ENDPOINT": etcd_auth_node.client_urls[0]}, conf_paths=[])
    assert settings.etcd.cafile == str(creds / "etcd-ca.pem")
    store = EtcdStore(settings.etcd)
    try:
        key = f"{auth.key_prefix}credentials-test"
        store.put(key, b"ok")
        stored = store.read(key)
        assert stored is not None and stored.value == b"ok"
    finally:
        store.close()


def test_password_on_the_command_line_is_warned_about(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], **MACHINE, "LOCKSMITHD_STATE_FILE": str(tmp_path / "state"),
           "REBOOT_STRATEGY": "off"}
    result = subprocess.run([DAEMON, "--conf", os.devnull, "--etcd-username", "u", "--etcd-password", "hunter2"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == ExitCode.OK, result.stderr
    assert "--etcd-password on the command line is visible" in result.stderr and "hunter2" not in result.stderr
    quiet = subprocess.run([DAEMON, "--conf", os.devnull], capture_output=True, text=True, timeout=60,
                           env={**env, "LOCKSMITHD_ETCD_USERNAME": "u", "LOCKSMITHD_ETCD_PASSWORD": "hunter2"})
    assert quiet.returncode == ExitCode.OK and "visible" not in quiet.stderr
    ctl = subprocess.run([CTL, "--endpoint", f"http://127.0.0.1:{free_port()}", "--etcd-timeout", "0.5",
                          "--etcd-username", "u", "--etcd-password", "hunter2", "status"],
                         capture_output=True, text=True, timeout=60)
    assert ctl.returncode == ExitCode.STORE_UNAVAILABLE
    assert "warning: --etcd-password is visible" in ctl.stderr and "hunter2" not in ctl.stderr
