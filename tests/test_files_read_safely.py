"""Files the daemon reads: a FIFO as the .pkgs list never wedges it; a password file's first line is the password."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.fleet import wait_for
from tests.test_daemon_integration import holders, run, settled, start_host
from tests.test_daemon_security import roll_one_host
from tests.test_daemon_sources import history, reboot_required_env


def test_a_fifo_as_the_packages_list_does_not_wedge_the_daemon(tmp_path: Path, etcd_node: EtcdCluster,
                                                                key_prefix: str) -> None:
    """reboot-required.pkgs is a FIFO nobody writes: one warning naming it, and the reboot goes on."""
    name = "h-rr-fifo"
    env = reboot_required_env(tmp_path / name)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, name, key_prefix, extra_env=env)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "idle")
            fifo = host.run_dir / "reboot-required.pkgs"
            os.mkfifo(fifo)
            (host.run_dir / "reboot-required").write_text("*** System restart required ***\n")
            await wait_for(lambda: settled(host), 30, f"the reboot; log:\n{host.log_text()[-2000:]}")
            assert len(host.logind.reboots) == 1
            assert host.log_text().count(f"ignoring {fifo}: not a regular file") == 1
        finally:
            await host.stop()

    run(scenario)
    requested = [e for e in history(etcd_node, key_prefix) if e["event"] == "reboot-requested"]
    run_file = tmp_path / name / "run" / "reboot-required"
    assert [e["detail"] for e in requested] == [f"reboot-required: {run_file}"], requested  # no packages
    assert holders(etcd_node, key_prefix) == []


def test_a_fifo_at_start_still_lets_sigterm_stop_the_daemon(tmp_path: Path, etcd_node: EtcdCluster,
                                                            key_prefix: str) -> None:
    """Both files there before the start (a FIFO as the list): the daemon answers SIGTERM with exit 0."""
    name = "h-rr-fifo-start"
    env = {**reboot_required_env(tmp_path / name), "LOCKSMITHD_REBOOT_WINDOW_START": "Mon 00:00",
           "LOCKSMITHD_REBOOT_WINDOW_LENGTH": "1m"}  # closed nearly always: the host waits, it does not reboot
    run_dir = tmp_path / name / "run"
    run_dir.mkdir(parents=True)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, name, key_prefix, extra_env=env)
        try:
            os.mkfifo(run_dir / "reboot-required.pkgs")
            (run_dir / "reboot-required").write_text("")
            await wait_for(lambda: "not a regular file" in host.log_text(), 15, f"log:\n{host.log_text()[-2000:]}")
            host.auto_restart = False
            assert host.process is not None
            host.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(host.process.wait(), 20) == 0
        finally:
            await host.stop()

    run(scenario)


def test_password_file_with_a_trailing_blank_line(tmp_path: Path, etcd_auth_node: EtcdCluster) -> None:
    """'password\\n\\n' authenticates as 'password': a whole reboot cycle against etcd with auth."""
    auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
    assert auth is not None and pki is not None
    password_file = tmp_path / "etcd-password"
    password_file.write_text(auth.password + "\n\n")
    password_file.chmod(0o600)
    log = roll_one_host(tmp_path, etcd_auth_node, {"LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert),
                                                   "LOCKSMITHD_ETCD_USERNAME": auth.user,
                                                   "LOCKSMITHD_ETCD_PASSWORD_FILE": str(password_file)},
                        prefix=auth.key_prefix)
    assert auth.password not in log


def test_a_fifo_as_the_boot_id_does_not_wedge_the_daemon(tmp_path: Path, etcd_node: EtcdCluster,
                                                         key_prefix: str) -> None:
    """LOCKSMITHD_BOOT_ID_PATH names a FIFO: the boot id is unknown, the daemon runs and stops on SIGTERM."""
    fifo = tmp_path / "boot_id_fifo"
    os.mkfifo(fifo)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-bootid-fifo", key_prefix,
                                extra_env={"LOCKSMITHD_BOOT_ID_PATH": str(fifo)})
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 20,
                           f"idle; log:\n{host.log_text()[-2000:]}")
            host.auto_restart = False
            assert host.process is not None
            host.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(host.process.wait(), 20) == 0
        finally:
            await host.stop()

    run(scenario)
    assert holders(etcd_node, key_prefix) == []
