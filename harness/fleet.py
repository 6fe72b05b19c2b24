"""Simulated hosts for tests, the demo and benchmarks: real locksmithd processes, fake host services.

Each host has its own private dbus-daemon, fake update_engine and logind
published on it, its own machine id, boot id file, state file and config
file. A "reboot" accepted by the fake logind stops that host's locksmithd
(SIGTERM, as systemd does at shutdown), marks the update as applied, writes a
new boot id and starts locksmithd again after ``reboot_delay_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.keys import semaphore_key
from locksmithd.core.update_status import NEED_REBOOT, UpdateStatus
from harness.bus import PrivateBus
from harness.checker import Observation, SafetyChecker
from harness.services import SimulatedServices

if TYPE_CHECKING:  # etcd3 (grpc) is loaded only when a monitor is made
    from locksmithd.etcd.client import WatchEvent

log = logging.getLogger("harness.fleet")
IDLE = "UPDATE_STATUS_IDLE"


class Watch(Protocol):
    """A running etcd watch, as EtcdStore.watch_range returns it."""

    def cancel(self) -> None: ...


@dataclass
class HostEvent:
    """Something that happened to a host, with a monotonic timestamp."""

    at: float
    host: str
    what: str


@dataclass
class HostOptions:
    """Per-host daemon settings given through its environment and config file."""

    strategy: str = "etcd-lock"
    group: str = ""
    key_prefix: str = ""
    window_start: str | None = None
    window_length: str | None = None
    login_delay: str = "0s"
    recheck_interval: str = "5m"
    retry_max: str = "2s"
    etcd_timeout: str = "2s"
    extra_env: dict[str, str] = field(default_factory=dict)


class SimulatedHost:
    """One host: bus, fake services, and a locksmithd subprocess that "reboots"."""

    def __init__(self, name: str, workdir: Path, endpoints: list[str], *, options: HostOptions | None = None,
                 reboot_delay_s: float = 1.0, on_event: Callable[[HostEvent], None] | None = None) -> None:
        self.name = name
        self.machine_id = name
        self.workdir = workdir
        self.endpoints = list(endpoints)
        self.options = options or HostOptions()
        self.reboot_delay_s = reboot_delay_s
        self.on_event = on_event
        self.bus: PrivateBus | None = None
        self.services: SimulatedServices | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.boots = 0
        self.events: list[HostEvent] = []
        self.reboot_times: list[float] = []
        self.auto_restart = True
        self._rebooting: asyncio.Task[None] | None = None
        self._spawned: list[asyncio.subprocess.Process] = []
        self.state_file = workdir / "coordinator.conf"
        self.boot_id_file = workdir / "boot_id"
        self.conf_file = workdir / "update.conf"
        self.health_dir = workdir / "health.d"  # this host's check commands (none unless a test writes some)
        self.run_dir = workdir / "run"  # this host's /run: emptied by each reboot, as a tmpfs is

    # -- lifecycle -----------------------------------------------------------

    async def start(self, *, needs_reboot: bool = False) -> None:
        """Start the bus, the services and the first boot's locksmithd."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.conf_file.write_text("# simulated host: no update.conf settings\n")
        bus = PrivateBus()
        self.bus = bus  # set before starting, so stop() finds it even if start is cancelled
        await asyncio.shield(asyncio.to_thread(bus.start))
        status = UpdateStatus(0, 0.0, NEED_REBOOT if needs_reboot else IDLE, "", 0)
        self.services = await asyncio.shield(
            SimulatedServices.start(bus.address, status=status, on_reboot=self._on_reboot))
        await self.boot()

    async def boot(self) -> None:
        """Start locksmithd as a fresh boot (new boot id)."""
        self.boots += 1
        self.boot_id_file.write_text(uuid.uuid4().hex + "\n")
        await self.spawn_daemon()

    async def spawn_daemon(self) -> None:
        """Start locksmithd (same boot) with this host's environment; output goes to a log file."""
        assert self.bus is not None
        log_path = self.workdir / "locksmithd.log"
        handle = open(log_path, "ab")
        handle.write(f"--- start (boot {self.boots}) at {time.time():.3f}\n".encode())
        handle.flush()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "locksmithd.daemon.main", "--conf", str(self.conf_file),
            env=self.environment(), stdout=handle, stderr=handle, stdin=asyncio.subprocess.DEVNULL)
        handle.close()
        self._spawned.append(self.process)
        self._event("started")

    def environment(self) -> dict[str, str]:
        """The daemon's environment: nothing shared with other hosts but etcd."""
        assert self.bus is not None
        opts = self.options
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address,
            "LOCKSMITHD_MACHINE_ID": self.machine_id,
            "LOCKSMITHD_STATE_FILE": str(self.state_file),
            "LOCKSMITHD_BOOT_ID_PATH": str(self.boot_id_file),
            "LOCKSMITHD_ENDPOINT": ",".join(self.endpoints),
            "LOCKSMITHD_GROUP": opts.group,
            "LOCKSMITHD_ETCD_KEY_PREFIX": opts.key_prefix,
            "REBOOT_STRATEGY": opts.strategy,
            "LOCKSMITHD_LOGIN_DELAY": opts.login_delay,
            "LOCKSMITHD_RECHECK_INTERVAL": opts.recheck_interval,
            "LOCKSMITHD_RETRY_MAX": opts.retry_max,
            "LOCKSMITHD_ETCD_TIMEOUT": opts.etcd_timeout,
            "LOCKSMITHD_HEALTH_DIR": str(self.health_dir),
            "LOCKSMITHD_PRE_REBOOT_DIR": str(self.workdir / "pre-reboot.d"),  # this host's hooks, none by default
            "LOCKSMITHD_POST_BOOT_DIR": str(self.workdir / "post-boot.d"),
        }
        if opts.window_start is not None and opts.window_length is not None:
            env["LOCKSMITHD_REBOOT_WINDOW_START"] = opts.window_start
            env["LOCKSMITHD_REBOOT_WINDOW_LENGTH"] = opts.window_length
        env.update(opts.extra_env)
        return env

    async def stop(self) -> None:
        """Stop everything this host runs; never raises."""
        self.auto_restart = False
        if self._rebooting is not None:
            self._rebooting.cancel()
            await asyncio.gather(self._rebooting, return_exceptions=True)
        await self.stop_daemon()
        for process in self._spawned:  # anything a cancelled reboot may have left running
            if process.returncode is None:
                process.kill()
            await process.wait()
        self._spawned.clear()
        if self.services is not None:
            await self.services.close()
            self.services = None
        if self.bus is not None:
            await asyncio.to_thread(self.bus.stop)
            self.bus = None

    async def stop_daemon(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        """Signal locksmithd and wait for it; returns its exit code (None if it was not running)."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
        self._event(f"daemon exited {process.returncode}")
        return process.returncode

    # -- what tests drive ----------------------------------------------------

    def need_reboot(self, *, signal_only: bool = False) -> None:
        """update_engine finished an update: report NEED_REBOOT and emit the signal."""
        assert self.services is not None
        if not signal_only:
            self.services.update_engine.set_operation(NEED_REBOOT)
        self.services.update_engine.emit_status_update(NEED_REBOOT)
        self._event("update applied")

    def daemon_state(self) -> dict[str, str]:
        """The daemon's coordinator state file, parsed ({} if not written yet)."""
        from locksmithd.host.statefile import read_state_file

        try:
            return read_state_file(str(self.state_file))
        except FileNotFoundError:
            return {}

    @property
    def logind(self) -> Any:
        assert self.services is not None
        return self.services.logind

    @property
    def update_engine(self) -> Any:
        assert self.services is not None
        return self.services.update_engine

    def log_text(self) -> str:
        try:
            return (self.workdir / "locksmithd.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- the simulated reboot ------------------------------------------------

    def _on_reboot(self) -> None:
        self.reboot_times.append(time.monotonic())
        self._event("reboot")
        self._rebooting = asyncio.ensure_future(self._reboot())

    async def _reboot(self) -> None:
        await self.stop_daemon()
        assert self.services is not None
        self.services.update_engine.set_operation(IDLE)  # the new version is now booted
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir()
        await asyncio.sleep(self.reboot_delay_s)
        if self.auto_restart:
            await asyncio.shield(self.boot())  # never leave a half-spawned daemon behind

    def _event(self, what: str) -> None:
        event = HostEvent(time.monotonic(), self.name, what)
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)


class SemaphoreMonitor:
    """Watches one semaphore key and feeds every version it sees to a SafetyChecker.

    Runs an etcd watch in a background thread (via EtcdStore.watch_range);
    ``violations``, ``history`` (readable versions as Observations) and
    ``max_holders_seen`` are the checker's, ``changes`` counts the versions seen.
    With ``expected_max``, a version with another max is a violation too.
    """

    def __init__(self, endpoints: list[str], group: str = "", key_prefix: str = "",
                 expected_max: int | None = None) -> None:
        from locksmithd.etcd.client import EtcdStore

        self.store = EtcdStore(EtcdSettings(endpoints=parse_endpoints(endpoints, "monitor", "endpoints"),
                                            request_timeout_s=3.0))
        self.key = semaphore_key(group, key_prefix)
        self.checker = SafetyChecker(expected_max)
        self._watch: Watch | None = None
        self._stopped = False

    @property
    def violations(self) -> list[str]:
        return self.checker.violations

    @property
    def history(self) -> list[Observation]:
        return self.checker.history

    @property
    def max_holders_seen(self) -> int:
        return self.checker.max_holders_seen

    @property
    def changes(self) -> int:
        return self.checker.versions

    @property
    def revision(self) -> int:
        """The newest revision of the key seen so far (0 before any)."""
        return self.checker.last_revision

    def start(self) -> None:
        stored = self.store.read(self.key)
        if stored:
            self._observe(stored.value, stored.mod_revision)
        self._start_watch(self.revision + 1)

    def _start_watch(self, start_revision: int) -> None:
        self._watch = self.store.watch_range(self.key, self.key + "\0", start_revision,
                                             self._on_events, self._on_broken)

    def _on_events(self, events: list[WatchEvent], revision: int) -> None:
        for event in events:
            self._observe(event.entry.value if event.kind == "put" else None, event.entry.mod_revision)

    def _on_broken(self, error: BaseException) -> None:
        if self._stopped:
            return
        time.sleep(0.2)
        try:
            self._start_watch(self.revision + 1)
        except Exception as exc:  # keep trying from a fresh thread
            log.warning("monitor watch restart failed: %s", exc)

    def _observe(self, raw: bytes | None, revision: int) -> bool:
        """Feed one version (None: deleted) to the checker; False if it was seen already."""
        return self.checker.feed(revision, raw)

    def stop(self) -> None:
        self._stopped = True
        if self._watch is not None:
            self._watch.cancel()
        self.store.close()


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``predicate`` until true; raise AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)
