"""A small HTTP/1.0 server for the metrics, on TCP or a unix socket, inside the daemon's event loop.

prometheus_client's own server is TCP-only and runs in a thread; this one
serves both kinds of address from the loop, so a scrape sees the daemon's
state without locking and a wedged loop also stops answering scrapes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from locksmithd.errors import ConfigError
from locksmithd.observe.address import MetricsAddress

log = logging.getLogger("locksmithd.metrics")
REQUEST_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 8192


async def start_metrics_server(address: MetricsAddress, render: Callable[[], Awaitable[bytes]],
                               key: str = "LOCKSMITHD_METRICS_ADDRESS") -> asyncio.AbstractServer:
    """Listen on ``address``; ``GET /metrics`` (or ``/``) answers ``await render()``.

    A stale socket file at a unix path is replaced (a file of another kind
    is not). Raises ConfigError naming ``key`` when the address cannot be
    bound (in use, no permission, no such directory).
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
            _remove_stale_socket(address.path)
            return await asyncio.start_unix_server(handle, address.path)
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


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(mode):  # left by a previous run; the coordinator lock says none runs now
        os.unlink(path)
