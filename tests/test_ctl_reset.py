"""locksmithctl reset and the 1 MiB limit against real etcd: kept fields, bounded prompt, no self-inflicted corruption."""

from __future__ import annotations

import json
import os
import pty

import pytest

from harness.etcd import EtcdCluster
from locksmithd.core.semaphore import MAX_DOCUMENT_BYTES, Semaphore, decode
from locksmithd.errors import ExitCode
from locksmithd.etcd.keys import semaphore_key
from tests.ctl_runner import has_control, on, one_error_line, raw_get, raw_put, run_ctl


def padded(max_slots: int, holders: tuple[str, ...], size: int) -> bytes:
    """A valid document of exactly ``size`` bytes (an unknown 'pad' field fills it)."""
    base = len(Semaphore(max_slots, holders, {}, {"pad": ""}).encode())
    raw = Semaphore(max_slots, holders, {}, {"pad": "x" * (size - base)}).encode()
    assert len(raw) == size
    return raw


def stored_json(raw: bytes | None) -> dict[str, object]:
    """The stored document without our history counter (each write records a history event)."""
    document = json.loads(raw or b"")
    assert isinstance(document.pop("history_seq", 0), int)
    return document


def test_reset_keeps_unknown_fields_of_a_valid_document(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """reset drops holders and holder_info, sets max and semaphore, and keeps every other field."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, json.dumps({"semaphore": 0, "max": 1, "holders": ["a"], "holder_info": {"a": {"x": 1}},
                                        "owner": "team-x", "nested": {"k": [1, 2]}}).encode())
    result = on(etcd_node, key_prefix, "reset", "--max", "2", "--yes")
    assert result.returncode == 0, result.stderr
    assert "unknown fields kept: owner, nested" in result.stdout.decode()
    assert stored_json(raw_get(etcd_node, key)) == {"owner": "team-x", "nested": {"k": [1, 2]},
                                                         "semaphore": 2, "max": 2, "holders": []}


def test_reset_keeps_unknown_fields_of_a_corrupt_object(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A JSON object that is a corrupt semaphore (bad holder, wrong count) still keeps its unknown fields."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, json.dumps({"semaphore": 7, "max": 1, "holders": ["a\nb"], "note": "\x1b]0;t\x07"}).encode())
    result = on(etcd_node, key_prefix, "reset", "--max", "1", "--yes")
    assert result.returncode == 0 and not has_control(result.stdout.decode() + result.stderr.decode())
    assert stored_json(raw_get(etcd_node, key)) == {"note": "\x1b]0;t\x07", "semaphore": 1, "max": 1,
                                                         "holders": []}


@pytest.mark.parametrize("raw", [b"garbage", b"[1, 2]", b'{"semaphore":1,"max":1,"holders":["\xff"],"x":1}',
                                 b'{"a":' * 100_000, b""])
def test_reset_of_undecodable_document_writes_a_fresh_one(etcd_node: EtcdCluster, key_prefix: str,
                                                          raw: bytes) -> None:
    """Bytes that are not a JSON object (or not UTF-8) are replaced by a fresh document."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, raw)
    result = on(etcd_node, key_prefix, "reset", "--max", "3", "--yes")
    assert result.returncode == 0, result.stderr
    assert stored_json(raw_get(etcd_node, key)) == {"semaphore": 3, "max": 3, "holders": []}


def test_reset_drops_unknown_fields_that_cannot_fit(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """An object over 1 MiB because of an unknown field is reset without it (reset always repairs)."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, b'{"semaphore":1,"max":1,"holders":[],"pad":"' + b"x" * MAX_DOCUMENT_BYTES + b'"}')
    result = on(etcd_node, key_prefix, "reset", "--max", "1", "--yes")
    assert result.returncode == 0 and "unknown fields dropped" in result.stdout.decode() and "pad" in result.stdout.decode()
    assert stored_json(raw_get(etcd_node, key)) == {"semaphore": 1, "max": 1, "holders": []}


def test_reset_summary_is_bounded_and_escaped(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The summary before a reset shows size, max and holders (or the fault) and ~200 escaped characters."""
    key = semaphore_key("", key_prefix)
    holders = tuple(f"host-{i:04d}" for i in range(2000))
    raw_put(etcd_node, key, padded(2000, holders, MAX_DOCUMENT_BYTES))
    result = on(etcd_node, key_prefix, "reset", "--max", "1", "--yes")
    assert result.returncode == 0
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 2 and len(result.stderr) < 1000 and not has_control(result.stderr.decode())
    assert f"({MAX_DOCUMENT_BYTES} bytes): max 2000, 2000 holder(s): host-0000, host-0001" in lines[0]
    raw_put(etcd_node, key, b'{"semaphore":0,"max":1,"holders":["\x1b]0;pwned\x07\n"]}' + b"\r" * 5000)
    result = on(etcd_node, key_prefix, "reset", "--max", "1", "--yes")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 0 and len(lines) == 2 and "is corrupt: document is not valid JSON" in lines[0]
    assert len(result.stderr) < 1000 and not has_control(result.stderr.decode())


def test_reset_without_yes_and_without_terminal_is_one_line(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Not interactive and no --yes (a LOCKSMITHCTL_RESET_YES variable is no --yes): exit 13, one line, no change."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, b"garbage")
    result = on(etcd_node, key_prefix, "reset", "--max", "2")
    assert result.returncode == ExitCode.ABORTED and "--yes" in one_error_line(result)
    stray = on(etcd_node, key_prefix, "reset", "--max", "2", env={"LOCKSMITHCTL_RESET_YES": "1"})
    assert stray.returncode == ExitCode.ABORTED  # command options have no automatic variables
    assert raw_get(etcd_node, key) == b"garbage"


@pytest.mark.parametrize("answer, code", [(b"n\n", ExitCode.ABORTED), (b"\x04", ExitCode.ABORTED), (b"y\n", 0)])
def test_reset_prompt_on_a_terminal(etcd_node: EtcdCluster, key_prefix: str, answer: bytes, code: int) -> None:
    """On a terminal reset shows the escaped summary and asks; 'n' or end of input abort (exit 13), 'y' resets."""
    key = semaphore_key("", key_prefix)
    raw = b'{"semaphore":0,"max":1,"holders":["\x1b]0;pwned\x07"]}'
    raw_put(etcd_node, key, raw)
    master, slave = pty.openpty()
    try:
        os.write(master, answer)
        result = on(etcd_node, key_prefix, "reset", "--max", "2", stdin_fd=slave)
    finally:
        os.close(slave)
        os.close(master)
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Drop all holders and reset" in err and "pwned" in err and not has_control(err)
    assert "Traceback" not in err
    if code:
        assert raw_get(etcd_node, key) == raw and "locksmithctl: aborted: " in err.splitlines()[-1]
    else:
        assert stored_json(raw_get(etcd_node, key))["max"] == 2


def test_lock_that_would_exceed_the_limit_is_refused(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """lock on a valid document just under 1 MiB: exit 14, one line saying how to make room, bytes unchanged."""
    key = semaphore_key("", key_prefix)
    raw = padded(2, (), MAX_DOCUMENT_BYTES - 10)
    raw_put(etcd_node, key, raw)
    result = on(etcd_node, key_prefix, "lock", "a")
    assert result.returncode == ExitCode.DOCUMENT_TOO_LARGE
    assert "nothing was written" in one_error_line(result)
    assert raw_get(etcd_node, key) == raw
    assert on(etcd_node, key_prefix, "status").stdout.decode().splitlines()[:2] == ["Available: 2", "Max: 2"]


def test_set_max_that_would_exceed_the_limit_is_refused(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """set-max adding digits to a document exactly at 1 MiB: exit 14, bytes unchanged, still decodable."""
    key = semaphore_key("", key_prefix)
    raw = padded(9, ("a",), MAX_DOCUMENT_BYTES)
    raw_put(etcd_node, key, raw)
    result = on(etcd_node, key_prefix, "set-max", "10")
    assert result.returncode == ExitCode.DOCUMENT_TOO_LARGE and "limit" in one_error_line(result)
    assert raw_get(etcd_node, key) == raw and decode(raw).max == 9
    assert on(etcd_node, key_prefix, "set-max", "8").returncode == 0  # same size: allowed


def test_help_lists_exit_code_14() -> None:
    """locksmithctl --help lists every exit code, the new 'document too large' included."""
    result = run_ctl("--help")
    text = result.stdout.decode()
    assert result.returncode == 0
    for code in ExitCode:
        assert f"{code.value:>2}  {code.name.lower().replace('_', ' ')}" in text
    assert "14  document too large" in text
