"""Benchmarks with real locksmithd processes: a rolling reboot, an idle daemon, `locksmithctl status`.

Hosts are SimulatedHosts (locksmithd subprocesses with fake update_engine and
logind on private buses). A simulated reboot stops the daemon (SIGTERM), waits
``reboot_delay_s`` and starts it again; the new daemon releases the slot its
host held (RELEASING_AFTER_BOOT) and goes idle. Times are time.monotonic() in
this process: host events, state-file polls, and a SemaphoreMonitor watch.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import waiter_key
from locksmithd.etcd.lock import SemaphoreClient
from harness.etcd import EtcdMember
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost

from .stats import Doc, pair_handoffs, requests_by_method, slot_events, summary_ms

POLL_S = 0.005


def _client(url: str, key_prefix: str) -> SemaphoreClient:
    settings = EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(url, "bench", "endpoint"), key_prefix=key_prefix)
    return SemaphoreClient(EtcdStore(settings), "", key_prefix)


def _is_idle(host: SimulatedHost) -> bool:
    return host.daemon_state().get("DAEMON_STATE") == "idle"


async def _until(predicate: Any, timeout_s: float, what: str) -> float:
    """Poll every 5 ms; return the monotonic time the predicate first held."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(POLL_S)
    return time.monotonic()


def _started_at(host: SimulatedHost, boot: int) -> float:
    """When the daemon of ``boot`` (1-based) was spawned."""
    starts = [e.at for e in host.events if e.what == "started"]
    return starts[boot - 1]


@dataclass
class Rollout:
    hosts: int
    max: int
    reboot_delay_s: float
    total_s: float = 0.0
    restart_s: list[float] = field(default_factory=list)
    shutdown_s: list[float] = field(default_factory=list)
    acquire_to_reboot_s: list[float] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)
    first_acquire_s: float = 0.0
    max_holders_seen: int = 0
    violations: list[str] = field(default_factory=list)
    requests: dict[str, float] = field(default_factory=dict)
    messages: dict[str, float] = field(default_factory=dict)

    @property
    def restart_median_s(self) -> float:
        return statistics.median(self.restart_s)

    @property
    def ideal_s(self) -> float:
        return math.ceil(self.hosts / self.max) * (self.reboot_delay_s + self.restart_median_s)

    def as_json(self) -> dict[str, Any]:
        return {
            "hosts": self.hosts, "max": self.max, "reboot_delay_s": self.reboot_delay_s,
            "total_s": round(self.total_s, 3), "ideal_s": round(self.ideal_s, 3),
            "ratio": round(self.total_s / self.ideal_s, 4),
            "restart_s": {"median": round(self.restart_median_s, 3), "min": round(min(self.restart_s), 3),
                          "max": round(max(self.restart_s), 3)},
            "shutdown_s": summary_ms(self.shutdown_s), "acquire_to_reboot_call": summary_ms(self.acquire_to_reboot_s),
            "need_reboot_to_first_acquire_ms": round(self.first_acquire_s * 1000, 1),
            "handoff_gap": summary_ms(self.gaps_s),
            "max_holders_seen": self.max_holders_seen, "safety_violations": self.violations,
            "etcd_requests": self.requests, "etcd_messages_received": self.messages,
            "etcd_requests_per_host": round(sum(self.requests.values()) / self.hosts, 2),
        }


async def run_rollout(member: EtcdMember, workdir: Path, hosts: int = 10, max_slots: int = 2,
                      reboot_delay_s: float = 2.0, timeout_s: float = 180.0) -> Rollout:
    """All hosts need a reboot at once; measure until every one has rebooted and released.

    restart = daemon spawn -> its state file says idle (it has released the
    slot held across the reboot by then); the ideal is ceil(hosts/max) x
    (reboot_delay + median restart). Handoff gaps come from the monitor's
    watch: time it saw a release -> time it saw the next acquisition.
    """
    url = member.client_url
    key_prefix = f"bench-rollout-{time.monotonic_ns() % 10**8}/"
    client = _client(url, key_prefix)
    client.reset(max_slots, client.read_raw())
    client.store.close()  # type: ignore[attr-defined]
    monitor = SemaphoreMonitor([url], key_prefix=key_prefix)
    monitor.start()
    fleet = [SimulatedHost(f"host-{i:02d}", workdir / f"host-{i:02d}", [url],
                           options=HostOptions(key_prefix=key_prefix), reboot_delay_s=reboot_delay_s)
             for i in range(hosts)]
    result = Rollout(hosts, max_slots, reboot_delay_s)
    try:
        await asyncio.gather(*(h.start() for h in fleet))
        await _until(lambda: all(_is_idle(h) for h in fleet), 60, "all daemons idle")
        await asyncio.sleep(0.5)
        before = member.metrics()
        t0 = time.monotonic()
        for host in fleet:
            host.need_reboot()
        idle_at: dict[str, float] = {}

        def all_back() -> bool:
            for host in fleet:
                if host.name not in idle_at and host.boots >= 2 and _is_idle(host):
                    idle_at[host.name] = time.monotonic()
            return len(idle_at) == len(fleet)

        await _until(all_back, timeout_s, "every host rebooted and idle")
        result.total_s = max(idle_at.values()) - t0
        await asyncio.sleep(0.2)
        after = member.metrics()
        result.requests = requests_by_method(before, after)
        result.messages = requests_by_method(before, after, "grpc_server_msg_received_total")
        for host in fleet:
            started = _started_at(host, 2)
            result.restart_s.append(idle_at[host.name] - started)
            reboot = next(e.at for e in host.events if e.what == "reboot")
            exited = next(e.at for e in host.events if e.what.startswith("daemon exited") and e.at >= reboot)
            result.shutdown_s.append(exited - reboot)
        _daemon_handoffs(result, monitor, fleet, t0)
        result.max_holders_seen = monitor.max_holders_seen
        result.violations = list(monitor.violations)
    finally:
        await asyncio.gather(*(h.stop() for h in fleet), return_exceptions=True)
        monitor.stop()
    return result


def _daemon_handoffs(result: Rollout, monitor: SemaphoreMonitor, fleet: list[SimulatedHost], t0: float) -> None:
    seen_at = {seen.revision: seen.at for seen in monitor.history}
    docs = [Doc(seen.revision, seen.max, frozenset(seen.holders)) for seen in monitor.history]
    events = slot_events(docs)
    first = min(docs, key=lambda d: d.revision)
    for freed, taken in pair_handoffs(events, initially_free=first.max - len(first.holders)):
        result.gaps_s.append(seen_at[taken.revision] - seen_at[freed.revision])
    acquisitions = [e for e in events if e.kind == "acquire"]
    if acquisitions:
        result.first_acquire_s = seen_at[acquisitions[0].revision] - t0
    acquired_at = {e.holder: seen_at[e.revision] for e in acquisitions}
    for host in fleet:
        reboot = next(e.at for e in host.events if e.what == "reboot")
        if host.name in acquired_at:
            result.acquire_to_reboot_s.append(reboot - acquired_at[host.name])


@dataclass
class IdleDaemon:
    window_rss_s: float
    window_cpu_s: float
    start_to_idle_s: float = 0.0
    rss_kib: int = 0
    cpu_startup_s: float = 0.0
    cpu_window_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"rss_after_s": self.window_rss_s, "vm_rss_kib": self.rss_kib,
                "cpu_window_s": self.window_cpu_s, "cpu_in_window_s": round(self.cpu_window_s, 3),
                "cpu_to_idle_s": round(self.cpu_startup_s, 3), "start_to_idle_s": round(self.start_to_idle_s, 3)}


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def start_idle_daemon(member: EtcdMember, workdir: Path) -> tuple[SimulatedHost, float]:
    """One daemon (strategy etcd-lock) with nothing to do, started and idle; returns it and its spawn time."""
    host = SimulatedHost("idle-host", workdir / "idle-host", [member.client_url],
                         options=HostOptions(key_prefix=f"bench-idle-{time.monotonic_ns() % 10**8}/"))
    await host.start()
    idle_at = await _until(lambda: _is_idle(host), 60, "the idle daemon to reach idle")
    spawned = _started_at(host, 1)
    return host, idle_at - spawned


async def measure_idle_daemon(host: SimulatedHost, start_to_idle_s: float, rss_after_s: float,
                              cpu_window_s: float) -> IdleDaemon:
    """VmRSS ``rss_after_s`` after spawn; CPU seconds (utime+stime) over ``cpu_window_s`` from idle on."""
    assert host.process is not None
    pid = host.process.pid
    result = IdleDaemon(rss_after_s, cpu_window_s, start_to_idle_s)
    spawned = _started_at(host, 1)
    idle_at = spawned + start_to_idle_s
    result.cpu_startup_s = _proc_cpu_s(pid)  # nearly all start-up: sampled soon after idle
    cpu_start = result.cpu_startup_s
    await asyncio.sleep(max(0.0, spawned + rss_after_s - time.monotonic()))
    result.rss_kib = _proc_rss_kib(pid)
    await asyncio.sleep(max(0.0, idle_at + cpu_window_s - time.monotonic()))
    result.cpu_window_s = _proc_cpu_s(pid) - cpu_start
    return result


def time_status(member: EtcdMember, runs: int) -> dict[str, Any]:
    """Wall time of `locksmithctl status` (a fresh process each time) on a group with holders and waiters."""
    key_prefix = f"bench-status-{time.monotonic_ns() % 10**8}/"
    client = _client(member.client_url, key_prefix)
    client.reset(2, client.read_raw())
    client.lock("holder-a")
    store: EtcdStore = client.store  # type: ignore[assignment]
    for name in ("waiter-1", "waiter-2", "waiter-3"):
        store.put(waiter_key(name, "", key_prefix), b'{"since": "2024-01-01T00:00:00.000+00:00"}')
    store.close()
    ctl = Path(sys.executable).parent / "locksmithctl"
    command = [str(ctl), "--endpoint", member.client_url, "--etcd-key-prefix", key_prefix, "status"]
    walls: list[float] = []
    output = ""
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        walls.append(time.perf_counter() - started)
        output = done.stdout
    return {"runs": runs, "median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
            "shows_queue": "waiter-3" in output}
