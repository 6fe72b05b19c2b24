"""No single key can stall a group, with real daemons: keys no host waits on, a stuck head, waiters' ages.

Real etcd, real private dbus-daemons (fake update_engine and logind) and real
locksmithd processes whose reboots the harness performs. The test plays the
key written by hand or left behind by a bug, and the hung host whose lease
lives on; it judges only what an operator can see: the daemons' logs,
``locksmithctl`` output, the keys in etcd and the reboots (every version of
the semaphore goes through the harness's safety checker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost, wait_for
from locksmithd.etcd.keys import semaphore_key, waiter_key, waiters_prefix
from tests.ctl_runner import has_control, on

IGNORED = "ignoring queue key"
SKIPPED = "skipped the head of the queue"
LONG_HEAD_TIMEOUT = "10m"  # where a test must show that no skip is involved


# -- etcd as the test sees it (python-etcd3 directly: no locksmithd code in between) --

def etcd_client(cluster: EtcdCluster) -> Any:
    """A plain python-etcd3 client, to plant keys and leases as a human or a bug would.

    ``time_retry=0`` and a quick reconnect: a call that fails while etcd restarts does not make the
    client refuse its one endpoint for the next five minutes (python-etcd3's default).
    """
    import etcd3

    port = int(cluster.client_urls[0].rsplit(":", 1)[1])
    options = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
    if not hasattr(etcd3, "Endpoint"):  # Debian's etcd3 0.12: one endpoint, no time_retry
        return etcd3.client("127.0.0.1", port, timeout=5, grpc_options=options)
    endpoint = etcd3.Endpoint("127.0.0.1", port, secure=False, time_retry=0, opts=options)
    return etcd3.MultiEndpointEtcd3Client(endpoints=[endpoint], timeout=5)


@pytest.fixture
def raw_etcd(etcd_node: EtcdCluster) -> Iterator[Any]:
    """A plain client of the shared node."""
    client = etcd_client(etcd_node)
    yield client
    client.close()


def revoke(lease: Any) -> None:
    """Revoke a test's lease; never raises (a failed test's own error must show, not this one)."""
    with contextlib.suppress(Exception):
        lease.revoke()


@pytest.fixture
def monitor(etcd_node: EtcdCluster, key_prefix: str) -> Iterator[SemaphoreMonitor]:
    """Every version of the group's semaphore, judged (max 1, never more holders than max) as it is written."""
    watcher = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=1)
    watcher.start()
    yield watcher
    watcher.stop()


def since_now() -> bytes:
    """A waiter key's value as a daemon writes it."""
    return json.dumps({"since": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}).encode()


def exists(client: Any, key: str | bytes) -> bool:
    return client.get(key)[1] is not None


def readable(client: Any) -> bool:
    """True once etcd answers this client (after a restart)."""
    try:
        client.get(semaphore_key())
    except Exception:
        return False
    return True


def stored_semaphore(client: Any, prefix: str) -> dict[str, Any]:
    """The stored document without the history counter each write bumps."""
    raw, _ = client.get(semaphore_key("", prefix))
    document: dict[str, Any] = json.loads(raw)
    assert isinstance(document.pop("history_seq", 0), int)
    return document


# -- locksmithctl ------------------------------------------------------------------

def ctl_ok(cluster: EtcdCluster, prefix: str, *args: str) -> tuple[str, str]:
    """locksmithctl ``args`` (exit 0 asserted); stdout and stderr as text."""
    result = on(cluster, prefix, *args)
    out, err = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    assert result.returncode == 0, f"locksmithctl {' '.join(args)}: exit {result.returncode}\n{out}{err}"
    return out, err


async def actl(cluster: EtcdCluster, prefix: str, *args: str) -> tuple[str, str]:
    """ctl_ok off the event loop (the simulated hosts' fake services run on it)."""
    return await asyncio.to_thread(ctl_ok, cluster, prefix, *args)


# -- the daemons -------------------------------------------------------------------

@contextlib.asynccontextmanager
async def running(tmp_path: Path, cluster: EtcdCluster, prefix: str, names: list[str], *,
                  needs_reboot: bool = False, recheck: str = "5m",
                  head_timeout: str = LONG_HEAD_TIMEOUT) -> AsyncIterator[list[SimulatedHost]]:
    """Simulated hosts running locksmithd; every one is stopped on the way out, whatever happened."""
    hosts = [SimulatedHost(name, tmp_path / name, cluster.client_urls, reboot_delay_s=0.5,
                           options=HostOptions(key_prefix=prefix, recheck_interval=recheck, retry_max="2s",
                                               extra_env={"LOCKSMITHD_QUEUE_HEAD_TIMEOUT": head_timeout}))
             for name in names]
    try:
        await asyncio.gather(*(host.start(needs_reboot=needs_reboot) for host in hosts))
        yield hosts
    finally:
        await asyncio.gather(*(host.stop() for host in hosts), return_exceptions=True)


@contextlib.asynccontextmanager
async def kept_alive(lease: Any) -> AsyncIterator[None]:
    """Refresh ``lease`` every second meanwhile, as the keep-alive of a hung host's daemon still would."""
    async def refresh() -> None:
        while True:
            with contextlib.suppress(Exception):  # etcd may be restarting: the next refresh catches up
                await asyncio.to_thread(lease.refresh)
            await asyncio.sleep(1)

    task = asyncio.create_task(refresh())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def state(host: SimulatedHost) -> str:
    return host.daemon_state().get("DAEMON_STATE", "")


def settled(host: SimulatedHost) -> bool:
    """Rebooted once, and the new boot's daemon is idle (its slot released)."""
    return len(host.logind.reboots) == 1 and host.boots >= 2 and state(host) == "idle"


def holder_runs(watcher: SemaphoreMonitor) -> list[tuple[str, ...]]:
    """The holders of each stored version, repeats in a row merged (a holder's record changes as it reboots)."""
    runs: list[tuple[str, ...]] = []
    for observation in watcher.history:
        if not runs or runs[-1] != observation.holders:
            runs.append(observation.holders)
    return runs


def lines_with(host: SimulatedHost, text: str) -> list[str]:
    return [line for line in host.log_text().splitlines() if text in line]


def tails(hosts: list[SimulatedHost]) -> str:
    return "\n".join(f"--- {host.name} (state {state(host)!r}):\n{host.log_text()[-2500:]}" for host in hosts)


async def until(predicate: Callable[[], bool], timeout_s: float, what: str, hosts: list[SimulatedHost]) -> float:
    """Poll ``predicate``; the seconds it took, or AssertionError with the daemons' log tails."""
    started = time.monotonic()
    try:
        await wait_for(predicate, timeout_s, what)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{tails(hosts)}") from None
    return time.monotonic() - started


# -- the tests -----------------------------------------------------------------------

def test_a_leaseless_key_at_the_head_is_passed_over_reported_once_and_removed_by_reset(
        tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str, raw_etcd: Any, monitor: SemaphoreMonitor) -> None:
    """A waiter key bound to no lease at the head: the daemon behind it reports it once however often it
    re-reads (2 s rechecks), takes the slot as soon as one is free, and `reset --yes` removes the key."""
    forgotten = waiter_key("forgotten", "", key_prefix)
    ctl_ok(etcd_node, key_prefix, "lock", "seed")  # max 1, held: the daemon must wait
    raw_etcd.put(forgotten, since_now())  # a plain put: bound to no lease, it would never expire
    mine = waiter_key("stall-1", "", key_prefix)

    async def scenario() -> None:
        async with running(tmp_path, etcd_node, key_prefix, ["stall-1"], needs_reboot=True, recheck="2s") as hosts:
            host = hosts[0]
            await until(lambda: exists(raw_etcd, mine) and state(host) == "waiting-for-lock", 20,
                        "the daemon to queue behind the forgotten key", hosts)
            await asyncio.sleep(5)  # two or more rechecks re-read the queue, the forgotten key included
            reports = lines_with(host, IGNORED)
            assert len(reports) == 1, tails(hosts)
            assert forgotten in reports[0] and "bound to no lease" in reports[0]
            assert host.logind.reboots == []
            await actl(etcd_node, key_prefix, "unlock", "seed")  # a free slot, the forgotten key at the head
            await until(lambda: settled(host), 25, "the daemon to take the free slot, reboot and release", hosts)
            assert len(lines_with(host, IGNORED)) == 1 and lines_with(host, SKIPPED) == []

    asyncio.run(scenario())
    assert monitor.violations == [] and monitor.max_holders_seen == 1
    assert holder_runs(monitor) == [("seed",), (), ("stall-1",), ()]
    assert exists(raw_etcd, forgotten) and not exists(raw_etcd, mine)  # the daemon leaves it to the operator
    _, warning = ctl_ok(etcd_node, key_prefix, "status")
    assert "bound to no lease" in warning and forgotten in warning
    out, _ = ctl_ok(etcd_node, key_prefix, "reset", "--max", "1", "--yes")
    assert "Removed 1 waiter key(s) bound to no lease" in out
    assert not exists(raw_etcd, forgotten)
    assert stored_semaphore(raw_etcd, key_prefix) == {"semaphore": 1, "max": 1, "holders": []}
    out, err = ctl_ok(etcd_node, key_prefix, "status")
    assert err == "" and out.splitlines()[:2] == ["Available: 1", "Max: 1"]


BAD_IDS = {  # the key's last part, and a piece of it the reports must show
    "control-character": (b"evil\x1b]0;pwned\x07", "pwned"),
    "not-utf-8": (b"\xff\xfehost", "host"),
}


@pytest.mark.parametrize("kind", list(BAD_IDS))
def test_a_key_with_an_invalid_id_at_the_head_is_passed_over_and_reported(
        tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str, raw_etcd: Any, monitor: SemaphoreMonitor,
        kind: str) -> None:
    """A waiter key whose id no host could have (on a live lease, so only the id is at fault) at the head:
    the daemon passes over it, reports it once (escaped), takes the free slot; `status` reports the key."""
    tail, shown = BAD_IDS[kind]
    planted = waiters_prefix("", key_prefix).encode() + tail
    ctl_ok(etcd_node, key_prefix, "set-max", "1")
    lease = raw_etcd.lease(60)  # outlives the test; revoked at the end
    raw_etcd.put(planted, since_now(), lease=lease)

    async def scenario() -> None:
        async with running(tmp_path, etcd_node, key_prefix, ["stall-2"], needs_reboot=True) as hosts:
            host = hosts[0]
            await until(lambda: settled(host), 25, "the daemon to take the free slot, reboot and release", hosts)
            reports = lines_with(host, IGNORED)
            assert len(reports) == 1, tails(hosts)
            assert "does not name a valid holder id" in reports[0] and shown in reports[0]
            assert not has_control(reports[0])  # the key is escaped in the log
            assert lines_with(host, SKIPPED) == []

    try:
        asyncio.run(scenario())
        assert monitor.violations == [] and monitor.max_holders_seen == 1
        assert holder_runs(monitor) == [(), ("stall-2",), ()]
        assert exists(raw_etcd, planted)  # left for the operator ('etcdctl del')
        out, warning = ctl_ok(etcd_node, key_prefix, "status", "--waiters")
        assert warning.startswith("locksmithctl: warning: ignored waiter key ") and warning.count("\n") == 1
        assert "not the key of a valid holder id" in warning and shown in warning and not has_control(warning)
        assert "Waiting:" not in out and "WAITING" not in out  # not listed as a waiter
        report = json.loads(ctl_ok(etcd_node, key_prefix, "status", "--json")[0])
        assert report["waiting"] == [] and report["holders"] == []
        assert len(report["ignored_waiter_keys"]) == 1 and shown in report["ignored_waiter_keys"][0]
    finally:
        revoke(lease)


def test_a_stuck_head_is_skipped_by_the_daemon_behind_it(
        tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str, raw_etcd: Any, monitor: SemaphoreMonitor) -> None:
    """A head whose lease lives on (a hung host) but which never takes the free slot: the daemon next in line
    removes its key after the head timeout, within a bound, and reports it; then both daemons reboot in turn."""
    head_timeout_s = 2.0
    bound_s = head_timeout_s * 3 + 10
    ctl_ok(etcd_node, key_prefix, "set-max", "1")
    wedged = waiter_key("wedged", "", key_prefix)
    lease = raw_etcd.lease(6)
    raw_etcd.put(wedged, since_now(), lease=lease)
    first, second = waiter_key("stall-a", "", key_prefix), waiter_key("stall-b", "", key_prefix)

    async def scenario() -> None:
        async with kept_alive(lease):
            async with running(tmp_path, etcd_node, key_prefix, ["stall-a", "stall-b"],
                               head_timeout=f"{head_timeout_s:.0f}s") as hosts:
                a, b = hosts
                await until(lambda: state(a) == state(b) == "idle", 20, "both daemons idle", hosts)
                asked_at = time.monotonic()
                a.need_reboot()
                await until(lambda: exists(raw_etcd, first) or not exists(raw_etcd, wedged), 10,
                            "stall-a to queue", hosts)
                assert exists(raw_etcd, wedged), f"the stuck head was skipped at once\n{tails(hosts)}"
                b.need_reboot()
                await until(lambda: exists(raw_etcd, second), 10, "stall-b to queue", hosts)
                assert exists(raw_etcd, wedged), f"the stuck head left before both queued\n{tails(hosts)}"
                await until(lambda: not exists(raw_etcd, wedged), bound_s, "the stuck head to be skipped", hosts)
                took_s = time.monotonic() - asked_at  # from the reboot need: never before the head timeout
                assert head_timeout_s * 0.75 <= took_s <= bound_s, took_s
                assert lease.remaining_ttl > 0  # removed by the daemon, not expired with its lease
                await until(lambda: settled(a) and settled(b), 40, "both daemons to reboot and release", hosts)
                skips = lines_with(a, SKIPPED)
                assert len(skips) == 1 and wedged in skips[0], tails(hosts)
                assert lines_with(b, SKIPPED) == []
                assert a.reboot_times[0] < b.reboot_times[0]

    try:
        asyncio.run(scenario())
        assert monitor.violations == [] and monitor.max_holders_seen == 1
        assert holder_runs(monitor) == [(), ("stall-a",), (), ("stall-b",), ()]
        assert not exists(raw_etcd, wedged)  # nothing put it back
    finally:
        revoke(lease)


def test_a_broken_watch_does_not_shorten_the_head_timeout(tmp_path: Path, fresh_etcd_node: EtcdCluster) -> None:
    """etcd restarts while a daemon waits next in line behind a head leaving a free slot untaken (head timeout
    60 s): the head is not skipped in the 12 s after the restart."""
    client = etcd_client(fresh_etcd_node)
    client.put(semaphore_key(), b'{"semaphore": 1, "max": 1, "holders": []}')
    lease = client.lease(10)
    wedged = waiter_key("wedged")
    client.put(wedged, since_now(), lease=lease)

    async def scenario() -> None:
        async with kept_alive(lease), running(tmp_path, fresh_etcd_node, "", ["stall-w"], needs_reboot=True,
                                              head_timeout="60s") as hosts:
            await until(lambda: exists(client, waiter_key("stall-w")), 15, "the daemon to queue", hosts)
            await asyncio.sleep(1.5)  # it has had its first look at the head
            await asyncio.to_thread(fresh_etcd_node.members[0].restart)  # its queue watch breaks
            await until(lambda: readable(client), 10, "etcd to answer again", hosts)
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: not exists(client, wedged), 12, "a premature skip")
            assert exists(client, wedged), f"the head was skipped long before the head timeout\n{tails(hosts)}"

    try:
        asyncio.run(scenario())
    finally:
        revoke(lease)
        client.close()


AGE = re.compile(r"^(\d+)m(\d\d)s$")


def test_status_shows_each_waiting_daemons_age(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Two daemons waiting behind a held slot: `status --waiters` and `status --json` list each with its
    position, when it queued and how long it has waited (matching the time the test saw it queue)."""
    ctl_ok(etcd_node, key_prefix, "lock", "seed")
    names = ["stall-x", "stall-y"]

    async def scenario() -> tuple[str, dict[str, Any], dict[str, tuple[float, float]]]:
        client = etcd_client(etcd_node)
        try:
            async with running(tmp_path, etcd_node, key_prefix, names) as hosts:
                await until(lambda: all(state(h) == "idle" for h in hosts), 20, "both daemons idle", hosts)
                queued_at = {}
                for host in hosts:
                    host.need_reboot()
                    await until(lambda: exists(client, waiter_key(host.name, "", key_prefix)), 10,
                                f"{host.name} to queue", hosts)
                    queued_at[host.name] = time.monotonic()
                    await asyncio.sleep(3)  # the first has waited 3 s longer than the second
                started = time.monotonic()
                text, _ = await actl(etcd_node, key_prefix, "status", "--waiters")
                report = json.loads((await actl(etcd_node, key_prefix, "status", "--json"))[0])
                ended = time.monotonic()
                assert all(state(h) == "waiting-for-lock" for h in hosts), tails(hosts)
        finally:
            client.close()
        # how long each had waited when status ran, at least and at most
        return text, report, {name: (started - at, ended - at) for name, at in queued_at.items()}

    text, report, waited = asyncio.run(scenario())
    lines = text.splitlines()
    summary = [line for line in lines if line.startswith("Waiting:")]
    assert len(summary) == 1 and summary[0].startswith("Waiting: 2 (head stall-x, longest wait 0m"), text
    header = lines.index(next(line for line in lines if line.startswith("WAITING")))
    assert lines[header].split() == ["WAITING", "POSITION", "SINCE", "AGE"]
    rows = [line.split() for line in lines[header + 1:]]
    assert [row[:2] for row in rows] == [["stall-x", "1"], ["stall-y", "2"]], text
    for name, (_, _, since, age) in zip(names, rows):
        assert datetime.fromisoformat(since).tzinfo is not None, since
        match = AGE.match(age)
        assert match, f"no age for {name}: {text}"
        seconds = int(match[1]) * 60 + int(match[2])
        least, most = waited[name]
        assert least - 1.5 <= seconds <= most + 1.5, (name, seconds, waited[name])

    waiting = report["waiting"]
    assert [(w["id"], w["position"]) for w in waiting] == [("stall-x", 1), ("stall-y", 2)], report
    for entry in waiting:
        least, most = waited[entry["id"]]
        assert isinstance(entry["age_s"], float) and least - 1.0 <= entry["age_s"] <= most + 1.0, (entry, waited)
        assert datetime.fromisoformat(entry["since"]).tzinfo is not None
    assert waiting[0]["age_s"] - waiting[1]["age_s"] >= 2.0
    assert report["ignored_waiter_keys"] == [] and report["holders"] == ["seed"]
