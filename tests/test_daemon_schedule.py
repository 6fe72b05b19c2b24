"""Real daemons follow LOCKSMITHD_REBOOT_WINDOWS in LOCKSMITHD_TIMEZONE (a zone other than the host's)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from harness.etcd import EtcdCluster
from harness.fleet import wait_for
from tests.test_daemon_integration import holders, run, settled, start_host

ZONE = "Pacific/Kiritimati"  # UTC+14: never the test machine's zone, and a different weekday most of the day


def windows_around_now(*offsets_min: int) -> str:
    """One 30-minute window per offset, starting that many minutes from now in ZONE ("Tue 05:10 30m; ...")."""
    now = datetime.now(ZoneInfo(ZONE))
    return "; ".join((now + timedelta(minutes=offset)).strftime("%a %H:%M 30m") for offset in offsets_min)


def test_closed_windows_in_another_zone_keep_the_host_waiting(tmp_path: Path, etcd_node: EtcdCluster,
                                                              key_prefix: str) -> None:
    """Both windows open later (in Kiritimati's time): no slot, no reboot, and the log names the zone."""
    async def scenario() -> None:
        env = {"LOCKSMITHD_REBOOT_WINDOWS": windows_around_now(120, 300), "LOCKSMITHD_TIMEZONE": ZONE}
        host = await start_host(tmp_path, etcd_node, "h-sched-closed", key_prefix, needs_reboot=True, extra_env=env)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "waiting-for-window", 15,
                           "waiting for the window")
            await asyncio.sleep(2)
            assert host.logind.reboots == []
            assert holders(etcd_node, key_prefix) == []
        finally:
            await host.stop()

    run(scenario)


def test_second_window_open_in_another_zone_allows_the_reboot(tmp_path: Path, etcd_node: EtcdCluster,
                                                              key_prefix: str) -> None:
    """The first window is closed, the second opened a minute ago (Kiritimati time): one reboot."""
    async def scenario() -> None:
        env = {"LOCKSMITHD_REBOOT_WINDOWS": windows_around_now(180, -1), "LOCKSMITHD_TIMEZONE": ZONE}
        host = await start_host(tmp_path, etcd_node, "h-sched-open", key_prefix, needs_reboot=True, extra_env=env)
        try:
            await wait_for(lambda: settled(host), 30, "reboot in the second window")
            assert len(host.logind.reboots) == 1
        finally:
            await host.stop()

    run(scenario)
