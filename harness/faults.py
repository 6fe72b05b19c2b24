"""Fault scenarios for a simulated fleet on a 3-member etcd cluster: the catalogue and the run engine.

A run starts hosts that reach etcd only through their own fault proxies (one
per member), makes every host need a reboot, injects each fault when its
trigger is seen (a state, a holder, a new boot), heals, and checks: never more
holders than max at any committed revision (a live watch and a replay of the
key's whole history), every host rebooted exactly once and held a slot when it
asked logind, released only after its health checks passed (they are on, as by
default: the fake systemd reports running), no halt, no slot and no waiter key
left, no daemon traceback.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from locksmithd.errors import StoreError
from locksmithd.etcd.keys import halt_key, waiters_prefix
from harness.etcd import EtcdCluster
from harness.checker import judge_history
from harness.documents import UnreadableDocument, stored_holders
from harness.fault_checker import RobustMonitor, make_store, replay_history
from harness.fault_fleet import FaultyFleet, RunConfig
from harness.fault_health import CheckFailsOnce, KillCheckingHealth, SystemdStarting
from harness.fault_kinds import (
    CutOff,
    Fault,
    KillDaemon,
    LeaderKill,
    LogindRestart,
    LostReply,
    MemberPause,
    UpdateEngineRestart,
)

__all__ = ["FAULTS_PER_RUN", "SCENARIOS", "RANDOM_FAULTS", "Fault", "FaultyFleet", "RobustMonitor", "RunConfig",
           "RunResult", "judge_history", "make_store", "random_faults", "replay_history", "run_faults"]


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
    "kill-checking-health": lambda rng, c: [KillCheckingHealth(rng)],
    "systemd-starting": lambda rng, c: [SystemdStarting(rng, starting_s=3.0)],
    "check-fails-once": lambda rng, c: [CheckFailsOnce(rng)],
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
    lambda rng, c: KillCheckingHealth(rng),
    lambda rng, c: SystemdStarting(rng, starting_s=rng.uniform(0.5, 4.0)),
    lambda rng, c: CheckFailsOnce(rng),
]
"""Fault makers with random parameters, drawn for combined runs."""


HEALTH_PASSED = "health checks passed"  # the daemon's log line before it releases after boot

FAULTS_PER_RUN = (2, 4)
"""How many faults a randomized run draws: between these two, both included."""


def random_faults(rng: random.Random, config: RunConfig, count: int | None = None) -> list[Fault]:
    """FAULTS_PER_RUN (2 to 4) faults, or ``count``, with random kinds (may repeat) and parameters from ``rng``."""
    count = count if count is not None else rng.randint(*FAULTS_PER_RUN)
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
        try:
            holders = stored_holders(stored.value if stored else None)
        except UnreadableDocument:
            return False  # the verdict reports it
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
    result.violations += fleet.monitor.violations + fleet.unheld_reboots + fleet.broken_rules
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
        log_text = host.log_text()
        if "Traceback" in log_text:
            result.failures.append(f"{host.name}'s daemon logged a traceback")
        if count and HEALTH_PASSED not in log_text:  # the gate must really have run, not been bypassed
            result.failures.append(f"{host.name} never logged {HEALTH_PASSED!r} after its reboot")
    if fleet.store.read(halt_key("", fleet.key_prefix)) is not None:
        result.failures.append("the group is halted at the end: a host judged itself unhealthy or a holder stale")
    stored = fleet.store.read(fleet.key)
    try:
        holders = stored_holders(stored.value if stored else None)
    except UnreadableDocument as error:
        result.failures.append(f"the semaphore document is unreadable at the end: {error}")
    else:
        if holders:
            result.failures.append(f"slots still held at the end by {list(holders)}")
    waiters = fleet.store.read_prefix(waiters_prefix("", fleet.key_prefix))
    if waiters:
        result.failures.append(f"waiter keys left: {[w.key for w in waiters]}")
