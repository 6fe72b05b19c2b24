"""The metrics unix socket: a live one is never replaced (exit 3), a stale one is, a non-root scraper gets in."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import wait_for
from locksmithd.errors import ExitCode
from tests.test_daemon_integration import holders, run, start_host
from tests.test_metrics import try_scrape

NOBODY = 65534
SCRAPE = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
sock.connect(sys.argv[1])
sock.sendall(b"GET /metrics HTTP/1.0\\r\\n\\r\\n")
data = b""
while chunk := sock.recv(65536):
    data += chunk
print(data.split(b"\\r\\n", 1)[0].decode())
print("locksmithd_state" in data.decode())
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp that every user may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="locksmithd-metrics-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_live_socket_is_never_replaced(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Something answers on the path: exit 3 with one line naming the setting; the other server keeps its socket."""
    path = tmp_path / "metrics.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))
    other.listen(8)
    inode = os.lstat(path).st_ino

    async def scenario() -> str:
        host = await start_host(tmp_path, etcd_node, "h-live-sock", key_prefix,
                                extra_env={"LOCKSMITHD_METRICS_ADDRESS": f"unix:{path}"})
        try:
            host.auto_restart = False
            assert host.process is not None
            assert await asyncio.wait_for(host.process.wait(), 30) == ExitCode.CONFIG
            return host.log_text()
        finally:
            await host.stop()

    try:
        log = run(scenario)
        errors = [line for line in log.splitlines() if "LOCKSMITHD_METRICS_ADDRESS" in line]
        assert len(errors) == 1, log
        assert errors[0].endswith("something answers on this socket (another locksmithd?); not replacing it")
        assert "Traceback" not in log
        assert os.lstat(path).st_ino == inode  # still the other server's socket, and it still answers
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        finally:
            probe.close()
        assert holders(etcd_node, key_prefix) == []
    finally:
        other.close()


def test_a_stale_socket_is_replaced_and_nobody_can_scrape(open_dir: Path, tmp_path: Path, etcd_node: EtcdCluster,
                                                          key_prefix: str) -> None:
    """A socket file nothing listens on (a crash) is replaced; the new one is mode 0666: uid 65534 scrapes it."""
    path = open_dir / "metrics.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-stale-sock", key_prefix,
                                extra_env={"LOCKSMITHD_METRICS_ADDRESS": f"unix:{path}"})
        try:
            await wait_for(lambda: try_scrape(f"unix:{path}") is not None, 20,
                           f"metrics served; log:\n{host.log_text()[-2000:]}")
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o666
            python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
            scraped = await asyncio.to_thread(subprocess.run, [python, "-I", "-c", SCRAPE, str(path)], user=NOBODY,
                                              group=NOBODY, extra_groups=[], cwd="/", capture_output=True,
                                              text=True, timeout=30)
            assert scraped.returncode == 0, scraped.stderr
            assert scraped.stdout.split() == ["HTTP/1.0", "200", "OK", "True"]
        finally:
            await host.stop()

    run(scenario)


@pytest.mark.parametrize("text", ["http://127.0.0.1:9474", "https://[::1]:9474/metrics", "unix:///run/m.sock"])
def test_a_url_is_refused_as_a_url(tmp_path: Path, text: str) -> None:
    """A URL for the metrics address: exit 3, one line that speaks of URLs, not of IPv6 brackets."""
    env = {"PATH": os.environ["PATH"], "LOCKSMITHD_MACHINE_ID": "m1", "LOCKSMITHD_METRICS_ADDRESS": text,
           "LOCKSMITHD_STATE_FILE": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "locksmithd.daemon.main", "--conf", os.devnull],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.count("\n") == 1 and "LOCKSMITHD_METRICS_ADDRESS" in result.stderr
    assert "a URL is not a listening address" in result.stderr and "IPv6" not in result.stderr
    assert not (tmp_path / "state").exists()
