"""The etcd connection config and its checks: endpoints, TLS files, credentials, key prefix, timeout.

Each misconfiguration is refused at start-up with one line naming the key and
what is wrong (locksmithctl exit 2, locksmithd exit 3), before etcd is asked
anything, and the stored document stays as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from locksmithd.errors import ConfigError, ExitCode
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import semaphore_key
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.connection import EtcdSettings, parse_endpoint, parse_endpoints
from locksmithd.settings.etcd_checks import validate_tls_and_auth

X_KEYS = {name: f"X_ETCD_{name.upper()}" for name in ("cafile", "certfile", "keyfile", "username", "password", "key_prefix")}
from harness.certs import Pki, make_pki
from harness.etcd import EtcdCluster

PASSWORD = "s3cret-Pw-42"


def run_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    return subprocess.run([sys.executable, "-m", "locksmithd.ctl.main", *args], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def run_daemon(tmp_path: Path, settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "empty.conf"
    conf.write_text("")
    env = {"PATH": os.environ["PATH"], "LOCKSMITHD_MACHINE_ID": "m1",
           "LOCKSMITHD_STATE_FILE": str(tmp_path / "state.conf"), **settings}
    return subprocess.run([sys.executable, "-m", "locksmithd.daemon.main", "--conf", str(conf)], env=env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """Exit ``code``, stderr one line without traceback, containing every fragment."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def store_for(cluster: EtcdCluster, **tls: str) -> EtcdStore:
    """A correctly configured client (``tls``: cafile, certfile, keyfile as the cluster needs)."""
    return EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(cluster.client_urls, "t", "k"), **tls))  # type: ignore[arg-type]


def plant(cluster: EtcdCluster, key_prefix: str, **tls: str) -> bytes:
    """Store a document with one holder through a correctly configured client; return its bytes."""
    store = store_for(cluster, **tls)
    try:
        SemaphoreClient(store, "", key_prefix).lock("planted")
        stored = store.read(semaphore_key("", key_prefix))
        assert stored is not None
        return stored.value
    finally:
        store.close()


def stored_bytes(cluster: EtcdCluster, key_prefix: str, **tls: str) -> bytes | None:
    store = store_for(cluster, **tls)
    try:
        stored = store.read(semaphore_key("", key_prefix))
        return None if stored is None else stored.value
    finally:
        store.close()


def full_tls(pki: Pki) -> dict[str, str]:
    return {"cafile": str(pki.ca_cert), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key)}


def bad_files(tmp_path: Path, pki: Pki) -> dict[str, tuple[str, str]]:
    """name -> (path, what the error must say about it)."""
    (tmp_path / "garbage.pem").write_text("this is not a certificate\n")
    (tmp_path / "empty.pem").write_bytes(b"")
    (tmp_path / "random.pem").write_bytes(os.urandom(2048))
    (tmp_path / "a-directory").mkdir()
    os.mkfifo(tmp_path / "fifo.pem")
    return {
        "garbage": (str(tmp_path / "garbage.pem"), "no PEM certificate"),
        "empty": (str(tmp_path / "empty.pem"), "is empty"),
        "random bytes": (str(tmp_path / "random.pem"), "no PEM certificate"),
        "directory": (str(tmp_path / "a-directory"), "is a directory"),
        "FIFO": (str(tmp_path / "fifo.pem"), "not a regular file (a FIFO)"),
        "/dev/null": ("/dev/null", "not a regular file (a character device)"),
        "a key, not a certificate": (str(pki.client_key), "no PEM certificate"),
    }


def encrypted_key(tmp_path: Path, pki: Pki) -> str:
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
    path = tmp_path / "encrypted-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")))
    return str(path)


def other_key(tmp_path: Path) -> str:
    path = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("other.test").private_key_pem.write_to_path(str(path))
    return str(path)


class TestTlsFilesWithRealBinaries:
    def test_bad_ca_file_is_a_usage_error_naming_file_and_problem(self, etcd_tls_ca_only_node: EtcdCluster,
                                                                   key_prefix: str, tmp_path: Path) -> None:
        """Garbage, empty, random, directory, FIFO, /dev/null or a key as CA file: exit 2, never exit 7."""
        pki = etcd_tls_ca_only_node.pki
        assert pki is not None
        before = plant(etcd_tls_ca_only_node, key_prefix, cafile=str(pki.ca_cert))
        url = etcd_tls_ca_only_node.client_urls[0]
        for name, (path, problem) in bad_files(tmp_path, pki).items():
            for command in (["lock", "x"], ["status"]):
                result = run_ctl("--endpoint", url, "--etcd-key-prefix", key_prefix, "--etcd-cafile", path, *command)
                assert_one_line(result, ExitCode.USAGE, "LOCKSMITHCTL_ETCD_CAFILE", problem)
                assert "does not exist" not in result.stderr, name
        assert stored_bytes(etcd_tls_ca_only_node, key_prefix, cafile=str(pki.ca_cert)) == before

    def test_bad_client_certificate_or_key(self, etcd_tls_node: EtcdCluster, key_prefix: str, tmp_path: Path) -> None:
        """A bad certificate, a bad key, a key of another certificate or an encrypted key: exit 2, named."""
        pki = etcd_tls_node.pki
        assert pki is not None
        before = plant(etcd_tls_node, key_prefix, **full_tls(pki))
        files = bad_files(tmp_path, pki)
        cases = [
            (files["garbage"][0], str(pki.client_key), "LOCKSMITHCTL_ETCD_CERTFILE", "no PEM certificate"),
            (files["directory"][0], str(pki.client_key), "LOCKSMITHCTL_ETCD_CERTFILE", "is a directory"),
            (str(pki.client_cert), files["garbage"][0], "LOCKSMITHCTL_ETCD_KEYFILE", "no PEM private key"),
            (str(pki.client_cert), files["FIFO"][0], "LOCKSMITHCTL_ETCD_KEYFILE", "not a regular file"),
            (str(pki.client_cert), other_key(tmp_path), "LOCKSMITHCTL_ETCD_KEYFILE", "does not match the certificate"),
            (str(pki.client_cert), encrypted_key(tmp_path, pki), "LOCKSMITHCTL_ETCD_KEYFILE", "encrypted"),
        ]
        for cert, key, named, problem in cases:
            result = run_ctl("--endpoint", etcd_tls_node.client_urls[0], "--etcd-key-prefix", key_prefix,
                             "--etcd-cafile", str(pki.ca_cert), "--etcd-certfile", cert, "--etcd-keyfile", key,
                             "unlock", "planted")
            assert_one_line(result, ExitCode.USAGE, named, problem)
        assert stored_bytes(etcd_tls_node, key_prefix, **full_tls(pki)) == before

    def test_daemon_refuses_bad_tls_files_with_exit_3(self, etcd_tls_node: EtcdCluster, tmp_path: Path) -> None:
        """The daemon runs the same checks at start-up: exit 3 with one line naming the key."""
        pki = etcd_tls_node.pki
        assert pki is not None
        files = bad_files(tmp_path, pki)
        base = {"LOCKSMITHD_ENDPOINT": etcd_tls_node.client_urls[0], "LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert),
                "LOCKSMITHD_ETCD_CERTFILE": str(pki.client_cert), "LOCKSMITHD_ETCD_KEYFILE": str(pki.client_key)}
        cases = [
            ({"LOCKSMITHD_ETCD_CAFILE": files["garbage"][0]}, "LOCKSMITHD_ETCD_CAFILE", "no PEM certificate"),
            ({"LOCKSMITHD_ETCD_CAFILE": files["directory"][0]}, "LOCKSMITHD_ETCD_CAFILE", "is a directory"),
            ({"LOCKSMITHD_ETCD_CAFILE": "/dev/null"}, "LOCKSMITHD_ETCD_CAFILE", "not a regular file"),
            ({"LOCKSMITHD_ETCD_CAFILE": files["empty"][0]}, "LOCKSMITHD_ETCD_CAFILE", "is empty"),
            ({"LOCKSMITHD_ETCD_KEYFILE": other_key(tmp_path)}, "LOCKSMITHD_ETCD_KEYFILE", "does not match"),
        ]
        for override, named, problem in cases:
            assert_one_line(run_daemon(tmp_path, base | override), ExitCode.CONFIG, named, problem)


class TestMixedAndHiddenSettingsWithRealBinaries:
    def test_ca_file_with_plain_http_endpoint_is_refused(self, etcd_node: EtcdCluster, key_prefix: str,
                                                        tmp_path: Path) -> None:
        """A CA file would be ignored on http://: refused (not a warning), exit 2 / 3, document unchanged."""
        pki = make_pki(tmp_path / "pki")
        before = plant(etcd_node, key_prefix)
        result = run_ctl("--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix,
                         "--etcd-cafile", str(pki.ca_cert), "unlock", "planted")
        assert_one_line(result, ExitCode.USAGE, "LOCKSMITHCTL_ETCD_CAFILE", "plain http", "refused")
        daemon = run_daemon(tmp_path, {"LOCKSMITHD_ENDPOINT": etcd_node.client_urls[0],
                                       "LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert)})
        assert_one_line(daemon, ExitCode.CONFIG, "LOCKSMITHD_ETCD_CAFILE", "plain http")
        assert stored_bytes(etcd_node, key_prefix) == before

    def test_user_info_in_endpoint_is_refused_and_password_never_shown(self, etcd_node: EtcdCluster,
                                                                       key_prefix: str, tmp_path: Path) -> None:
        """http://user:pw@host is refused; the error shows user:***@, never the password."""
        before = plant(etcd_node, key_prefix)
        host_port = etcd_node.client_urls[0].split("//", 1)[1]
        for url in (f"http://fleet:{PASSWORD}@{host_port}", f"http://fleet:{PASSWORD}/x@{host_port}",
                    f"ftp://fleet:{PASSWORD}@{host_port}"):
            result = run_ctl("--endpoint", url, "--etcd-key-prefix", key_prefix, "unlock", "planted")
            line = assert_one_line(result, ExitCode.USAGE, "LOCKSMITHCTL_ENDPOINT", "fleet:***@")
            assert PASSWORD not in result.stderr + result.stdout, line
            daemon = run_daemon(tmp_path, {"LOCKSMITHD_ENDPOINT": url})
            assert_one_line(daemon, ExitCode.CONFIG, "LOCKSMITHD_ENDPOINT", "fleet:***@")
            assert PASSWORD not in daemon.stderr + daemon.stdout
        assert stored_bytes(etcd_node, key_prefix) == before

    def test_key_prefix_must_end_in_a_slash(self, etcd_node: EtcdCluster, key_prefix: str, tmp_path: Path) -> None:
        """"/other" would give "/othercoreos.com/...": refused naming the key; "other/" works."""
        before = plant(etcd_node, key_prefix)
        result = run_ctl("--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix.rstrip("/"),
                         "lock", "x")
        assert_one_line(result, ExitCode.USAGE, "LOCKSMITHCTL_ETCD_KEY_PREFIX", 'must end in "/"')
        daemon = run_daemon(tmp_path, {"LOCKSMITHD_ENDPOINT": etcd_node.client_urls[0],
                                       "LOCKSMITHD_ETCD_KEY_PREFIX": "/other"})
        assert_one_line(daemon, ExitCode.CONFIG, "environment: LOCKSMITHD_ETCD_KEY_PREFIX", 'must end in "/"')
        assert stored_bytes(etcd_node, key_prefix) == before
        assert stored_bytes(etcd_node, key_prefix.rstrip("/")) is None


VALID = EtcdSettings(endpoints=parse_endpoints("http://127.0.0.1:2379", "test", "X_ENDPOINT"),
                     request_timeout_s=5.0)


@pytest.mark.parametrize("change, key, problem", [
    (lambda s: replace(s, key_prefix="t1"), "ETCD_KEY_PREFIX", 'must end in "/"'),
    (lambda s: replace(s, key_prefix="a b/"), "ETCD_KEY_PREFIX", "whitespace"),
    (lambda s: replace(s, key_prefix="t\udcff/"), "ETCD_KEY_PREFIX", "not valid UTF-8"),
    (lambda s: replace(s, username="u\udcff", password="p"), "ETCD_USERNAME", "not valid UTF-8"),
    (lambda s: replace(s, username="u", password="p\udcff"), "ETCD_PASSWORD", "not valid UTF-8"),
    (lambda s: replace(s, username="u\n", password="p"), "ETCD_USERNAME", "control character"),
])
def test_names_and_credentials_are_checked(change: Callable[[EtcdSettings], EtcdSettings], key: str,
                                           problem: str) -> None:
    """Prefix, username and password that cannot travel to etcd are refused, naming the key."""
    with pytest.raises(ConfigError) as info:
        validate_tls_and_auth(change(VALID), "test", X_KEYS)
    assert info.value.key == f"X_{key}" and problem in info.value.problem
    assert "p\udcff" not in str(info.value)


def test_valid_prefixes_and_ipv6_endpoints_are_accepted() -> None:
    """"" and "tenant/" are fine prefixes; IPv6 literals keep their brackets in the URL."""
    for prefix in ("", "tenant/", "t-1a2b3c4d/"):
        validate_tls_and_auth(replace(VALID, key_prefix=prefix), "test", X_KEYS)
    endpoint = parse_endpoint("https://[2001:db8::1]:2379", "test", "X_ENDPOINT")
    assert (endpoint.host, endpoint.url_host, endpoint.url) == ("2001:db8::1", "[2001:db8::1]",
                                                                "https://[2001:db8::1]:2379")
    assert parse_endpoint("http://[::1]", "test", "X_ENDPOINT").url == "http://[::1]:2379"


def test_endpoint_errors_never_echo_a_password() -> None:
    """Every endpoint problem (bad port, path, scheme) hides the user info's password."""
    for url in (f"http://u:{PASSWORD}@h:99999", f"http://u:{PASSWORD}@h:1/path", f"gopher://u:{PASSWORD}@h",
                f"http://u:{PASSWORD}@@h", f"http://u:{PASSWORD}@"):
        with pytest.raises(ConfigError) as info:
            parse_endpoint(url, "test", "X_ENDPOINT")
        assert PASSWORD not in str(info.value) and "u:***@" in str(info.value)
