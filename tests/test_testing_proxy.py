"""The fault-injecting TCP proxy, against a plain echo server and against real etcd."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import etcd3
import pytest

from harness.etcd import EtcdCluster, EtcdMember
from harness.proxy import FaultProxy, Mode

MakeProxy = Callable[[str | EtcdMember], FaultProxy]


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A loopback TCP server echoing every byte back, one thread per connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            thread = threading.Thread(target=echo, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    yield server.getsockname()[:2]
    stop.set()
    acceptor.join(5)
    server.close()
    for thread in threads:
        thread.join(5)


def connect(proxy: FaultProxy, timeout_s: float = 2) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout_s)


def is_closed(sock: socket.socket) -> bool:
    """True if the peer closed or reset the connection (rather than the read timing out)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def etcd_client(proxy: FaultProxy, timeout_s: float = 2) -> etcd3.Etcd3Client:
    return etcd3.client("127.0.0.1", proxy.port, timeout=timeout_s)


class TestRawTcp:
    def test_pass_through_echoes_and_counts(self, echo_server: tuple[str, int]) -> None:
        """Bytes flow both ways and are counted per direction."""
        with FaultProxy(*echo_server) as proxy:
            with connect(proxy) as sock:
                sock.sendall(b"hello")
                assert sock.recv(16) == b"hello"
            deadline = time.monotonic() + 2  # the pump counts just after it forwards
            while proxy.stats().connections_live and time.monotonic() < deadline:
                time.sleep(0.01)
            stats = proxy.stats()
        assert (stats.connections_total, stats.connections_live) == (1, 0)
        assert (stats.bytes_up, stats.bytes_down) == (5, 5)

    def test_blackhole_holds_bytes_until_healed(self, echo_server: tuple[str, int]) -> None:
        """A blackholed connection stays open and delivers its bytes after pass_through."""
        with FaultProxy(*echo_server) as proxy, connect(proxy, timeout_s=0.3) as sock:
            proxy.blackhole()
            sock.sendall(b"held")
            with pytest.raises(TimeoutError):
                sock.recv(16)
            proxy.pass_through()
            sock.settimeout(2)
            assert sock.recv(16) == b"held"

    def test_sever_closes_live_and_new_connections(self, echo_server: tuple[str, int]) -> None:
        """After sever, a live connection ends and a new one is reset at once."""
        with FaultProxy(*echo_server) as proxy, connect(proxy) as live:
            live.sendall(b"x")
            assert live.recv(1) == b"x"
            proxy.sever()
            assert proxy.mode is Mode.SEVER
            assert is_closed(live)
            try:
                fresh = connect(proxy)
            except ConnectionResetError:
                return  # the reset overtook connect() itself
            with fresh:
                assert is_closed(fresh)

    def test_stop_joins_its_threads(self, echo_server: tuple[str, int]) -> None:
        """stop() leaves no proxy thread running, even with a blackholed connection."""
        proxy = FaultProxy(*echo_server)
        with connect(proxy):
            proxy.blackhole()
            time.sleep(0.05)
            proxy.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith("fault-proxy-")]


class TestEtcdThroughProxy:
    def test_sever_makes_client_fail(self, etcd_node: EtcdCluster, fault_proxy: MakeProxy,
                                     key_prefix: str) -> None:
        """A client on a severed proxy fails fast with a connection error."""
        proxy = fault_proxy(etcd_node.members[0])
        c = etcd_client(proxy)
        try:
            c.put(key_prefix + "k", b"v")
            proxy.sever()
            with pytest.raises(etcd3.exceptions.ConnectionFailedError):
                c.get(key_prefix + "k")
        finally:
            c.close()

    def test_drop_replies_times_out_but_commits(self, etcd_node: EtcdCluster,
                                                fault_proxy: MakeProxy, key_prefix: str) -> None:
        """With replies dropped the put times out, yet etcd has committed it."""
        proxy = fault_proxy(etcd_node.client_urls[0])
        c = etcd_client(proxy, timeout_s=1)
        try:
            c.get(key_prefix + "warm-up")  # connect first, so only the put's reply is lost
            proxy.drop_replies()
            with pytest.raises(etcd3.exceptions.ConnectionTimeoutError):
                c.put(key_prefix + "k", b"committed")
        finally:
            c.close()
        assert proxy.stats().bytes_dropped_down > 0
        direct = etcd3.client("127.0.0.1", etcd_node.members[0].client_port, timeout=2)
        try:
            assert direct.get(key_prefix + "k")[0] == b"committed"
        finally:
            direct.close()

    def test_blackhole_times_out_and_heals(self, etcd_node: EtcdCluster, fault_proxy: MakeProxy,
                                           key_prefix: str) -> None:
        """A blackholed etcd request times out; a new client works after pass_through."""
        proxy = fault_proxy(etcd_node.members[0])
        c = etcd_client(proxy, timeout_s=0.5)
        try:
            c.get(key_prefix + "warm-up")
            proxy.blackhole()
            with pytest.raises(etcd3.exceptions.ConnectionTimeoutError):
                c.get(key_prefix + "k")
        finally:
            c.close()
        proxy.pass_through()
        # python-etcd3 marks an endpoint failed for 300 s after a timeout: use a new client.
        c = etcd_client(proxy)
        try:
            c.put(key_prefix + "k", b"v")
        finally:
            c.close()
