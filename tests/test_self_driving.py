"""Self-driving safety end to end: health-gated release, halts, hosts that never come back, history.

Real etcd, real private dbus-daemons (with fake update_engine, logind and
systemd), real locksmithd processes whose reboots the harness performs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost, wait_for
from locksmithd.core.history import decode_event
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import halt_key, history_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints

CTL = [sys.executable, "-m", "locksmithd.ctl.main"]
FAST = {"LOCKSMITHD_HEALTH_TIMEOUT": "4s", "LOCKSMITHD_RETRY_MAX": "2s"}


def ctl(cluster: EtcdCluster, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args],
                          capture_output=True, text=True, timeout=30)


def client_for(cluster: EtcdCluster, prefix: str) -> SemaphoreClient:
    store = EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(cluster.client_urls, "test", "endpoint"),
                                   key_prefix=prefix))
    return SemaphoreClient(store, "", prefix)


def state(host: SimulatedHost) -> str:
    return host.daemon_state().get("DAEMON_STATE", "")


def settled(host: SimulatedHost) -> bool:
    return len(host.logind.reboots) >= 1 and host.boots >= 2 and state(host) == "idle"


def write_check(host: SimulatedHost, name: str, exit_code: int, output: str = "") -> Path:
    host.health_dir.mkdir(parents=True, exist_ok=True)
    path = host.health_dir / name
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {exit_code}\n")
    path.chmod(0o755)
    return path


async def fleet(tmp_path: Path, cluster: EtcdCluster, prefix: str, count: int,
                env: dict[str, str]) -> list[SimulatedHost]:
    hosts = [SimulatedHost(f"sd-{i}", tmp_path / f"h{i}", cluster.client_urls,
                           options=HostOptions(key_prefix=prefix, retry_max="2s", extra_env=dict(env)),
                           reboot_delay_s=0.5) for i in range(count)]
    try:
        await asyncio.gather(*(host.start() for host in hosts))
        await wait_for(lambda: all(state(h) == "idle" for h in hosts), 20, "every daemon idle")
    except BaseException:  # never leave daemons running behind a failed start
        await asyncio.gather(*(host.stop() for host in hosts), return_exceptions=True)
        raise
    return hosts


async def first_then_rest(hosts: list[SimulatedHost], client: SemaphoreClient) -> None:
    """hosts[0] takes the slot first; the others queue behind it."""
    hosts[0].need_reboot()
    await wait_for(lambda: len(hosts[0].logind.reboots) == 1, 20, "the first host's reboot")
    for host in hosts[1:]:
        host.need_reboot()


BROKEN: dict[str, tuple[Callable[[SimulatedHost], None], Callable[[SimulatedHost], None], dict[str, str], str]] = {
    "check command": (lambda h: write_check(h, "10-app", 1, "app is down"),
                      lambda h: write_check(h, "10-app", 0), {}, "10-app exited 1"),
    "required unit": (lambda h: h.services.systemd.set_unit("app.service", "failed"),  # type: ignore[union-attr]
                      lambda h: h.services.systemd.set_unit("app.service", "active"),  # type: ignore[union-attr]
                      {"LOCKSMITHD_HEALTH_UNITS": "app.service"}, "app.service"),
    "degraded system": (lambda h: setattr(h.services.systemd, "system_state", "degraded"),
                        lambda h: setattr(h.services.systemd, "system_state", "running"), {}, "degraded"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_host_failing_its_health_checks_halts_the_rollout(tmp_path: Path, etcd_node: EtcdCluster,
                                                           key_prefix: str, kind: str) -> None:
    """The broken host keeps its slot and halts the group; nobody else reboots until resume; then all finish."""
    breaks, mends, env, reason = BROKEN[kind]
    client = client_for(etcd_node, key_prefix)
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=1)
    monitor.start()

    async def scenario() -> None:
        hosts = await fleet(tmp_path, etcd_node, key_prefix, 3, {**FAST, **env})
        try:
            for host in hosts:
                mends(host)  # every host healthy (e.g. the required unit active) ...
            breaks(hosts[0])  # ... but the first
            await first_then_rest(hosts, client)
            await wait_for(lambda: client.read().halt is not None, 30, f"the halt; log:\n{hosts[0].log_text()[-3000:]}")
            halt = client.read().halt
            assert halt is not None and halt.by == "sd-0" and reason in halt.reason, halt
            assert client.read().semaphore.holders == ("sd-0",)
            await asyncio.sleep(4)  # others had every chance to reboot
            assert [len(h.logind.reboots) for h in hosts[1:]] == [0, 0]
            assert state(hosts[0]) == "unhealthy"
            status = ctl(etcd_node, key_prefix, "status")
            assert status.returncode == 0 and "halted" in status.stdout.lower(), status.stdout + status.stderr
            mends(hosts[0])
            result = ctl(etcd_node, key_prefix, "resume")
            assert result.returncode == 0, result.stderr
            await wait_for(lambda: all(settled(h) for h in hosts), 90, "the rollout to complete after resume")
            assert [len(h.logind.reboots) for h in hosts] == [1, 1, 1]
        finally:
            await asyncio.gather(*(h.stop() for h in hosts))

    try:
        asyncio.run(scenario())
        assert monitor.violations == [] and monitor.max_holders_seen == 1
    finally:
        monitor.stop()
        client.store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("policy", ["halt", "reclaim"])
def test_a_host_that_never_comes_back(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str, policy: str) -> None:
    """Past its deadline with no live daemon: the waiting head halts the group, or reclaims the slot."""
    client = client_for(etcd_node, key_prefix)
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=1)
    monitor.start()
    env = {**FAST, "LOCKSMITHD_REBOOT_DEADLINE": "5s", "LOCKSMITHD_STALE_POLICY": policy}  # past the 4s health timeout

    async def scenario() -> None:
        hosts = await fleet(tmp_path, etcd_node, key_prefix, 3, env)
        try:
            hosts[0].auto_restart = False  # its reboot never finishes
            await first_then_rest(hosts, client)
            if policy == "halt":
                await wait_for(lambda: client.read().halt is not None, 30, "the halt")
                halt = client.read().halt
                assert halt is not None and "sd-0" in halt.reason and "did not come back" in halt.reason
                await asyncio.sleep(3)
                assert [len(h.logind.reboots) for h in hosts[1:]] == [0, 0]
                assert client.read().semaphore.holders == ("sd-0",)
            else:
                await wait_for(lambda: all(settled(h) for h in hosts[1:]), 60, "the others after the reclaim")
                assert "sd-0" not in client.read().semaphore.holders
                kinds = [decode_event(e.value).event for e in client.store.read_prefix(  # type: ignore[attr-defined]
                    history_prefix("", key_prefix))]
                assert "reclaim" in kinds
        finally:
            await asyncio.gather(*(h.stop() for h in hosts))

    try:
        asyncio.run(scenario())
        assert monitor.violations == [] and monitor.max_holders_seen == 1
    finally:
        monitor.stop()
        client.store.close()  # type: ignore[attr-defined]


def test_sigkill_during_health_checks_resumes_them(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A daemon killed while checking picks up from etcd's record: same boot time, then releases."""
    client = client_for(etcd_node, key_prefix)

    async def scenario() -> None:
        hosts = await fleet(tmp_path, etcd_node, key_prefix, 1, {"LOCKSMITHD_HEALTH_SOAK": "6s",
                                                                  "LOCKSMITHD_HEALTH_TIMEOUT": "1m"})
        host = hosts[0]
        try:
            host.need_reboot()
            def booted_recorded() -> bool:
                record = client.read().semaphore.record("sd-0")
                return state(host) == "checking-health" and record is not None and record.booted_at is not None

            await wait_for(booted_recorded, 30, "checking-health with the boot recorded in etcd")
            record = client.read().semaphore.record("sd-0")
            assert record is not None and record.booted_at is not None and record.phase == "checking-health"
            booted_at = record.booted_at
            await host.stop_daemon(signal.SIGKILL)
            await host.spawn_daemon()  # same boot: the daemon restarts, the host does not
            await wait_for(lambda: state(host) == "checking-health", 20, "checking again after the restart")
            assert client.read().semaphore.record("sd-0").booted_at == booted_at  # type: ignore[union-attr]
            await wait_for(lambda: state(host) == "idle", 30, "the release after the soak")
            assert client.read().semaphore.holders == ()
        finally:
            await host.stop()

    try:
        asyncio.run(scenario())
        events = [decode_event(e.value) for e in sorted(
            client.store.read_prefix(history_prefix("", key_prefix)),  # type: ignore[attr-defined]
            key=lambda e: e.mod_revision)]
        assert [e.event for e in events] == ["slot-taken", "reboot-requested", "booted", "health-passed", "released"]
    finally:
        client.store.close()  # type: ignore[attr-defined]


def test_a_corrupt_halt_record_stops_acquisitions_and_is_left_alone(tmp_path: Path, etcd_node: EtcdCluster,
                                                                      key_prefix: str) -> None:
    """Garbage at the halt key: no host takes a slot, the bytes stay; resume removes it and the host goes."""
    client = client_for(etcd_node, key_prefix)
    key = halt_key("", key_prefix)
    garbage = b'{"reason": 7}'
    client.store.put(key, garbage)  # type: ignore[attr-defined]

    async def scenario() -> None:
        hosts = await fleet(tmp_path, etcd_node, key_prefix, 1, FAST)
        host = hosts[0]
        try:
            host.need_reboot()
            await wait_for(lambda: "halt record" in host.log_text(), 20, "the error about the halt record")
            await asyncio.sleep(2)
            assert host.logind.reboots == [] and client.store.read(key).value == garbage  # type: ignore[union-attr]
            assert host.log_text().count("halt record") == 1, host.log_text()
            status = ctl(etcd_node, key_prefix, "status")
            assert status.returncode == 8 and "halt record" in status.stderr and "\n" not in status.stderr.strip()
            assert ctl(etcd_node, key_prefix, "resume").returncode == 0
            await wait_for(lambda: settled(host), 30, "the reboot after the repair")
        finally:
            await host.stop()

    try:
        asyncio.run(scenario())
    finally:
        client.store.close()  # type: ignore[attr-defined]


def test_history_records_a_rollout_in_order(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """locksmithctl history shows each host's events in order, newest last, also as JSON."""
    async def scenario() -> None:
        hosts = await fleet(tmp_path, etcd_node, key_prefix, 2, FAST)
        try:
            for host in hosts:
                host.need_reboot()
            await wait_for(lambda: all(settled(h) for h in hosts), 60, "the rollout")
        finally:
            await asyncio.gather(*(h.stop() for h in hosts))

    asyncio.run(scenario())
    result = ctl(etcd_node, key_prefix, "history", "--json")
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)
    for name in ("sd-0", "sd-1"):
        mine = [e["event"] for e in events if e["host"] == name]
        assert mine == ["slot-taken", "reboot-requested", "booted", "health-passed", "released"], events
    times = [e["at"] for e in events]
    assert times == sorted(times)
    text = ctl(etcd_node, key_prefix, "history", "--limit", "3")
    assert text.returncode == 0 and len(text.stdout.strip().splitlines()) == 3 + 1  # a header and three events
    assert "released" in text.stdout.splitlines()[-1]
