"""The one runner for check commands and hooks: safe places only, clean environment, own group, timeout, bounded output.

Every command the daemon runs (health checks, hooks, the reboot check
command) runs as the daemon's user, root by default. So, as sshd's
StrictModes, cron and sudo do, a command runs only from a safe place: the
file, every directory on its way and every symlink followed must belong to
root (or the daemon's own user), and none may be writable by group or others
(a directory on the way may be when it has the sticky bit, as /tmp: then
nobody else can replace what root owns in it). A command in an unsafe place
is refused with one line naming the file and why; it never runs, and the
caller counts it as failed. Its environment is ``core.command_env.command_environment``'s
(``DaemonSettings.command_env``): never the daemon's credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import stat
from collections.abc import Mapping, Sequence

from locksmithd.core.health_policy import CommandResult
from locksmithd.core.names import printable

log = logging.getLogger("locksmithd.commands")

OUTPUT_LIMIT_BYTES = 4096
# After a command exits, how long its output pipe may stay open (a leftover
# background child holding it) before the command's process group is killed.
PIPE_GRACE_S = 1.0
# SIGKILL cannot be caught, but a process stuck in the kernel (a hung NFS
# mount) dies only when it returns from there; do not hang the daemon on it.
KILL_WAIT_S = 5.0
SHOWN_OUTPUT_CHARS = 8192  # the escaped output in one log line (escapes at most double 4 KiB)
_READ_CHUNK = 65536

def unsafe_place(path: str, *, final_may_be_sticky: bool = False) -> str | None:
    """Why running ``path`` (a command or a directory of commands) as this user is unsafe, or None.

    Checked: ``path`` and every directory above it as written (symlinks
    themselves, by their owner) and again after resolving every symlink. Each
    must be owned by root or by this process's user, and not be writable by
    group or others; a directory above ``path`` (or ``path`` itself with
    ``final_may_be_sticky``) may be when its sticky bit is set. A place that
    cannot be examined is unsafe too.
    """
    trusted = {0, os.geteuid()}
    path = os.path.abspath(path)
    for chain, look in ((_chain(path), os.lstat), (_chain(os.path.realpath(path)), os.stat)):
        for place in chain:
            try:
                info = look(place)
            except OSError as exc:
                return f"{printable(place)} cannot be examined: {exc.strerror or exc}"
            problem = _place_problem(place, info, trusted, sticky_ok=final_may_be_sticky or place != chain[0])
            if problem is not None:
                return problem
    return None


def _chain(path: str) -> list[str]:
    """``path`` and each directory above it, up to /."""
    chain = [path]
    while (parent := os.path.dirname(chain[-1])) != chain[-1]:
        chain.append(parent)
    return chain


def _place_problem(place: str, info: os.stat_result, trusted: set[int], *, sticky_ok: bool) -> str | None:
    shown = printable(place)
    if info.st_uid not in trusted:
        whose = "root" if trusted == {0} else "root or the daemon's user"
        return f"{shown} is owned by uid {info.st_uid}, not {whose}"
    if stat.S_ISLNK(info.st_mode):
        return None  # a symlink's own mode means nothing; its target is checked
    writable = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if info.st_mode & bit]
    if not writable:
        return None
    if sticky_ok and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
        return None
    return f"{shown} is writable by {' and '.join(writable)}"


def list_commands(directory: str, what: str, warned: set[str], *, named: str | None = None,
                  ) -> tuple[list[str], list[str]]:
    """Executable regular files of ``directory`` in name order, and failures; none if it is missing.

    Directories are ignored; other non-executables are skipped with one
    warning each (``warned`` remembers them). A directory in an unsafe place
    (``unsafe_place``), or an entry or directory that cannot be examined, is
    a failure naming it: a command we cannot see or trust must not pass by
    omission. Logs call a command ``what``, failures ``named`` (default ``what``).
    """
    named = named or what
    shown = printable(directory)
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{named} directory {shown} cannot be read: {exc.strerror or exc}"]
    unsafe = unsafe_place(directory)
    if unsafe is not None:
        if directory not in warned:
            warned.add(directory)
            log.warning("refusing every %s in %s: %s", what, shown, unsafe)
        return [], [f"{named} directory {shown} refused: {unsafe}"]
    paths: list[str] = []
    problems: list[str] = []
    for entry in entries:
        try:
            if entry.is_dir():
                continue
            runnable = entry.is_file() and os.access(entry.path, os.X_OK)
        except OSError as exc:
            problems.append(f"{named} {printable(entry.path)} cannot be examined: {exc.strerror or exc}")
            continue
        if runnable:
            paths.append(entry.path)
        elif entry.path not in warned:
            warned.add(entry.path)
            log.warning("skipping %s %s: not an executable regular file", what, printable(entry.path))
    return paths, problems


async def run_command(path: str, timeout_s: float, *, args: Sequence[str] = (), what: str = "health check",
                      env: Mapping[str, str] | None = None,
                      output_limit_bytes: int = OUTPUT_LIMIT_BYTES) -> CommandResult:
    """Run ``path`` (with ``args``) in its own process group, if it is in a safe place; exit 0 passes.

    ``what`` names the command in the log ("health check", "reboot check");
    ``env`` replaces the daemon's environment when given (the daemon always
    gives ``command_environment``'s).

    A bare name is looked up in the PATH of ``env`` (else the daemon's), and
    the file found is the one checked and run. A command in an unsafe place
    (``unsafe_place``) is not run: the result has ``error`` "refused: ..."
    and one warning names the file and why.
    stdout and stderr are captured together, the last ``output_limit_bytes``
    kept and logged, escaped, on one line with the command's name. After
    ``timeout_s`` the whole process group is killed. Never raises for a
    failing command (one that cannot be started is a result with ``error``);
    cancellation kills it too.
    """
    program = path if "/" in path else shutil.which(path, path=(os.environ if env is None else env).get("PATH"))
    if program is None:
        log.warning("%s %s could not be run: not found in PATH", what, printable(path))
        return CommandResult(path=path, error="not found in PATH")
    unsafe = unsafe_place(program)
    if unsafe is not None:
        log.warning("%s %s refused: %s", what, printable(path), unsafe)
        return CommandResult(path=path, error=f"refused: {unsafe}")
    read_fd, write_fd = os.pipe()
    try:
        # Our own pipe, not asyncio's PIPE: Process.wait() would also wait for
        # asyncio's pipes to close, which a leftover background child delays.
        process = await asyncio.create_subprocess_exec(
            program, *args, stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
            env=None if env is None else dict(env), start_new_session=True)
    except OSError as exc:
        os.close(read_fd)
        log.warning("%s %s could not be run: %s", what, printable(path), exc.strerror or exc)
        return CommandResult(path=path, error=exc.strerror or str(exc))
    finally:
        os.close(write_fd)
    tail = _Tail(output_limit_bytes)
    stream = asyncio.StreamReader()
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", buffering=0))
    except BaseException:  # cancelled (the daemon stopping) before the command was supervised: kill it too
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
    """Wait for the command to exit and its output to end; kill its group on timeout or cancel.

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
        log.error("command process %d did not die within %s s of SIGKILL; leaving it", process.pid, KILL_WAIT_S)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already gone


def _log_result(result: CommandResult, what: str) -> None:
    failure = result.failure()
    outcome = "passed" if failure is None else failure.removeprefix(f"check {printable(result.path)} ")
    level = logging.INFO if failure is None else logging.WARNING
    if result.output:
        log.log(level, "%s %s %s; output: %s", what, printable(result.path), outcome,
                printable(result.output, SHOWN_OUTPUT_CHARS))
    else:
        log.log(level, "%s %s %s (no output)", what, printable(result.path), outcome)


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
