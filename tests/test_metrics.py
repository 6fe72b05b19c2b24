"""Prometheus metrics: scraped from real daemons during a rollout, and `locksmithctl metrics` on real etcd."""

from __future__ import annotations

import asyncio
import http.client
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from locksmithd.errors import ExitCode
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import semaphore_key
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.observe.address import MetricsAddress, parse_metrics_address
from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SimulatedHost, wait_for
from harness.ports import free_port

CTL = str(Path(sys.executable).with_name("locksmithctl"))
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """{(sample name, sorted labels): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket: the same HTTP a Prometheus scrape through a socket proxy speaks."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=15)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(15)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def scrape(address: str) -> Samples:
    if address.startswith("unix:"):
        connection = UnixHTTPConnection(address.removeprefix("unix:"))
        try:
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200
            body = response.read().decode()
        finally:
            connection.close()
    else:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=15) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode()
    return parse(body)


def try_scrape(address: str) -> Samples | None:
    try:
        return scrape(address)
    except OSError:
        return None  # between boots nothing listens


def ctl(cluster: EtcdCluster, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    return subprocess.run([CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9474", MetricsAddress("127.0.0.1", 9474)),
    ("[::1]:9474", MetricsAddress("::1", 9474)),
    (":9474", MetricsAddress("", 9474)),
    ("unix:/run/locksmithd/metrics.sock", MetricsAddress(path="/run/locksmithd/metrics.sock")),
])
def test_metrics_addresses(text: str, expected: MetricsAddress) -> None:
    assert parse_metrics_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:9474", "unix:run/x.sock",
                                  "host:port", "a b:80"])
def test_bad_metrics_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_metrics_address(text)


def test_bad_metrics_address_is_a_config_error(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "LOCKSMITHD_MACHINE_ID": "m1", "LOCKSMITHD_METRICS_ADDRESS": "localhost",
           "LOCKSMITHD_STATE_FILE": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "locksmithd.daemon.main", "--conf", os.devnull],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.count("\n") == 1 and "LOCKSMITHD_METRICS_ADDRESS" in result.stderr


@pytest.mark.slow
def test_metrics_move_with_a_rollout(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Three real daemons (max 1), two on TCP and one on a unix socket, scraped while they reboot in turn."""
    assert ctl(etcd_node, key_prefix, "set-max", "1").returncode == 0
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", f"unix:{tmp_path}/m2.sock"]
    hosts = [SimulatedHost(f"metrics-{i}", tmp_path / f"h{i}", etcd_node.client_urls, reboot_delay_s=1.0,
                           options=HostOptions(key_prefix=key_prefix,
                                               extra_env={"LOCKSMITHD_METRICS_ADDRESS": addresses[i]}))
             for i in range(3)]
    seen: dict[str, set[str]] = {"states": set()}
    max_position = max_wait = max_waiters = max_holders = max_handoffs = 0.0

    async def scenario() -> list[Samples]:
        nonlocal max_position, max_wait, max_waiters, max_holders, max_handoffs
        await asyncio.gather(*(h.start() for h in hosts))
        try:
            await wait_for(lambda: all(h.daemon_state().get("DAEMON_STATE") == "idle" for h in hosts), 30, "idle")
            before = [scrape(a) for a in addresses]
            for samples in before:
                assert value(samples, "locksmithd_state", state="idle") == 1
                assert value(samples, "locksmithd_state", state="holding") == 0
                assert value(samples, "locksmithd_holding") == 0
                # Idle hosts export the figures of one read of the semaphore (at most once a minute), not
                # the waiters: only holders and the head read the queue (every host reading it at each
                # scrape would cost etcd O(N^2)).
                assert value(samples, "locksmithd_group_max", group="") == 1
                assert value(samples, "locksmithd_group_holders_overdue", group="") == 0
                assert value(samples, "locksmithd_group_waiters", group="") is None
                assert value(samples, "locksmithd_etcd_up") == 1
                assert value(samples, "locksmithd_reboots_total") == 0
            for host in hosts:
                host.need_reboot()
            loop = asyncio.get_running_loop()
            end = loop.time() + 120
            while not all(len(h.logind.reboots) >= 1 and h.boots >= 2
                          and h.daemon_state().get("DAEMON_STATE") == "idle" for h in hosts):
                assert loop.time() < end, "the rollout did not finish"
                for address in addresses:
                    samples = await asyncio.to_thread(try_scrape, address)
                    if samples is None:
                        continue
                    seen["states"].update(state for (name, labels), v in samples.items()
                                          if name == "locksmithd_state" and v == 1 for _, state in labels)
                    max_position = max(max_position, value(samples, "locksmithd_queue_position") or 0)
                    max_wait = max(max_wait, value(samples, "locksmithd_slot_wait_seconds") or 0)
                    max_waiters = max(max_waiters, value(samples, "locksmithd_group_waiters", group="") or 0)
                    max_holders = max(max_holders, value(samples, "locksmithd_group_holders", group="") or 0)
                    max_handoffs = max(max_handoffs, value(samples, "locksmithd_handoffs_observed_total") or 0)
                await asyncio.sleep(0.2)
            await asyncio.sleep(5.5)  # past the group read's reuse interval
            return [scrape(a) for a in addresses]
        finally:
            await asyncio.gather(*(h.stop() for h in hosts))

    after = asyncio.run(scenario())
    assert {"waiting-for-lock", "idle"} <= seen["states"], seen
    assert max_position >= 1 and max_wait > 0 and max_waiters >= 1 and max_holders == 1
    # Only the head watches the semaphore (issue 10's O(1) queue), and it reboots moments after
    # it sees the release it was waiting for: a scrape every 0.2 s cannot be sure to catch that
    # count. The counter is tested where it is deterministic: tests/test_queue_scale.py
    # (TestHandoffCount). Here: it is exported.
    assert "locksmithd_handoffs_observed_total" in {name for samples in after for (name, _) in samples}
    for samples in after:  # each is the new boot's daemon
        assert value(samples, "locksmithd_state", state="idle") == 1
        assert value(samples, "locksmithd_reboots_total") == 1  # the slot from before the boot was released
        # Read when it went idle and reused for a minute: another host may have held a slot then.
        assert value(samples, "locksmithd_group_holders", group="") in (0, 1)
        assert value(samples, "locksmithd_group_waiters", group="") is None
        count = sum(v for (name, _), v in samples.items() if name == "locksmithd_etcd_request_duration_seconds_count")
        assert count >= 1


def test_locksmithctl_metrics(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The group's figures from etcd, then a corrupt document shown as a figure, not an error."""
    assert ctl(etcd_node, key_prefix, "set-max", "3").returncode == 0
    assert ctl(etcd_node, key_prefix, "lock", "host-a").returncode == 0
    assert ctl(etcd_node, key_prefix, "halt", "--reason", "testing metrics").returncode == 0
    result = ctl(etcd_node, key_prefix, "metrics")
    assert result.returncode == 0, result.stderr
    samples = parse(result.stdout)
    assert value(samples, "locksmithd_group_max", group="") == 3
    assert value(samples, "locksmithd_group_holders", group="") == 1
    assert value(samples, "locksmithd_group_halted", group="") == 1
    assert value(samples, "locksmithd_group_document_corrupt", group="") == 0
    assert value(samples, "locksmithd_group_newest_holder_age_seconds", group="") is not None
    store = EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(etcd_node.client_urls, "test", "X")))
    try:
        store.put(semaphore_key("", key_prefix), b"{not json")
    finally:
        store.close()
    samples = parse(ctl(etcd_node, key_prefix, "metrics").stdout)
    assert value(samples, "locksmithd_group_document_corrupt", group="") == 1


def test_locksmithctl_metrics_without_etcd() -> None:
    result = subprocess.run([CTL, "--endpoint", f"http://127.0.0.1:{free_port()}", "--etcd-timeout", "1", "metrics"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == ExitCode.STORE_UNAVAILABLE and result.stderr.count("\n") == 1


def test_locksmithctl_and_the_settings_do_not_load_prometheus_client() -> None:
    """Only the metrics command and a daemon with a metrics address import the library."""
    code = ("import sys, locksmithd.ctl.main, locksmithd.settings, locksmithd.daemon.main; "
            "assert 'prometheus_client' not in sys.modules, 'loaded'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_metrics_server_answers_only_get_metrics(tmp_path: Path) -> None:
    """Other paths 404, other methods 405; a stale socket file is replaced; a busy port is a config error."""
    from locksmithd.errors import ConfigError
    from locksmithd.observe.server import start_metrics_server

    stale = tmp_path / "m.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # the file stays, as after a crash

    async def body() -> bytes:
        return b"locksmithd_test 1.0\n"

    async def scenario() -> None:
        port = free_port()
        server = await start_metrics_server(MetricsAddress("127.0.0.1", port), body)
        unix = await start_metrics_server(MetricsAddress(path=str(stale)), body)
        try:
            def requests() -> list[int]:
                codes = []
                for method, path in (("GET", "/metrics"), ("GET", "/other"), ("POST", "/metrics")):
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    try:
                        connection.request(method, path)
                        codes.append(connection.getresponse().status)
                    finally:
                        connection.close()
                return codes

            assert await asyncio.to_thread(requests) == [200, 404, 405]
            assert await asyncio.to_thread(scrape, f"unix:{stale}") == {("locksmithd_test", ()): 1.0}
            try:
                await start_metrics_server(MetricsAddress("127.0.0.1", port), body)
            except ConfigError as error:
                assert "LOCKSMITHD_METRICS_ADDRESS" in error.one_line() and "cannot listen" in error.one_line()
            else:
                raise AssertionError("a busy port was bound twice")
        finally:
            for one in (server, unix):
                one.close()
                await one.wait_closed()

    asyncio.run(scenario())
