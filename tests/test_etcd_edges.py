"""The real binaries against real etcd at the edges: IPv6 endpoints, auth without credentials, the size limit."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from locksmithd.core.semaphore import MAX_DOCUMENT_BYTES, decode
from locksmithd.errors import DocumentTooLarge, ExitCode
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import semaphore_key, waiters_prefix
from locksmithd.etcd.queue import GroupQueue
from locksmithd.etcd.connection import EtcdSettings, parse_endpoint, parse_endpoints
from harness.etcd import EtcdCluster, TlsConfig


def run_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    return subprocess.run([sys.executable, "-m", "locksmithd.ctl.main", *args], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def store_for(cluster: EtcdCluster, **settings: object) -> EtcdStore:
    return EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(cluster.client_urls, "t", "k"), **settings))  # type: ignore[arg-type]


def read_bytes(store: EtcdStore, key: str) -> bytes | None:
    stored = store.read(key)
    return None if stored is None else stored.value


def require_ipv6_loopback() -> None:
    """Fail (never skip) when ::1 is missing: the IPv6 tests must not pass by not running."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        pytest.fail(f"this machine has no usable IPv6 loopback (::1): {exc}; "
                    "the IPv6 endpoint tests need one (check 'ip -6 addr show lo')")


class TestIpv6:
    def test_grpc_target_of_an_ipv6_literal_has_brackets(self) -> None:
        """python3-etcd3 builds the target as host:port, so the host must arrive bracketed."""
        store = EtcdStore(EtcdSettings(
            request_timeout_s=5.0, endpoints=(parse_endpoint("http://[2001:db8::1]:2379", "t", "k"),)))
        try:
            client = store._client_for(store.settings.endpoints[0])  # builds the channel; connects lazily
            # python3-etcd3 0.13 keys its endpoints by target; Debian's etcd3 0.12 keeps one target in _url.
            targets = list(client.endpoints) if hasattr(client, "endpoints") else [client._url]
            assert targets == ["[2001:db8::1]:2379"]
        finally:
            store.close()

    def test_locksmithctl_over_http_ipv6_loopback(self, tmp_path: Path, key_prefix: str) -> None:
        """lock and status through http://[::1]:PORT against an etcd listening only there."""
        require_ipv6_loopback()
        with EtcdCluster.start(1, client_host="::1", log_dir=tmp_path) as cluster:
            url = cluster.client_urls[0]
            assert url.startswith("http://[::1]:")
            result = run_ctl("--endpoint", url, "--etcd-key-prefix", key_prefix, "lock", "v6-host")
            assert result.returncode == 0, result.stderr
            status = run_ctl("--endpoint", url, "--etcd-key-prefix", key_prefix, "status", "--json")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["holders"] == ["v6-host"]

    def test_locksmithctl_over_https_ipv6_loopback(self, tmp_path: Path, key_prefix: str) -> None:
        """The same over https://[::1]:PORT (the server certificate names ::1)."""
        require_ipv6_loopback()
        with EtcdCluster.start(1, tls=TlsConfig(client_cert_auth=False), client_host="::1",
                               log_dir=tmp_path) as cluster:
            assert cluster.pki is not None
            url = cluster.client_urls[0]
            assert url.startswith("https://[::1]:")
            args = ["--endpoint", url, "--etcd-key-prefix", key_prefix, "--etcd-cafile", str(cluster.pki.ca_cert)]
            result = run_ctl(*args, "lock", "v6-host")
            assert result.returncode == 0, result.stderr
            assert json.loads(run_ctl(*args, "status", "--json").stdout)["holders"] == ["v6-host"]


class TestAuthWithoutCredentials:
    def test_no_credentials_is_denied_not_unavailable(self, etcd_auth_node: EtcdCluster) -> None:
        """Auth on and no username given: exit 9 naming the missing credentials; nothing changes."""
        auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
        assert auth is not None and pki is not None
        store = store_for(etcd_auth_node, cafile=str(pki.ca_cert), username=auth.user, password=auth.password)
        key = semaphore_key("", auth.key_prefix)
        try:
            base = ["--endpoint", etcd_auth_node.client_urls[0], "--etcd-cafile", str(pki.ca_cert),
                    "--etcd-key-prefix", auth.key_prefix]
            assert run_ctl(*base, "--etcd-username", auth.user, "--etcd-password", auth.password,
                           "lock", "a").returncode == 0
            before = read_bytes(store, key)
            for command in (["status"], ["lock", "b"], ["unlock", "a"], ["set-max", "3"]):
                assert_one_line(run_ctl(*base, "--etcd-timeout", "3", *command), ExitCode.STORE_DENIED,
                                "denied", "no etcd username and password were given")
            assert read_bytes(store, key) == before
        finally:
            store.close()


def near_limit_document() -> bytes:
    """A valid document (max 2, one holder, a big unknown field) of exactly the size limit."""
    document = {"pad": "", "semaphore": 1, "max": 2, "holders": ["h1"]}
    size = len(json.dumps(document, separators=(",", ":")).encode())
    document["pad"] = "x" * (MAX_DOCUMENT_BYTES - size)
    raw = json.dumps(document, separators=(",", ":")).encode()
    assert len(raw) == MAX_DOCUMENT_BYTES and decode(raw).encode() == raw
    return raw


class TestSizeLimit:
    def test_writers_refuse_to_grow_the_document_past_the_limit(self, etcd_node: EtcdCluster,
                                                                key_prefix: str) -> None:
        """lock and set-max exit 14 with one line and leave the bytes alone; unlock and reset still work."""
        store = store_for(etcd_node)
        key = semaphore_key("", key_prefix)
        raw = near_limit_document()
        base = ["--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix]
        try:
            store.put(key, raw)
            for command in (["lock", "a"], ["set-max", "10"]):
                assert_one_line(run_ctl(*base, *command), ExitCode.DOCUMENT_TOO_LARGE, "too-large", "nothing was written")
                assert read_bytes(store, key) == raw
            assert run_ctl(*base, "unlock", "h1").returncode == 0  # shrinking writes still work
            assert decode(read_bytes(store, key) or b"").holders == ()
            reset = run_ctl(*base, "reset", "--max", "1", "--yes")
            assert reset.returncode == 0, reset.stderr
            after = decode(read_bytes(store, key) or b"")
            assert (after.max, after.holders) == (1, ())
        finally:
            store.close()

    def test_queue_acquisition_lets_document_too_large_out_unchanged(self, etcd_node: EtcdCluster,
                                                                    key_prefix: str) -> None:
        """The queue's guarded write raises DocumentTooLarge (not retried), leaves the queue and the bytes."""
        store = store_for(etcd_node, key_prefix=key_prefix)
        key = semaphore_key("", key_prefix)
        raw = near_limit_document()
        queue = GroupQueue(store, "", key_prefix, retry_max_s=30.0)

        async def scenario() -> None:
            try:
                with pytest.raises(DocumentTooLarge):
                    await asyncio.wait_for(queue.acquire("a"), 20)
            finally:
                await queue.close()

        try:
            store.put(key, raw)
            asyncio.run(scenario())
            assert read_bytes(store, key) == raw
            assert store.read_prefix(waiters_prefix("", key_prefix)) == []
        finally:
            store.close()
