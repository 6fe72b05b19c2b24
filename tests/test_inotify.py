"""Directory watches on real files and real inotify, through every reader this interpreter has.

The kernel reader (ctypes) is always there; asyncinotify is there on the pip
path (``make setup``), not on Debian's packages (``make test-debian``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from locksmithd.errors import ConfigError
from locksmithd.sources import inotify
from locksmithd.sources.inotify import DirectoryWatcher, DirEvent, KernelInotify, available_backends, parse_events
from locksmithd.sources.reboot_required import RebootRequiredWatcher

BACKENDS = available_backends()
WATCH = inotify.CREATE | inotify.MOVED_TO | inotify.CLOSE_WRITE | inotify.ATTRIB | inotify.ONLYDIR \
    | inotify.DELETE_SELF | inotify.MOVE_SELF


@pytest.fixture(params=BACKENDS, ids=lambda backend: backend.backend)  # type: ignore[attr-defined]
def backend(request: pytest.FixtureRequest) -> Callable[[], DirectoryWatcher]:
    return request.param  # type: ignore[no-any-return]


async def collect(watcher: DirectoryWatcher, until: Callable[[list[DirEvent]], bool],
                  timeout_s: float = 5.0) -> list[DirEvent]:
    seen: list[DirEvent] = []

    async def read() -> None:
        async for event in watcher.events():
            seen.append(event)
            if until(seen):
                return

    await asyncio.wait_for(read(), timeout_s)
    return seen


def test_the_kernel_reader_is_always_available_and_preferred_last() -> None:
    """Without asyncinotify (Debian bookworm) the kernel reader is what open_watcher gives."""
    assert BACKENDS[-1] is KernelInotify
    watcher = inotify.open_watcher()
    try:
        assert watcher.backend == BACKENDS[0].backend  # type: ignore[attr-defined]
    finally:
        watcher.close()


def test_created_written_and_moved_in_files_are_seen_by_name(tmp_path: Path,
                                                             backend: Callable[[], DirectoryWatcher]) -> None:
    """A created file, a write closed, and a rename into the directory each give an event naming the entry."""
    async def scenario() -> list[DirEvent]:
        watcher = backend()
        try:
            watcher.add_watch(str(tmp_path), WATCH)
            (tmp_path / "new").write_text("x")
            (tmp_path.parent / f"{tmp_path.name}-elsewhere").write_text("y")
            os.rename(tmp_path.parent / f"{tmp_path.name}-elsewhere", tmp_path / "moved")
            return await collect(watcher, lambda seen: any(e.name == "moved" for e in seen))
        finally:
            watcher.close()

    seen = asyncio.run(scenario())
    assert any(e.name == "new" and e.mask & inotify.CREATE for e in seen)
    assert any(e.name == "new" and e.mask & inotify.CLOSE_WRITE for e in seen)
    assert any(e.name == "moved" and e.mask & inotify.MOVED_TO for e in seen)


def test_a_removed_directory_ends_its_watch_with_unnamed_events(tmp_path: Path,
                                                                backend: Callable[[], DirectoryWatcher]) -> None:
    """Removing the watched directory gives DELETE_SELF then IGNORED, without a name."""
    watched = tmp_path / "run"
    watched.mkdir()

    async def scenario() -> list[DirEvent]:
        watcher = backend()
        try:
            watcher.add_watch(str(watched), WATCH)
            watched.rmdir()
            return await collect(watcher, lambda seen: any(e.mask & inotify.IGNORED for e in seen))
        finally:
            watcher.close()

    seen = asyncio.run(scenario())
    assert any(e.mask & inotify.DELETE_SELF and e.name is None for e in seen)
    assert seen[-1].name is None


def test_a_name_that_is_not_utf8_is_kept_not_fatal(tmp_path: Path, backend: Callable[[], DirectoryWatcher]) -> None:
    """An entry whose name is not UTF-8 arrives decoded like os.fsdecode; the next event still comes."""
    async def scenario() -> list[DirEvent]:
        watcher = backend()
        try:
            watcher.add_watch(str(tmp_path), WATCH)
            with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9"), "wb"):
                pass
            (tmp_path / "after").write_text("")
            return await collect(watcher, lambda seen: any(e.name == "after" for e in seen))
        finally:
            watcher.close()

    seen = asyncio.run(scenario())
    assert any(e.name is not None and os.fsencode(e.name) == b"caf\xe9" for e in seen)


def test_watching_a_missing_directory_is_an_os_error_naming_it(tmp_path: Path,
                                                               backend: Callable[[], DirectoryWatcher]) -> None:
    """add_watch on a path that does not exist raises OSError(ENOENT); a file with ONLYDIR, ENOTDIR."""
    missing = tmp_path / "missing"
    a_file = tmp_path / "file"
    a_file.write_text("")
    watcher = backend()
    try:
        with pytest.raises(OSError) as info:
            watcher.add_watch(str(missing), WATCH)
        assert info.value.errno == errno.ENOENT
        with pytest.raises(OSError) as info:
            watcher.add_watch(str(a_file), WATCH)
        assert info.value.errno == errno.ENOTDIR
    finally:
        watcher.close()
        watcher.close()  # idempotent


def test_the_kernel_reader_descriptor_is_close_on_exec_and_released() -> None:
    """The descriptor does not leak into hooks and checks the daemon runs, and close releases it."""
    watcher = KernelInotify()
    fd = watcher._fd
    try:
        assert not os.get_inheritable(fd)
    finally:
        watcher.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(OSError):
        watcher.add_watch("/", WATCH)


def test_parse_events_splits_a_read_into_events() -> None:
    """One read may hold several events; names are NUL-padded, and an event without a name has None."""
    def raw(mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name) % 16) if name else b""
        return struct.pack("iIII", 1, mask, 0, len(padded)) + padded

    data = raw(inotify.CREATE, b"reboot-required") + raw(inotify.IGNORED, b"") + raw(inotify.ATTRIB, b"x")
    assert parse_events(data) == [DirEvent(inotify.CREATE, "reboot-required"), DirEvent(inotify.IGNORED, None),
                                  DirEvent(inotify.ATTRIB, "x")]


def test_the_reboot_required_watcher_sees_the_file_again_after_a_remount(
        tmp_path: Path, backend: Callable[[], DirectoryWatcher]) -> None:
    """Through each reader: the directory goes away and comes back (a /run remount), then the file appears."""
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / "reboot-required"
    told: list[str] = []

    async def scenario() -> None:
        watcher = RebootRequiredWatcher(str(path), told.append, open_watcher=backend)
        await watcher.start()
        try:
            directory.rmdir()
            await asyncio.sleep(0.3)
            directory.mkdir()
            await asyncio.sleep(1.5)  # the watch is added again within REWATCH_S
            path.write_text("")
            for _ in range(50):
                if told:
                    break
                await asyncio.sleep(0.1)
            assert told == [f"reboot-required: {path}"]
        finally:
            await watcher.stop()

    asyncio.run(scenario())


def test_the_reboot_required_watcher_refuses_a_missing_directory(tmp_path: Path,
                                                                backend: Callable[[], DirectoryWatcher]) -> None:
    """A directory that cannot be watched is a ConfigError naming the key and the path (start-up)."""
    async def scenario() -> None:
        watcher = RebootRequiredWatcher(str(tmp_path / "no" / "reboot-required"), print, open_watcher=backend)
        await watcher.start()

    with pytest.raises(ConfigError) as info:
        asyncio.run(scenario())
    assert "LOCKSMITHD_REBOOT_REQUIRED_FILE" in str(info.value) and "No such file" in str(info.value)
