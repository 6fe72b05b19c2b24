"""Real daemons respect logind block inhibitors on shutdown: they wait without holding a slot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.fleet import SimulatedHost, wait_for
from tests.test_daemon_integration import ctl, run, settled, start_host

UPGRADE = ("shutdown:sleep", "apt-get", "installing a kernel", "block", 0, 4242)


def log_of(host: SimulatedHost) -> str:
    return (host.workdir / "locksmithd.log").read_text(errors="replace")


def holders(cluster: EtcdCluster, prefix: str, group: str) -> list[str]:
    result = ctl(cluster, prefix, "--group", group, "status", "--json")
    assert result.returncode == 0, result.stderr
    found: list[str] = json.loads(result.stdout)["holders"]
    return found


def state(host: SimulatedHost) -> str:
    return host.daemon_state().get("DAEMON_STATE", "")


def test_inhibitor_present_keeps_the_host_from_queueing(tmp_path: Path, etcd_node: EtcdCluster,
                                                        key_prefix: str) -> None:
    """A block inhibitor on shutdown: no slot, no reboot, who and why logged; released, the host reboots."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-inh", key_prefix, group="inh")
        try:
            await wait_for(lambda: state(host) == "idle", 15, "idle")
            host.logind.inhibitors.append(UPGRADE)
            host.logind.inhibitors.append(("shutdown", "backup", "flushing", "delay", 0, 7))  # delay: logind's job
            host.need_reboot()
            await wait_for(lambda: state(host) == "waiting-for-inhibitor", 15, "waiting for the inhibitor")
            await asyncio.sleep(3)
            assert host.logind.reboots == [] and holders(etcd_node, key_prefix, "inh") == []
            assert "apt-get (pid 4242): installing a kernel" in log_of(host)
            assert "backup" not in log_of(host)
            host.logind.inhibitors.remove(UPGRADE)
            await wait_for(lambda: settled(host), 30, "reboot once the inhibitor is gone")
            assert len(host.logind.reboots) == 1
        finally:
            await host.stop()

    run(scenario)


def test_inhibitor_taken_while_waiting_for_a_slot(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The host is queued behind another holder when an inhibitor comes: it does not keep the slot or reboot."""
    async def scenario() -> None:
        assert ctl(etcd_node, key_prefix, "--group", "inh2", "set-max", "1").returncode == 0
        assert ctl(etcd_node, key_prefix, "--group", "inh2", "lock", "other-host").returncode == 0
        host = await start_host(tmp_path, etcd_node, "h-inh2", key_prefix, group="inh2", needs_reboot=True)
        try:
            await wait_for(lambda: state(host) == "waiting-for-lock", 15, "queued")
            host.logind.inhibitors.append(UPGRADE)
            assert ctl(etcd_node, key_prefix, "--group", "inh2", "unlock", "other-host").returncode == 0
            await wait_for(lambda: state(host) == "waiting-for-inhibitor", 15, "waiting for the inhibitor")
            await asyncio.sleep(2)
            assert host.logind.reboots == [] and holders(etcd_node, key_prefix, "inh2") == []
            host.logind.inhibitors.clear()
            await wait_for(lambda: settled(host), 30, "reboot once the inhibitor is gone")
        finally:
            await host.stop()

    run(scenario)


def test_inhibitor_taken_while_warning_users_gives_the_slot_back(tmp_path: Path, etcd_node: EtcdCluster,
                                                                  key_prefix: str) -> None:
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-inh3", key_prefix, group="inh3", login_delay="3s")
        try:
            await wait_for(lambda: state(host) == "idle", 15, "idle")
            host.logind.add_session("3", "bob", "tty2")
            host.need_reboot()
            await wait_for(lambda: state(host) == "warning-users", 15, "warning users")
            assert holders(etcd_node, key_prefix, "inh3") == ["h-inh3"]
            host.logind.inhibitors.append(UPGRADE)
            await wait_for(lambda: state(host) == "waiting-for-inhibitor", 15, "waiting for the inhibitor")
            assert holders(etcd_node, key_prefix, "inh3") == [] and host.logind.reboots == []
            host.logind.inhibitors.clear()
            await wait_for(lambda: len(host.logind.reboots) == 1, 30, "reboot once the inhibitor is gone")
        finally:
            await host.stop()

    run(scenario)


def test_ignore_inhibitors_restores_locksmiths_behaviour(tmp_path: Path, etcd_node: EtcdCluster,
                                                         key_prefix: str) -> None:
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-inh4", key_prefix, group="inh4",
                                extra_env={"LOCKSMITHD_IGNORE_INHIBITORS": "true"})
        try:
            await wait_for(lambda: state(host) == "idle", 15, "idle")
            host.logind.inhibitors.append(UPGRADE)
            host.need_reboot()
            await wait_for(lambda: settled(host), 30, "reboot despite the inhibitor")
        finally:
            await host.stop()

    run(scenario)
