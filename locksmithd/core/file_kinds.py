"""What a file is, for errors, and what a reader of small regular files raises for anything else.

The one non-blocking reader is the host edge's (``host/files.py``); settings/ is handed it by the entry
points (it may not import host/), and both name a file's kind, and catch its refusal, through here.
"""

from __future__ import annotations

import stat
from collections.abc import Callable

ReadFile = Callable[[str, int], bytes]
"""``read(path, limit)``: at most ``limit`` bytes of the regular file at ``path``, read without blocking;
raises NotRegularFile for anything else and OSError when it cannot be opened or read."""


def file_kind(mode: int) -> str:
    """What a file is, for an error ("a regular file", "a directory", "a FIFO", ...)."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a directory or a socket, not a regular file; ``kind`` says which."""

    def __init__(self, path: str, mode: int) -> None:
        self.kind = file_kind(mode)
        super().__init__(f"{path} is {self.kind}, not a regular file")
