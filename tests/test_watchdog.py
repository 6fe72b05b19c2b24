"""sd_notify from real daemons to a real NOTIFY_SOCKET: READY, STATUS with the queue position,
WATCHDOG pings from the event loop (and their end when the loop is blocked), STOPPING."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from locksmithd.core.states import State
from locksmithd.daemon.supervise import Supervisor, status_text, watchdog_interval_s
from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SimulatedHost, wait_for

CTL = str(Path(sys.executable).with_name("locksmithctl"))


class NotifySocket:
    """An AF_UNIX datagram socket as systemd's NOTIFY_SOCKET, recording (time, fields) per message."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def values(self, key: str, since: float = 0.0) -> list[str]:
        return [fields[key] for at, fields in list(self.messages) if key in fields and at >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def ctl(cluster: EtcdCluster, prefix: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    result = subprocess.run([CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr


def test_watchdog_interval_follows_systemd() -> None:
    assert watchdog_interval_s(None, None, 10) is None
    assert watchdog_interval_s(30_000_000, None, 10) == 15.0
    assert watchdog_interval_s(30_000_000, "10", 10) == 15.0
    assert watchdog_interval_s(30_000_000, "11", 10) is None  # meant for another process


def test_status_text_shows_the_queue_position() -> None:
    assert status_text(State.WAITING_FOR_LOCK, "waiting-for-lock", (3, 12)) == "waiting for a slot: position 3 of 12"
    # The O(1) queue knows a waiter's place but not the queue's length (0: unknown).
    assert status_text(State.WAITING_FOR_LOCK, "waiting-for-lock", (3, 0)) == "waiting for a slot: position 3 at most"
    assert status_text(State.WAITING_FOR_LOCK, "waiting-for-lock", (2, 0)) == "waiting for a slot: position 2"
    assert status_text(State.WAITING_FOR_LOCK, "waiting-for-lock", None) == "waiting for a slot"
    assert status_text(State.CHECKING_HEALTH, "checking-health: 2 units", None) == "checking-health: 2 units"


def test_supervisor_pings_from_its_loop_and_stops_when_the_loop_is_blocked(tmp_path: Path) -> None:
    """In process: a loop blocked by a synchronous call sends no ping until it is free again."""
    sent: list[tuple[float, dict[str, str]]] = []

    class Recorder:
        def send(self, **fields: str) -> None:
            sent.append((time.monotonic(), fields))

    async def scenario() -> tuple[float, float]:
        supervisor = Supervisor(Recorder(), watchdog_s=0.05, state=lambda: State.IDLE)
        task = asyncio.create_task(supervisor.run())
        await asyncio.sleep(0.3)
        blocked_at = time.monotonic()
        time.sleep(0.5)  # the loop is wedged
        freed_at = time.monotonic()
        await asyncio.sleep(0.2)
        task.cancel()
        return blocked_at, freed_at

    blocked_at, freed_at = asyncio.run(scenario())
    pings = [at for at, fields in sent if fields.get("WATCHDOG") == "1"]
    assert len([at for at in pings if at < blocked_at]) >= 4
    assert [at for at in pings if blocked_at < at < freed_at] == []
    assert len([at for at in pings if at >= freed_at]) >= 2


def test_real_daemon_notifies_systemd(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """READY, STATUS with the queue position, WATCHDOG pings, no pings once the loop blocks; STOPPING on SIGTERM."""
    ctl(etcd_node, key_prefix, "set-max", "1")
    ctl(etcd_node, key_prefix, "lock", "somebody-else")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000", "LOCKSMITHD_TEST_BLOCK_LOOP": "1"}
    host = SimulatedHost("wd-host", tmp_path / "h", etcd_node.client_urls, reboot_delay_s=0.5,
                         options=HostOptions(key_prefix=key_prefix, extra_env=env))

    async def scenario() -> None:
        await host.start()
        try:
            await wait_for(lambda: "1" in notify.values("READY"), 30, "READY=1")
            host.need_reboot()
            await wait_for(lambda: "waiting for a slot: position 1" in notify.values("STATUS"), 30,
                           "STATUS with the queue position")
            await wait_for(lambda: len(notify.values("WATCHDOG")) >= 10, 10, "watchdog pings")
            assert host.process is not None
            host.process.send_signal(signal.SIGUSR2)
            await asyncio.sleep(1.0)  # a ping already on its way may still arrive
            quiet_from = time.monotonic()
            await asyncio.sleep(2.0)
            assert notify.values("WATCHDOG", since=quiet_from) == [], "pings went on from a blocked loop"
            assert host.process.returncode is None  # alive but wedged: what the watchdog is for
            host.process.kill()
            await host.process.wait()
            await host.spawn_daemon()  # as systemd would, after WatchdogSec=
            restarted = time.monotonic()
            await wait_for(lambda: len(notify.values("WATCHDOG", since=restarted)) >= 3, 30, "pings again")
            await wait_for(lambda: "waiting for a slot: position 1" in notify.values("STATUS", since=restarted),
                           30, "waiting again")
            assert await host.stop_daemon() == 0
            assert "1" in notify.values("STOPPING", since=restarted)
        finally:
            await host.stop()

    try:
        asyncio.run(scenario())
    finally:
        notify.close()
