"""The reboot-required source: Debian's /run/reboot-required, noticed through inotify on its directory."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from locksmithd.sources import inotify
from locksmithd.sources.inotify import DirectoryWatcher
from locksmithd.core.names import printable
from locksmithd.errors import ConfigError
from locksmithd.host.files import NotRegularFile, read_regular_file
from locksmithd.sources.base import SourceKind

log = logging.getLogger("locksmithd.sources")

DEFAULT_PATH = "/run/reboot-required"
MAX_PACKAGES_BYTES = 65536
SHOWN_PACKAGES = 20
REWATCH_S = 1.0  # after the directory went away (/run remounted): how often to try watching it again
BOOT_SLACK_S = 10.0  # a file this much older than the boot is from before it (allows for clock jitter)


def boot_time() -> float:
    """When this boot began, in wall-clock seconds: now minus the time since boot (suspends included)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


_FILE_EVENTS = inotify.CREATE | inotify.MOVED_TO | inotify.CLOSE_WRITE | inotify.ATTRIB
_GONE_EVENTS = inotify.IGNORED | inotify.UNMOUNT | inotify.DELETE_SELF | inotify.MOVE_SELF


class RebootRequiredWatcher:
    """Calls ``on_needed(reason)`` once when ``path`` exists (at start, or within a second of appearing).

    Not for a directory there, nor for a file last written before this boot
    (``booted_at``, wall-clock seconds): a reboot must clear the request, else
    the host would reboot at every start.

    The directory is watched, not the file, so a file created before the
    start, or after the directory is remounted or recreated (the watch is
    added again), is seen. The reason names the file and the packages listed
    in ``path + ".pkgs"`` when present.
    """

    def __init__(self, path: str, on_needed: Callable[[str], None], key: str = "LOCKSMITHD_REBOOT_REQUIRED_FILE",
                 booted_at: Callable[[], float] = boot_time,
                 open_watcher: Callable[[], DirectoryWatcher] = inotify.open_watcher):
        self.path = os.path.abspath(path)
        self.directory = os.path.dirname(self.path)
        self.name = os.path.basename(self.path)
        self.on_needed = on_needed
        self.key = key
        self._inotify: DirectoryWatcher | None = None
        self._open_watcher = open_watcher
        self._task: asyncio.Task[None] | None = None
        self._told = False
        self._said_directory = False
        self._said_old = False
        self.booted_at = booted_at

    async def start(self) -> None:
        """Watch the directory, then look once (no window between the two).

        Raises ConfigError (source "start-up") naming the key and path when the
        directory cannot be watched (missing, unreadable, no inotify).
        """
        try:
            self._inotify = self._open_watcher()
            self._watch()
        except OSError as exc:
            self.close()
            raise ConfigError("start-up", self.key, self.path,
                              f"cannot watch {self.directory}: {exc.strerror or exc}") from None
        log.info("watching %s for %s (inotify through %s)", self.directory, self.name, self._inotify.backend)
        self._check()
        self._task = asyncio.create_task(self._follow(), name="reboot-required watcher")

    async def stop(self) -> None:
        """Stop watching; never raises."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.close()

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def _watch(self) -> None:
        assert self._inotify is not None
        self._inotify.add_watch(self.directory, _FILE_EVENTS | inotify.ONLYDIR | inotify.DELETE_SELF | inotify.MOVE_SELF)

    async def _follow(self) -> None:
        assert self._inotify is not None
        async for event in self._inotify.events():
            if event.mask & inotify.Q_OVERFLOW or event.name == self.name:
                self._check()
            elif event.mask & _GONE_EVENTS and event.name is None:
                await self._rewatch()

    async def _rewatch(self) -> None:
        """The directory's watch ended (unmounted, removed): watch it again once it is back, then look."""
        log.warning("%s went away (remounted?); watching it again when it is back", self.directory)
        while True:
            try:
                self._watch()
            except OSError:
                await asyncio.sleep(REWATCH_S)
                continue
            log.info("watching %s again", self.directory)
            self._check()
            return

    def _check(self) -> None:
        if self._told or not os.path.lexists(self.path):
            return
        if os.path.isdir(self.path):  # a directory made there later is no request (the loader refuses one at start)
            if not self._said_directory:
                self._said_directory = True
                log.warning("%s is a directory, not the file that means a reboot is needed: ignored", self.path)
            return
        if self._from_before_this_boot():
            return
        self._told = True
        packages = read_packages(self.path + ".pkgs")
        reason = f"reboot-required: {self.path}"
        if packages:
            more = f" and {len(packages) - SHOWN_PACKAGES} more" if len(packages) > SHOWN_PACKAGES else ""
            reason += f" (packages: {', '.join(packages[:SHOWN_PACKAGES])}{more})"
        self.on_needed(reason)


    def _from_before_this_boot(self) -> bool:
        """True (logged once) for a file last written before this boot: the reboot did not clear it, so
        counting it again would reboot the host at every start (a path that survives reboots)."""
        try:
            modified = os.stat(self.path).st_mtime
        except OSError:
            return False
        if modified >= self.booted_at() - BOOT_SLACK_S:
            return False
        if not self._said_old:
            self._said_old = True
            log.warning("%s was written before this boot, so the reboot did not clear it: not a request for "
                        "another reboot (remove it, or keep %s on a file system emptied at boot such as /run)",
                        self.path, self.key)
        return True


def read_packages(path: str) -> list[str]:
    """The distinct package names listed in ``path`` (one a line), escaped; [] when it is missing or unreadable.

    Opened without blocking and read only when it is a regular file: a FIFO
    or a device there must never wedge the daemon (it would stop answering
    even SIGTERM); it is named in one warning and ignored.
    """
    try:
        data = read_regular_file(path, MAX_PACKAGES_BYTES)
    except NotRegularFile:
        log.warning("ignoring %s: not a regular file", printable(path))
        return []
    except OSError:
        return []
    names = (printable(line.decode("utf-8", "backslashreplace").strip(), 100) for line in data.splitlines())
    return list(dict.fromkeys(name for name in names if name))


SOURCE = SourceKind("reboot-required", lambda context: RebootRequiredWatcher(context.settings.reboot_required_file,
                                                                             context.on_needed))
