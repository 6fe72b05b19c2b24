"""Real daemons follow systemd's signals after boot: a host releases within about a second of becoming healthy,
whatever LOCKSMITHD_HEALTH_RECHECK_INTERVAL (30 s here, so only a signal can explain a prompt release)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.fleet import SimulatedHost, wait_for
from harness.systemd_service import FakeSystemd
from tests.test_daemon_integration import ctl, holders, run, start_host

SLOW_POLL = {"LOCKSMITHD_HEALTH_RECHECK_INTERVAL": "30s"}
PROMPT_S = 1.5
"""Upper bound from the change to the release: the settle (0.2 s), one round, one etcd write, the state file;
the rest is slack for a loaded machine. The old fixed 10 s poll (and the 30 s interval) cannot meet it."""


def fake_systemd(host: SimulatedHost) -> FakeSystemd:
    assert host.services is not None and host.services.systemd is not None
    return host.services.systemd


def new_boot_log(host: SimulatedHost) -> str:
    return host.log_text().rpartition(f"--- start (boot {host.boots})")[2]


async def released_within(host: SimulatedHost, change: str) -> float:
    """Make systemd ``change`` (its new SystemState) and return how long until the host is idle again."""
    changed = time.monotonic()
    fake_systemd(host).system_state = change
    await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15,
                   f"the release; log:\n{new_boot_log(host)[-3000:]}")
    return time.monotonic() - changed


def test_release_follows_the_end_of_the_boot(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """systemd says starting after the reboot; the moment it turns running (StartupFinished) the host releases."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-boot-signal", key_prefix, extra_env=SLOW_POLL)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "idle")
            fake_systemd(host).system_state = "starting"  # what the new boot will report at first
            host.need_reboot()
            await wait_for(lambda: host.boots >= 2 and "(now starting)" in new_boot_log(host), 30,
                           "a round after the reboot that saw systemd starting")
            await asyncio.sleep(0.3)  # into the pause after that round
            assert holders(etcd_node, key_prefix) == [host.name]
            elapsed_s = await released_within(host, "running")
            assert elapsed_s < PROMPT_S, (elapsed_s, new_boot_log(host))
            assert holders(etcd_node, key_prefix) == [] and len(host.logind.reboots) == 1
            assert fake_systemd(host).emitted == ["StartupFinished"]
        finally:
            await host.stop()

    run(scenario)


def test_a_halted_host_notices_reset_failed(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Degraded after the reboot: the host halts its group. `systemctl reset-failed` (the failed unit's
    PropertiesChanged, degraded -> running) and it releases at once; the group stays halted."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-reset-failed", key_prefix,
                                extra_env={**SLOW_POLL, "LOCKSMITHD_HEALTH_TIMEOUT": "2s"})
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "idle")
            fake_systemd(host).system_state = "degraded"
            host.need_reboot()
            await wait_for(lambda: host.boots >= 2 and host.daemon_state().get("DAEMON_STATE") == "unhealthy", 30,
                           "the health checks to fail and halt")
            await asyncio.sleep(0.5)  # into the unhealthy state's wait
            elapsed_s = await released_within(host, "running")
            assert elapsed_s < PROMPT_S, (elapsed_s, new_boot_log(host))
            status = json.loads(ctl(etcd_node, key_prefix, "status", "--json").stdout)
            assert status["holders"] == [] and status["halt"] is not None
            assert fake_systemd(host).emitted[-1] == "PropertiesChanged"
        finally:
            await host.stop()

    run(scenario)
