"""Correct figures and exit codes (issue 20): the real locksmithctl (and daemon) against a real etcd.

Times that cannot be converted, waiter keys that break the waiter rule, values
too large for one gRPC reply, halt and resume over a corrupt record, and
status's locksmith layout. Each case checks the exit code, the one line and
that nothing stored changed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SimulatedHost, wait_for
from harness.ports import free_port
from locksmithd.errors import ExitCode
from locksmithd.etcd.keys import halt_key, history_key, semaphore_key, waiter_key, waiters_prefix
from tests.ctl_runner import on, one_error_line, raw_put, store_for

OVERFLOWING = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59Z"]
"""Valid ISO 8601 times with no usable UTC value: the first two overflow on conversion, the third on any addition."""


def stored(cluster: EtcdCluster, prefix: str) -> list[tuple[str, int, int]]:
    """Every key under ``prefix`` with its create and mod revisions: what "nothing changed" compares
    (any write, a rewrite of the same bytes included, moves a key's mod revision)."""
    store = store_for(cluster)
    try:
        return [(e.key, e.create_revision, e.mod_revision) for e in store.read_prefix(prefix, keys_only=True)]
    finally:
        store.close()


def figure(text: str, name: str) -> float | None:
    """One sample of the default group from an exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("group") == "":
                return sample.value
    return None


def halt_record(since: str) -> bytes:
    return json.dumps({"group": "", "reason": "planted", "by": "operator", "since": since}).encode()


@pytest.mark.parametrize("since", OVERFLOWING)
def test_an_unconvertible_time_in_a_halt_record_is_a_corrupt_record(etcd_node: EtcdCluster, key_prefix: str,
                                                                    since: str) -> None:
    """status exits 8 naming it, halt writes nothing and exits 8, resume removes it, says so and records it."""
    assert on(etcd_node, key_prefix, "set-max", "2").returncode == 0
    raw_put(etcd_node, halt_key("", key_prefix), halt_record(since))
    before = stored(etcd_node, key_prefix)
    for args in (("status",), ("status", "--json"), ("metrics",), ("history",)):
        result = on(etcd_node, key_prefix, *args)
        if args[0] == "status":
            assert result.returncode == ExitCode.CORRUPT_DOCUMENT, (args, result.stderr)
            line = one_error_line(result)
            assert "halt record" in line and "'since'" in line and "out of range" in line, line
        else:  # a corrupt halt is a figure for metrics; history does not read it
            assert result.returncode == 0, (args, result.stderr)
    halted = on(etcd_node, key_prefix, "halt", "--reason", "again")
    assert halted.returncode == ExitCode.CORRUPT_DOCUMENT and halted.stdout == b""
    line = one_error_line(halted)
    assert "halt record" in line and "not written" in line and "locksmithctl resume" in line, line
    assert stored(etcd_node, key_prefix) == before  # neither reading nor the refused halt changed anything

    resumed = on(etcd_node, key_prefix, "resume")
    assert resumed.returncode == 0 and resumed.stderr == b"", resumed.stderr
    assert resumed.stdout.decode().startswith("resumed the default group: removed a corrupt halt record (")
    assert resumed.stdout.count(b"\n") == 1
    events = json.loads(on(etcd_node, key_prefix, "history", "--json").stdout)
    assert events[-1]["event"] == "resume" and "removed a corrupt halt record" in events[-1]["detail"]
    status = on(etcd_node, key_prefix, "status")
    assert status.returncode == 0 and status.stdout == b"Available: 2\nMax: 2\n"


@pytest.mark.parametrize("moment", OVERFLOWING)
def test_an_unconvertible_time_in_a_holder_record_is_a_corrupt_document(etcd_node: EtcdCluster, key_prefix: str,
                                                                       moment: str) -> None:
    """status, lock and unlock exit 8 naming the holder record; the stored bytes are unchanged."""
    raw_put(etcd_node, semaphore_key("", key_prefix), json.dumps(
        {"semaphore": 0, "max": 1, "holders": ["h1"], "holder_info": {"h1": {"deadline": moment}}}).encode())
    before = stored(etcd_node, key_prefix)
    for args in (("status",), ("status", "--json"), ("lock", "h2"), ("unlock", "h1")):
        result = on(etcd_node, key_prefix, *args)
        assert result.returncode == ExitCode.CORRUPT_DOCUMENT, (args, result.stderr)
        line = one_error_line(result)
        assert "holder record of 'h1'" in line and "'deadline'" in line and "out of range" in line, line
    metrics = on(etcd_node, key_prefix, "metrics")
    assert metrics.returncode == 0 and figure(metrics.stdout.decode(), "locksmithd_group_document_corrupt") == 1
    assert stored(etcd_node, key_prefix) == before


def test_an_unconvertible_time_in_one_history_entry_is_counted_unreadable(etcd_node: EtcdCluster,
                                                                          key_prefix: str) -> None:
    """history shows the readable events and warns of the others in one line; exit 0; nothing written."""
    for args in (("set-max", "2"), ("lock", "h1"), ("unlock", "h1")):
        assert on(etcd_node, key_prefix, *args).returncode == 0
    for slot, at in enumerate(OVERFLOWING, start=50):
        raw_put(etcd_node, history_key(slot, "", key_prefix),
                json.dumps({"at": at, "host": "h9", "event": "lock", "detail": ""}).encode())
    before = stored(etcd_node, key_prefix)
    for args in (("history",), ("history", "--json")):
        result = on(etcd_node, key_prefix, *args)
        assert result.returncode == 0, result.stderr
        assert one_error_line(result) == (f"locksmithctl: warning: {len(OVERFLOWING)} history entries could not be "
                                          "read and are left out\n")
    events = json.loads(on(etcd_node, key_prefix, "history", "--json").stdout)
    assert [e["event"] for e in events] == ["set-max", "lock", "unlock"]
    assert stored(etcd_node, key_prefix) == before


def test_window_at_an_unconvertible_time_is_a_usage_error() -> None:
    """locksmithctl window --at with a time that has no UTC value: exit 2, one line, no traceback."""
    from tests.ctl_runner import run_ctl

    for moment in OVERFLOWING:
        result = run_ctl("window", "--conf", "/dev/null", "--at", moment)
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert "out of range" in one_error_line(result)


def plant_waiters(cluster: EtcdCluster, prefix: str, good: list[str]) -> None:
    """``good`` waiters on a lease, then keys every reader must pass over: 3 lease-less, 2 badly named
    (a lower-case escape, an escaped space) on a lease, and a holder's leftover key on a lease."""
    store = store_for(cluster)
    try:
        lease = store.grant_lease(300)
        for holder in good:
            store.put(waiter_key(holder, "", prefix), b'{"since":"2026-12-06T10:00:00.000+00:00"}', lease)
        for holder in ("no-lease-1", "no-lease-2", "no-lease-3"):
            store.put(waiter_key(holder, "", prefix), b"{}")
        for escaped in ("a%2fb", "a+b"):
            store.put(waiters_prefix("", prefix) + escaped, b"{}", lease)
        store.put(waiter_key("holder-x", "", prefix), b"{}", lease)
    finally:
        store.close()


def test_status_metrics_and_the_daemon_count_the_same_waiters(tmp_path: Path, etcd_node: EtcdCluster,
                                                              key_prefix: str) -> None:
    """A real daemon at the head plus 9 planted waiters, and 6 keys that are no waiters: all three say 10."""
    assert on(etcd_node, key_prefix, "set-max", "1").returncode == 0
    assert on(etcd_node, key_prefix, "lock", "holder-x").returncode == 0
    address = f"127.0.0.1:{free_port()}"
    host = SimulatedHost("figures-head", tmp_path / "h", etcd_node.client_urls,
                         options=HostOptions(key_prefix=key_prefix,
                                             extra_env={"LOCKSMITHD_METRICS_ADDRESS": address}))

    def daemon_waiters() -> float | None:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
                return figure(response.read().decode(), "locksmithd_group_waiters")
        except OSError:
            return None

    async def scenario() -> float | None:
        await host.start()
        try:
            host.need_reboot()
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "waiting-for-lock", 30, "queued")
            await asyncio.to_thread(plant_waiters, etcd_node, key_prefix, [f"good-{i}" for i in range(9)])
            # The daemon reuses a group read for 5 s: wait for one made after the keys were planted.
            end = asyncio.get_running_loop().time() + 30
            while (seen := await asyncio.to_thread(daemon_waiters)) != 10:
                assert asyncio.get_running_loop().time() < end, f"the daemon counts {seen} waiters"
                await asyncio.sleep(0.5)
            before = await asyncio.to_thread(stored, etcd_node, key_prefix)
            status = await asyncio.to_thread(on, etcd_node, key_prefix, "status")
            as_json = await asyncio.to_thread(on, etcd_node, key_prefix, "status", "--json")
            metrics = await asyncio.to_thread(on, etcd_node, key_prefix, "metrics")
            assert status.returncode == 0 and as_json.returncode == 0 and metrics.returncode == 0
            assert "\nWaiting: 10 (head figures-head," in status.stdout.decode()
            assert len(json.loads(as_json.stdout)["waiting"]) == 10
            assert figure(metrics.stdout.decode(), "locksmithd_group_waiters") == 10
            assert await asyncio.to_thread(stored, etcd_node, key_prefix) == before
            return await asyncio.to_thread(daemon_waiters)
        finally:
            await host.stop()

    assert asyncio.run(scenario()) == 10


BIG_VALUE = b'{"since":"2026-12-06T10:00:00.000+00:00","pad":"' + b"x" * 100_000 + b'"}'


def test_large_values_never_make_a_reader_report_etcd_unavailable(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """200 waiters and 200 history entries of 100 kB each (20 MB apiece, five times gRPC's reply limit):
    status, status --waiters, metrics and history answer, and change nothing."""
    assert on(etcd_node, key_prefix, "set-max", "1").returncode == 0
    store = store_for(etcd_node)
    try:
        lease = store.grant_lease(300)
        for n in range(200):
            store.put(waiter_key(f"big-{n:03d}", "", key_prefix), BIG_VALUE, lease)
            store.put(history_key(n + 10, "", key_prefix),
                      json.dumps({"at": "2026-12-06T10:00:00.000Z", "host": f"big-{n:03d}", "event": "lock",
                                  "detail": "y" * 100_000}).encode())
        before = stored(etcd_node, key_prefix)
        metrics = on(etcd_node, key_prefix, "metrics")
        assert metrics.returncode == 0, metrics.stderr
        assert figure(metrics.stdout.decode(), "locksmithd_group_waiters") == 200
        status = on(etcd_node, key_prefix, "status")
        assert status.returncode == 0 and b"\nWaiting: 200 (head big-000," in status.stdout, status.stderr
        listed = on(etcd_node, key_prefix, "status", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [w["id"] for w in json.loads(listed.stdout)["waiting"]] == [f"big-{n:03d}" for n in range(200)]
        history = on(etcd_node, key_prefix, "history", "--json")
        assert history.returncode == 0, history.stderr
        events = json.loads(history.stdout)
        assert len(events) == 201 and events[-1]["host"] == "big-199"  # set-max, then the planted ones
        assert stored(etcd_node, key_prefix) == before
    finally:
        store.revoke_lease(lease)
        store.close()


def test_halt_and_resume_over_a_corrupt_record_with_a_corrupt_document(etcd_node: EtcdCluster,
                                                                       key_prefix: str) -> None:
    """Both records corrupt: halt exits 8 (not a write conflict) and writes nothing; resume removes the halt
    record alone, says so, and warns in one line that no history event could be written."""
    raw_put(etcd_node, semaphore_key("", key_prefix), b"{not json")
    raw_put(etcd_node, halt_key("", key_prefix), halt_record(OVERFLOWING[0]))
    before = stored(etcd_node, key_prefix)
    halted = on(etcd_node, key_prefix, "halt", "--reason", "again")
    assert halted.returncode == ExitCode.CORRUPT_DOCUMENT and halted.stdout == b""
    assert "halt record" in one_error_line(halted)
    assert stored(etcd_node, key_prefix) == before
    resumed = on(etcd_node, key_prefix, "resume")
    assert resumed.returncode == 0
    assert resumed.stdout.decode().startswith("resumed the default group: removed a corrupt halt record (")
    assert "no history event was written" in one_error_line(resumed)
    assert [key for key, _, _ in stored(etcd_node, key_prefix)] == [semaphore_key("", key_prefix)]
    assert on(etcd_node, key_prefix, "resume").stdout == b"the default group is not halted (nothing to resume)\n"
