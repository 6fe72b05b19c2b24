"""Fault scenarios for a simulated fleet on a 3-member etcd cluster, and the checker that judges them.

A run starts hosts that reach etcd only through their own fault proxies (one
per member), makes every host need a reboot, injects each fault when its
trigger is seen (a state, a holder, a new boot), heals, and checks: never more
holders than max at any committed revision (a live watch and a replay of the
key's whole history), every host rebooted exactly once and held a slot when it
asked logind, no slot and no waiter key left, no daemon traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from ..errors import StoreError
from ..etcd_settings import EtcdSettings, parse_endpoints
from ..etcd_store import EtcdStore
from ..keys import semaphore_key, waiters_prefix
from ..lock import SemaphoreClient
from ..update_status import NEED_REBOOT
from .etcd import EtcdCluster
from .fleet import HostOptions, SemaphoreMonitor, SimulatedHost
from .proxy import FaultProxy
from .services import SimulatedServices

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


@dataclass
class RunResult:
    """What one run saw; ``ok`` when there is neither a violation nor a failure."""

    name: str
    seed: int | None
    injected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # safety
    failures: list[str] = field(default_factory=list)  # liveness and end state
    notes: list[str] = field(default_factory=list)
    reboots: dict[str, int] = field(default_factory=dict)
    max_holders_seen: int = 0
    revisions_replayed: int = 0
    duration_s: float = 0.0
    workdir: str = ""
    timeline: list[str] = field(default_factory=list)  # host events, kept for failed runs

    @property
    def ok(self) -> bool:
        return not self.violations and not self.failures

    def kinds(self) -> Counter[str]:
        return Counter(line.split(":", 1)[0] for line in self.injected)

    def report(self) -> str:
        lines = [f"{self.name} seed={self.seed} {'ok' if self.ok else 'FAILED'} in {self.duration_s:.1f}s; "
                 f"max holders seen {self.max_holders_seen}; reboots {self.reboots}; "
                 f"{self.revisions_replayed} revisions replayed; workdir {self.workdir}"]
        lines += [f"  injected {x}" for x in self.injected] + [f"  skipped {x}" for x in self.skipped]
        lines += [f"  note {x}" for x in self.notes]
        lines += [f"  VIOLATION {x}" for x in self.violations] + [f"  FAILURE {x}" for x in self.failures]
        lines += [f"  at {x}" for x in self.timeline]
        return "\n".join(lines)


def make_store(urls: list[str], timeout_s: float = 1.0) -> EtcdStore:
    return EtcdStore(EtcdSettings(endpoints=parse_endpoints(urls, "faults", "endpoints"), request_timeout_s=timeout_s))


# -- the checker ---------------------------------------------------------------

class RobustMonitor(SemaphoreMonitor):
    """SemaphoreMonitor on every member that fails over when its watch breaks or stalls.

    A broken watch is reopened after a read (which moves the store to a live
    member); a guard thread reopens a silent watch when the key has moved on
    (a SIGSTOPped member keeps its stream open but sends nothing).
    """

    def __init__(self, urls: list[str], key_prefix: str) -> None:
        super().__init__(urls, key_prefix=key_prefix)
        self.store.close()
        self.store = make_store(urls)
        self.last_event_at = time.monotonic()
        self._guard = threading.Thread(target=self._guard_loop, name="monitor guard", daemon=True)
        self._halt = threading.Event()
        self._restart_lock = threading.Lock()

    def start(self) -> None:
        super().start()
        self._guard.start()

    def stop(self) -> None:
        self._stopped = True
        self._halt.set()
        if self._guard.is_alive():
            self._guard.join(timeout=5)
        super().stop()

    def holders(self) -> tuple[str, ...]:
        return self.history[-1][3] if self.history else ()

    @property
    def revision(self) -> int:
        """The newest revision of the key seen so far."""
        return self._last_revision

    def _observe(self, raw: bytes, revision: int) -> None:
        if revision <= self._last_revision:
            return  # a reopened watch may repeat what we saw
        self.last_event_at = time.monotonic()
        super()._observe(raw, revision)

    def _on_broken(self, error: BaseException) -> None:
        if not self._stopped:
            time.sleep(0.2)
            self._reopen()

    def _reopen(self) -> None:
        with self._restart_lock:
            if self._stopped:
                return
            with contextlib.suppress(StoreError):
                self.store.read(self.key)
            if self._watch is not None:
                self._watch.cancel()
            self._start_watch(self._last_revision + 1)

    def _guard_loop(self) -> None:
        while not self._halt.wait(1.0):
            try:
                stored = self.store.read(self.key)
            except StoreError:
                continue
            if stored and stored.mod_revision > self._last_revision and time.monotonic() - self.last_event_at > 1.5:
                self._reopen()


def replay_history(urls: list[str], key: str, timeout_s: float = 30.0) -> list[tuple[int, bytes | None]]:
    """Every version of ``key`` from revision 1 to now, as (mod revision, value or None if deleted)."""
    store = make_store(urls, timeout_s=3.0)
    try:
        last = store.read(key)
        if last is None:
            return []
        seen: list[tuple[int, bytes | None]] = []
        done = threading.Event()
        broken: list[BaseException] = []

        def on_events(events: list[Any], revision: int) -> None:
            for event in events:
                seen.append((event.entry.mod_revision, event.entry.value if event.kind == "put" else None))
            if seen and seen[-1][0] >= last.mod_revision:
                done.set()

        def on_broken(error: BaseException) -> None:
            broken.append(error)
            done.set()

        watch = store.watch_range(key, key + "\0", 1, on_events, on_broken)
        done.wait(timeout_s)
        watch.cancel()
        if broken or not seen or seen[-1][0] < last.mod_revision:
            raise RuntimeError(f"history replay of {key} incomplete: {broken or 'timed out'}")
        return seen
    finally:
        store.close()


def judge_history(history: list[tuple[int, bytes | None]], max_expected: int) -> tuple[list[str], int]:
    """Violations in a replayed history (holders > max, or max changed under us) and the most holders."""
    violations, most = [], 0
    for revision, raw in history:
        if raw is None:
            violations.append(f"revision {revision}: the semaphore was deleted")
            continue
        try:
            document = json.loads(raw)
            holders, max_slots = list(document["holders"] or ()), int(document["max"])
        except (ValueError, KeyError, TypeError):
            violations.append(f"revision {revision}: undecodable document {raw[:80]!r}")
            continue
        most = max(most, len(holders))
        if len(holders) > max_slots or max_slots != max_expected or len(set(holders)) != len(holders):
            violations.append(f"revision {revision}: holders {holders} with max {max_slots}")
    return violations, most


# -- the fleet under faults ---------------------------------------------------

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
        self.monitor = RobustMonitor(self.urls, self.key_prefix)
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
            holders = (json.loads(stored.value).get("holders") or []) if stored else []
            if host.name in holders:
                return
            if host.boots == boots:  # read before the new boot could release anything
                self.unheld_reboots.append(f"{host.name} rebooted without a slot (holders {holders})")
                return
            break
        self.unverified_reboots += 1


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _services(host: SimulatedHost) -> SimulatedServices:
    assert host.services is not None, f"{host.name} is not started"
    return host.services


# -- faults ---------------------------------------------------------------------

class Fault:
    """One fault: ``prepare`` may claim a host before start; ``run`` waits for its trigger and injects."""

    kind = "fault"

    def __init__(self, rng: random.Random) -> None:
        self.rng = random.Random(rng.getrandbits(64))  # its own stream: replays do not depend on interleaving
        self.target: str | None = None
        self.delay_s = 0.0  # before looking for the trigger (for a targeted fault: before its host's update)
        self.queues_late = False  # the target learns of its update after the others, so it must queue

    def prepare(self, fleet: FaultyFleet) -> None:
        pass

    async def run(self, fleet: FaultyFleet) -> None:
        raise NotImplementedError

    def targets(self) -> set[str] | None:
        return {self.target} if self.target else None


def _waiting(fleet: FaultyFleet) -> Callable[[SimulatedHost], bool]:
    """Queued behind a full semaphore, before its reboot."""
    return lambda h: (fleet.state(h) == "waiting-for-lock" and h.name not in fleet.holders()
                      and len(fleet.holders()) >= fleet.config.max_holders and fleet.reboots(h) == 0)


def _holding(fleet: FaultyFleet) -> Callable[[SimulatedHost], bool]:
    """Holds a slot taken in this boot (its reboot still to come)."""
    return lambda h: h.name in fleet.holders() and fleet.reboots(h) == 0 and fleet.alive(h)


class LeaderKill(Fault):
    """SIGKILL the etcd leader while a slot is held, or (``on_acquire``) at the instant a queued host
    sends the write that takes its slot; restart it after ``down_s``."""

    kind = "leader-kill"

    def __init__(self, rng: random.Random, down_s: float, on_acquire: bool = False) -> None:
        super().__init__(rng)
        self.down_s, self.on_acquire = down_s, on_acquire
        if on_acquire:
            self.kind = "leader-kill-on-acquire"
            self.queues_late = True

    def prepare(self, fleet: FaultyFleet) -> None:
        if self.on_acquire:
            self.target = fleet.claim(self.rng)

    async def run(self, fleet: FaultyFleet) -> None:
        if not await fleet.until(lambda: bool(fleet.holders()), "a holder"):
            return fleet.skip(self.kind, "roll-out ended first")
        async with fleet.cluster_lock:
            leader = await asyncio.to_thread(fleet.cluster.leader)
            when = f"holders {fleet.holders()}"
            if self.on_acquire:
                pid = leader.pid
                assert pid is not None
                async with fleet.pick(_waiting(fleet), "a queued host", self.targets()) as host:
                    if host is None:
                        return fleet.skip(self.kind, "no queued host before the end")
                    tripped = fleet.arm_tripwire(host, holds=True, action=lambda: os.kill(pid, signal.SIGKILL))
                    fired = await fleet.until(tripped.is_set, "the tripwire")
                    fleet.reconnect(host)
                    if not fired:
                        return fleet.skip(self.kind, f"{host.name} wrote nothing before the end")
                    when = f"as {host.name} took a slot"
            await asyncio.to_thread(leader.kill)
            fleet.record(self.kind, f"killed leader {leader.name} for {self.down_s:.1f}s, {when}")
            await asyncio.sleep(self.down_s)
            await asyncio.to_thread(leader.restart, 60)


class MemberPause(Fault):
    """SIGSTOP a member (the leader or a follower) for ``pause_s``: while a slot is held, or (``on_acquire``)
    at the instant a queued host sends the write that takes its slot."""

    kind = "member-pause"

    def __init__(self, rng: random.Random, pause_s: float, leader: bool, on_acquire: bool = False) -> None:
        super().__init__(rng)
        self.pause_s, self.leader, self.on_acquire = pause_s, leader, on_acquire
        if on_acquire:
            self.kind = "member-pause-on-acquire"
            self.queues_late = True

    def prepare(self, fleet: FaultyFleet) -> None:
        if self.on_acquire:
            self.target = fleet.claim(self.rng)

    async def run(self, fleet: FaultyFleet) -> None:
        if not await fleet.until(lambda: bool(fleet.holders()), "a holder"):
            return fleet.skip(self.kind, "roll-out ended first")
        async with fleet.cluster_lock:
            leader = await asyncio.to_thread(fleet.cluster.leader)
            member = leader if self.leader else self.rng.choice([m for m in fleet.cluster.members if m is not leader])
            role = "leader" if member is leader else "follower"
            try:
                if self.on_acquire:
                    async with fleet.pick(_waiting(fleet), "a queued host", self.targets()) as host:
                        if host is None:
                            return fleet.skip(self.kind, "no queued host before the end")
                        tripped = fleet.arm_tripwire(host, holds=True, action=member.pause)
                        if not await fleet.until(tripped.is_set, "the tripwire"):
                            fleet.reconnect(host)
                            return fleet.skip(self.kind, f"{host.name} wrote nothing before the end")
                        fleet.reconnect(host)
                        role += f" as {host.name} took a slot"
                else:
                    member.pause()
                fleet.record(self.kind, f"paused {role} {member.name} for {self.pause_s:.1f}s")
                await asyncio.sleep(self.pause_s)
            finally:
                member.resume()


class CutOff(Fault):
    """Cut one host off from every member (blackhole or sever) while it waits or holds a slot."""

    kind = "cut-off"

    def __init__(self, rng: random.Random, when: str, duration_s: float, mode: str) -> None:
        super().__init__(rng)
        self.when, self.duration_s, self.mode = when, duration_s, mode
        self.kind = f"cut-off-{when}"
        self.queues_late = when == "waiting"

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng, lingering=self.when == "holding")

    async def run(self, fleet: FaultyFleet) -> None:
        ready = _waiting(fleet) if self.when == "waiting" else _holding(fleet)
        async with fleet.pick(ready, f"a host {self.when}", self.targets()) as host:
            if host is None:
                return fleet.skip(self.kind, f"no host {self.when} before the end")
            fleet.cut_off(host, self.mode)
            fleet.record(self.kind, f"{self.mode} {host.name} while {self.when} for {self.duration_s:.1f}s")
            try:
                await asyncio.sleep(self.duration_s)
            finally:
                fleet.reconnect(host)


class LostReply(Fault):
    """Lose the reply to a host's next semaphore write (its acquire or its release) for ``window_s``."""

    kind = "lost-reply"

    def __init__(self, rng: random.Random, write: str, window_s: float) -> None:
        super().__init__(rng)
        self.write, self.window_s = write, window_s
        self.kind = f"lost-reply-{write}"
        self.queues_late = write == "acquire"

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng)

    async def run(self, fleet: FaultyFleet) -> None:
        # a release is the first write without the host after it took a slot (before or after its reboot)
        ready = (lambda h: h.name in fleet.holders()) if self.write == "release" else _waiting(fleet)
        async with fleet.pick(ready, f"a host before its {self.write}", self.targets()) as host:
            if host is None:
                return fleet.skip(self.kind, f"no host before its {self.write}")
            for attempt in range(3):  # a write that lost its race did not commit: wait for the next one
                revision = fleet.monitor.revision
                try:
                    tripped = fleet.arm_tripwire(host, holds=self.write == "acquire")
                    if not await fleet.until(tripped.is_set, "the tripwire"):
                        if attempt == 0:
                            fleet.skip(self.kind, f"{host.name} wrote nothing before the end")
                        return
                    fleet.record(self.kind, f"replies to {host.name} dropped from its {self.write} write "
                                            f"for {self.window_s:.1f}s")
                    await asyncio.sleep(self.window_s)
                finally:
                    fleet.reconnect(host)
                landed = [r for (_, r, _, holders) in list(fleet.monitor.history)
                          if r > revision and (host.name in holders) == (self.write == "acquire")]
                fleet.notes.append(f"lost-reply: {host.name}'s {self.write} "
                                   f"{'committed at revision %d' % landed[0] if landed else 'did not commit'} "
                                   f"while {fleet.dropped_bytes(host)} reply bytes were dropped")
                if landed:
                    return


class KillDaemon(Fault):
    """SIGKILL a host's locksmithd at one point of its cycle and start it again (same boot)."""

    kind = "kill"

    def __init__(self, rng: random.Random, at: str) -> None:
        super().__init__(rng)
        self.at = at
        self.kind = f"kill-{at}"
        self.queues_late = at == "waiting-for-lock"

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng, lingering=self.at in ("holding", "warning-users"))

    def _ready(self, fleet: FaultyFleet) -> Callable[[SimulatedHost], bool]:
        if self.at == "waiting-for-lock":
            return _waiting(fleet)
        if self.at == "holding":
            return _holding(fleet)
        if self.at == "warning-users":
            return lambda h: fleet.state(h) == "warning-users" and fleet.reboots(h) == 0
        # after reboot, before release: the new boot's daemon is up and the old slot still held
        return lambda h: (h.boots >= 2 and fleet.reboots(h) == 1 and fleet.alive(h)
                          and h.name in fleet.holders() and fleet.state(h) in ("starting", "releasing-after-boot"))

    async def run(self, fleet: FaultyFleet) -> None:
        async with fleet.pick(self._ready(fleet), f"a host {self.at}", self.targets()) as host:
            if host is None:
                return fleet.skip(self.kind, f"no host {self.at} before the end")
            if self.at == "warning-users":
                await asyncio.sleep(fleet.config.login_delay_s * self.rng.uniform(0.2, 0.5))
            held = host.name in fleet.holders()
            state = await fleet.kill_and_respawn(host)
            fleet.record(self.kind, f"SIGKILL {host.name} {self.at} (state file {state or '-'}, "
                                    f"{'holding' if held else 'not holding'}), restarted")


class UpdateEngineRestart(Fault):
    """Restart update_engine: one host learns of its update only from the restart; a waiting one restarts too."""

    kind = "update-engine-restart"

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng)
        fleet.deferred[self.target] = None

    async def run(self, fleet: FaultyFleet) -> None:
        assert self.target is not None
        await asyncio.sleep(self.rng.uniform(0.2, 2.0))
        host = fleet.host(self.target)
        async with fleet.host_locks[host.name]:
            host.update_engine.set_operation(NEED_REBOOT)  # no signal: only the restart tells
            await _services(host).restart_update_engine()
            fleet.record(self.kind, f"{host.name} (update staged silently)")
        async with fleet.pick(_waiting(fleet), "a waiting host") as other:
            if other is not None:
                await _services(other).restart_update_engine()
                fleet.record(self.kind, f"{other.name} while waiting")


class LogindRestart(Fault):
    """Stop logind while a host warns its users, start it after ``down_s`` (a reboot asked meanwhile is refused)."""

    kind = "logind-restart"

    def __init__(self, rng: random.Random, down_s: float) -> None:
        super().__init__(rng)
        self.down_s = down_s

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng, lingering=True)

    async def run(self, fleet: FaultyFleet) -> None:
        ready = lambda h: fleet.state(h) == "warning-users" and fleet.reboots(h) == 0  # noqa: E731
        async with fleet.pick(ready, "a host warning users", self.targets()) as host:
            if host is None:
                return fleet.skip(self.kind, "no host warning users before the end")
            await _services(host).stop_logind()
            fleet.record(self.kind, f"{host.name} logind down for {self.down_s:.1f}s while warning users")
            try:
                await asyncio.sleep(self.down_s)
            finally:
                await _services(host).start_logind()


SCENARIOS: dict[str, Callable[[random.Random, RunConfig], list[Fault]]] = {
    "leader-kill": lambda rng, c: [LeaderKill(rng, down_s=4.0)],
    "leader-kill-on-acquire": lambda rng, c: [LeaderKill(rng, down_s=3.0, on_acquire=True)],
    "member-pause": lambda rng, c: [MemberPause(rng, pause_s=5.0, leader=True)],
    "leader-pause-on-acquire": lambda rng, c: [MemberPause(rng, pause_s=4.0, leader=True, on_acquire=True)],
    "cut-off-waiting": lambda rng, c: [CutOff(rng, "waiting", 12.0, "blackhole")],
    "cut-off-holding": lambda rng, c: [CutOff(rng, "holding", 6.0, "sever")],
    "lost-reply-acquire": lambda rng, c: [LostReply(rng, "acquire", 3.0)],
    "lost-reply-release": lambda rng, c: [LostReply(rng, "release", 3.0)],
    "kill-waiting": lambda rng, c: [KillDaemon(rng, "waiting-for-lock")],
    "kill-holding": lambda rng, c: [KillDaemon(rng, "holding")],
    "kill-warning-users": lambda rng, c: [KillDaemon(rng, "warning-users")],
    "kill-after-reboot": lambda rng, c: [KillDaemon(rng, "after-reboot")],
    "update-engine-restart": lambda rng, c: [UpdateEngineRestart(rng)],
    "logind-restart": lambda rng, c: [LogindRestart(rng, down_s=c.login_delay_s + 1.0)],
}
"""Each fault on its own, with fixed parameters."""

RANDOM_FAULTS: list[Callable[[random.Random, RunConfig], Fault]] = [
    lambda rng, c: LeaderKill(rng, down_s=rng.uniform(1.0, 5.0), on_acquire=rng.random() < 0.3),
    lambda rng, c: MemberPause(rng, pause_s=rng.uniform(1.0, 6.0), leader=rng.random() < 0.5,
                               on_acquire=rng.random() < 0.5),
    lambda rng, c: CutOff(rng, rng.choice(["waiting", "holding"]), rng.uniform(2.0, 12.0),
                          rng.choice(["blackhole", "sever"])),
    lambda rng, c: LostReply(rng, rng.choice(["acquire", "release"]), rng.uniform(1.0, 4.0)),
    lambda rng, c: KillDaemon(rng, rng.choice(["waiting-for-lock", "holding", "warning-users", "after-reboot"])),
    lambda rng, c: UpdateEngineRestart(rng),
    lambda rng, c: LogindRestart(rng, down_s=rng.uniform(0.0, c.login_delay_s + 1.5)),
]
"""Fault makers with random parameters, drawn for combined runs."""


def random_faults(rng: random.Random, config: RunConfig, count: int | None = None) -> list[Fault]:
    """2 to 4 faults (kinds may repeat) with random parameters, all from ``rng``."""
    count = count if count is not None else rng.randint(2, 4)
    faults = [rng.choice(RANDOM_FAULTS)(rng, config) for _ in range(count)]
    for fault in faults:
        # A fault on a claimed host delays that host's update instead (see run_faults).
        fault.delay_s = rng.uniform(0.0, 1.0)
    return faults


# -- one run --------------------------------------------------------------------

async def run_faults(cluster: EtcdCluster, workdir: Path, faults: list[Fault], *, name: str,
                     config: RunConfig = RunConfig(), seed: int | None = None) -> RunResult:
    """Roll a reboot through a fresh fleet while ``faults`` strike; heal; judge. Never raises for a failed check."""
    result = RunResult(name, seed, workdir=str(workdir))
    began = time.monotonic()
    await asyncio.to_thread(cluster.heal, 60)
    fleet = FaultyFleet(cluster, workdir, config, name)
    tasks: list[asyncio.Task[None]] = []
    try:
        for fault in faults:
            fault.prepare(fleet)
            if fault.target is not None:  # its host learns of its update later, so the trigger still comes
                fleet.deferred.setdefault(fault.target, fault.delay_s)
                if fault.queues_late:
                    fleet.queue_late.add(fault.target)
                fault.delay_s = 0.0
        await fleet.start()
        await fleet.roll_out()
        tasks = [asyncio.create_task(_strike(f, fleet), name=f.kind) for f in faults]
        try:
            await fleet.until(fleet.done, "every host rebooted and idle", config.timeout_s, stop=False)
        except AssertionError as error:
            result.failures.append(f"{error} (states {[(h.name, fleet.state(h)) for h in fleet.hosts]}, "
                                   f"holders {fleet.holders()})")
        for task in tasks:
            try:
                await asyncio.wait_for(task, 60)
            except Exception as error:
                result.failures.append(f"fault {task.get_name()} failed: {type(error).__name__}: {error}")
        await fleet.heal()
        if result.ok:
            await _await_quiet(fleet, result)
        await asyncio.sleep(config.settle_s)  # a second reboot would show up now
        await asyncio.to_thread(_judge, fleet, result)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result.injected, result.skipped = fleet.injected, fleet.skipped
        result.notes += fleet.notes
        result.reboots = {h.name: fleet.reboots(h) for h in fleet.hosts}
        if not result.ok:
            events = sorted((e for h in fleet.hosts for e in h.events), key=lambda e: e.at)
            result.timeline = [f"+{e.at - fleet.started_at:.2f}s {e.host} {e.what}" for e in events]
        await fleet.close()
        await asyncio.to_thread(cluster.heal, 60)
        result.duration_s = time.monotonic() - began
    return result


async def _strike(fault: Fault, fleet: FaultyFleet) -> None:
    await asyncio.sleep(fault.delay_s)
    await fault.run(fleet)


async def _await_quiet(fleet: FaultyFleet, result: RunResult) -> None:
    """Wait (bounded by the 10 s lease) until no slot is held and no waiter key is left."""
    def quiet() -> bool:
        stored = fleet.store.read(fleet.key)
        holders = json.loads(stored.value).get("holders") if stored else []
        return not holders and not fleet.store.read_prefix(waiters_prefix("", fleet.key_prefix))

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(quiet):
                return
        except StoreError:
            pass
        await asyncio.sleep(0.2)


def _judge(fleet: FaultyFleet, result: RunResult) -> None:
    """The verdict: safety from the live monitor and the replay, then the end state."""
    config = fleet.config
    result.violations += fleet.monitor.violations + fleet.unheld_reboots
    history = replay_history(fleet.urls, fleet.key)
    replayed, most = judge_history(history, config.max_holders)
    result.violations += replayed
    result.revisions_replayed = len(history)
    result.max_holders_seen = max(most, fleet.monitor.max_holders_seen)
    if fleet.unverified_reboots:
        result.notes.append(f"{fleet.unverified_reboots} reboot(s) not checked against the semaphore (read failed)")
    for host in fleet.hosts:
        count = fleet.reboots(host)
        if count > 1:
            result.violations.append(f"{host.name} rebooted {count} times")
        elif count == 0:
            result.failures.append(f"{host.name} never rebooted")
        if not fleet.alive(host):
            result.failures.append(f"{host.name}'s daemon is not running")
        if "Traceback" in host.log_text():
            result.failures.append(f"{host.name}'s daemon logged a traceback")
    stored = fleet.store.read(fleet.key)
    holders = json.loads(stored.value).get("holders") if stored else []
    if holders:
        result.failures.append(f"slots still held at the end by {holders}")
    waiters = fleet.store.read_prefix(waiters_prefix("", fleet.key_prefix))
    if waiters:
        result.failures.append(f"waiter keys left: {[w.key for w in waiters]}")
