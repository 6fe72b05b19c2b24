"""A real daemon facing corrupt semaphore documents and malformed D-Bus signals.

It must not reboot, must not overwrite the document (the bytes stay as the
operator left them), must log one clear error and keep running; once the
operator resets the document it proceeds and reboots once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from locksmithd.errors import ExitCode
from locksmithd.etcd.keys import semaphore_key
from harness.etcd import EtcdCluster
from harness.faults import make_store
from harness.fleet import HostOptions, SimulatedHost, wait_for
from harness.services import MALFORMED_STATUS_BODIES

CTL = str(Path(sys.executable).with_name("locksmithctl"))

# document -> the words the daemon's error and `locksmithctl status` must use to name the fault
CORRUPT_DOCUMENTS: dict[str, tuple[bytes, str]] = {
    "invalid JSON": (b'{"semaphore":1,', "not valid JSON"),
    "wrong types": (b'{"semaphore":"1","max":1,"holders":[]}', "'semaphore' is '1', not a whole number"),
    "negative max": (b'{"semaphore":-1,"max":-1,"holders":[]}', "max is -1, must be >= 0"),
    "duplicate holders": (b'{"semaphore":0,"max":2,"holders":["a","a"]}', "'a' appears more than once"),
    "count mismatch": (b'{"semaphore":1,"max":1,"holders":["a"]}', "semaphore is 1 but max - len(holders)"),
    "non-UTF-8": (b'{"semaphore":1,"max":1,"holders":["\xff\xfe"]}', "not UTF-8"),
    "time without a UTC value": (b'{"semaphore":0,"max":1,"holders":["a"],'
                                 b'"holder_info":{"a":{"deadline":"9999-12-31T23:59:59-23:59"}}}',
                                 "'deadline' is not a timestamp: timestamp '9999-12-31T23:59:59-23:59' is out of range"),
    "huge": (b'{"semaphore":1,"max":1,"holders":[],"pad":"' + b"x" * (1024 * 1024 + 10) + b'"}',
             "over the 1048576-byte limit"),
}
WATCH_S = 4.0


def fast_options(prefix: str) -> HostOptions:
    """Quick rechecks and retries, so several of them pass while we watch the log."""
    return HostOptions(key_prefix=prefix, recheck_interval="1s", retry_max="1s", etcd_timeout="2s")


def ctl(cluster: EtcdCluster, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    return subprocess.run([CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args],
                          capture_output=True, text=True, timeout=60, env=env)


def put_raw(cluster: EtcdCluster, key: str, value: bytes) -> None:
    store = make_store(cluster.client_urls, timeout_s=5.0)
    try:
        store.put(key, value)
    finally:
        store.close()


def get_raw(cluster: EtcdCluster, key: str) -> bytes | None:
    store = make_store(cluster.client_urls, timeout_s=5.0)
    try:
        stored = store.read(key)
        return None if stored is None else stored.value
    finally:
        store.close()


def error_lines(host: SimulatedHost) -> list[str]:
    return [line for line in host.log_text().splitlines() if ": ERROR " in line]


async def started_host(tmp_path: Path, cluster: EtcdCluster, prefix: str) -> SimulatedHost:
    host = SimulatedHost("bad-doc-host", tmp_path / "host", cluster.client_urls,
                         options=fast_options(prefix), reboot_delay_s=0.3)
    await host.start()
    return host


async def expect_repair_then_one_reboot(host: SimulatedHost, cluster: EtcdCluster, prefix: str) -> None:
    repaired = ctl(cluster, prefix, "reset", "--max", "1", "--yes")
    assert repaired.returncode == 0, repaired.stderr
    await wait_for(lambda: len(host.logind.reboots) == 1 and host.boots == 2
                   and host.daemon_state().get("DAEMON_STATE") == "idle", 30, "the reboot after the repair")
    await asyncio.sleep(0.5)
    assert len(host.logind.reboots) == 1


@pytest.mark.parametrize("name", sorted(CORRUPT_DOCUMENTS))
def test_waiting_daemon_leaves_corrupt_document_alone_until_reset(
        tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str, name: str) -> None:
    """A running daemon that needs a reboot meets a corrupt document: no reboot, no write, one error."""
    raw, fault = CORRUPT_DOCUMENTS[name]
    key = semaphore_key("", key_prefix)

    async def scenario() -> None:
        host = await started_host(tmp_path, etcd_node, key_prefix)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 20, "idle")
            put_raw(etcd_node, key, raw)
            host.need_reboot()
            await wait_for(lambda: bool(error_lines(host)), 20, "the corrupt-document error")
            await asyncio.sleep(WATCH_S)  # several rechecks and retries go by
            assert host.logind.reboots == []
            assert get_raw(etcd_node, key) == raw
            assert host.process is not None and host.process.returncode is None
            assert host.daemon_state().get("DAEMON_STATE") == "waiting-for-lock"
            errors = error_lines(host)
            assert len(errors) == 1 and "corrupt" in errors[0] and fault in errors[0], errors

            status = ctl(etcd_node, key_prefix, "status")
            assert status.returncode == ExitCode.CORRUPT_DOCUMENT, status.stderr
            assert fault in status.stderr and "reset" in status.stderr
            await expect_repair_then_one_reboot(host, etcd_node, key_prefix)
        finally:
            await host.stop()

    asyncio.run(scenario())


def test_daemon_started_on_corrupt_document_waits_for_the_operator(
        tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Corrupt before the daemon starts (needing a reboot): it stays put, says so once, and recovers."""
    raw, fault = CORRUPT_DOCUMENTS["invalid JSON"]
    key = semaphore_key("", key_prefix)
    put_raw(etcd_node, key, raw)

    async def scenario() -> None:
        host = SimulatedHost("bad-doc-host", tmp_path / "host", etcd_node.client_urls,
                             options=fast_options(key_prefix), reboot_delay_s=0.3)
        await host.start(needs_reboot=True)
        try:
            await wait_for(lambda: bool(error_lines(host)), 20, "the corrupt-document error")
            await asyncio.sleep(WATCH_S)
            assert host.logind.reboots == [] and get_raw(etcd_node, key) == raw
            assert host.process is not None and host.process.returncode is None
            errors = error_lines(host)
            assert len(errors) == 1 and fault in errors[0], errors
            await expect_repair_then_one_reboot(host, etcd_node, key_prefix)
        finally:
            await host.stop()

    asyncio.run(scenario())


def test_malformed_status_signals_neither_crash_nor_reboot(
        tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Every malformed StatusUpdate kind (most carry NEED_REBOOT) is logged and ignored; a good one still works."""
    assert ctl(etcd_node, key_prefix, "set-max", "1").returncode == 0

    async def scenario() -> None:
        host = await started_host(tmp_path, etcd_node, key_prefix)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 20, "idle")
            await asyncio.sleep(0.3)  # the watcher subscribes alongside the first state
            for kind in sorted(MALFORMED_STATUS_BODIES):
                host.update_engine.emit_malformed(kind)
            await wait_for(lambda: host.log_text().count("ignoring malformed") == len(MALFORMED_STATUS_BODIES),
                           10, "one warning per malformed signal")
            await asyncio.sleep(1.0)
            assert host.logind.reboots == []
            assert host.process is not None and host.process.returncode is None
            assert host.daemon_state().get("DAEMON_STATE") == "idle"
            assert "Traceback" not in host.log_text()
            host.need_reboot()
            await wait_for(lambda: len(host.logind.reboots) == 1 and host.boots == 2, 30, "the real reboot")
        finally:
            await host.stop()

    asyncio.run(scenario())
