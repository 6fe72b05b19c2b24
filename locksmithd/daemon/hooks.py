"""Pre-reboot and post-boot hooks: executables run in name order with the group, holder and reason."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from locksmithd.core.health_policy import CommandResult
from locksmithd.core.names import printable
from locksmithd.host.commands import list_commands, run_command

log = logging.getLogger("locksmithd.hooks")

PRE_REBOOT = "pre-reboot"
POST_BOOT = "post-boot"
RunHook = Callable[..., Awaitable[CommandResult]]


class Hooks:
    """Runs the executables of ``pre_dir`` before a reboot and of ``post_dir`` after boot.

    Each hook runs through the daemon's command runner (``host.commands``:
    safe places only, own process group, ``timeout_s``, last 4 KiB of output
    logged) with ``environ`` (the daemon's ``command_environment``, never its
    credentials) plus LOCKSMITHD_HOOK (pre-reboot or post-boot),
    LOCKSMITHD_GROUP, LOCKSMITHD_HOLDER_ID and LOCKSMITHD_REBOOT_REASON. A
    missing directory means no hooks. A directory or hook in an unsafe place
    is a failure. The first hook that fails stops the run.
    """

    def __init__(self, pre_dir: str, post_dir: str, timeout_s: float, *, group: str, holder: str,
                 environ: Mapping[str, str], run: RunHook = run_command) -> None:
        self.dirs = {PRE_REBOOT: pre_dir, POST_BOOT: post_dir}
        self.timeout_s = timeout_s
        self.group = group
        self.holder = holder
        self.environ = dict(environ)
        self.run = run
        self._warned: set[str] = set()

    async def pre_reboot(self, reason: str) -> str | None:
        """Run the pre-reboot hooks; None when all passed, else one line naming the failed hook."""
        return await self._run_all(PRE_REBOOT, reason)

    async def post_boot(self, reason: str) -> str | None:
        """Run the post-boot hooks; None when all passed, else one line naming the failed hook."""
        return await self._run_all(POST_BOOT, reason)

    async def _run_all(self, kind: str, reason: str) -> str | None:
        what = f"{kind} hook"
        paths, problems = list_commands(self.dirs[kind], what, self._warned)
        if problems:
            return problems[0]
        env = {**self.environ, "LOCKSMITHD_HOOK": kind, "LOCKSMITHD_GROUP": self.group,
               "LOCKSMITHD_HOLDER_ID": self.holder, "LOCKSMITHD_REBOOT_REASON": reason}
        for path in paths:
            log.info("running %s %s", what, printable(path))
            result = await self.run(path, self.timeout_s, what=what, env=env)
            failure = result.failure()
            if failure is not None:
                return f"{what} {failure.removeprefix('check ')}"
        return None
