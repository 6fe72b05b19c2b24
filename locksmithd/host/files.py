"""Small files read without ever blocking: a FIFO or a device where a file is expected is refused."""

from __future__ import annotations

import os
import stat

from locksmithd.core.file_kinds import NotRegularFile

__all__ = ["NotRegularFile", "read_regular_file"]


def read_regular_file(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file at ``path`` (``core.file_kinds.ReadFile``).

    Opened without blocking (a FIFO would otherwise wedge the caller, which
    then ignores even SIGTERM) and read only when it is a regular file
    (procfs files are). Raises NotRegularFile for anything else, and OSError
    when it cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        data = b""
        while len(data) < limit and (chunk := os.read(fd, limit - len(data))):
            data += chunk
        return data
    finally:
        os.close(fd)
