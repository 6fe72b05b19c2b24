"""The command source: a check command run every interval; exit 1 means a reboot is needed."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence

from locksmithd.core.backoff import Backoff
from locksmithd.core.health_policy import CommandResult
from locksmithd.core.names import printable
from locksmithd.errors import ConfigError
from locksmithd.sources.base import Source, SourceContext, SourceKind

log = logging.getLogger("locksmithd.sources")

NEEDED, NOT_NEEDED = 1, 0
MAX_CHECK_TIMEOUT_S = 300.0  # the check command may run for its interval, at most 5 minutes
JITTER = 0.1  # each pause is the interval plus or minus this fraction: a fleet does not run it in step
RunCommand = Callable[[Sequence[str], float], Awaitable[CommandResult]]


def next_pause_s(interval_s: float, rng: random.Random) -> float:
    """The interval with its jitter (never below half of it)."""
    return max(interval_s * (1 + rng.uniform(-JITTER, JITTER)), interval_s / 2)


class CheckCommandSource:
    """Runs ``argv`` at start and every ``interval_s`` (jittered) until it exits 1.

    Exit 1: ``on_needed(reason)`` once, then no more runs. Exit 0: not needed,
    run again after the interval. Anything else (another code, a signal, a
    timeout, a command that cannot run) is logged and retried sooner, with
    backoff up to the interval: never a reboot. ``run`` is the daemon's
    command runner (safe places only, own process group, timeout, bounded
    output); ``unsafe(path)`` says why the command's file is in an unsafe
    place (the runner's ``unsafe_place``), checked at start.
    """

    def __init__(self, argv: Sequence[str], interval_s: float, on_needed: Callable[[str], None], run: RunCommand, *,
                 timeout_s: float, key: str = "LOCKSMITHD_REBOOT_CHECK_COMMAND",
                 unsafe: Callable[[str], str | None] = lambda path: None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rng: random.Random | None = None) -> None:
        self.argv = tuple(argv)
        self.interval_s = interval_s
        self.on_needed = on_needed
        self.run = run
        self.timeout_s = timeout_s
        self.key = key
        self.unsafe = unsafe
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start checking; ConfigError (source "start-up") if the command is not found, not executable,
        or in an unsafe place (``host.commands.unsafe_place``: writable by group or others, not root's)."""
        found = shutil.which(self.argv[0])
        if found is None:
            raise ConfigError("start-up", self.key, " ".join(self.argv),
                              f"command {self.argv[0]!r} not found or not executable")
        unsafe = self.unsafe(found)
        if unsafe is not None:
            raise ConfigError("start-up", self.key, " ".join(self.argv), f"refusing to run it: {unsafe}")
        self._task = asyncio.create_task(self._loop(), name="reboot check command")

    async def stop(self) -> None:
        """Stop checking (a running command is killed by the runner); never raises."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        errors = Backoff(min(5.0, self.interval_s), self.interval_s, self.rng)
        shown = printable(" ".join(self.argv), 200)
        while True:
            result = await self.run(self.argv, self.timeout_s)
            if result.exit_code == NEEDED and not result.timed_out and result.error is None:
                output = f": {printable(result.output.strip(), 200)}" if result.output.strip() else ""
                self.on_needed(f"command: {shown} exited 1{output}")
                return
            if result.exit_code == NOT_NEEDED and not result.timed_out and result.error is None:
                errors.reset()
                log.debug("reboot check %s: no reboot needed", shown)
                await self.sleep(next_pause_s(self.interval_s, self.rng))
                continue
            pause_s = errors.next_delay_s()
            log.warning("reboot check %s failed (%s); not a reboot; trying again in %.0fs", shown,
                        _outcome(result), pause_s)
            await self.sleep(pause_s)


def _outcome(result: CommandResult) -> str:
    if result.error is not None:
        return f"could not be run: {result.error}"
    if result.timed_out:
        return f"timed out after {result.timeout_s:.0f}s"
    return f"exit {result.exit_code}"


def reboot_check_runner(env: Mapping[str, str]) -> RunCommand:
    """The check command through the daemon's one command runner (safe place, process group, timeout,
    bounded output), with ``env``."""
    from locksmithd.host.commands import run_command

    async def run(argv: Sequence[str], timeout_s: float) -> CommandResult:
        return await run_command(argv[0], timeout_s, args=argv[1:], what="reboot check", env=env)

    return run


def make(context: SourceContext) -> Source:
    """The check command of LOCKSMITHD_REBOOT_CHECK_COMMAND, every LOCKSMITHD_REBOOT_CHECK_INTERVAL."""
    from locksmithd.host.commands import unsafe_place

    settings = context.settings
    assert settings.reboot_check_command is not None  # checked by the loader
    interval_s = float(settings.source_options["reboot_check_interval_s"])  # this source's own row
    timeout_s = min(interval_s, MAX_CHECK_TIMEOUT_S)
    return CheckCommandSource(settings.reboot_check_command, interval_s, context.on_needed,
                              reboot_check_runner(context.command_env), timeout_s=timeout_s, unsafe=unsafe_place)


SOURCE = SourceKind("command", make)
