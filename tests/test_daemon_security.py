"""The daemon over etcd TLS (client certificate, CA-only) and auth; secrets never logged; late update_engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SimulatedHost, wait_for
from locksmithd.core.update_status import NEED_REBOOT


def rebooted_and_released(host: SimulatedHost) -> bool:
    return len(host.logind.reboots) == 1 and host.boots >= 2 and host.daemon_state().get("DAEMON_STATE") == "idle"


def roll_one_host(tmp_path: Path, cluster: EtcdCluster, env: dict[str, str], prefix: str = "") -> str:
    """Run one host that needs a reboot through a full cycle with ``env``; return its log."""
    async def scenario() -> str:
        host = SimulatedHost("secure-host", tmp_path / "h", cluster.client_urls,
                             options=HostOptions(key_prefix=prefix, extra_env={**env, "LOCKSMITHD_DEBUG": "1"}),
                             reboot_delay_s=0.3)
        await host.start(needs_reboot=True)
        try:
            await wait_for(lambda: rebooted_and_released(host), 40, f"reboot cycle; log:\n{host.log_text()[-2000:]}")
            return host.log_text()
        finally:
            await host.stop()

    return asyncio.run(scenario())


def test_daemon_with_client_certificate(tmp_path: Path, etcd_tls_node: EtcdCluster) -> None:
    """etcd over https with client-certificate authentication."""
    pki = etcd_tls_node.pki
    assert pki is not None
    roll_one_host(tmp_path, etcd_tls_node, {"LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert),
                                            "LOCKSMITHD_ETCD_CERTFILE": str(pki.client_cert),
                                            "LOCKSMITHD_ETCD_KEYFILE": str(pki.client_key)})


def test_daemon_with_ca_only_tls(tmp_path: Path, etcd_tls_ca_only_node: EtcdCluster) -> None:
    """etcd over https, server-authenticated only (a CA file, no client certificate)."""
    pki = etcd_tls_ca_only_node.pki
    assert pki is not None
    roll_one_host(tmp_path, etcd_tls_ca_only_node, {"LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert)})


def test_daemon_with_password_auth_never_logs_it(tmp_path: Path, etcd_auth_node: EtcdCluster) -> None:
    """Username/password with a role limited to the key prefix; the password is absent from debug logs."""
    auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
    assert auth is not None and pki is not None
    log = roll_one_host(tmp_path, etcd_auth_node, {"LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert),
                                                   "LOCKSMITHD_ETCD_USERNAME": auth.user,
                                                   "LOCKSMITHD_ETCD_PASSWORD": auth.password},
                        prefix=auth.key_prefix)
    assert "DEBUG" in log
    assert auth.password not in log


def test_update_engine_appearing_later_is_picked_up(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """With update_engine absent at start the daemon waits; when it appears needing a reboot, it reboots."""
    async def scenario() -> None:
        host = SimulatedHost("late-ue", tmp_path / "h", etcd_node.client_urls,
                             options=HostOptions(key_prefix=key_prefix), reboot_delay_s=0.3)
        await host.start()
        try:
            assert host.services is not None
            await host.services.stop_update_engine()
            await host.stop_daemon()
            await host.spawn_daemon()
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "idle without update_engine")
            await asyncio.sleep(0.5)
            assert host.process is not None and host.process.returncode is None
            host.update_engine.set_operation(NEED_REBOOT)
            await host.services.start_update_engine()
            await wait_for(lambda: rebooted_and_released(host), 30, "reboot once update_engine appeared")
        finally:
            await host.stop()

    asyncio.run(scenario())
