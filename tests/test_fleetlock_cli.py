"""locksmithd-fleetlock as a process: options and env, bad values, TLS with client certificates, the unit."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import trustme

from harness.etcd import EtcdCluster
from tests.fleetlock_support import HEADERS, body

SERVER = str(Path(sys.executable).with_name("locksmithd-fleetlock"))
UNIT = Path(__file__).resolve().parent.parent / "systemd" / "locksmithd-fleetlock.service"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SERVER, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("args", "env", "code", "names"), [
    (["--listen", "nope"], {}, 2, "--listen"),
    (["--listen", "1.2.3.4:70000"], {}, 2, "--listen"),
    (["--grace", "1s"], {}, 2, "--grace"),
    (["--grace", "soon"], {}, 2, "--grace"),
    ([], {"LOCKSMITHD_FLEETLOCK_ENDPOINT": "ftp://x"}, 3, "LOCKSMITHD_FLEETLOCK_ENDPOINT"),
    ([], {"LOCKSMITHD_FLEETLOCK_ETCD_USERNAME": "u"}, 3, "LOCKSMITHD_FLEETLOCK_ETCD_PASSWORD"),
    (["--tls-cert", "/etc/hostname"], {}, 3, "LOCKSMITHD_FLEETLOCK_TLS_KEY"),
    (["--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"], {}, 3, "LOCKSMITHD_FLEETLOCK_TLS_CERT"),
    (["--max-concurrent", "0"], {}, 2, "--max-concurrent"),
    (["--max-connections", "0"], {}, 2, "--max-connections"),
    (["--request-timeout", "nan"], {}, 2, "--request-timeout"),
    (["--request-timeout", "inf"], {}, 2, "--request-timeout"),
    (["--request-timeout", "-1"], {}, 2, "--request-timeout"),
    (["--request-timeout", "0.1"], {}, 2, "--request-timeout"),
    ([], {"LOCKSMITHD_FLEETLOCK_REQUEST_TIMEOUT": "NaN"}, 2, "--request-timeout"),
    (["--bogus"], {}, 2, "--bogus"),
])
def test_bad_options_are_one_line_and_a_distinct_code(args: list[str], env: dict[str, str], code: int,
                                                     names: str) -> None:
    """Each bad option or variable: exit 2 (usage) or 3 (config), one stderr line naming it, no traceback."""
    result = run_cli(*args, env=env)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in result.stderr


class Running:
    """A locksmithd-fleetlock process and the URL it serves."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def start_server(args: list[str], env: dict[str, str]) -> Running:
    process = subprocess.Popen([SERVER, "--listen", "127.0.0.1:0", *args], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **env})
    assert process.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"listening on (\S+)", line)
        if match:
            return Running(process, match.group(1))
        if not line and process.poll() is not None:
            break
    process.kill()
    output = process.stderr.read()
    process.wait()
    process.stderr.close()
    raise AssertionError(f"server did not start: {output}")


@pytest.fixture
def plain_server(etcd_node: EtcdCluster, key_prefix: str) -> Iterator[Running]:
    """The server configured through LOCKSMITHD_FLEETLOCK_* variables only."""
    running = start_server([], {"LOCKSMITHD_FLEETLOCK_ENDPOINT": etcd_node.client_urls[0],
                                "LOCKSMITHD_FLEETLOCK_ETCD_KEY_PREFIX": key_prefix,
                                "LOCKSMITHD_FLEETLOCK_GRACE": "30s"})
    yield running
    running.stop()


def post(url: str, data: bytes, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=data, headers=HEADERS, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_env_configured_server_serves_and_stops_cleanly(plain_server: Running, etcd_node: EtcdCluster,
                                                        key_prefix: str) -> None:
    """Started from env vars: pre-reboot 200 under the configured prefix, SIGTERM ends it with exit 0."""
    assert post(f"{plain_server.url}/v1/pre-reboot", body("proc-a")) == (200, {})
    assert post(f"{plain_server.url}/v1/pre-reboot", body("proc-b"))[1]["kind"] == "failed_lock_semaphore_full"
    with urllib.request.urlopen(f"{plain_server.url}/-/healthy", timeout=10) as response:
        assert response.status == 200
    plain_server.process.send_signal(signal.SIGTERM)
    assert plain_server.process.wait(timeout=20) == 0
    assert plain_server.process.stderr is not None
    log = plain_server.process.stderr.read()
    assert "Traceback" not in log
    access = [json.loads(line.split("access: ", 1)[1]) for line in log.splitlines() if "access: {" in line]
    assert [(a["path"], a["status"], a["id"]) for a in access[:2]] == [
        ("/v1/pre-reboot", 200, "proc-a"), ("/v1/pre-reboot", 409, "proc-b")]
    assert all("fleet-lock-protocol" not in json.dumps(a) for a in access)  # no headers, no bodies


def test_tls_with_client_certificates(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """https with a client CA: no client certificate is refused at the handshake, a signed one is served;
    a client that never starts its handshake is closed after --request-timeout."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("client.example")
    paths = {name: tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem", "client.pem")}
    ca.cert_pem.write_to_path(str(paths["ca.pem"]))
    server_cert.cert_chain_pems[0].write_to_path(str(paths["cert.pem"]))
    server_cert.private_key_pem.write_to_path(str(paths["key.pem"]))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(paths["client.pem"]))
    running = start_server(["--endpoint", etcd_node.client_urls[0], "--etcd-key-prefix", key_prefix,
                            "--tls-cert", str(paths["cert.pem"]), "--tls-key", str(paths["key.pem"]),
                            "--tls-client-ca", str(paths["ca.pem"]), "--request-timeout", "1.5"], {})
    try:
        assert running.url.startswith("https://")
        import socket

        host, port = running.url.removeprefix("https://").rsplit(":", 1)
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=10) as silent:  # never starts its handshake
            assert silent.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 4.0
        anonymous = ssl.create_default_context(cafile=str(paths["ca.pem"]))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            post(f"{running.url}/v1/pre-reboot", body("tls-a"), anonymous)
        signed = ssl.create_default_context(cafile=str(paths["ca.pem"]))
        signed.load_cert_chain(str(paths["client.pem"]))
        assert post(f"{running.url}/v1/pre-reboot", body("tls-a"), signed) == (200, {})
    finally:
        running.stop()


def _issue(tmp_path: Path) -> tuple[trustme.CA, dict[str, Path]]:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    paths = {name: tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem")}
    ca.cert_pem.write_to_path(str(paths["ca.pem"]))
    server_cert.cert_chain_pems[0].write_to_path(str(paths["cert.pem"]))
    server_cert.private_key_pem.write_to_path(str(paths["key.pem"]))
    return ca, paths


def test_bad_client_ca_is_named_as_the_client_ca(tmp_path: Path) -> None:
    """A good certificate and key with an unusable --tls-client-ca: exit 3, one line naming the client CA
    (not the certificate)."""
    _, paths = _issue(tmp_path)
    bad_ca = tmp_path / "client-ca.pem"
    bad_ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    result = run_cli("--tls-cert", str(paths["cert.pem"]), "--tls-key", str(paths["key.pem"]),
                     "--tls-client-ca", str(bad_ca))
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOCKSMITHD_FLEETLOCK_TLS_CLIENT_CA" in lines[0] and "client CA" in lines[0]
    assert "TLS_CERT=" not in lines[0]


def test_max_connections_above_the_open_file_limit_is_refused() -> None:
    """--max-connections that cannot fit under the hard open-file limit: exit 3 naming it, nothing served."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = subprocess.run([SERVER, "--max-connections", "1000"], capture_output=True, text=True, timeout=30,
                            preexec_fn=low_limit)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOCKSMITHD_FLEETLOCK_MAX_CONNECTIONS" in lines[0] and "LimitNOFILE" in lines[0]


def test_server_log_has_no_header_values_and_one_line_per_request(plain_server: Running, etcd_node: EtcdCluster,
                                                                  key_prefix: str) -> None:
    """The binary's log for malformed requests and a client gone mid-body: one JSON line each, no header
    value, no traceback; etcd untouched."""
    import socket

    secret = "s3cret-header-value-9c2e"
    host, port = plain_server.url.removeprefix("http://").rsplit(":", 1)
    requests = [
        f"POST /v1/pre-reboot HTTP/1.1\r\nAuthorization: Bearer {secret}\x01\r\n\r\n".encode(),
        f"POST /v1/pre-reboot HTTP/1.1\r\nX-Token: {secret}{'a' * 9000}\r\n\r\n".encode(),
        f"POST /v1/pre-reboot HTTP/1.1\r\nfleet-lock-protocol: true\r\nX-Token: {secret}\r\n"
        f"Content-Length: 100\r\n\r\n{{\"client".encode(),
    ]
    for raw in requests:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(raw)
            if raw.endswith(b"client"):
                continue  # gone mid-body
            answer = sock.recv(65536)
            assert answer.split(b"\r\n")[0].split(b" ")[1] in (b"400", b"431") and secret.encode() not in answer
    time.sleep(0.5)
    plain_server.process.send_signal(signal.SIGTERM)
    assert plain_server.process.wait(timeout=20) == 0
    assert plain_server.process.stderr is not None
    log = plain_server.process.stderr.read().splitlines()
    assert secret not in "\n".join(log) and "Traceback" not in "\n".join(log)
    access = [json.loads(line.split("access: ", 1)[1]) for line in log if "access: {" in line]
    assert [(a["status"], a["outcome"]) for a in access[:2]] == [
        (400, "bad_request_http"), (431, "bad_request_headers_too_large")]
    # Gone mid-body: the handler's read fails (bad_request_body), or, when the end of the connection comes
    # before the handler runs, newer aiohttp reports it as malformed HTTP. Never a 500.
    assert len(access) == 3 and (access[2]["status"], access[2]["outcome"]) in (
        (400, "bad_request_body"), (400, "bad_request_http"))
    assert len(log) == len(access) + 1  # and the "stopping" line (the "listening" line was read at start)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_verifies_and_does_not_restart_on_bad_config(tmp_path: Path) -> None:
    """The shipped unit passes `systemd-analyze verify`; exits 2 and 3 are not restarted."""
    unit = tmp_path / "locksmithd-fleetlock.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/locksmithd-fleetlock", SERVER))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "locksmithd-fleetlock" in line]
    assert problems == [], problems
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.read_string(UNIT.read_text())
    assert set(parser.get("Service", "RestartPreventExitStatus").split()) == {"2", "3"}
    assert parser.get("Service", "ExecStart") == "/usr/local/bin/locksmithd-fleetlock"
    from locksmithd.fleetlock.main import SPARE_FILES
    from locksmithd.fleetlock.server import DEFAULT_MAX_CONNECTIONS

    assert int(parser.get("Service", "LimitNOFILE")) >= DEFAULT_MAX_CONNECTIONS + SPARE_FILES


CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "fleetlock"


def _option_variables() -> set[str]:
    from locksmithd.fleetlock.main import cli

    return {"LOCKSMITHD_FLEETLOCK_" + opt.lstrip("-").upper().replace("-", "_")
            for param in cli.params for opt in param.opts if opt.startswith("--")}


def test_contrib_zincati_snippet_points_at_the_server() -> None:
    """The Zincati config.d snippet selects fleet_lock with a base_url and a valid group."""
    import tomllib

    from locksmithd.core.fleetlock_protocol import group_problem

    config = tomllib.loads((CONTRIB / "zincati-fleetlock.toml").read_text())
    assert config["updates"]["strategy"] == "fleet_lock"
    assert config["updates"]["fleet_lock"]["base_url"].startswith("http")
    assert group_problem(config["identity"]["group"]) is None


def test_contrib_env_file_and_manifest_name_real_options() -> None:
    """Every LOCKSMITHD_FLEETLOCK_* variable in the env file and the manifest is an option of the server."""
    known = _option_variables()
    assert {"LOCKSMITHD_FLEETLOCK_ENDPOINT", "LOCKSMITHD_FLEETLOCK_GRACE", "LOCKSMITHD_FLEETLOCK_TLS_CLIENT_CA"} <= known
    for name in ("fleetlock.env", "kubernetes.yaml"):
        used = set(re.findall(r"LOCKSMITHD_FLEETLOCK_[A-Z_]+", (CONTRIB / name).read_text()))
        assert used and used <= known, (name, used - known)
    assert "path: /-/healthy" in (CONTRIB / "kubernetes.yaml").read_text()


def test_readme_names_every_answer_and_limit() -> None:
    """The README's FleetLock section lists every error kind the server may answer, and the limit options."""
    from locksmithd.core.fleetlock_protocol import ErrorKind

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## FleetLock\n", 1)[1].split("\n## ", 1)[0]
    missing = [kind.kind for kind in ErrorKind if f"`{kind.kind}`" not in section]
    assert missing == []
    for option in ("--max-connections", "--max-concurrent", "--request-timeout", "LimitNOFILE"):
        assert option in section
