"""The fleet under faults: hosts behind per-host tripwire proxies, and the helpers faults use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from locksmithd.errors import StoreError
from locksmithd.etcd.keys import semaphore_key
from locksmithd.etcd.lock import SemaphoreClient
from harness.documents import UnreadableDocument, stored_holders
from harness.etcd import EtcdCluster
from harness.fault_checker import RobustMonitor, make_store
from harness.fleet import HostOptions, SimulatedHost
from harness.proxy import FaultProxy

FAKE_TTY = "locksmithd-fault-test-tty"  # no such device: the notice is logged, never written
WRITE_MARK = b'"holders"'  # only a semaphore write carries the document in its request
POLL_S = 0.02


@dataclass(frozen=True)
class RunConfig:
    """Fleet shape and bounds of one run; daemons get fast-recovery settings."""

    hosts: int = 4
    max_holders: int = 2
    reboot_delay_s: float = 1.0
    login_delay_s: float = 3.0
    timeout_s: float = 120.0
    settle_s: float = 1.0
    etcd_timeout: str = "1s"
    retry_max: str = "2s"
    recheck_interval: str = "10s"


class _TapSocket:
    """A client socket whose received bytes are shown to ``inspect`` before the proxy forwards them."""

    def __init__(self, sock: socket.socket, inspect: Callable[[bytes], None]) -> None:
        self._sock = sock
        self._inspect = inspect

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if data:
            self._inspect(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class TripwireProxy(FaultProxy):
    """A FaultProxy that, once armed, calls ``on_trip`` before forwarding a matching semaphore write."""

    def __init__(self, host: str, port: int, on_trip: Callable[[], None]) -> None:
        self.match: Callable[[bytes], bool] | None = None
        self._on_trip = on_trip
        super().__init__(host, port)

    def _admit(self, client: socket.socket) -> None:
        super()._admit(_TapSocket(client, self._inspect))  # type: ignore[arg-type]

    def _inspect(self, data: bytes) -> None:
        match = self.match
        if match is not None and match(data):
            self._on_trip()  # before the request goes on, so its reply is surely lost


def writes_holder(holder: str, holds: bool) -> Callable[[bytes], bool]:
    """Matches a request writing a semaphore document in which ``holder`` holds (or not)."""
    quoted = json.dumps(holder).encode()

    def match(data: bytes) -> bool:
        start = data.find(WRITE_MARK)
        if start < 0:
            return False
        listed = data[start:data.find(b"]", start) + 1]
        return (quoted in listed) == holds
    return match


class FaultyFleet:
    """Hosts behind per-host proxies, a robust monitor, and the helpers faults use."""

    def __init__(self, cluster: EtcdCluster, workdir: Path, config: RunConfig, name: str) -> None:
        self.cluster = cluster
        self.config = config
        self.key_prefix = f"{name}-{uuid.uuid4().hex[:6]}/"
        self.key = semaphore_key("", self.key_prefix)
        self.urls = cluster.client_urls
        self.store = make_store(self.urls)
        self.monitor = RobustMonitor(self.urls, self.key_prefix, expected_max=config.max_holders)
        self.proxies: dict[str, list[TripwireProxy]] = {}
        self.tripped: dict[str, asyncio.Event] = {}
        self.trip_actions: dict[str, Callable[[], None]] = {}
        self.hosts: list[SimulatedHost] = []
        for i in range(config.hosts):
            hname = f"h{i}"
            self.proxies[hname] = [TripwireProxy("127.0.0.1", _port(url), self._tripper(hname)) for url in self.urls]
            options = HostOptions(key_prefix=self.key_prefix, etcd_timeout=config.etcd_timeout,
                                  retry_max=config.retry_max, recheck_interval=config.recheck_interval)
            self.hosts.append(SimulatedHost(hname, workdir / hname, [p.url for p in self.proxies[hname]],
                                            options=options, reboot_delay_s=config.reboot_delay_s))
        self.lingering: set[str] = set()
        self.deferred: dict[str, float | None] = {}  # host -> seconds until told of its update (None: a fault tells)
        self.queue_late: set[str] = set()  # told once the semaphore is full, so they must queue
        self.claimed: set[str] = set()
        self.host_locks = {h.name: asyncio.Lock() for h in self.hosts}
        self.cluster_lock = asyncio.Lock()
        self.injected: list[str] = []
        self.skipped: list[str] = []
        self.notes: list[str] = []
        self.unheld_reboots: list[str] = []
        self.broken_rules: list[str] = []  # safety rules a fault saw broken (e.g. a release before healthy)
        self.unverified_reboots = 0
        self.started_at = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tellers: list[asyncio.Task[None]] = []

    # -- set-up and tear-down -------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.tripped = {h.name: asyncio.Event() for h in self.hosts}
        await asyncio.to_thread(SemaphoreClient(self.store, "", self.key_prefix).set_max, self.config.max_holders)
        await asyncio.to_thread(self.monitor.start)
        for host in self.hosts:
            if host.name in self.lingering:
                host.options.login_delay = f"{self.config.login_delay_s}s"
        await asyncio.gather(*(host.start() for host in self.hosts))
        for host in self.hosts:
            if host.name in self.lingering:
                host.logind.add_session("c1", "core", FAKE_TTY)
            self._check_reboots_held(host)
        await self.until(lambda: all(self.state(h) == "idle" for h in self.hosts), "every daemon idle", 60, stop=False)
        await asyncio.sleep(0.3)  # the update_engine watcher subscribes alongside the first state

    async def roll_out(self) -> None:
        """Every host learns that it needs a reboot: now, after its deferral, or from a fault."""
        self.started_at = time.monotonic()
        for host in self.hosts:
            delay_s = self.deferred.get(host.name, 0.0)
            if delay_s is not None:
                self._tellers.append(asyncio.create_task(self._tell(host, delay_s, host.name in self.queue_late)))

    async def _tell(self, host: SimulatedHost, delay_s: float, when_full: bool) -> None:
        await asyncio.sleep(delay_s)
        # If too few others fill the semaphore, all held-back hosts are told together, so some still queue.
        deadline = self.started_at + 3.0
        while when_full and len(self.holders()) < self.config.max_holders and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        host.need_reboot()

    async def heal(self) -> None:
        for host in self.hosts:
            self.reconnect(host)
        await asyncio.to_thread(self.cluster.heal, 60)

    async def close(self) -> None:
        for timer in self._tellers:
            timer.cancel()
        await asyncio.gather(*self._tellers, return_exceptions=True)
        await asyncio.gather(*(host.stop() for host in self.hosts), return_exceptions=True)
        for proxies in self.proxies.values():
            for proxy in proxies:
                proxy.stop()
        self.monitor.stop()
        self.store.close()

    # -- what faults use ----------------------------------------------------

    def state(self, host: SimulatedHost) -> str:
        return host.daemon_state().get("DAEMON_STATE", "")

    def holders(self) -> tuple[str, ...]:
        return self.monitor.holders()

    def reboots(self, host: SimulatedHost) -> int:
        return len(host.logind.reboots) if host.services else 0

    def alive(self, host: SimulatedHost) -> bool:
        return host.process is not None and host.process.returncode is None

    def done(self) -> bool:
        """The roll-out is over: every host rebooted, runs its new boot's daemon, and is idle."""
        return all(self.reboots(h) >= 1 and h.boots >= 2 and self.alive(h) and self.state(h) == "idle"
                   for h in self.hosts)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def record(self, kind: str, detail: str) -> None:
        self.injected.append(f"{kind}: {detail} at +{self.elapsed():.1f}s")

    def skip(self, kind: str, why: str) -> None:
        self.skipped.append(f"{kind}: {why}")

    async def until(self, predicate: Callable[[], bool], what: str, timeout_s: float | None = None,
                    stop: bool = True) -> bool:
        """Poll ``predicate``; False if the roll-out ends first (``stop``); AssertionError on timeout."""
        deadline = time.monotonic() + (timeout_s or self.config.timeout_s)
        while not predicate():
            if stop and self.done():
                return False
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(POLL_S)
        return True

    def claim(self, rng: random.Random, *, lingering: bool = False) -> str:
        """A host for one fault (before start); lingering hosts warn a tty session for ``login_delay_s``."""
        free = [h.name for h in self.hosts if h.name not in self.claimed] or [h.name for h in self.hosts]
        name = rng.choice(free)
        self.claimed.add(name)
        if lingering:
            self.lingering.add(name)
        return name

    def host(self, name: str) -> SimulatedHost:
        return next(h for h in self.hosts if h.name == name)

    @contextlib.asynccontextmanager
    async def pick(self, ready: Callable[[SimulatedHost], bool], what: str,
                   names: set[str] | None = None) -> AsyncIterator[SimulatedHost | None]:
        """Wait for a host (among ``names``) that is ``ready`` and not used by another fault; lock it.

        Without ``names``, hosts still awaited by a targeted fault are left to it.
        Yields None when the roll-out ends first.
        """
        while True:
            allowed = names if names is not None else {h.name for h in self.hosts} - self.claimed
            chosen = next((h for h in self.hosts if h.name in allowed and not self.host_locks[h.name].locked()
                           and ready(h)), None)
            if chosen is not None:
                break
            if self.done():
                yield None
                return
            await asyncio.sleep(POLL_S)
        if names is not None:
            self.claimed.discard(chosen.name)  # its fault has it now; others may follow
        async with self.host_locks[chosen.name]:
            yield chosen

    def cut_off(self, host: SimulatedHost, mode: str) -> None:
        for proxy in self.proxies[host.name]:
            proxy.blackhole() if mode == "blackhole" else proxy.sever()

    def reconnect(self, host: SimulatedHost) -> None:
        for proxy in self.proxies[host.name]:
            proxy.match = None
            proxy.pass_through()

    def arm_tripwire(self, host: SimulatedHost, holds: bool,
                     action: Callable[[], None] | None = None) -> asyncio.Event:
        """Run ``action`` (default: lose every reply to ``host``) in the proxy thread, just before
        forwarding ``host``'s next write of a document in which it holds (or not)."""
        self.tripped[host.name].clear()
        self.trip_actions[host.name] = action or (lambda: self._drop_replies(host.name))
        for proxy in self.proxies[host.name]:
            proxy.match = writes_holder(host.name, holds)
        return self.tripped[host.name]

    def dropped_bytes(self, host: SimulatedHost) -> int:
        return sum(p.stats().bytes_dropped_down for p in self.proxies[host.name])

    async def kill_and_respawn(self, host: SimulatedHost, pause_s: float = 0.3) -> str:
        """SIGKILL the daemon and start it again in the same boot; returns the state it died in."""
        state, reboots = self.state(host), self.reboots(host)
        await host.stop_daemon(signal.SIGKILL)
        await asyncio.sleep(pause_s)  # a Reboot call already on the bus is served meanwhile
        if self.reboots(host) != reboots:
            self.notes.append(f"{host.name}: its reboot raced the kill; the reboot boots it")
        else:
            await host.spawn_daemon()
        return state

    # -- internals ----------------------------------------------------------

    def _tripper(self, name: str) -> Callable[[], None]:
        def trip() -> None:  # runs in a proxy thread
            for proxy in self.proxies[name]:
                proxy.match = None
            self.trip_actions[name]()
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self.tripped[name].set)
        return trip

    def _drop_replies(self, name: str) -> None:
        for proxy in self.proxies[name]:
            proxy.drop_replies()

    def _check_reboots_held(self, host: SimulatedHost) -> None:
        """Wrap the fake logind's reboot hook: read the semaphore at once and check the host holds."""
        logind = host.logind
        original = logind.on_reboot

        def on_reboot() -> Any:
            asyncio.get_running_loop().run_in_executor(None, self._judge_reboot, host, host.boots)
            return original()

        logind.on_reboot = on_reboot

    def _judge_reboot(self, host: SimulatedHost, boots: int) -> None:
        """In a thread: the host must hold a slot, unless its next boot began before we could read."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                stored = self.store.read(self.key)
            except StoreError:
                time.sleep(0.1)
                continue
            try:
                holders = stored_holders(stored.value if stored else None)
            except UnreadableDocument as error:
                self.unheld_reboots.append(f"{host.name} rebooted while the semaphore was unreadable: {error}")
                return
            if host.name in holders:
                return
            if host.boots == boots:  # read before the new boot could release anything
                self.unheld_reboots.append(f"{host.name} rebooted without a slot (holders {list(holders)})")
                return
            break
        self.unverified_reboots += 1


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
