"""Directory watches through inotify: asyncinotify when installed, else a small reader on the kernel API.

Debian bookworm has no asyncinotify, and neither inotify library it ships fits
(README, "Dependencies and why"), so without asyncinotify the kernel's three
calls are made through ctypes: ``inotify_init1`` (non-blocking, close-on-exec),
``inotify_add_watch``, and ``read`` on the descriptor when asyncio says it is
readable. The kernel returns whole events only, so a read needs no buffering.
Both readers give the same ``DirEvent`` values with the kernel's mask bits.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

try:
    import asyncinotify as _asyncinotify
except ImportError:  # Debian bookworm: not packaged; the kernel reader below is used
    _asyncinotify = None  # type: ignore[assignment]

# The kernel's mask bits (linux/inotify.h), the same in both readers.
ATTRIB = 0x00000004
CLOSE_WRITE = 0x00000008
MOVED_TO = 0x00000080
CREATE = 0x00000100
DELETE_SELF = 0x00000400
MOVE_SELF = 0x00000800
UNMOUNT = 0x00002000
Q_OVERFLOW = 0x00004000
IGNORED = 0x00008000
ONLYDIR = 0x01000000

_NONBLOCK = os.O_NONBLOCK
_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
_READ_BYTES = 65536  # at least one event with the longest name (16 + 256 bytes); usually many


@dataclass(frozen=True)
class DirEvent:
    """One inotify event: the kernel's ``mask``; ``name`` is the entry in the watched directory, or None."""

    mask: int
    name: str | None


class DirectoryWatcher(Protocol):
    """An inotify instance: add watches, iterate events, close (which ends nothing already iterating)."""

    backend: str

    def add_watch(self, path: str, mask: int) -> None:
        """Watch ``path``; raises OSError (with errno and the path) when it cannot be watched."""

    def events(self) -> AsyncIterator[DirEvent]:
        """Every event of every watch, as it comes."""

    def close(self) -> None:
        """Release the instance; idempotent."""


class KernelInotify:
    """inotify through ctypes and the running asyncio loop; no thread, no polling."""

    backend = "kernel"

    def __init__(self) -> None:
        libc = _libc()
        fd = libc.inotify_init1(_NONBLOCK | _CLOEXEC)
        if fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        self._fd = fd

    def add_watch(self, path: str, mask: int) -> None:
        if self._fd < 0:
            raise OSError(9, os.strerror(9), path)  # EBADF: closed
        if _libc().inotify_add_watch(self._fd, os.fsencode(path), mask) < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), path)

    async def events(self) -> AsyncIterator[DirEvent]:
        loop = asyncio.get_running_loop()
        fd = self._fd
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                try:
                    data = os.read(fd, _READ_BYTES)
                except BlockingIOError:
                    continue
                for event in parse_events(data):
                    yield event
        finally:
            loop.remove_reader(fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def parse_events(data: bytes) -> list[DirEvent]:
    """The events of one read from an inotify descriptor (names decoded like ``os.fsdecode``)."""
    found: list[DirEvent] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        _, mask, _, length = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        raw = data[start:start + length].rstrip(b"\0")
        found.append(DirEvent(mask, os.fsdecode(raw) if raw else None))
        offset = start + length
    return found


class AsyncInotify:
    """The same interface over asyncinotify (installed by ``make setup`` and pip, not by the Debian package)."""

    backend = "asyncinotify"

    def __init__(self) -> None:
        if _asyncinotify is None:
            raise RuntimeError("asyncinotify is not installed")
        self._inotify: Any = _asyncinotify.Inotify()

    def add_watch(self, path: str, mask: int) -> None:
        assert _asyncinotify is not None
        self._inotify.add_watch(path, _asyncinotify.Mask(mask))

    async def events(self) -> AsyncIterator[DirEvent]:
        async for event in self._inotify:
            yield DirEvent(int(event.mask), None if event.name is None else str(event.name))

    def close(self) -> None:
        self._inotify.close()


def available_backends() -> list[Callable[[], DirectoryWatcher]]:
    """The readers this interpreter can use, the preferred first."""
    return ([AsyncInotify] if _asyncinotify is not None else []) + [KernelInotify]


def open_watcher() -> DirectoryWatcher:
    """A new inotify instance: asyncinotify when installed, else the kernel reader.

    Raises OSError when the kernel refuses (no inotify, too many instances).
    """
    return available_backends()[0]()


_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_init1.restype = ctypes.c_int
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
        _LIBC = libc
    return _LIBC
