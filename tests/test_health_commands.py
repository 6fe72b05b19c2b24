"""The one command runner (host/commands.py): real subprocesses, exit codes, timeouts that kill the group, bounded output."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from locksmithd.host.commands import run_command


def script(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    """Write an executable shell script ``name`` into ``directory``."""
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(mode)
    return path


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_dead(pid: int, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while alive(pid):
            await asyncio.sleep(0.01)


def test_exit_zero_passes_and_output_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Exit 0 passes; stdout and stderr are captured together and logged with the check's name."""
    check = script(tmp_path, "10-ok", "echo to-stdout; echo to-stderr >&2; exit 0")
    with caplog.at_level(logging.INFO, logger="locksmithd.commands"):
        result = asyncio.run(run_command(str(check), 10.0))
    assert result.passed and result.exit_code == 0 and result.failure() is None
    assert result.output == "to-stdout\nto-stderr"
    records = [r for r in caplog.records if r.name == "locksmithd.commands"]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert f"health check {check} passed; output: to-stdout\\nto-stderr" == records[0].getMessage()


def test_nonzero_exit_fails_naming_the_check(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A non-zero exit is a failure 'check PATH exited N', logged as a warning with its output."""
    check = script(tmp_path, "20-disk", "echo 'disk 97% full'; exit 1")
    with caplog.at_level(logging.INFO, logger="locksmithd.commands"):
        result = asyncio.run(run_command(str(check), 10.0))
    assert not result.passed
    assert result.failure() == f"check {check} exited 1"
    assert result.output == "disk 97% full"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert caplog.records[0].getMessage() == f"health check {check} exited 1; output: disk 97% full"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """After the timeout the check and its children are killed, and the check timed out."""
    pids = tmp_path / "pids"
    check = script(tmp_path, "30-hang", f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; echo started; wait")

    async def scenario() -> None:
        started = time.monotonic()
        result = await run_command(str(check), 0.5)
        assert time.monotonic() - started < 5.0
        assert result.timed_out and result.exit_code is None
        assert result.failure() == f"check {check} timed out after 500ms"
        assert result.output == "started"
        for pid in map(int, pids.read_text().split()):
            await wait_dead(pid)

    asyncio.run(scenario())


def test_leftover_background_child_does_not_hold_the_check(tmp_path: Path) -> None:
    """A check that exits but leaves a child holding its output returns after a short grace."""
    pid_file = tmp_path / "pid"
    check = script(tmp_path, "40-leaky", f"sleep 300 & echo $! > {pid_file}; echo done")

    async def scenario() -> None:
        started = time.monotonic()
        result = await run_command(str(check), 30.0)
        assert time.monotonic() - started < 5.0
        assert result.passed and result.output == "done"
        await wait_dead(int(pid_file.read_text()))

    asyncio.run(scenario())


def test_output_is_bounded_to_its_tail(tmp_path: Path) -> None:
    """Only the last bytes are kept, with a note of how many were dropped."""
    check = script(tmp_path, "50-chatty", "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; exit 3")
    result = asyncio.run(run_command(str(check), 10.0, output_limit_bytes=100))
    head, tail = result.output.split("\n", 1)
    total = sum(len(f"line-{i}\n") for i in range(2000))
    assert head == f"[{total - 100} earlier bytes dropped]"
    assert tail.endswith("line-1999") and len(tail) == 99  # trailing newline stripped
    assert result.exit_code == 3


def test_killed_by_a_signal(tmp_path: Path) -> None:
    """A check that dies of a signal fails naming the signal."""
    check = script(tmp_path, "60-segv", "kill -SEGV $$")
    result = asyncio.run(run_command(str(check), 10.0))
    assert result.failure() == f"check {check} was killed by signal 11"


def test_a_check_that_cannot_start_is_a_failed_result(tmp_path: Path) -> None:
    """A missing interpreter is a failure saying why, not an exception."""
    check = tmp_path / "70-badshebang"
    check.write_text("#!/nonexistent/interpreter\n", encoding="utf-8")
    check.chmod(0o755)
    result = asyncio.run(run_command(str(check), 10.0))
    assert result.failure() == f"check {check} could not be run: No such file or directory"


def test_cancelling_kills_the_running_check(tmp_path: Path) -> None:
    """Cancelling the run (daemon stopping) kills the check's process group."""
    pid_file = tmp_path / "pid"
    check = script(tmp_path, "80-slow", f"echo $$ > {pid_file}; exec sleep 300")

    async def scenario() -> None:
        task = asyncio.create_task(run_command(str(check), 60.0))
        async with asyncio.timeout(5.0):
            while not pid_file.exists() or not pid_file.read_text().strip():
                await asyncio.sleep(0.01)
        pid = int(pid_file.read_text())
        assert alive(pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_dead(pid)

    asyncio.run(scenario())
