"""locksmithctl halt, resume and history against a real etcd."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.etcd import EtcdCluster
from locksmithd.errors import ExitCode

CTL = [sys.executable, "-m", "locksmithd.ctl.main"]


def on(cluster: EtcdCluster, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args],
                          capture_output=True, text=True, timeout=30)


def test_halt_stops_lock_and_resume_lifts_it(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """halt -> lock refused (exit 15, naming the reason) -> status shows it first -> resume -> lock works."""
    assert on(etcd_node, key_prefix, "halt", "--reason", "kernel 6.9 breaks NICs").returncode == 0
    refused = on(etcd_node, key_prefix, "lock", "h1")
    assert refused.returncode == ExitCode.HALTED and "kernel 6.9 breaks NICs" in refused.stderr
    assert refused.stderr.count("\n") == 1
    status = on(etcd_node, key_prefix, "status")
    assert status.stdout.splitlines()[0].startswith("HALTED since ") and "by operator" in status.stdout
    document = json.loads(on(etcd_node, key_prefix, "status", "--json").stdout)
    assert document["halt"]["reason"] == "kernel 6.9 breaks NICs" and document["halt"]["by"] == "operator"
    again = on(etcd_node, key_prefix, "halt", "--reason", "something else")
    assert again.returncode == 0 and "already halted" in again.stdout and "kernel 6.9" in again.stdout
    assert on(etcd_node, key_prefix, "resume").returncode == 0
    assert "not halted" in on(etcd_node, key_prefix, "resume").stdout
    assert on(etcd_node, key_prefix, "lock", "h1").returncode == 0
    assert json.loads(on(etcd_node, key_prefix, "status", "--json").stdout)["halt"] is None


def test_group_after_the_command_and_bad_values(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """--group works after the command (as the issue writes it) and before; bad values are usage errors."""
    assert on(etcd_node, key_prefix, "halt", "--reason", "maintenance", "--group", "db").returncode == 0
    assert on(etcd_node, key_prefix, "--group", "db", "lock", "h1").returncode == ExitCode.HALTED
    assert on(etcd_node, key_prefix, "lock", "h1").returncode == 0  # the default group is not halted
    assert on(etcd_node, key_prefix, "--group", "db", "resume").returncode == 0
    for args in (("halt", "--reason", "   "), ("halt", "--reason", "x", "--group", "a b"),
                 ("history", "--limit", "-1"), ("history", "--group", "bad\nname")):
        result = on(etcd_node, key_prefix, *args)
        assert result.returncode == ExitCode.USAGE and result.stderr.count("\n") == 1, (args, result.stderr)


def test_history_records_operator_actions_newest_last(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Every operator command is an event; --limit keeps the newest; --json carries the same."""
    for args in (("set-max", "2"), ("lock", "h1"), ("halt", "--reason", "why not"), ("resume",),
                 ("unlock", "h1")):
        assert on(etcd_node, key_prefix, *args).returncode == 0, args
    events = json.loads(on(etcd_node, key_prefix, "history", "--json").stdout)
    assert [e["event"] for e in events] == ["set-max", "lock", "halt", "resume", "unlock"]
    assert events[1]["host"] == "h1" and events[2]["detail"] == "why not"
    text = on(etcd_node, key_prefix, "history", "--limit", "2").stdout.splitlines()
    assert len(text) == 3 and "resume" in text[1] and "unlock" in text[2]


def test_a_bad_holder_record_is_refused_and_left_alone(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A holder record with a mistyped deadline: status exits 8 naming it, one line, bytes unchanged."""
    from locksmithd.etcd.client import EtcdStore
    from locksmithd.etcd.keys import semaphore_key
    from locksmithd.etcd.connection import EtcdSettings, parse_endpoints

    store = EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(etcd_node.client_urls, "test", "endpoint")))
    key = semaphore_key("", key_prefix)
    raw = json.dumps({"semaphore": 0, "max": 1, "holders": ["h1"],
                      "holder_info": {"h1": {"deadline": 1700000000}}}).encode()
    try:
        store.put(key, raw)
        for args in (("status",), ("lock", "h2"), ("unlock", "h1"), ("halt", "--reason", "x")):
            result = on(etcd_node, key_prefix, *args)
            if args[0] == "halt":  # halting needs no readable document: it only ever stops reboots
                assert result.returncode == 0, result.stderr
                continue
            assert result.returncode == ExitCode.CORRUPT_DOCUMENT, (args, result.stderr)
            assert "holder record of 'h1'" in result.stderr and result.stderr.count("\n") == 1
        stored = store.read(key)
        assert stored is not None and stored.value == raw
    finally:
        store.close()
