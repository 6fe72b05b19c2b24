"""locksmithctl against hostile stored bytes and hostile arguments: nothing spoofable, one line, right exit code."""

from __future__ import annotations

import json
import os
import pty
import time
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from locksmithd.errors import ExitCode
from locksmithd.etcd.keys import semaphore_key, waiters_prefix
from tests.ctl_runner import has_control, on, one_error_line, raw_get, raw_put, run_ctl

DEAD = "http://127.0.0.1:9"

HOSTILE_IDS = {
    "newline": "a\nWAITING fake",
    "carriage return": "a\rb",
    "CSI clear screen": "\x1b[2J",
    "OSC title": "\x1b]0;pwned\x07",
    "line separator": "a\u2028b",
    "bidi override": "\u202eab",
    "NEL": "a\x85b",
    "space": "a b",
    "empty": "",
    "too long": "x" * 300,
}


def document(holders: list[str], max_slots: int, **extra: object) -> bytes:
    return json.dumps({"semaphore": max_slots - len(holders), "max": max_slots, "holders": holders, **extra}).encode()


@pytest.mark.parametrize("name", sorted(HOSTILE_IDS))
def test_stored_holder_breaking_the_rule_is_corrupt(etcd_node: EtcdCluster, key_prefix: str, name: str) -> None:
    """A stored holder id that breaks the naming rule makes every command exit 8 with one escaped line."""
    key = semaphore_key("", key_prefix)
    raw = document(["good", HOSTILE_IDS[name]], 3)
    raw_put(etcd_node, key, raw)
    for args in (["status"], ["status", "--json"], ["lock", "c"], ["unlock", "good"], ["set-max", "4"]):
        result = on(etcd_node, key_prefix, *args)
        assert result.returncode == ExitCode.CORRUPT_DOCUMENT, (args, result.stderr)
        line = one_error_line(result)
        assert "holders[1]" in line and "reset --max N --yes" in line and len(line) < 600
        assert result.stdout == b""
    assert raw_get(etcd_node, key) == raw


@pytest.mark.parametrize("name", sorted(HOSTILE_IDS))
def test_raw_status_is_one_escaped_line(etcd_node: EtcdCluster, key_prefix: str, name: str) -> None:
    """status --raw prints any stored bytes as exactly one line with every control character escaped."""
    key = semaphore_key("", key_prefix)
    raw = b'{"semaphore":0,"max":1,"holders":["' + HOSTILE_IDS[name].encode() + b'"]}\n\xff\x1b[31m'
    raw_put(etcd_node, key, raw)
    result = on(etcd_node, key_prefix, "status", "--raw")
    assert result.returncode == 0 and result.stderr == b""
    text = result.stdout.decode("utf-8")
    assert text.count("\n") == 1 and text.endswith("\\n\\xff\\x1b[31m\n") and not has_control(text)
    assert raw_get(etcd_node, key) == raw


def test_raw_bytes_writes_exact_bytes_but_never_to_a_terminal(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """status --raw-bytes writes the stored bytes unchanged to a pipe and refuses a terminal (exit 2)."""
    key = semaphore_key("", key_prefix)
    raw = document(["a"], 1) + b"\n\x1b]0;pwned\x07\xff"
    raw_put(etcd_node, key, raw)
    piped = on(etcd_node, key_prefix, "status", "--raw-bytes")
    assert piped.returncode == 0 and piped.stdout == raw
    master, slave = pty.openpty()
    try:
        on_tty = on(etcd_node, key_prefix, "status", "--raw-bytes", stdout_fd=slave)
        os.set_blocking(master, False)
        try:
            written = os.read(master, 65536)
        except BlockingIOError:
            written = b""
    finally:
        os.close(slave)
        os.close(master)
    assert on_tty.returncode == ExitCode.USAGE and "terminal" in one_error_line(on_tty)
    assert b"pwned" not in written
    assert raw_get(etcd_node, key) == raw


def test_absent_document_with_raw_options(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """--raw says (absent); --raw-bytes writes nothing and says so on stderr; neither creates the key."""
    assert on(etcd_node, key_prefix, "status", "--raw").stdout == b"(absent)\n"
    result = on(etcd_node, key_prefix, "status", "--raw-bytes")
    assert result.returncode == 0 and result.stdout == b"" and "absent" in one_error_line(result)
    assert on(etcd_node, key_prefix, "status", "--json", "--raw").returncode == ExitCode.USAGE
    assert raw_get(etcd_node, semaphore_key("", key_prefix)) is None


def test_hostile_waiter_keys_are_reported_once_and_not_listed(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Waiter keys whose id breaks the rule are ignored with one warning line; status shows one line per host."""
    raw_put(etcd_node, semaphore_key("", key_prefix), document(["h1", "h2"], 3))
    prefix = waiters_prefix("", key_prefix)
    import etcd3

    client = etcd3.client(host="127.0.0.1", port=int(etcd_node.client_urls[0].rsplit(":", 1)[1]))
    lease = client.lease(60)  # a live host's key: a key bound to no lease is passed over (and reported)
    client.put(prefix + "w1", json.dumps({"since": "\x1b]0;x\x07\nWAITING fake 1"}).encode(), lease=lease)
    for tail in (b"evil\nWAITING", b"%0Afake", b"%FF", b"\xff\xfe", b"%1B%5D0%3Bt%07", b"%77%31"):
        raw_put(etcd_node, prefix.encode() + tail, b"{}")
    result = on(etcd_node, key_prefix, "status", "--waiters")
    assert result.returncode == 0
    warning = one_error_line(result)
    assert "ignored waiter key" in warning and "and 5 more" in warning
    lines = result.stdout.decode("utf-8").splitlines()
    assert not has_control(result.stdout.decode("utf-8"))
    assert lines[:7] == ["Available: 1", "Max: 3", "", "MACHINE ID", "h1", "h2", ""]
    assert lines[7].startswith("Waiting: 1 (head w1,") and lines[8] == ""
    assert len(lines) == 11 and lines[9].startswith("WAITING") and lines[10].split()[:2] == ["w1", "1"]
    assert "\\x1b]0;x\\x07\\nWAITING" in lines[10]
    report = json.loads(on(etcd_node, key_prefix, "status", "--json").stdout)
    assert [w["id"] for w in report["waiting"]] == ["w1"] and report["holders"] == ["h1", "h2"]
    lease.revoke()
    client.close()


def test_semaphore_full_error_is_escaped(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The 'semaphore full' line lists holders escaped and bounded."""
    holders = [f"host-{i:03d}-{'y' * 200}" for i in range(5)]
    raw_put(etcd_node, semaphore_key("", key_prefix), document(holders, 5))
    result = on(etcd_node, key_prefix, "lock", "other")
    assert result.returncode == ExitCode.SEMAPHORE_FULL
    assert len(one_error_line(result)) < 500


UTF8_OPTIONS = [
    ("--group", "LOCKSMITHCTL_GROUP", ()),
    ("--etcd-key-prefix", "LOCKSMITHCTL_ETCD_KEY_PREFIX", ()),
    ("--etcd-username", "LOCKSMITHCTL_ETCD_USERNAME", ("--etcd-password", "pw")),
    ("--etcd-password", "LOCKSMITHCTL_ETCD_PASSWORD", ("--etcd-username", "user")),
    ("--endpoint", "LOCKSMITHCTL_ENDPOINT", ()),
]


@pytest.mark.parametrize("flag, variable, companion", UTF8_OPTIONS)
@pytest.mark.parametrize("as_env", [False, True], ids=["flag", "env"])
def test_non_utf8_option_is_one_usage_line(etcd_node: EtcdCluster, key_prefix: str, flag: str, variable: str,
                                           companion: tuple[str, ...], as_env: bool) -> None:
    """Bytes that are not UTF-8 in an option or its variable: exit 2 naming it, value never echoed."""
    bad = b"secret\xff"
    base: list[str | bytes] = ["--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix, *companion]
    if as_env:  # a flag would win over the variable, so the tested option is given only by the variable
        if flag in base:
            del base[base.index(flag):base.index(flag) + 2]
        result = run_ctl(*base, "lock", "a", env={variable: bad})
    else:
        result = run_ctl(*base, flag, bad, "lock", "a")
    assert result.returncode == ExitCode.USAGE, result.stderr
    line = one_error_line(result)
    assert f"{variable if as_env else flag} is not valid UTF-8" in line and "secret" not in line
    assert raw_get(etcd_node, semaphore_key("", key_prefix)) is None


@pytest.mark.parametrize("command", ["lock", "unlock"])
def test_non_utf8_id_argument(etcd_node: EtcdCluster, key_prefix: str, command: str) -> None:
    """An ID argument that is not UTF-8 is refused (exit 2) before etcd is touched."""
    result = on(etcd_node, key_prefix, command, b"ab\xff")
    assert result.returncode == ExitCode.USAGE and "ID is not valid UTF-8" in one_error_line(result)
    assert raw_get(etcd_node, semaphore_key("", key_prefix)) is None


def test_non_utf8_bus_address_is_usage_error() -> None:
    """DBUS_SYSTEM_BUS_ADDRESS that is not UTF-8: exit 2 naming it."""
    result = run_ctl("send-need-reboot", env={"DBUS_SYSTEM_BUS_ADDRESS": b"unix:path=/run/\xff"})
    assert result.returncode == ExitCode.USAGE
    assert "DBUS_SYSTEM_BUS_ADDRESS is not valid UTF-8" in one_error_line(result)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "0", "-1", "0.01", "301"])
def test_etcd_timeout_out_of_bounds(etcd_node: EtcdCluster, key_prefix: str, value: str) -> None:
    """--etcd-timeout outside 0.1..300 s (NaN and infinity included) is a usage error, flag or env."""
    for result, label in ((on(etcd_node, key_prefix, "--etcd-timeout", value, "status"), "--etcd-timeout"),
                          (on(etcd_node, key_prefix, "status", env={"LOCKSMITHCTL_ETCD_TIMEOUT": value}),
                           "LOCKSMITHCTL_ETCD_TIMEOUT")):
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert label in one_error_line(result) and result.stdout == b""


@pytest.mark.parametrize("value", ["1_000", "+3", " 3", "3 ", "\u0663", "-1", "1000001", "", "0x10", "1e3",
                                   "3.0", "9" * 5000, "\x1b]0;t\x07"])
def test_bad_counts_are_refused_before_contacting_etcd(value: str) -> None:
    """set-max N and reset --max N take plain ASCII digits 0..1000000, checked with etcd down (exit 2 at once)."""
    for args in (["set-max", value], ["reset", "--max", value, "--yes"]):
        started = time.monotonic()
        result = run_ctl("--endpoint", DEAD, "--etcd-timeout", "30", *args)
        assert result.returncode == ExitCode.USAGE, (args, result.stderr)
        line = one_error_line(result)
        assert ("N" if args[0] == "set-max" else "--max") in line and len(line) < 300
        assert time.monotonic() - started < 15


def test_count_limits_are_accepted(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """0, leading zeros and exactly 1000000 are plain digits in range."""
    assert on(etcd_node, key_prefix, "set-max", "1000000").returncode == 0
    assert on(etcd_node, key_prefix, "set-max", "007").stdout == b"Old: 1000000\nNew: 7\n"
    assert on(etcd_node, key_prefix, "set-max", "0").returncode == 0


@pytest.mark.parametrize("group", ["a\nb", "a b", "\x1b]0;t\x07", "g" * 300, "tab\there"])
def test_group_follows_the_naming_rule(etcd_node: EtcdCluster, key_prefix: str, group: str) -> None:
    """A group name breaking the holder-id rule is refused (exit 2), from the flag or LOCKSMITHCTL_GROUP."""
    for result in (on(etcd_node, key_prefix, "--group", group, "lock", "a"),
                   on(etcd_node, key_prefix, "lock", "a", env={"LOCKSMITHCTL_GROUP": group})):
        assert result.returncode == ExitCode.USAGE
        line = one_error_line(result)
        assert "group name" in line and len(line) < 300


@pytest.mark.parametrize("command", ["lock", "unlock"])
def test_long_id_is_echoed_bounded(etcd_node: EtcdCluster, key_prefix: str, command: str) -> None:
    """A 10 KB ID is refused with exit 2 echoing about 100 characters of it."""
    result = on(etcd_node, key_prefix, command, "i" * 10_000)
    assert result.returncode == ExitCode.USAGE
    line = one_error_line(result)
    assert "i" * 90 in line and "i" * 120 not in line


def test_unlock_of_newline_id_points_to_reset(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A stored newline holder cannot be unlocked: unlock refuses the id and names the repair, reset."""
    key = semaphore_key("", key_prefix)
    raw_put(etcd_node, key, document(["a\nb"], 1))
    refused = on(etcd_node, key_prefix, "unlock", "a\nb")
    assert refused.returncode == ExitCode.USAGE and "reset --max N --yes" in one_error_line(refused)
    corrupt = on(etcd_node, key_prefix, "status")
    assert corrupt.returncode == ExitCode.CORRUPT_DOCUMENT and "reset" in one_error_line(corrupt)
    assert on(etcd_node, key_prefix, "reset", "--max", "1", "--yes").returncode == 0
    assert on(etcd_node, key_prefix, "status").stdout.decode().splitlines() == ["Available: 1", "Max: 1"]


@pytest.mark.parametrize("args", [["frob\x1b]0;t\x07"], ["--etcd-timeout", "x\x1b[2J", "status"],
                                  ["status", "--nope"], ["help", "nope\n"], ["lock", "a", "b"]])
def test_click_errors_are_one_escaped_line(args: list[str]) -> None:
    """Unknown commands and options, bad option types: one escaped usage line, exit 2."""
    result = run_ctl(*args)
    assert result.returncode == ExitCode.USAGE and "usage:" in one_error_line(result)


def test_bad_debug_variable_is_one_line() -> None:
    """LOCKSMITHCTL_DEBUG that is not a boolean: one usage line naming it."""
    result = run_ctl("status", env={"LOCKSMITHCTL_DEBUG": "maybe\n"})
    assert result.returncode == ExitCode.USAGE and "debug" in one_error_line(result).lower()


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_machine_id_file_that_is_not_a_regular_file(etcd_node: EtcdCluster, key_prefix: str, tmp_path: Path,
                                                    kind: str) -> None:
    """A FIFO, device or directory as machine-id file is an identity error at once, never a hang."""
    path = {"fifo": tmp_path / "fifo", "device": Path("/dev/zero"), "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    result = on(etcd_node, key_prefix, "lock", env={"LOCKSMITHCTL_MACHINE_ID_FILE": str(path)}, timeout_s=20)
    assert result.returncode == ExitCode.IDENTITY and "machine-id" in one_error_line(result)
    assert raw_get(etcd_node, semaphore_key("", key_prefix)) is None


def test_output_in_a_non_utf8_locale(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Printable non-ASCII ids that the output encoding cannot carry are escaped, not a crash."""
    raw_put(etcd_node, semaphore_key("", key_prefix), document(["\u8282\u70b9"], 1))
    result = on(etcd_node, key_prefix, "status", env={"PYTHONIOENCODING": "latin-1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode("latin-1").splitlines()[-1] == "\\u8282\\u70b9"


def test_huge_setting_in_an_error_is_cut(tmp_path: Path) -> None:
    """An error naming a 10 KB bus address stays one bounded line."""
    result = run_ctl("send-need-reboot", env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/{'a' * 10_000}"})
    assert result.returncode == ExitCode.BUS and len(one_error_line(result)) <= 2100
