"""Outside text never adds lines or terminal sequences: status, halt --reason, and the daemon's log lines."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import wait_for
from locksmithd.errors import ExitCode
from locksmithd.etcd.keys import halt_key, history_prefix, semaphore_key
from locksmithd.host.journal import setup_logging
from tests.ctl_runner import has_control, on, one_error_line, raw_get, raw_put
from tests.test_daemon_integration import run, start_host

HOSTILE = "rebooting\nFAKE-HOST 0s now - \x1b[2J\x1b]0;pwned\x07\u2028\u202e"


def test_status_escapes_a_holders_phase(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A stored phase with newlines and terminal sequences is one escaped mark on the holder's line."""
    key = semaphore_key("", key_prefix)
    raw = json.dumps({"semaphore": 0, "max": 1, "holders": ["h1"], "holder_info": {"h1": {
        "acquired_at": "2026-01-01T00:00:00.000Z", "deadline": "2099-01-01T00:00:00.000Z", "phase": HOSTILE,
        "health": HOSTILE}}}).encode()
    raw_put(etcd_node, key, raw)
    result = on(etcd_node, key_prefix, "status")
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    text = result.stdout.decode()
    assert not has_control(text), text
    holder_lines = [line for line in text.splitlines() if line.split(" ")[0] == "h1"]
    assert len(holder_lines) == 2, text  # locksmith's MACHINE ID list and our table, nothing more
    phase, health = holder_lines[1].split("  ")[-1].split("; ")
    assert phase.startswith("rebooting\\nFAKE-HOST 0s now - \\x1b[2J\\x1b]0;pwned") and phase.endswith("...")
    assert health == "rebooting\\nFAKE-HOST 0s now - \\x1b[2J\\x1b]0;pwned\\x07\\u2028\\u202e"
    assert not any(line.startswith("FAKE-HOST") for line in text.splitlines())
    assert raw_get(etcd_node, key) == raw


def test_halt_reason_that_is_not_utf8_is_refused(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """halt --reason with bytes that are not UTF-8: exit 2, one line naming the option, nothing stored."""
    result = on(etcd_node, key_prefix, "halt", "--reason", b"kernel \xff regression")
    assert result.returncode == ExitCode.USAGE, result.stderr
    line = one_error_line(result)
    assert "--reason is not valid UTF-8" in line and "regression" not in line
    assert result.stdout == b""
    assert raw_get(etcd_node, halt_key("", key_prefix)) is None
    assert raw_get(etcd_node, semaphore_key("", key_prefix)) is None
    assert raw_get(etcd_node, history_prefix("", key_prefix) + "0") is None


def test_daemon_log_escapes_a_stored_halt_reason(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A halt record's reason and author reach the daemon's log as one escaped line; the host does not reboot."""
    key = halt_key("", key_prefix)
    raw = json.dumps({"group": "", "reason": HOSTILE, "by": "operator", "since": "2026-01-01T00:00:00Z"}).encode()
    raw_put(etcd_node, key, raw)

    async def scenario() -> str:
        host = await start_host(tmp_path, etcd_node, "h-esc", key_prefix, needs_reboot=True)
        try:
            await wait_for(lambda: "not taking a slot" in host.log_text(), 30,
                           f"the halt noticed; log:\n{host.log_text()[-2000:]}")
            await asyncio.sleep(0.5)
            assert host.logind.reboots == []
            return host.log_text()
        finally:
            await host.stop()

    log = run(scenario)
    assert not has_control(log), log[-3000:]
    assert not any(line.startswith("FAKE-HOST") for line in log.splitlines())
    assert "rebooting\\nFAKE-HOST 0s now - \\x1b[2J" in log
    assert raw_get(etcd_node, key) == raw


def test_every_daemon_log_line_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon's handler escapes any message, even from a call site that passed outside text raw."""
    setup_logging(False)
    try:
        logging.getLogger("locksmithd.test").warning("halted by %s: %s", "op", HOSTILE)
    finally:
        logging.getLogger("locksmithd").handlers[:] = []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not has_control(err) and "rebooting\\nFAKE-HOST" in err
