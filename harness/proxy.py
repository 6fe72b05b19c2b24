"""A threaded loopback TCP proxy whose faults (sever, blackhole, lost replies) switch at runtime."""

from __future__ import annotations

import enum
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from harness.ports import LOOPBACK

_CHUNK = 65536
_POLL_S = 0.1


class Mode(enum.Enum):
    """What the proxy does with traffic; see the ``FaultProxy`` methods of the same names."""

    PASS_THROUGH = "pass-through"
    SEVER = "sever"
    BLACKHOLE = "blackhole"
    DROP_REPLIES = "drop-replies"


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started; "up" is client to server, "down" the reverse."""

    connections_total: int
    connections_live: int
    bytes_up: int
    bytes_down: int
    bytes_dropped_down: int


class _Conn:
    """One proxied client connection and its upstream socket."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.lost_bytes = False  # replies were dropped: the byte stream is now corrupt
        self.closed = threading.Event()
        self._pumps_left = 2
        self._lock = threading.Lock()

    def close(self, reset: bool = False) -> None:
        """Shut both sockets down (waking the pumps); ``reset`` sends RST to the client."""
        self.closed.set()
        for sock in (self.client, self.upstream):
            try:
                if reset and sock is self.client:
                    _set_reset_on_close(sock)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by a pump

    def pump_done(self) -> None:
        # The last pump out releases the file descriptors, so no thread selects on a closed fd.
        with self._lock:
            self._pumps_left -= 1
            last = self._pumps_left == 0
        if last:
            self.client.close()
            self.upstream.close()


class FaultProxy:
    """Forward TCP from a free 127.0.0.1 port to ``target_host:target_port``.

    Faults switch at runtime and apply to live connections at once, so
    long-lived gRPC/HTTP2 streams are affected too. All threads are daemons;
    ``stop`` closes everything and joins them.
    """

    def __init__(self, target_host: str, target_port: int, scheme: str = "http") -> None:
        self.target = (target_host, target_port)
        self.scheme = scheme
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(_POLL_S)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._mode = Mode.PASS_THROUGH
        self._changed = threading.Condition()
        self._conns: set[_Conn] = set()
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._counts = {"connections_total": 0, "bytes_up": 0, "bytes_down": 0,
                        "bytes_dropped_down": 0}
        self._start_thread(self._accept_loop, "accept")

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def pass_through(self) -> None:
        """Forward everything. Connections that lost replies are closed, since their
        byte stream is corrupt; clients reconnect."""
        self._set_mode(Mode.PASS_THROUGH)
        for conn in self._live():
            if conn.lost_bytes:
                conn.close()

    def sever(self) -> None:
        """Close all live connections and reset new ones as soon as they are accepted."""
        self._set_mode(Mode.SEVER)
        for conn in self._live():
            conn.close(reset=True)

    def blackhole(self) -> None:
        """Hold connections open but move no bytes either way (like a partition).

        Bytes wait in the kernel buffers and flow again after ``pass_through``,
        as they would after TCP retransmission once a partition heals.
        """
        self._set_mode(Mode.BLACKHOLE)

    def drop_replies(self) -> None:
        """Forward client requests but discard server replies: the client times out
        although the server acted on the request."""
        self._set_mode(Mode.DROP_REPLIES)

    def stats(self) -> ProxyStats:
        with self._changed:
            return ProxyStats(connections_live=len(self._conns), **self._counts)

    def stop(self) -> None:
        """Close the listener and every connection; join all threads (idempotent)."""
        self._stopped.set()
        for conn in self._live():
            conn.close()
        with self._changed:
            self._changed.notify_all()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _set_mode(self, mode: Mode) -> None:
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    def _live(self) -> list[_Conn]:
        with self._changed:
            return list(self._conns)

    def _start_thread(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name=f"fault-proxy-{self.port}-{name}")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        if self._mode is Mode.SEVER or self._stopped.is_set():
            _set_reset_on_close(client)
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        conn = _Conn(client, upstream)
        with self._changed:
            self._conns.add(conn)
            self._counts["connections_total"] += 1
        self._start_thread(self._pump, "up", conn, client, upstream, False)
        self._start_thread(self._pump, "down", conn, upstream, client, True)

    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        poller = select.poll()  # not select(): fds above 1024 are common in long test runs
        poller.register(src, select.POLLIN)
        try:
            while not conn.closed.is_set() and not self._stopped.is_set():
                if not self._await_flow():
                    continue
                readable = poller.poll(_POLL_S * 1000)
                if not readable or not self._await_flow(wait=False):
                    continue  # a blackhole may have begun while we waited
                data = src.recv(_CHUNK)
                if not data:
                    break
                if reply and self._mode is Mode.DROP_REPLIES:
                    conn.lost_bytes = True
                    self._count("bytes_dropped_down", len(data))
                    continue
                dst.sendall(data)
                self._count("bytes_down" if reply else "bytes_up", len(data))
        except (OSError, ValueError):
            pass  # the peer or a fault closed the socket
        finally:
            conn.close()
            with self._changed:
                self._conns.discard(conn)
            conn.pump_done()

    def _await_flow(self, wait: bool = True) -> bool:
        """False while blackholed; with ``wait``, first block up to one poll interval."""
        with self._changed:
            if wait and self._mode is Mode.BLACKHOLE and not self._stopped.is_set():
                self._changed.wait(_POLL_S)
            return self._mode is not Mode.BLACKHOLE

    def _count(self, key: str, n: int) -> None:
        with self._changed:
            self._counts[key] += n

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy({self.url} -> {self.target[0]}:{self.target[1]}, {self._mode.value})"


def _set_reset_on_close(sock: socket.socket) -> None:
    # Linger 0: close() sends RST, so the client fails at once instead of seeing a clean EOF.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
