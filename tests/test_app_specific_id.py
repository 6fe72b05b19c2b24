"""LOCKSMITHD_HOLDER_ID=app-specific: sd_id128_get_machine_app_specific() in Python, against systemd's values."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from locksmithd.host.reads import HOST_READS
from locksmithd.core.app_specific import LOCKSMITHD_APP_ID, app_specific_id
from locksmithd.errors import ConfigError, ExitCode, IdentityError
from locksmithd.settings import load_settings
from harness.etcd import EtcdCluster

CTL = str(Path(sys.executable).with_name("locksmithctl"))
# Computed by `systemd-id128 machine-id --app-specific=APP` (systemd 252) on a host whose /etc/machine-id
# held MACHINE: a fixed vector, checked wherever the tool is missing.
VECTORS = [("3d1219c7c4c5404aaa1f6d2a48adfda4", "0123456789abcdef0123456789abcdef", "f50949f4874348419c64d04b15fd1889"),
           ("3d1219c7c4c5404aaa1f6d2a48adfda4", LOCKSMITHD_APP_ID, "a5f1c29400b24659aa5729cdb32a3cf4")]


@pytest.mark.parametrize(("machine", "app", "expected"), VECTORS)
def test_known_vectors(machine: str, app: str, expected: str) -> None:
    assert app_specific_id(machine, app) == expected
    assert app_specific_id(str(uuid.UUID(machine)), str(uuid.UUID(app))) == expected  # dashed input too


def test_result_is_a_v4_uuid_and_depends_on_both_ids() -> None:
    machine = "3d1219c7c4c5404aaa1f6d2a48adfda4"
    derived = uuid.UUID(app_specific_id(machine))
    assert derived.version == 4 and derived.variant == uuid.RFC_4122
    assert app_specific_id(machine) != machine
    assert app_specific_id(machine, uuid.uuid4().hex) != app_specific_id(machine)
    assert app_specific_id("0" * 31 + "1") != app_specific_id(machine)


@pytest.mark.parametrize("bad", ["", "xyz", "3d1219c7c4c5404aaa1f6d2a48adfda", "g" * 32, "host-1"])
def test_ids_that_are_not_128_bits_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        app_specific_id(bad)


@pytest.mark.skipif(shutil.which("systemd-id128") is None or not os.access("/etc/machine-id", os.R_OK),
                    reason="needs systemd-id128 and a readable /etc/machine-id")
def test_matches_systemd_id128_on_this_machine() -> None:
    machine = Path("/etc/machine-id").read_text().strip()
    for app in (LOCKSMITHD_APP_ID, uuid.uuid4().hex, uuid.uuid4().hex):
        tool = subprocess.run(["systemd-id128", "machine-id", f"--app-specific={app}"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        assert app_specific_id(machine, app) == tool


def test_daemon_setting_derives_the_holder_id(tmp_path: Path) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    settings = load_settings({"LOCKSMITHD_HOLDER_ID": "app-specific"}, conf_paths=[], machine_id_path=str(machine_id), host=HOST_READS)
    assert settings.machine_id == "a5f1c29400b24659aa5729cdb32a3cf4"
    plain = load_settings({}, conf_paths=[], machine_id_path=str(machine_id), host=HOST_READS)
    assert plain.machine_id == "3d1219c7c4c5404aaa1f6d2a48adfda4"  # locksmith's default is unchanged
    override = load_settings({"LOCKSMITHD_HOLDER_ID": "app-specific", "LOCKSMITHD_MACHINE_ID": "given"},
                             conf_paths=[], machine_id_path=str(machine_id), host=HOST_READS)
    assert override.machine_id == "given"  # an explicit id wins
    with pytest.raises(ConfigError) as caught:
        load_settings({"LOCKSMITHD_HOLDER_ID": "secret"}, conf_paths=[], machine_id_path=str(machine_id), host=HOST_READS)
    assert caught.value.exit_code == ExitCode.CONFIG and "app-specific" in caught.value.one_line()
    machine_id.write_text("not-hex-at-all\n")
    with pytest.raises(IdentityError, match="cannot derive an app-specific id"):
        load_settings({"LOCKSMITHD_HOLDER_ID": "app-specific"}, conf_paths=[], machine_id_path=str(machine_id), host=HOST_READS)


def test_locksmithctl_uses_the_same_derivation(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    base = [CTL, "--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix,
            "--machine-id-file", str(machine_id)]
    locked = subprocess.run([*base, "--holder-id", "app-specific", "lock"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert locked.returncode == 0, locked.stderr
    status = subprocess.run([*base, "status", "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert '"holders": ["a5f1c29400b24659aa5729cdb32a3cf4"]' in status.stdout
    unlocked = subprocess.run([*base, "unlock"], capture_output=True, text=True, timeout=60,
                              env={**env, "LOCKSMITHCTL_HOLDER_ID": "app-specific"})
    assert unlocked.returncode == 0, unlocked.stderr
