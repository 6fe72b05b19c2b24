"""Metrics work with every strategy: real daemons scraped over real HTTP with etcd-lock, fleet-lock and reboot;
strategy off exits and serves nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SimulatedHost, wait_for
from harness.ports import free_port
from tests.fleetlock_support import base_url, running_server
from tests.test_daemon_config_errors import run_daemon
from tests.test_metrics import Samples, scrape, value


def _idle(host: SimulatedHost) -> bool:
    return host.daemon_state().get("DAEMON_STATE") == "idle"


def _rebooted(host: SimulatedHost) -> bool:
    return len(host.logind.reboots) >= 1 and host.boots >= 2 and _idle(host)


def _common(samples: Samples, state: str) -> None:
    """What every daemon exports whatever its strategy."""
    assert value(samples, "locksmithd_state", state=state) == 1
    assert value(samples, "locksmithd_holding") == 0
    assert value(samples, "locksmithd_handoffs_observed_total") == 0
    assert value(samples, "locksmithd_slot_wait_seconds") == 0


async def _through_a_reboot(host: SimulatedHost, address: str) -> tuple[Samples, Samples]:
    """Scrapes of ``host`` idle before and after one coordinated reboot."""
    await host.start()
    try:
        await wait_for(lambda: _idle(host), 30, "idle")
        before = await asyncio.to_thread(scrape, address)
        host.need_reboot()
        await wait_for(lambda: _rebooted(host), 60, "the reboot")
        after = await asyncio.to_thread(scrape, address)
        return before, after
    finally:
        await host.stop()
        assert "Traceback" not in host.log_text(), host.log_text()


def test_metrics_with_fleet_lock(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """REBOOT_STRATEGY=fleet-lock: every scrape answers (no group figures, no etcd of its own) before and
    after a reboot through a real FleetLock server; the reboot is counted once its slot was given back."""
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> tuple[Samples, Samples]:
        async with running_server(etcd_node.client_urls, key_prefix) as server:
            options = HostOptions(strategy="fleet-lock", retry_max="1s",
                                  extra_env={"LOCKSMITHD_FLEETLOCK_URL": base_url(server),
                                             "LOCKSMITHD_METRICS_ADDRESS": address})
            host = SimulatedHost("metrics-fl", tmp_path / "fl", ["http://127.0.0.1:9"], options=options)
            return await _through_a_reboot(host, address)

    before, after = asyncio.run(scenario())
    for samples in (before, after):
        _common(samples, "idle")
        assert value(samples, "locksmithd_etcd_up") is None  # the daemon reads no etcd with fleet-lock
        assert value(samples, "locksmithd_group_max", group="") is None
    assert value(after, "locksmithd_reboots_total") == 1  # the new boot's daemon gave the slot back


def test_metrics_with_reboot(tmp_path: Path) -> None:
    """REBOOT_STRATEGY=reboot: scrapes answer before and after the (lock-free) reboot; no etcd figures."""
    address = f"127.0.0.1:{free_port()}"
    options = HostOptions(strategy="reboot", extra_env={"LOCKSMITHD_METRICS_ADDRESS": address})
    host = SimulatedHost("metrics-rb", tmp_path / "rb", ["http://127.0.0.1:9"], options=options)
    before, after = asyncio.run(_through_a_reboot(host, address))
    for samples in (before, after):
        _common(samples, "idle")
        assert value(samples, "locksmithd_etcd_up") is None
    assert value(before, "locksmithd_reboot_needed", source="update-engine") is None


def test_metrics_with_etcd_lock(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """REBOOT_STRATEGY=etcd-lock: etcd answers and its requests are timed, before and after a reboot."""
    address = f"127.0.0.1:{free_port()}"
    options = HostOptions(key_prefix=key_prefix, extra_env={"LOCKSMITHD_METRICS_ADDRESS": address})
    host = SimulatedHost("metrics-el", tmp_path / "el", etcd_node.client_urls, options=options)
    before, after = asyncio.run(_through_a_reboot(host, address))
    for samples in (before, after):
        _common(samples, "idle")
        assert value(samples, "locksmithd_etcd_up") == 1
        timed = sum(v for (name, _), v in samples.items() if name == "locksmithd_etcd_request_duration_seconds_count")
        assert timed >= 1
    assert value(after, "locksmithd_reboots_total") == 1


def test_strategy_off_exits_and_serves_nothing(tmp_path: Path) -> None:
    """REBOOT_STRATEGY=off with a metrics address: exit 0 at once, and nothing listens there."""
    port = free_port()
    result = run_daemon(tmp_path, env={"REBOOT_STRATEGY": "off", "LOCKSMITHD_METRICS_ADDRESS": f"127.0.0.1:{port}"})
    assert result.returncode == 0, result.stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
