"""locksmithd end to end: real etcd, real private dbus-daemons, real daemon processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from locksmithd.errors import ExitCode
from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost, wait_for

CTL = str(Path(sys.executable).with_name("locksmithctl"))


def ctl(cluster: EtcdCluster, prefix: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args],
                          capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})})


def run(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_factory())


async def start_host(tmp_path: Path, cluster: EtcdCluster, name: str, prefix: str, *,
                     needs_reboot: bool = False, **options: Any) -> SimulatedHost:
    host = SimulatedHost(name, tmp_path / name, cluster.client_urls,
                         options=HostOptions(key_prefix=prefix, **options), reboot_delay_s=0.5)
    await host.start(needs_reboot=needs_reboot)
    return host


def holders(cluster: EtcdCluster, prefix: str) -> list[str]:
    import json

    result = ctl(cluster, prefix, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["holders"]


def settled(host: SimulatedHost) -> bool:
    """The host rebooted and its new boot's daemon is idle (slot released)."""
    return len(host.logind.reboots) >= 1 and host.boots >= 2 and host.daemon_state().get("DAEMON_STATE") == "idle"


def test_reboot_needed_at_start_via_get_status(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """update_engine already says NEED_REBOOT at start: one reboot, slot released after boot."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-getstatus", key_prefix, needs_reboot=True)
        try:
            await wait_for(lambda: settled(host), 30, "reboot and release")
            await asyncio.sleep(0.5)
            assert len(host.logind.reboots) == 1
            assert holders(etcd_node, key_prefix) == []
        finally:
            await host.stop()

    run(scenario)


def test_reboot_needed_by_signal(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A StatusUpdate signal (GetStatus still idle) triggers exactly one reboot."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-signal", key_prefix)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "daemon idle")
            host.need_reboot(signal_only=True)
            await wait_for(lambda: settled(host), 30, "reboot and release")
            assert len(host.logind.reboots) == 1
        finally:
            await host.stop()

    run(scenario)


def test_locksmithctl_send_need_reboot(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """`locksmithctl send-need-reboot` on the host's bus makes the daemon reboot the host."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-ctl-signal", key_prefix)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "daemon idle")
            assert host.bus is not None
            result = await asyncio.to_thread(ctl, etcd_node, key_prefix, "send-need-reboot",
                                             env={"DBUS_SYSTEM_BUS_ADDRESS": host.bus.address})
            assert result.returncode == 0, result.stderr
            await wait_for(lambda: settled(host), 30, "reboot and release")
        finally:
            await host.stop()

    run(scenario)


def test_malformed_signals_do_not_reboot(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Malformed StatusUpdate signals are logged and ignored; the daemon keeps running."""
    from harness.services import MALFORMED_STATUS_BODIES

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-malformed", key_prefix)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "daemon idle")
            for kind in MALFORMED_STATUS_BODIES:
                host.update_engine.emit_malformed(kind)
            await asyncio.sleep(1.5)
            assert host.logind.reboots == []
            assert host.process is not None and host.process.returncode is None
            assert host.daemon_state()["DAEMON_STATE"] == "idle"
            assert "malformed" in host.log_text().lower()
        finally:
            await host.stop()

    run(scenario)


def test_refused_reboot_releases_slot_then_retries(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """logind refusing the reboot: the slot is released (fleet not blocked), then retried later."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-refused", key_prefix, retry_max="1s")
        monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix)
        monitor.start()
        try:
            host.logind.refuse_reboots = "org.freedesktop.login1.OperationInProgress"
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "daemon idle")
            host.need_reboot()
            await wait_for(lambda: "refused" in host.log_text(), 20, "a refused reboot")
            await wait_for(lambda: any(h == () for _, _, _, h in monitor.history[1:]), 10, "slot released")
            host.logind.refuse_reboots = None
            await wait_for(lambda: settled(host), 30, "reboot after refusal")
            assert len(host.logind.reboots) == 1
            assert monitor.violations == []
        finally:
            monitor.stop()
            await host.stop()

    run(scenario)


def test_slot_held_from_before_boot_is_released(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A slot this host held before boot is released at start-up."""
    assert ctl(etcd_node, key_prefix, "lock", "h-held").returncode == 0

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-held", key_prefix)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "daemon idle")
            assert holders(etcd_node, key_prefix) == []
            assert host.logind.reboots == []
        finally:
            await host.stop()

    run(scenario)


def test_release_first_even_when_reboot_needed_at_start(tmp_path: Path, etcd_node: EtcdCluster,
                                                        key_prefix: str) -> None:
    """Flatcar #408: holding a slot and needing a reboot at start still releases first, then queues."""
    assert ctl(etcd_node, key_prefix, "lock", "h-408").returncode == 0
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix)
    monitor.start()

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-408", key_prefix, needs_reboot=True)
        try:
            await wait_for(lambda: settled(host), 30, "reboot and release")
        finally:
            await host.stop()

    try:
        run(scenario)
        seen = [h for _, _, _, h in monitor.history]
        assert seen[0] == ("h-408",)
        assert () in seen[1:], "the old slot was not released before queueing again"
        assert seen[-1] == ()
    finally:
        monitor.stop()


def _window_around_now(offset_min: int, length: str) -> tuple[str, str]:
    start = datetime.now().astimezone() + timedelta(minutes=offset_min)
    return start.strftime("%a %H:%M"), length


def test_window_closed_means_no_reboot(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Outside its window the daemon waits: no slot taken, no reboot."""
    start, length = _window_around_now(120, "1h")

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-closed", key_prefix, needs_reboot=True,
                                window_start=start, window_length=length)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "waiting-for-window", 15,
                           "waiting for the window")
            await asyncio.sleep(2)
            assert host.logind.reboots == []
            assert holders(etcd_node, key_prefix) == []
            assert host.daemon_state()["STATE"] == "reboot-planned"
        finally:
            await host.stop()

    run(scenario)


def test_window_open_allows_reboot(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Inside its window (weekly syntax, opened a minute ago) the daemon reboots."""
    start, length = _window_around_now(-1, "1h")

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-open", key_prefix, needs_reboot=True,
                                window_start=start, window_length=length)
        try:
            await wait_for(lambda: settled(host), 30, "reboot in the window")
        finally:
            await host.stop()

    run(scenario)


def test_strategy_reboot_needs_no_etcd(tmp_path: Path) -> None:
    """Strategy 'reboot' reboots without touching etcd (its endpoint is dead)."""
    async def scenario() -> None:
        host = SimulatedHost("h-noetcd", tmp_path / "h", ["http://127.0.0.1:9"],
                             options=HostOptions(strategy="reboot"), reboot_delay_s=0.3)
        await host.start(needs_reboot=True)
        try:
            await wait_for(lambda: len(host.logind.reboots) == 1 and host.boots >= 2
                           and host.daemon_state().get("DAEMON_STATE") == "idle", 30, "reboot")
            assert host.daemon_state()["STRATEGY"] == "reboot"
        finally:
            await host.stop()

    run(scenario)


def test_strategy_off_exits_zero_without_rebooting(tmp_path: Path) -> None:
    """Strategy 'off' logs, exits 0 and never reboots."""
    async def scenario() -> None:
        host = SimulatedHost("h-off", tmp_path / "h", ["http://127.0.0.1:9"], options=HostOptions(strategy="off"))
        await host.start(needs_reboot=True)
        try:
            process = host.process
            assert process is not None
            assert await asyncio.wait_for(process.wait(), 15) == 0
            await asyncio.sleep(0.3)
            assert host.logind.reboots == []
            assert "off" in host.log_text()
        finally:
            await host.stop()

    run(scenario)


def test_second_coordinator_on_host_fails_clearly(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A second locksmithd with the same state file exits with 'already-running' (12)."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-dup", key_prefix)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "daemon idle")
            second = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "locksmithd.daemon.main", "--conf", str(host.conf_file)],
                env=host.environment(), capture_output=True, text=True, timeout=30)
            assert second.returncode == ExitCode.ALREADY_RUNNING
            assert "already-running" in second.stderr
        finally:
            await host.stop()

    run(scenario)


def test_sigterm_while_waiting_leaves_nothing_behind(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """SIGTERM while queued (max 0) exits 0 and leaves neither a slot nor a waiter key."""
    assert ctl(etcd_node, key_prefix, "set-max", "0").returncode == 0

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-term", key_prefix, needs_reboot=True)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "waiting-for-lock", 15, "queued")
            await wait_for(lambda: "h-term" in ctl(etcd_node, key_prefix, "status").stdout, 10, "visible in queue")
            assert await host.stop_daemon() == 0
            status = ctl(etcd_node, key_prefix, "status")
            assert "h-term" not in status.stdout
        finally:
            await host.stop()

    run(scenario)


def test_login_delay_warns_terminal(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A logged-in user's terminal gets the reboot notice before the reboot."""
    master, slave = os.openpty()
    tty = os.ttyname(slave).removeprefix("/dev/")

    async def scenario() -> None:
        host = SimulatedHost("h-wall", tmp_path / "h", etcd_node.client_urls,
                             options=HostOptions(key_prefix=key_prefix, login_delay="1s"), reboot_delay_s=0.3)
        await host.start()
        try:
            host.logind.add_session("7", "alice", tty)
            host.need_reboot()
            await wait_for(lambda: len(host.logind.reboots) == 1, 30, "reboot after notice")
            os.set_blocking(master, False)
            text = os.read(master, 4096).decode(errors="replace")
            assert "will reboot in" in text
        finally:
            await host.stop()

    try:
        run(scenario)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.slow
def test_fleet_of_five_max_two_never_exceeds_max(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Five daemons, max two: on every etcd change holders <= 2, and each host reboots exactly once."""
    assert ctl(etcd_node, key_prefix, "set-max", "2").returncode == 0
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix)
    monitor.start()

    async def scenario() -> None:
        hosts = [SimulatedHost(f"fleet-{i}", tmp_path / f"h{i}", etcd_node.client_urls,
                               options=HostOptions(key_prefix=key_prefix), reboot_delay_s=1.0) for i in range(5)]
        await asyncio.gather(*(h.start() for h in hosts))
        try:
            await wait_for(lambda: all(h.daemon_state().get("DAEMON_STATE") == "idle" for h in hosts), 20, "idle")
            for host in hosts:
                host.need_reboot()
            await wait_for(lambda: all(settled(h) for h in hosts), 90, "every host rebooted")
            await asyncio.sleep(1.0)
            assert [len(h.logind.reboots) for h in hosts] == [1] * 5
        finally:
            await asyncio.gather(*(h.stop() for h in hosts))

    try:
        run(scenario)
        assert monitor.violations == []
        assert monitor.max_holders_seen == 2
        assert monitor.history[-1][3] == ()
        assert monitor.changes >= 10  # every acquisition and release was observed
    finally:
        monitor.stop()


def test_invalid_config_exits_with_config_code(tmp_path: Path) -> None:
    """A bad setting stops start-up with one line naming source, key and value, exit 3."""
    env = {"PATH": os.environ["PATH"], "LOCKSMITHD_MACHINE_ID": "m", "REBOOT_STRATEGY": "sometimes",
           "LOCKSMITHD_STATE_FILE": str(tmp_path / "c.conf")}
    result = subprocess.run([sys.executable, "-m", "locksmithd.daemon.main", "--conf", "/dev/null"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == ExitCode.CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "REBOOT_STRATEGY" in lines[0] and "sometimes" in lines[0] and "environment" in lines[0]
    assert not (tmp_path / "c.conf").exists()


def test_daemon_runs_without_journal_or_notify_socket(tmp_path: Path) -> None:
    """With no NOTIFY_SOCKET and no journald the daemon logs plainly to stderr."""
    env = {"PATH": os.environ["PATH"], "LOCKSMITHD_MACHINE_ID": "m", "REBOOT_STRATEGY": "off",
           "LOCKSMITHD_STATE_FILE": str(tmp_path / "c.conf")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "locksmithd.daemon.main", "--conf", "/dev/null"],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "strategy is 'off'" in result.stderr
    assert time.monotonic() - started < 20


def test_sigterm_while_warning_users_releases_slot(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """SIGTERM during the login delay (slot held, reboot not yet asked) gives the slot back."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-term-holding", key_prefix, login_delay="5m")
        try:
            host.logind.add_session("3", "bob", "pts/999")
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "daemon idle")
            host.need_reboot()
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "warning-users", 15, "warning users")
            assert await asyncio.to_thread(holders, etcd_node, key_prefix) == ["h-term-holding"]
            assert await host.stop_daemon() == 0
            assert await asyncio.to_thread(holders, etcd_node, key_prefix) == []
            assert host.logind.reboots == []
        finally:
            await host.stop()

    run(scenario)
