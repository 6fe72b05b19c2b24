"""A small HTTP/1.0 server for the metrics, on TCP or a unix socket, inside the daemon's event loop.

prometheus_client's own server is TCP-only and runs in a thread; this one
serves both kinds of address from the loop, so a scrape sees the daemon's
state without locking and a wedged loop also stops answering scrapes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from locksmithd.errors import ConfigError
from locksmithd.observe.address import MetricsAddress

log = logging.getLogger("locksmithd.metrics")
REQUEST_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 8192
SOCKET_MODE = 0o666  # as a port on 127.0.0.1: any local user may scrape; restrict with the directory (README)
PROBE_TIMEOUT_S = 1.0


async def start_metrics_server(address: MetricsAddress, render: Callable[[], Awaitable[bytes]],
                               key: str = "LOCKSMITHD_METRICS_ADDRESS") -> asyncio.AbstractServer:
    """Listen on ``address``; ``GET /metrics`` (or ``/``) answers ``await render()``.

    At a unix path, a socket file that something answers on is never
    replaced (ConfigError: another daemon serves there); a stale one (nothing
    listens) is; a file of another kind is not. The socket is made mode
    0666, so a scraper need not be root: who may reach it is up to its
    directory's mode and group. Raises ConfigError naming ``key`` when the
    address cannot be bound (in use, no permission, no such directory).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(_answer(reader, writer, render), REQUEST_TIMEOUT_S)
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    try:
        if address.path:
            problem = _claim_socket_path(address.path)
            if problem is not None:
                raise ConfigError("settings", key, str(address), problem)
            server = await asyncio.start_unix_server(handle, address.path)
            os.chmod(address.path, SOCKET_MODE)
            return server
        return await asyncio.start_server(handle, address.host or None, address.port)
    except OSError as exc:
        raise ConfigError("settings", key, str(address), f"cannot listen: {exc.strerror or exc}") from exc


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  render: Callable[[], Awaitable[bytes]]) -> None:
    head = await _read_head(reader)
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
        _reply(writer, b"405 Method Not Allowed", b"text/plain", b"only GET\n")
    elif parts[1].split(b"?", 1)[0] not in (b"/metrics", b"/"):
        _reply(writer, b"404 Not Found", b"text/plain", b"metrics are at /metrics\n")
    else:
        body = await render()
        _reply(writer, b"200 OK", CONTENT_TYPE_LATEST.encode(), b"" if parts[0] == b"HEAD" else body)
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line and headers (up to the blank line), at most MAX_HEAD_BYTES."""
    head = b""
    while b"\n\n" not in head.replace(b"\r\n", b"\n"):
        chunk = await reader.read(1024)
        if not chunk:
            break
        head += chunk
        if len(head) > MAX_HEAD_BYTES:
            break
    return head


def _reply(writer: asyncio.StreamWriter, status: bytes, content_type: bytes, body: bytes) -> None:
    writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + content_type
                 + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


def _claim_socket_path(path: str) -> str | None:
    """Make ``path`` free to bind: remove a stale socket file; why not, when something else is there.

    A socket file is stale when connecting to it is refused (nothing
    listens: left by a crash). One that accepts, or does not answer in
    time, belongs to a live server (another locksmithd with another state
    file, another service): never taken over.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return "a file that is not a socket is there; not replacing it"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PROBE_TIMEOUT_S)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: nothing listens
        return None
    except OSError as exc:
        return f"cannot tell whether the socket there is in use ({exc.strerror or exc}); not replacing it"
    finally:
        probe.close()
    return "something answers on this socket (another locksmithd?); not replacing it"
