"""A private, system-like dbus-daemon for tests, demos and benchmarks."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from locksmithd.errors import BusError

DBUS_DAEMON = "/usr/bin/dbus-daemon"
DEFAULT_START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 2.0

# A system bus in all but trust: anyone may own any name and send or receive
# anything, so fake update_engine and logind can run unprivileged next to the
# daemon under test. EXTERNAL auth works for root and for any same-uid user.
_CONFIG_TEMPLATE = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket_path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """One ``dbus-daemon`` process with its own socket in its own temp dir.

    Use as a context manager, or call ``start()`` and ``stop()``. Many can run
    side by side; nothing outside the temp dir is touched.
    """

    def __init__(self, *, dbus_daemon: str = DBUS_DAEMON) -> None:
        self._dbus_daemon = dbus_daemon
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._address: str | None = None

    @property
    def address(self) -> str:
        """The bus address (``unix:path=...``); raises ``BusError`` if not running."""
        if self._address is None:
            raise BusError("private dbus-daemon is not running")
        return self._address

    @property
    def socket_path(self) -> Path:
        """Path of the listening unix socket; raises ``BusError`` if not running."""
        if self._dir is None or self._address is None:
            raise BusError("private dbus-daemon is not running")
        return self._dir / "system_bus_socket"

    @property
    def pid(self) -> int:
        """Process id of the dbus-daemon; raises ``BusError`` if not running."""
        if self._process is None:
            raise BusError("private dbus-daemon is not running")
        return self._process.pid

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> PrivateBus:
        """Start the daemon and wait until it listens; returns ``self``.

        Raises ``BusError`` (with the daemon's stderr) if it is already
        started, exits early or does not print its address in ``timeout_s``.
        """
        if self._process is not None:
            raise BusError("private dbus-daemon already started")
        self._dir = Path(tempfile.mkdtemp(prefix="locksmithd-dbus-"))
        config = self._dir / "bus.conf"
        config.write_text(
            _CONFIG_TEMPLATE.format(socket_path=self._dir / "system_bus_socket"),
            encoding="utf-8",
        )
        self._stderr = open(self._dir / "stderr", "w+b")  # noqa: SIM115 - closed in stop()
        read_fd, write_fd = os.pipe()
        try:
            self._process = subprocess.Popen(
                [
                    self._dbus_daemon,
                    "--nofork",
                    f"--print-address={write_fd}",
                    f"--config-file={config}",
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
            os.close(write_fd)
            write_fd = -1
            self._address = self._read_address(read_fd, timeout_s)
        except BaseException:
            self.stop()
            raise
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            os.close(read_fd)
        return self

    def stop(self) -> None:
        """Stop the daemon (TERM, then KILL) and remove its temp dir; idempotent."""
        process, self._process = self._process, None
        self._address = None
        if process is not None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrivateBus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_address(self, read_fd: int, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        received = b""
        while not received.endswith(b"\n"):
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise BusError(self._failure(f"printed no address within {timeout_s} s"))
            ready, _, _ = select.select([read_fd], [], [], remaining_s)
            if not ready:
                continue
            chunk = os.read(read_fd, 4096)
            if not chunk:
                raise BusError(self._failure("exited before printing its address"))
            received += chunk
        return received.decode().strip()

    def _failure(self, problem: str) -> str:
        detail = ""
        if self._stderr is not None:
            self._stderr.flush()
            self._stderr.seek(0)
            detail = self._stderr.read().decode(errors="replace").strip()
        return f"private dbus-daemon {problem}" + (f": {detail}" if detail else "")
