"""The real-etcd test harness: members, clusters, faults, TLS, auth and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import etcd3
import grpc
import pytest

from harness.etcd import (
    EtcdCluster,
    EtcdLaunchError,
    grpc_requests_total,
    parse_prometheus,
)


@contextmanager
def client(url: str, timeout_s: float = 3, **kwargs: Any) -> Iterator[etcd3.Etcd3Client]:
    """An etcd3 client for one client URL, closed on exit."""
    parts = urlsplit(url)
    c = etcd3.client(parts.hostname, parts.port, timeout=timeout_s, **kwargs)
    try:
        yield c
    finally:
        c.close()


class TestSingleNode:
    def test_put_get_roundtrip(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """A value written through the etcd3 client reads back with its revision."""
        with client(etcd_node.client_urls[0]) as c:
            c.put(key_prefix + "k", b"v")
            value, meta = c.get(key_prefix + "k")
        assert value == b"v"
        assert meta.mod_revision > 0

    def test_grpc_request_counter_counts_calls(self, etcd_node: EtcdCluster, key_prefix: str) -> None:
        """grpc_requests_total grows by the number of KV calls made."""
        member = etcd_node.members[0]
        before = grpc_requests_total(member.metrics(), service="etcdserverpb.KV")
        with client(member.client_url) as c:
            for i in range(3):
                c.put(f"{key_prefix}{i}", b"x")
        after = grpc_requests_total(member.metrics(), service="etcdserverpb.KV")
        assert after - before == 3

    def test_pause_blocks_requests_until_resume(self, fresh_etcd_node: EtcdCluster) -> None:
        """A SIGSTOPped member times requests out; after SIGCONT it serves again."""
        member = fresh_etcd_node.members[0]
        member.pause()
        with client(member.client_url, timeout_s=0.5) as c:
            with pytest.raises(etcd3.exceptions.ConnectionTimeoutError):
                c.get("k")
        member.resume()
        fresh_etcd_node.wait_healthy(10)
        with client(member.client_url) as c:
            c.put("k", b"v")

    def test_stop_kills_processes_and_removes_data(self) -> None:
        """stop() leaves no process and no temporary data directory behind."""
        cluster = EtcdCluster.start(1)
        pid, root = cluster.members[0].pid, cluster.root
        cluster.stop()
        assert pid is not None and not Path(f"/proc/{pid}").exists()
        assert not root.exists()


class TestCluster:
    def test_leader_kill_elects_new_leader_and_restart_rejoins(self, etcd_cluster: EtcdCluster) -> None:
        """Killing the leader yields a new leader; the old one restarts and has the data."""
        old = etcd_cluster.leader()
        old.kill()
        assert not old.is_running
        new = etcd_cluster.leader()
        assert new is not old
        with client(new.client_url) as c:
            c.put("after-kill", b"1")
        old.restart()
        with client(old.client_url) as c:
            assert c.get("after-kill")[0] == b"1"


class TestLaunchFailures:
    def test_bad_flag_reports_log_tail(self, tmp_path: Path) -> None:
        """An etcd that exits at start raises EtcdLaunchError quoting its log."""
        with pytest.raises(EtcdLaunchError, match="flag provided but not defined"):
            EtcdCluster.start(1, log_dir=tmp_path, extra_args=["--no-such-flag"])

    def test_missing_binary_without_docker_is_a_clear_error(self, tmp_path: Path) -> None:
        """Without /usr/bin/etcd and without a Docker engine, the error says so."""
        with pytest.raises(EtcdLaunchError, match="Docker engine"):
            EtcdCluster.start(1, log_dir=tmp_path, etcd_bin=str(tmp_path / "no-etcd"))


class TestTls:
    def test_client_cert_accepted_and_required(self, etcd_tls_node: EtcdCluster) -> None:
        """With client-cert-auth, a client with the cert works and one without fails."""
        pki = etcd_tls_node.pki
        assert pki is not None and etcd_tls_node.client_urls[0].startswith("https://")
        url = etcd_tls_node.client_urls[0]
        with client(url, ca_cert=str(pki.ca_cert), cert_cert=str(pki.client_cert),
                    cert_key=str(pki.client_key)) as c:
            c.put("k", b"v")
        with client(url, timeout_s=1, ca_cert=str(pki.ca_cert)) as c:
            with pytest.raises((etcd3.exceptions.ConnectionFailedError,
                                etcd3.exceptions.ConnectionTimeoutError)):
                c.get("k")

    def test_ca_only_server_tls(self, etcd_tls_ca_only_node: EtcdCluster) -> None:
        """Server-only TLS accepts a client that merely trusts the CA."""
        pki = etcd_tls_ca_only_node.pki
        assert pki is not None
        with client(etcd_tls_ca_only_node.client_urls[0], ca_cert=str(pki.ca_cert)) as c:
            c.put("k", b"v")
            assert c.get("k")[0] == b"v"


class TestAuth:
    def test_user_limited_to_prefix(self, etcd_auth_node: EtcdCluster) -> None:
        """The user writes inside its prefix and is denied outside it."""
        auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
        assert auth is not None and pki is not None
        with client(etcd_auth_node.client_urls[0], ca_cert=str(pki.ca_cert),
                    user=auth.user, password=auth.password) as c:
            c.put(auth.key_prefix + "k", b"v")
            assert c.get(auth.key_prefix + "k")[0] == b"v"
            with pytest.raises(grpc.RpcError) as denied:
                c.put("outside", b"v")
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED

    def test_anonymous_denied_and_root_allowed(self, etcd_auth_node: EtcdCluster) -> None:
        """Without credentials reads are refused; root may write anywhere."""
        auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
        assert auth is not None and pki is not None
        url, ca = etcd_auth_node.client_urls[0], str(pki.ca_cert)
        with client(url, ca_cert=ca) as c:
            with pytest.raises(grpc.RpcError) as denied:
                c.get("outside")
        assert denied.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # "user name is empty"
        with client(url, ca_cert=ca, user=auth.root_user, password=auth.root_password) as c:
            c.put("outside", b"root")


def test_parse_prometheus_keeps_labels_and_skips_comments() -> None:
    """Series keep their label set as part of the key; HELP/TYPE lines are ignored."""
    text = ("# HELP x help\n# TYPE x counter\nx 1\n"
            'grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV"} 2\n'
            'grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV"} 3e0\n')
    metrics = parse_prometheus(text)
    assert metrics["x"] == 1
    assert grpc_requests_total(metrics) == 5
    assert grpc_requests_total(metrics, service="etcdserverpb.Lease") == 0
