"""The coordinator state file (/run/update-engine/coordinator.conf) and its host-wide lock."""

from __future__ import annotations

import fcntl
import os
import shlex

from locksmithd.core.host_defaults import DEFAULT_STATE_FILE as DEFAULT_PATH
from locksmithd.errors import AlreadyRunning, LocksmithError


class CoordinatorFile:
    """Writes ``NAME=``, ``STRATEGY=``, ``STATE=`` atomically; holds an exclusive lock for life.

    The lock is taken on ``<path>.lock`` (the state file itself is replaced by
    rename on every write, so it cannot carry the lock). A second coordinator
    on the host gets AlreadyRunning naming the path.
    """

    def __init__(self, path: str = DEFAULT_PATH, name: str = "locksmithd") -> None:
        self.path = path
        self.name = name
        self._lock_fd: int | None = None

    def acquire(self) -> None:
        """Create the file's directory if needed (that one only) and take the lock.

        Only the last directory is created, as ``/run/update-engine`` is: a
        mistyped path must not make a whole tree of directories. Raises
        AlreadyRunning if another coordinator holds the lock, LocksmithError
        if the lock file cannot be opened.
        """
        directory = os.path.dirname(self.path) or "."
        try:
            if not os.path.isdir(directory):
                try:
                    os.mkdir(directory, 0o755)
                except FileExistsError:  # another coordinator made it first: the lock decides
                    pass
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LocksmithError(f"cannot open state file lock {self.path}.lock: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another update coordinator holds {self.path}.lock; "
                                 "only one may run on a host") from None
        self._lock_fd = fd

    def write(self, strategy: str, state: str, detail: str = "") -> None:
        """Replace the file atomically with shell-sourceable assignments."""
        lines = [f"NAME={shlex.quote(self.name)}", f"STRATEGY={shlex.quote(strategy)}",
                 f"STATE={shlex.quote(state)}"]
        if detail:
            lines.append(f"DAEMON_STATE={shlex.quote(detail)}")
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            raise LocksmithError(f"cannot write state file {self.path}: {exc.strerror}") from exc

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def read_state_file(path: str) -> dict[str, str]:
    """Parse a coordinator file back into a dict (for tests and the simulated hosts of the harness)."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if "=" in line:
                key, _, raw = line.strip().partition("=")
                parsed = shlex.split(raw)
                values[key] = parsed[0] if parsed else ""
    return values
