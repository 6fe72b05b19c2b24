"""Faults around the health-gated release after boot: a daemon killed while checking, systemd still
starting, a check command that fails once. Each must keep safety: the host keeps its slot until healthy."""

from __future__ import annotations

import asyncio
import os
import random
import time

from harness.fault_fleet import FaultyFleet
from harness.fault_kinds import Fault
from harness.fleet import SimulatedHost
from harness.systemd_service import FakeSystemd

CHECKING = "checking-health"
SOAK_S = 2.0  # health soak of a kill-checking-health target: a window long enough to strike in
FAIL_ONCE_CHECK = "50-fails-once"


def _after_reboot(fleet: FaultyFleet, host: SimulatedHost) -> bool:
    """Its new boot's daemon runs and still holds the slot taken before the reboot."""
    return host.boots >= 2 and fleet.reboots(host) == 1 and fleet.alive(host) and host.name in fleet.holders()


def _systemd(host: SimulatedHost) -> FakeSystemd:
    assert host.services is not None and host.services.systemd is not None, f"{host.name} has no fake systemd"
    return host.services.systemd


class KillCheckingHealth(Fault):
    """SIGKILL a host's locksmithd while it checks its health after boot and start it again (same boot):
    it must pick up from etcd's holder record and release once healthy, never before."""

    kind = "kill-checking-health"

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng)
        # A soak keeps the target in checking-health for SOAK_S after boot (no check fails, so it then releases).
        fleet.host(self.target).options.extra_env["LOCKSMITHD_HEALTH_SOAK"] = f"{SOAK_S:g}s"

    async def run(self, fleet: FaultyFleet) -> None:
        ready = lambda h: _after_reboot(fleet, h) and fleet.state(h) == CHECKING  # noqa: E731
        async with fleet.pick(ready, "a host checking its health", self.targets()) as host:
            if host is None:
                return fleet.skip(self.kind, "no host checking its health before the end")
            await asyncio.sleep(self.rng.uniform(0.1, SOAK_S / 2))
            held = host.name in fleet.holders()
            state = await fleet.kill_and_respawn(host)
            fleet.record(self.kind, f"SIGKILL {host.name} checking-health (state file {state or '-'}, "
                                    f"{'holding' if held else 'not holding'}), restarted")


class SystemdStarting(Fault):
    """systemd reports ``starting`` after a host's reboot for ``starting_s``: the host checks, keeps its slot
    all that time, and releases only once systemd reports ``running``."""

    kind = "systemd-starting"

    def __init__(self, rng: random.Random, starting_s: float) -> None:
        super().__init__(rng)
        self.starting_s = starting_s

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng)

    async def run(self, fleet: FaultyFleet) -> None:
        assert self.target is not None
        host = fleet.host(self.target)
        async with fleet.host_locks[host.name]:
            if fleet.reboots(host) or host.name in fleet.holders():
                return fleet.skip(self.kind, f"{host.name} took its slot before systemd could be set starting")
            # Set before its reboot: the first boot's daemon holds nothing, so it checks nothing.
            _systemd(host).system_state = "starting"
        try:
            async with fleet.pick(lambda h: _after_reboot(fleet, h) and fleet.state(h) == CHECKING,
                                  "the host checking its health", self.targets()) as found:
                if found is None:
                    return fleet.skip(self.kind, f"{host.name} never checked its health before the end")
                await self._hold(fleet, found)
        finally:
            _systemd(host).system_state = "running"

    async def _hold(self, fleet: FaultyFleet, host: SimulatedHost) -> None:
        """Keep systemd starting for ``starting_s`` while the host must keep its slot; then let it run."""
        deadline = time.monotonic() + self.starting_s
        while time.monotonic() < deadline:
            if host.name not in fleet.holders():
                fleet.broken_rules.append(f"{host.name} released its slot while systemd reported starting")
                break
            await asyncio.sleep(0.05)
        _systemd(host).system_state = "running"
        fleet.record(self.kind, f"systemd of {host.name} reported starting for {self.starting_s:.1f}s after its "
                                f"boot; it kept its slot, then running")


class CheckFailsOnce(Fault):
    """A check command fails on its first run after the reboot and passes on the next round (well within
    the health timeout): the host keeps its slot while failing, releases after passing, and halts nothing."""

    kind = "check-fails-once"

    def prepare(self, fleet: FaultyFleet) -> None:
        self.target = fleet.claim(self.rng)
        host = fleet.host(self.target)
        failed, passed = self._markers(host)
        host.health_dir.mkdir(parents=True, exist_ok=True)
        check = host.health_dir / FAIL_ONCE_CHECK
        check.write_text("#!/bin/sh\n"
                         f"if [ -e '{failed}' ]; then touch '{passed}'; echo 'ready now'; exit 0; fi\n"
                         f"touch '{failed}'; echo 'not ready yet'; exit 1\n")
        check.chmod(0o755)

    @staticmethod
    def _markers(host: SimulatedHost) -> tuple[str, str]:
        return str(host.workdir / "check-failed"), str(host.workdir / "check-passed")

    async def run(self, fleet: FaultyFleet) -> None:
        assert self.target is not None
        host = fleet.host(self.target)
        failed, passed = self._markers(host)
        if not await fleet.until(lambda: os.path.exists(failed), f"{host.name}'s check to fail"):
            return fleet.skip(self.kind, f"{host.name}'s check never ran before the end")
        failed_at = time.monotonic()
        if host.name not in fleet.holders():
            fleet.broken_rules.append(f"{host.name} did not hold its slot when its health check failed")
        await fleet.until(lambda: host.name not in fleet.holders(), f"{host.name}'s release", stop=False)
        if not os.path.exists(passed):
            fleet.broken_rules.append(f"{host.name} released its slot before its health check passed")
        fleet.record(self.kind, f"{host.name}'s check failed once after its reboot; it kept its slot "
                                f"{time.monotonic() - failed_at:.1f}s until the check passed")
