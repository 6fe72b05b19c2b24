"""Run the health checks after boot: systemd's state, required units and check commands."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from locksmithd.core.health_policy import (
    BOOT_FINISHED_SIGNAL,
    CommandResult,
    HealthObservation,
    HealthPolicy,
    HealthReport,
    Verdict,
    judge,
    pause_before_next_round_s,
    round_due,
)
from locksmithd.core.duration import format_duration
from locksmithd.core.names import printable
from locksmithd.daemon.run import HealthResult
from locksmithd.daemon.wakeup import Wakeup
from locksmithd.errors import BusError
from locksmithd.host import commands  # the one runner for checks and hooks

log = logging.getLogger("locksmithd.health")

CommandRunner = Callable[[str, float], Awaitable[CommandResult]]


class SystemdView(Protocol):
    """What the checker reads from systemd (``bus.systemd.SystemdClient`` fits)."""

    async def system_state(self) -> str: ...

    async def unit_active_state(self, name: str) -> str: ...


class SystemdChangeFeed(Protocol):
    """How the gate hears systemd's changes (``bus.systemd.SystemdChanges`` fits): ``start`` raises BusError."""

    async def start(self, on_change: Callable[[str], None]) -> None: ...

    async def stop(self) -> None: ...


def boot_clock() -> float:
    """Seconds since the kernel booted, counting suspend (``CLOCK_BOOTTIME``)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class HealthChecker:
    """Runs rounds of checks under one policy until the host is healthy or time is up.

    ``clock`` (default ``boot_clock``) gives the seconds that ``booted_at``
    and ``deadline`` are measured on; ``sleep`` waits between rounds, or
    ``wakeup`` does when given (poked by systemd's signals, it ends the wait
    early); ``run_command(path, timeout_s)`` runs one check command;
    ``on_progress`` receives the report of every round.
    """

    def __init__(
        self,
        policy: HealthPolicy,
        systemd: SystemdView,
        *,
        run_command: CommandRunner | None = None,
        clock: Callable[[], float] = boot_clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_progress: Callable[[HealthReport], None] = lambda report: None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.policy = policy
        self._wakeup = wakeup
        self._systemd = systemd
        self._run_command: CommandRunner = run_command or commands.run_command
        self._clock = clock
        self._sleep = sleep
        self._on_progress = on_progress
        self._said_no_dir = False
        self._warned_skipped: set[str] = set()

    async def check_once(self, seconds_since_boot: float) -> HealthReport:
        """One round: system state, units, then each check command in name order.

        Never raises for a failed check or an unreachable systemd: those are
        failures named in the report.
        """
        problems: list[str] = []
        system_state = None
        if self.policy.healthy_states is not None:
            try:
                system_state = await self._systemd.system_state()
            except BusError as exc:
                problems.append(printable(exc.message))
        unit_states: list[tuple[str, str]] = []
        for unit in self.policy.units:
            try:
                unit_states.append((unit, await self._systemd.unit_active_state(unit)))
            except BusError as exc:
                problems.append(printable(exc.message))
        paths, dir_problems = self._check_commands()
        problems.extend(dir_problems)
        results: list[CommandResult] = []
        for path in paths:
            results.append(await self._run_command(path, self.policy.command_timeout_s))
        seen = HealthObservation(seconds_since_boot=seconds_since_boot, system_state=system_state,
                                 unit_states=tuple(unit_states), commands=tuple(results),
                                 problems=tuple(problems))
        return judge(self.policy, seen)

    async def wait_until_healthy(self, booted_at: float, deadline: float) -> HealthReport:
        """Re-check until HEALTHY or ``deadline`` passes: at the latest every ``recheck_interval_s``
        (``pause_before_next_round_s``), at once when systemd signals a change that matters (``round_due``).

        ``booted_at`` and ``deadline`` are on the checker's clock. Returns the
        HEALTHY report, or the last round's report made final (UNHEALTHY,
        naming the failed checks, or that the system was still starting).
        A round always runs at or after the deadline before giving up.
        """
        said = ""
        while True:
            report = await self.check_once(self._clock() - booted_at)
            self._on_progress(report)
            if report.verdict is Verdict.HEALTHY:
                log.info("host is healthy")
                return report
            remaining_s = deadline - self._clock()
            if remaining_s <= 0:
                final = report.expired()
                log.warning("health checks failed at the deadline: %s", "; ".join(final.failures))
                return final
            if report.describe() != said:  # once per change, not every round
                said = report.describe()
                log.info("not healthy yet: %s", said)
            await self._pause(report, pause_before_next_round_s(self.policy, report, remaining_s))

    async def _pause(self, report: HealthReport, pause_s: float) -> None:
        """Wait ``pause_s``, or less when systemd signals a change that may alter ``report`` (``round_due``)."""
        if self._wakeup is None:
            await self._sleep(pause_s)
            return
        until = self._clock() + pause_s
        while signals := await self._wakeup.pause(pause_s):
            if round_due(report, signals):
                log.debug("systemd signalled %s: checking again", ", ".join(sorted(signals)))
                return
            pause_s = until - self._clock()
            if pause_s <= 0:
                return

    def _check_commands(self) -> tuple[list[str], list[str]]:
        """Executable regular files of the check directory in name order, and failures (``list_commands``)."""
        if not os.path.lexists(self.policy.check_dir) and not self._said_no_dir:
            log.debug("no health check directory %s: no check commands", printable(self.policy.check_dir))
            self._said_no_dir = True
        return commands.list_commands(self.policy.check_dir, "health check", self._warned_skipped, named="check")


class HealthGateOnWallClock:
    """The daemon's health gate (``daemon.run.HealthGate``): a HealthChecker measured on the wall clock.

    Check commands run with ``env`` (the daemon's ``command_environment``).
    The boot moment is the one recorded in the holder record in etcd (when
    the daemon first saw the new boot), so the soak and the timeout survive a
    daemon restart during the checks; the wall clock is what that record is
    written in.

    While it waits, and when the policy reads systemd, it follows systemd's
    changes through ``changes``: a burst of signals that may change the
    verdict (``round_due``) starts a round at once (a healthy host releases
    within about a second of becoming so; a halted host notices ``systemctl
    reset-failed`` as promptly). Without signals
    (``changes`` None or refused, logged once) the rounds come every
    ``recheck_interval_s``, which is also the pace for check commands.
    """

    def __init__(self, policy: HealthPolicy, systemd: SystemdView, *,
                 env: Mapping[str, str] | None = None, changes: SystemdChangeFeed | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.policy = policy
        self.timeout_s = policy.timeout_s
        self._systemd = systemd
        self._run_command: CommandRunner = functools.partial(commands.run_command, env=env)
        self._changes = changes
        self._clock = clock
        self._sleep = sleep
        self._said_no_signals = False

    async def wait_until_healthy(self, booted_at: datetime, give_up_at: datetime,
                                 progress: Callable[[str], None]) -> HealthResult:
        wakeup = Wakeup(final=frozenset({BOOT_FINISHED_SIGNAL}), sleep=self._sleep)  # the boot's end: at once
        following = await self._follow(wakeup)
        try:
            # The healthy round is not progress: the caller releases the slot with it at once, and a note
            # of it in the holder record would be an etcd write (and a read) just before that release.
            checker = HealthChecker(self.policy, self._systemd, run_command=self._run_command, clock=self._clock,
                                    sleep=self._sleep, wakeup=wakeup, on_progress=lambda report: None
                                    if report.verdict is Verdict.HEALTHY else progress(report.describe()))
            report = await checker.wait_until_healthy(booted_at.timestamp(), give_up_at.timestamp())
        finally:
            if following and self._changes is not None:
                await self._changes.stop()
        passed = report.verdict is Verdict.HEALTHY
        summary = "all checks passed" if passed else "; ".join(report.failures) or report.describe()
        return HealthResult(passed, summary)

    async def _follow(self, wakeup: Wakeup) -> bool:
        """Start hearing systemd's changes (True), or say once why not and rely on the interval (False)."""
        if self._changes is None or not self.policy.needs_systemd:
            return False
        try:
            await self._changes.start(wakeup.poke)
        except BusError as error:
            level = logging.DEBUG if self._said_no_signals else logging.WARNING
            self._said_no_signals = True
            interval = format_duration(timedelta(seconds=self.policy.recheck_interval_s))
            log.log(level, "%s; re-checking health every %s instead", error.one_line(), interval)
            return False
        return True
