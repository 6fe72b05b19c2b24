"""Run the health checks after boot: systemd's state, required units and check commands."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from locksmithd.core.health_policy import (
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
from locksmithd.daemon.run import HealthResult
from locksmithd.daemon.wakeup import Wakeup
from locksmithd.errors import BusError

log = logging.getLogger("locksmithd.health")

OUTPUT_LIMIT_BYTES = 4096
# After a check exits, how long its output pipe may stay open (a leftover
# background child holding it) before the check's process group is killed.
PIPE_GRACE_S = 1.0
# SIGKILL cannot be caught, but a process stuck in the kernel (a hung NFS
# mount) dies only when it returns from there; do not hang the daemon on it.
KILL_WAIT_S = 5.0
_READ_CHUNK = 65536

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
        self._run_command: CommandRunner = run_command or run_check_command
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
                problems.append(exc.message)
        unit_states: list[tuple[str, str]] = []
        for unit in self.policy.units:
            try:
                unit_states.append((unit, await self._systemd.unit_active_state(unit)))
            except BusError as exc:
                problems.append(exc.message)
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
            log.debug("no health check directory %s: no check commands", self.policy.check_dir)
            self._said_no_dir = True
        return list_commands(self.policy.check_dir, "health check", self._warned_skipped, named="check")


def list_commands(directory: str, what: str, warned: set[str], *, named: str | None = None,
                  ) -> tuple[list[str], list[str]]:
    """Executable regular files of ``directory`` in name order, and failures; none if it is missing.

    Directories are ignored; other non-executables are skipped with one
    warning each (``warned`` remembers them). An entry or directory that
    cannot be examined is a failure naming it: a command we cannot see must
    not pass by omission. Logs call a command ``what``, failures ``named`` (default ``what``).
    """
    named = named or what
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{named} directory {directory} cannot be read: {exc.strerror or exc}"]
    paths: list[str] = []
    problems: list[str] = []
    for entry in entries:
        try:
            if entry.is_dir():
                continue
            runnable = entry.is_file() and os.access(entry.path, os.X_OK)
        except OSError as exc:
            problems.append(f"{named} {entry.path} cannot be examined: {exc.strerror or exc}")
            continue
        if runnable:
            paths.append(entry.path)
        elif entry.path not in warned:
            warned.add(entry.path)
            log.warning("skipping %s %s: not an executable regular file", what, entry.path)
    return paths, problems


async def run_check_command(path: str, timeout_s: float, *, args: Sequence[str] = (), what: str = "health check",
                            env: Mapping[str, str] | None = None,
                            output_limit_bytes: int = OUTPUT_LIMIT_BYTES) -> CommandResult:
    """Run ``path`` (with ``args``) in its own process group; exit 0 is healthy.

    ``what`` names the command in the log ("health check", "reboot check");
    ``env`` replaces the daemon's environment when given.

    stdout and stderr are captured together, the last ``output_limit_bytes``
    kept and logged with the check's name. After ``timeout_s`` the whole
    process group is killed. Never raises for a failing check (a command that
    cannot be started is a result with ``error``); cancellation kills it too.
    """
    read_fd, write_fd = os.pipe()
    try:
        # Our own pipe, not asyncio's PIPE: Process.wait() would also wait for
        # asyncio's pipes to close, which a leftover background child delays.
        process = await asyncio.create_subprocess_exec(
            path, *args, stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
            env=None if env is None else dict(env), start_new_session=True)
    except OSError as exc:
        os.close(read_fd)
        log.warning("%s %s could not be run: %s", what, path, exc.strerror or exc)
        return CommandResult(path=path, error=exc.strerror or str(exc))
    finally:
        os.close(write_fd)
    tail = _Tail(output_limit_bytes)
    stream = asyncio.StreamReader()
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", buffering=0))
    except BaseException:  # cancelled (the daemon stopping) before the check was supervised: kill it too
        await asyncio.shield(_kill_and_reap(process))
        raise
    reader = asyncio.ensure_future(tail.drain(stream))
    try:
        timed_out = await _supervise(process, reader, timeout_s)
    finally:
        reader.cancel()
        transport.close()
    result = CommandResult(path=path, exit_code=None if timed_out else process.returncode,
                           timed_out=timed_out, timeout_s=timeout_s, output=tail.text())
    _log_result(result, what)
    return result


async def _supervise(process: asyncio.subprocess.Process, reader: asyncio.Future[None],
                     timeout_s: float) -> bool:
    """Wait for the check to exit and its output to end; kill its group on timeout or cancel.

    Returns whether it timed out.
    """
    timed_out = False
    try:
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            timed_out = True
            await _kill_and_reap(process)
        try:
            await asyncio.wait_for(asyncio.shield(reader), PIPE_GRACE_S)
        except TimeoutError:
            _kill_group(process.pid)  # a leftover child still holds the output pipe
    finally:
        if process.returncode is None:  # cancelled while running
            await asyncio.shield(_kill_and_reap(process))
    return timed_out


async def _kill_and_reap(process: asyncio.subprocess.Process) -> None:
    _kill_group(process.pid)
    try:
        await asyncio.wait_for(process.wait(), KILL_WAIT_S)
    except TimeoutError:
        log.error("health check process %d did not die within %s s of SIGKILL; leaving it",
                  process.pid, KILL_WAIT_S)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone


def _log_result(result: CommandResult, what: str) -> None:
    failure = result.failure()
    outcome = "passed" if failure is None else failure.removeprefix(f"check {result.path} ")
    level = logging.INFO if failure is None else logging.WARNING
    if result.output:
        log.log(level, "%s %s %s; output:\n%s", what, result.path, outcome, result.output)
    else:
        log.log(level, "%s %s %s (no output)", what, result.path, outcome)


class _Tail:
    """Keeps the last ``limit`` bytes read from a stream, counting what it dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self._dropped = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            self._data += chunk
            if len(self._data) > self._limit:
                excess = len(self._data) - self._limit
                del self._data[:excess]
                self._dropped += excess

    def text(self) -> str:
        text = self._data.decode(errors="replace").rstrip("\n")
        return f"[{self._dropped} earlier bytes dropped]\n{text}" if self._dropped else text


class HealthGateOnWallClock:
    """The daemon's health gate (``daemon.run.HealthGate``): a HealthChecker measured on the wall clock.

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
                 changes: SystemdChangeFeed | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.policy = policy
        self.timeout_s = policy.timeout_s
        self._systemd = systemd
        self._changes = changes
        self._clock = clock
        self._sleep = sleep
        self._said_no_signals = False

    async def wait_until_healthy(self, booted_at: datetime, give_up_at: datetime,
                                 progress: Callable[[str], None]) -> HealthResult:
        wakeup = Wakeup(sleep=self._sleep)
        following = await self._follow(wakeup)
        try:
            checker = HealthChecker(self.policy, self._systemd, clock=self._clock, sleep=self._sleep,
                                    on_progress=lambda report: progress(report.describe()), wakeup=wakeup)
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
