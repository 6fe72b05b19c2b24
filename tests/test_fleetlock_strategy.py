"""Strategy fleet-lock: real locksmithd daemons take and give back slots through a real FleetLock server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost, wait_for
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.lock import SemaphoreClient
from tests.fleetlock_support import Client, base_url, etcd_settings, running_server
from tests.test_daemon_config_errors import assert_refused, run_daemon


def fleet_lock_host(name: str, tmp_path: Path, url: str, group: str = "default") -> SimulatedHost:
    # The daemon's etcd endpoint points nowhere: with fleet-lock it must never need etcd.
    options = HostOptions(strategy="fleet-lock", retry_max="1s",
                          extra_env={"LOCKSMITHD_FLEETLOCK_URL": url, "LOCKSMITHD_FLEETLOCK_GROUP": group})
    return SimulatedHost(name, tmp_path / name, ["http://127.0.0.1:9"], options=options, reboot_delay_s=1.0)


def _settled(host: SimulatedHost) -> bool:
    return len(host.logind.reboots) >= 1 and host.boots >= 2 and host.daemon_state().get("DAEMON_STATE") == "idle"


@pytest.mark.slow
def test_fleet_lock_daemons_roll_through_under_max(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Four daemons with REBOOT_STRATEGY=fleet-lock, max 2 in the server's etcd: never more than 2 holders,
    each host reboots exactly once and gives its slot back after boot."""
    store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
    SemaphoreClient(store, "", key_prefix).set_max(2)
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=2)
    monitor.start()

    async def scenario() -> None:
        async with running_server(etcd_node.client_urls, key_prefix) as server:
            hosts = [fleet_lock_host(f"fl-daemon-{i}", tmp_path, base_url(server)) for i in range(4)]
            await asyncio.gather(*(h.start() for h in hosts))
            try:
                await wait_for(lambda: all(h.daemon_state().get("DAEMON_STATE") == "idle" for h in hosts), 30,
                               "idle")
                for host in hosts:
                    host.need_reboot()
                await wait_for(lambda: all(_settled(h) for h in hosts), 120, "every host rebooted")
                await asyncio.sleep(1.0)
                assert [len(h.logind.reboots) for h in hosts] == [1] * 4
            finally:
                await asyncio.gather(*(h.stop() for h in hosts))

    try:
        asyncio.run(scenario())
        assert monitor.violations == []
        assert monitor.max_holders_seen == 2
        assert monitor.history[-1][3] == ()
        seen = {holder for observation in monitor.history for holder in observation[3]}
        assert seen == {f"fl-daemon-{i}" for i in range(4)}
    finally:
        monitor.stop()
        store.close()


def test_fleet_lock_daemon_waits_for_a_zincati_holder(tmp_path: Path, etcd_node: EtcdCluster,
                                                     key_prefix: str) -> None:
    """A fleet-lock daemon in group "workers" polls while a Zincati client holds the only slot, then reboots."""
    async def scenario() -> None:
        store = EtcdStore(etcd_settings(etcd_node.client_urls, key_prefix))
        try:
            async with running_server(etcd_node.client_urls, key_prefix) as server, \
                    aiohttp.ClientSession() as session:
                zincati = Client(session, base_url(server))
                assert (await zincati.pre_reboot("zincati-1", "workers"))[0] == 200
                host = fleet_lock_host("fl-waiting", tmp_path, base_url(server), group="workers")
                await host.start(needs_reboot=True)
                try:
                    await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "waiting-for-lock", 30,
                                   "the daemon waits")
                    await asyncio.sleep(2.0)
                    assert host.logind.reboots == []
                    waiting = store.read_prefix(f"{key_prefix}coreos.com/updateengine/rebootlock/groups/workers/"
                                                "waiters/")
                    assert [json.loads(w.value)["via"] for w in waiting] == ["fleetlock"]
                    assert (await zincati.steady_state("zincati-1", "workers"))[0] == 200
                    await wait_for(lambda: _settled(host), 60, "the daemon's reboot and release")
                    assert SemaphoreClient(store, "workers", key_prefix).read().semaphore.holders == ()
                    assert f"strategy=fleet-lock fleetlock_url={base_url(server)} fleetlock_group='workers'" \
                        in host.log_text()
                finally:
                    await host.stop()
        finally:
            store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("env", "needles"), [
    ({"REBOOT_STRATEGY": "fleet-lock"}, ("REBOOT_STRATEGY", "LOCKSMITHD_FLEETLOCK_URL")),
    ({"REBOOT_STRATEGY": "fleet-lock", "LOCKSMITHD_FLEETLOCK_URL": "ftp://x"}, ("LOCKSMITHD_FLEETLOCK_URL",)),
    ({"REBOOT_STRATEGY": "fleet-lock", "LOCKSMITHD_FLEETLOCK_URL": "http://h:99999"}, ("LOCKSMITHD_FLEETLOCK_URL",)),
    ({"REBOOT_STRATEGY": "fleet-lock", "LOCKSMITHD_FLEETLOCK_URL": "http://h",
      "LOCKSMITHD_FLEETLOCK_GROUP": "a_b"}, ("LOCKSMITHD_FLEETLOCK_GROUP",)),
])
def test_bad_fleet_lock_settings_are_refused(tmp_path: Path, env: dict[str, str], needles: tuple[str, ...]) -> None:
    """A missing or bad URL or group: exit 3 and one line naming the key."""
    result = run_daemon(tmp_path, env={**env})
    assert_refused(result, *needles)


@pytest.mark.parametrize("url", ["https://ops:hunter2@fl.example:8080", "https://ops:hun/ter2@fl.example:80x",
                                 "ftp://ops:hunter2@fl.example", "https://ops:hunter2@fl.example/\x1b"])
def test_a_password_in_the_fleet_lock_url_is_masked(tmp_path: Path, url: str) -> None:
    """Credentials in LOCKSMITHD_FLEETLOCK_URL are refused, as LOCKSMITHD_ENDPOINT's are, and the one line
    shows the URL with its password replaced."""
    result = run_daemon(tmp_path, env={"REBOOT_STRATEGY": "fleet-lock", "LOCKSMITHD_FLEETLOCK_URL": url})
    line = assert_refused(result, "LOCKSMITHD_FLEETLOCK_URL", "ops:***@")
    assert "hunter2" not in line and "ter2" not in line


def test_a_password_in_a_bad_conf_file_line_is_masked(tmp_path: Path) -> None:
    """A conf file line that does not parse is shown with the URL's password masked."""
    conf = tmp_path / "l.conf"
    conf.write_text('LOCKSMITHD_FLEETLOCK_URL="https://ops:hunter2@fl.example\n')
    line = assert_refused(run_daemon(tmp_path, conf=str(conf)), "LOCKSMITHD_FLEETLOCK_URL", "ops:***@")
    assert "hunter2" not in line
