"""The faults a run injects: etcd members killed or paused, hosts cut off, replies lost, daemons killed."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from typing import Callable

from locksmithd.core.update_status import NEED_REBOOT
from harness.fault_fleet import FaultyFleet
from harness.fleet import SimulatedHost
from harness.services import SimulatedServices


def _services(host: SimulatedHost) -> SimulatedServices:
    assert host.services is not None, f"{host.name} is not started"
    return host.services


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


class _OnAcquireFault(Fault):
    """A fault that strikes while a slot is held or, with ``on_acquire``, at the instant a queued host
    sends the write that takes its slot (its kind then gains the suffix ``-on-acquire``)."""

    def __init__(self, rng: random.Random, on_acquire: bool, on_acquire_kind: str) -> None:
        super().__init__(rng)
        self.on_acquire = on_acquire
        if on_acquire:
            self.kind = on_acquire_kind
            self.queues_late = True

    def prepare(self, fleet: FaultyFleet) -> None:
        if self.on_acquire:
            self.target = fleet.claim(self.rng)

    async def _trip_on_acquire(self, fleet: FaultyFleet, action: Callable[[], None]) -> str | None:
        """Run ``action`` as a queued host's acquire write passes its proxy; the host's name, or None if skipped."""
        async with fleet.pick(_waiting(fleet), "a queued host", self.targets()) as host:
            if host is None:
                fleet.skip(self.kind, "no queued host before the end")
                return None
            tripped = fleet.arm_tripwire(host, holds=True, action=action)
            fired = await fleet.until(tripped.is_set, "the tripwire")
            fleet.reconnect(host)
            if not fired:
                fleet.skip(self.kind, f"{host.name} wrote nothing before the end")
                return None
            return host.name


class LeaderKill(_OnAcquireFault):
    """SIGKILL the etcd leader while a slot is held, or (``on_acquire``) at the instant a queued host
    sends the write that takes its slot; restart it after ``down_s``."""

    kind = "leader-kill"

    def __init__(self, rng: random.Random, down_s: float, on_acquire: bool = False) -> None:
        super().__init__(rng, on_acquire, "leader-kill-on-acquire")
        self.down_s = down_s

    async def run(self, fleet: FaultyFleet) -> None:
        if not await fleet.until(lambda: bool(fleet.holders()), "a holder"):
            return fleet.skip(self.kind, "roll-out ended first")
        async with fleet.cluster_lock:
            leader = await asyncio.to_thread(fleet.cluster.leader)
            when = f"holders {fleet.holders()}"
            if self.on_acquire:
                pid = leader.pid
                assert pid is not None
                name = await self._trip_on_acquire(fleet, lambda: os.kill(pid, signal.SIGKILL))
                if name is None:
                    return
                when = f"as {name} took a slot"
            await asyncio.to_thread(leader.kill)
            fleet.record(self.kind, f"killed leader {leader.name} for {self.down_s:.1f}s, {when}")
            await asyncio.sleep(self.down_s)
            await asyncio.to_thread(leader.restart, 60)


class MemberPause(_OnAcquireFault):
    """SIGSTOP a member (the leader or a follower) for ``pause_s``: while a slot is held, or (``on_acquire``)
    at the instant a queued host sends the write that takes its slot."""

    kind = "member-pause"

    def __init__(self, rng: random.Random, pause_s: float, leader: bool, on_acquire: bool = False) -> None:
        super().__init__(rng, on_acquire, "member-pause-on-acquire")
        self.pause_s, self.leader = pause_s, leader

    async def run(self, fleet: FaultyFleet) -> None:
        if not await fleet.until(lambda: bool(fleet.holders()), "a holder"):
            return fleet.skip(self.kind, "roll-out ended first")
        async with fleet.cluster_lock:
            leader = await asyncio.to_thread(fleet.cluster.leader)
            member = leader if self.leader else self.rng.choice([m for m in fleet.cluster.members if m is not leader])
            role = "leader" if member is leader else "follower"
            try:
                if self.on_acquire:
                    name = await self._trip_on_acquire(fleet, member.pause)
                    if name is None:
                        return
                    role += f" as {name} took a slot"
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
                landed = [seen.revision for seen in list(fleet.monitor.history)
                          if seen.revision > revision and (host.name in seen.holders) == (self.write == "acquire")]
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
        return lambda h: (h.boots >= 2 and fleet.reboots(h) == 1 and fleet.alive(h) and h.name in fleet.holders()
                          and fleet.state(h) in ("starting", "releasing-after-boot", "checking-health"))

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

