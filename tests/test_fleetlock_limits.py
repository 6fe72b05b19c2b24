"""The FleetLock server under slow, oversized, malformed and vanishing clients, on loopback against real etcd."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from typing import Any

import aiohttp
import pytest

from harness.etcd import EtcdCluster
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.fleetlock.connections import MAX_HEADER_BYTES
from locksmithd.fleetlock.server import FleetLockServer
from tests.fleetlock_support import Client, base_url, body, etcd_settings, running_server, stored_keys

SECRET = "s3cret-token-4f1d"
"""Sent in header values of bad requests: it must never reach a log line or an answer."""


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the server logs at its default level (INFO); captured at DEBUG so secrets are looked for there too."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO
            and record.name.startswith(("locksmithd.fleetlock", "aiohttp", "asyncio"))]


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(record.getMessage()) for record in caplog.records
            if record.name == "locksmithd.fleetlock.access"]


def _assert_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage() + (str(record.exc_info) if record.exc_info else "") + (record.exc_text or "")
        assert SECRET not in text and "Traceback" not in text, text


def run(cluster: EtcdCluster, prefix: str, scenario: Any, **options: Any) -> None:
    async def main() -> None:
        store = EtcdStore(etcd_settings(cluster.client_urls, prefix))
        try:
            SemaphoreClient(store, "", prefix).lock("daemon-host")  # something stored, so "unchanged" means something
            async with running_server(cluster.client_urls, prefix, **options) as server, \
                    aiohttp.ClientSession() as session:
                before = stored_keys(store, prefix)
                await scenario(server, Client(session, base_url(server)))
                assert stored_keys(store, prefix) == before
        finally:
            store.close()

    asyncio.run(main())


async def _exchange(server: FleetLockServer, raw: bytes, then_close: bool = False,
                    timeout_s: float = 10.0) -> tuple[int, dict[str, Any] | None, bytes]:
    """Send ``raw`` on a fresh connection; the status, JSON body and the whole answer, read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(raw)
        await writer.drain()
        if then_close:
            writer.close()
            return 0, None, b""
        answer = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
    return status, json.loads(payload) if payload else None, answer


def _post_head(extra: str = "", length: int | None = None) -> bytes:
    length_line = f"Content-Length: {length}\r\n" if length is not None else ""
    return (f"POST /v1/pre-reboot HTTP/1.1\r\nHost: x\r\nfleet-lock-protocol: true\r\n{extra}{length_line}\r\n"
            ).encode()


def test_slow_headers_are_cut_at_the_deadline_while_others_are_served(
        etcd_node: EtcdCluster, key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """50 clients trickling one header byte per second: each gets 408 bad_request_header_timeout and is closed
    by the deadline (--request-timeout), one log line each; a normal client is served meanwhile."""
    deadline_s = 2.0

    async def slow(server: FleetLockServer) -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        writer.write(b"POST /v1/pre-reboot HTTP/1.1\r\nX-Slow: ")

        async def trickle() -> None:
            try:
                for _ in range(30):
                    await asyncio.sleep(1.0)
                    writer.write(b"a")
            except (ConnectionError, RuntimeError):
                pass

        feeder = asyncio.create_task(trickle())
        try:
            answer = await asyncio.wait_for(reader.read(), 15)
        finally:
            feeder.cancel()
            writer.close()
        return time.monotonic() - started, answer

    async def scenario(server: FleetLockServer, client: Client) -> None:
        slow_ones = [asyncio.create_task(slow(server)) for _ in range(50)]
        await asyncio.sleep(0.5)
        assert server.connections.open == 50
        served_at = time.monotonic()
        assert await client.steady_state("never-held") == (200, {})
        async with client.session.get(f"{client.base}/-/healthy") as response:
            assert response.status == 200
        assert time.monotonic() - served_at < 1.5
        results = await asyncio.gather(*slow_ones)
        for elapsed_s, answer in results:
            assert deadline_s - 0.1 <= elapsed_s <= deadline_s + 1.5, elapsed_s
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer
            assert json.loads(payload)["kind"] == "bad_request_header_timeout"
        await asyncio.sleep(0.1)
        assert server.connections.open == 0

    with caplog.at_level("INFO"):
        run(etcd_node, key_prefix, scenario, request_timeout_s=deadline_s)
    timed_out = [a for a in _access(caplog) if a["outcome"] == "bad_request_header_timeout"]
    assert len(timed_out) == 50 and all(a["status"] == 408 and a["method"] is None for a in timed_out)
    assert len(_lines(caplog)) == 1 + 50 + 2  # "listening", one line per slow client, the two normal requests


def test_open_connections_are_bounded(etcd_node: EtcdCluster, key_prefix: str,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """With --max-connections 5 and five idle connections open, a sixth is answered 503 server_busy and closed
    at once (one log line); once they are gone, requests are served again."""
    async def scenario(server: FleetLockServer, client: Client) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        await asyncio.sleep(0.2)
        assert server.connections.open == 5
        started = time.monotonic()
        status, error, _ = await _exchange(server, _post_head(length=len(body("a"))) + body("a"))
        assert (status, error) == (503, {"kind": "server_busy", "value": "over 5 open connections; retry"})
        assert time.monotonic() - started < 1.0
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(0.2)
        assert server.connections.open == 0
        assert await client.steady_state("never-held") == (200, {})

    with caplog.at_level("INFO"):
        run(etcd_node, key_prefix, scenario, max_connections=5, request_timeout_s=5.0)
    busy = [a for a in _access(caplog) if a["outcome"] == "server_busy"]
    assert [(a["status"], a["remote"]) for a in busy] == [(503, "127.0.0.1")]


_BOMB = gzip.compress(b"\0" * 64 * 1024 * 1024, compresslevel=9)  # 64 MiB inflated, about 64 KiB sent
MALFORMED: list[tuple[str, bytes, int, str | tuple[str, ...]]] = [
    ("not http", f"GET {SECRET} {SECRET}\r\n\r\n".encode(), 400, "bad_request_http"),
    ("header line without a colon", _post_head(f"{SECRET}\r\n"), 400, "bad_request_http"),
    ("control byte in a header value", _post_head(f"Authorization: Bearer {SECRET}\x01\r\n"), 400,
     "bad_request_http"),
    ("bad content length", _post_head(f"X-Token: {SECRET}\r\nContent-Length: {SECRET}\r\n"), 400,
     "bad_request_http"),
    ("two content lengths", _post_head(f"X-Token: {SECRET}\r\nContent-Length: 5\r\n", length=6) + b"abcdef", 400,
     "bad_request_http"),
    ("bad chunk", _post_head(f"X-Token: {SECRET}\r\nTransfer-Encoding: chunked\r\n") + b"zz\r\n", 400,
     "bad_request_http"),
    ("gzip body (never inflated)", _post_head(f"X-Token: {SECRET}\r\nContent-Encoding: gzip\r\n", length=5)
     + b"abcde", 400, "bad_request_body"),
    ("header line too long", _post_head(f"X-Token: {SECRET}{'a' * 9000}\r\n"), 431, "bad_request_headers_too_large"),
    ("headers too large", _post_head("".join(f"X-{n}: {SECRET}{'a' * 900}\r\n" for n in range(20))), 431,
     "bad_request_headers_too_large"),
    ("headers too large, unfinished", _post_head("".join(f"X-{n}: {SECRET}{'a' * 900}\r\n" for n in range(20)))[:-2],
     431, "bad_request_headers_too_large"),
]


@pytest.mark.parametrize(("case", "raw", "status", "kind"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_http_gets_the_error_shape_and_logs_no_header_value(
        etcd_node: EtcdCluster, key_prefix: str, caplog: pytest.LogCaptureFixture, case: str, raw: bytes,
        status: int, kind: str) -> None:
    """Malformed HTTP: the protocol's {"kind","value"} body (no echo of what was sent), one JSON log line with
    no header value and no traceback, nothing stored changed."""
    assert case != "headers too large" or len(raw) > MAX_HEADER_BYTES

    async def scenario(server: FleetLockServer, client: Client) -> None:
        caplog.clear()
        answer_status, error, answer = await _exchange(server, raw)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        assert answer_status == status and error is not None and error["kind"] in kinds, answer
        assert set(error or {}) == {"kind", "value"} and SECRET.encode() not in answer
        await asyncio.sleep(0.1)
        lines = _lines(caplog)
        assert len(lines) == 1, lines
        entry = _access(caplog)[0]
        assert entry["status"] == status and entry["outcome"] == error["kind"] and entry["id"] is None
        _assert_no_secret(caplog)

    with caplog.at_level("DEBUG"):
        run(etcd_node, key_prefix, scenario)


def test_gzip_bomb_is_never_inflated(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A body of 64 MiB of zeros sent gzipped (64 KiB): 413, and the server's memory never grew by the
    inflated size (bodies are read as sent)."""
    import resource

    async def scenario(server: FleetLockServer, client: Client) -> None:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        raw = _post_head("Content-Encoding: gzip\r\n", length=len(_BOMB)) + _BOMB
        for _ in range(3):
            status, error, _ = await _exchange(server, raw)
            assert (status, error and error["kind"]) == (413, "bad_request_body_too_large")
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kib < 32 * 1024

    run(etcd_node, key_prefix, scenario)


def test_client_gone_mid_body_is_one_line_and_no_traceback(etcd_node: EtcdCluster, key_prefix: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A client that announces 100 bytes, sends 10 and disconnects: no 500, no traceback, one line (400
    bad_request_body, body incomplete), nothing stored; the server serves on."""
    async def scenario(server: FleetLockServer, client: Client) -> None:
        caplog.clear()
        await _exchange(server, _post_head(f"X-Token: {SECRET}\r\n", length=100) + b'{"client_p', then_close=True)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if _access(caplog):
                break
        entry = _access(caplog)[0]
        assert (entry["status"], entry["outcome"]) in ((400, "bad_request_body"), (400, "bad_request_http"))
        assert entry["detail"].startswith("body incomplete") or entry["outcome"] == "bad_request_http"
        assert len(_lines(caplog)) == 1, _lines(caplog)
        _assert_no_secret(caplog)
        assert await client.steady_state("never-held") == (200, {})

    with caplog.at_level("DEBUG"):
        run(etcd_node, key_prefix, scenario)


def test_one_request_per_connection(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Every answer closes its connection (so the header deadline holds for every request)."""
    async def scenario(server: FleetLockServer, client: Client) -> None:
        for path in ("/v1/steady-state", "/v1/nope"):
            status, _, answer = await _exchange(server, _post_head(length=len(body("a"))).replace(
                b"/v1/pre-reboot", path.encode()) + body("a"))
            assert status in (200, 404) and b"\r\nConnection: close\r\n" in answer
        async with client.session.get(f"{client.base}/-/healthy") as response:
            assert response.headers.get("Connection", "").lower() == "close"

    run(etcd_node, key_prefix, scenario)
