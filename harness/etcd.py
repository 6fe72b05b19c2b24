"""Real etcd processes on loopback ports for tests, the demo and benchmarks."""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from harness.certs import Pki, make_pki
from harness.etcd_metrics import grpc_requests_total, parse_prometheus
from harness.etcd_spec import EtcdLaunchError, Spec, TlsConfig
from harness.ports import LOOPBACK, free_port

__all__ = ["EtcdAuth", "EtcdCluster", "EtcdLaunchError", "EtcdMember", "EtcdctlError", "TlsConfig",
           "enable_auth", "grpc_requests_total", "parse_prometheus"]

ETCD_BIN = "/usr/bin/etcd"
ETCDCTL_BIN = "/usr/bin/etcdctl"
# (heartbeat, election) in ms. A lone member cannot hold a spurious election,
# so it gets short timers for a fast start; a cluster gets etcd's defaults,
# which survive CPU starvation on a loaded 2-core box.
SINGLE_TIMING_MS = (50, 500)
CLUSTER_TIMING_MS = (100, 1000)
_LOG_TAIL_LINES = 25
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EtcdctlError(RuntimeError):
    """An etcdctl command exited non-zero; the message holds its stderr."""


@dataclass(frozen=True)
class EtcdAuth:
    """Credentials set up by ``enable_auth``; ``user`` may only touch ``key_prefix``."""

    root_user: str
    root_password: str = field(repr=False)
    user: str
    password: str = field(repr=False)
    role: str
    key_prefix: str


class _Process(Protocol):
    """What a member needs from a running etcd: ``subprocess.Popen`` or a container."""

    @property
    def pid(self) -> int: ...
    def poll(self) -> int | None: ...
    def send_signal(self, sig: int, /) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class EtcdMember:
    """One etcd process with fixed ports and data dir that survive ``restart``."""

    def __init__(self, name: str, data_dir: Path, log_path: Path) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_port = free_port()
        self.peer_port = free_port()
        self.metrics_port = free_port()
        self._spec: Spec | None = None
        self._proc: _Process | None = None
        self._log: IO[bytes] | None = None
        self._paused = False

    @property
    def client_url(self) -> str:
        scheme = "https" if self._spec and self._spec.tls else "http"
        host = self._spec.client_host if self._spec else LOOPBACK
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        """Plain-http listener serving /metrics and /health, even when clients use TLS."""
        return f"http://{LOOPBACK}:{self.metrics_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def is_running(self) -> bool:
        """True while the process exists, paused or not."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self.is_running and self._paused

    def args(self) -> list[str]:
        """The etcd command line for this member."""
        assert self._spec is not None
        spec = self._spec
        heartbeat_ms, election_ms = spec.timing_ms
        args = [
            spec.etcd_bin, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--listen-metrics-urls", self.metrics_url,
            "--initial-cluster", spec.initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", spec.token,
            "--heartbeat-interval", str(heartbeat_ms), "--election-timeout", str(election_ms),
            "--logger", "zap",
        ]
        if spec.tls:
            pki = spec.tls.pki
            assert pki is not None
            args += ["--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key)]
            if spec.tls.client_cert_auth:
                # etcd 3.4 demands client certificates whenever --trusted-ca-file is set,
                # whatever --client-cert-auth says; so CA-only TLS must omit it.
                args += ["--client-cert-auth", "--trusted-ca-file", str(pki.ca_cert)]
        return args + list(spec.extra_args)

    def launch(self) -> None:
        """Start the process without waiting for health; a no-op while running."""
        if self.is_running:
            return
        assert self._spec is not None
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when reaped
        try:
            self._proc = _spawn(self.args(), self._log, self._spec)
        except BaseException:
            self._close_log()
            raise
        self._paused = False

    def kill(self) -> None:
        """SIGKILL the process and reap it; a no-op if it is not running."""
        if self.is_running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGKILL)
        self._reap(timeout_s=10)

    def terminate(self, timeout_s: float = 10) -> None:
        """SIGTERM (resuming first if paused) and reap; SIGKILL after ``timeout_s``."""
        if self.is_running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGCONT)
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.send_signal(signal.SIGKILL)
        self._reap(timeout_s=10)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        if self._proc and self.is_running:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self._proc and self.is_running:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self, timeout_s: float = 30) -> None:
        """Terminate if running, start again on the same ports and data, wait healthy.

        In a cluster, health needs a quorum: restarting one member while the
        majority is down raises ``EtcdLaunchError`` after ``timeout_s``.
        """
        self.terminate()
        self.launch()
        self.wait_healthy(timeout_s)

    def health(self) -> bool:
        """True if /health says so within 1 s (it needs a leader and a quorum read)."""
        try:
            with _no_proxy.open(self.metrics_url + "/health", timeout=1) as resp:
                return b'"true"' in resp.read()
        except (OSError, http.client.HTTPException):
            return False

    def wait_healthy(self, timeout_s: float = 30) -> None:
        """Poll /health until true; ``EtcdLaunchError`` with the log tail if the process
        exits or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.is_running:
                raise EtcdLaunchError(self._failure("exited before becoming healthy"))
            if self.health():
                return
            if time.monotonic() > deadline:
                raise EtcdLaunchError(self._failure(f"not healthy after {timeout_s}s"))
            time.sleep(0.05)

    def metrics(self, timeout_s: float = 2) -> dict[str, float]:
        """The member's Prometheus metrics, keyed by series (``name{labels}``)."""
        with _no_proxy.open(self.metrics_url + "/metrics", timeout=timeout_s) as resp:
            return parse_prometheus(resp.read().decode())

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str) -> str:
        code = self._proc.poll() if self._proc else None
        return (f"etcd member {self.name} ({self.client_url}) {what} (exit code {code});"
                f" log {self.log_path}, last lines:\n{self.log_tail()}")

    def _reap(self, timeout_s: float) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return  # leave it; stop() will try again
        self._paused = False
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __repr__(self) -> str:
        return f"EtcdMember({self.name!r}, {self.client_url!r}, pid={self.pid})"


class EtcdCluster:
    """A set of etcd members on loopback; use ``start`` and stop it (or use ``with``)."""

    def __init__(self, members: list[EtcdMember], root: Path, owns_root: bool,
                 pki: Pki | None) -> None:
        self.members = members
        self.root = root
        self.pki = pki
        self.auth: EtcdAuth | None = None
        self._owns_root = owns_root

    @classmethod
    def start(cls, size: int = 1, tls: TlsConfig | None = None,
              data_root: str | os.PathLike[str] | None = None,
              log_dir: str | os.PathLike[str] | None = None, *,
              timeout_s: float = 30, timing_ms: tuple[int, int] | None = None,
              extra_args: Sequence[str] = (), etcd_bin: str = ETCD_BIN,
              client_host: str = LOOPBACK) -> EtcdCluster:
        """Launch ``size`` members and wait until all are healthy.

        Clients reach the members on ``client_host`` (e.g. "::1" for IPv6);
        peers and metrics stay on the IPv4 loopback.

        Data lives in ``data_root`` (kept) or a fresh temp dir (removed by
        ``stop``); logs go to ``log_dir`` or the data root as ``<name>.log``.
        Port clashes with other processes are retried on new ports. Raises
        ``EtcdLaunchError`` (with the log tail) if etcd cannot be started.
        """
        owns_root = data_root is None
        root = Path(data_root) if data_root is not None else Path(tempfile.mkdtemp(prefix="locksmithd-etcd-"))
        logs = Path(log_dir) if log_dir is not None else root
        logs.mkdir(parents=True, exist_ok=True)
        if tls is not None and tls.pki is None:
            tls = TlsConfig(tls.client_cert_auth, make_pki(root / "pki"))
        timing = timing_ms or (SINGLE_TIMING_MS if size == 1 else CLUSTER_TIMING_MS)
        run = uuid.uuid4().hex[:8]
        for attempt in range(3):
            members = [EtcdMember(f"n{i}", root / f"n{i}-{run}.etcd", logs / f"n{i}-{run}.log")
                       for i in range(size)]
            spec = Spec(etcd_bin, f"locksmithd-test-{run}",
                        ",".join(f"{m.name}={m.peer_url}" for m in members),
                        timing, tls, tuple(extra_args), client_host)
            cluster = cls(members, root, owns_root, tls.pki if tls else None)
            for member in members:
                member._spec = spec
            _live.add(cluster)
            try:
                for member in members:
                    member.launch()
                cluster.wait_healthy(timeout_s)
                return cluster
            except BaseException as exc:
                cluster._stop_members()
                _live.discard(cluster)
                for member in members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
                if attempt == 2 or "address already in use" not in str(exc):
                    cluster.stop()
                    raise
        raise AssertionError("unreachable")

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def member(self, name: str) -> EtcdMember:
        return next(m for m in self.members if m.name == name)

    def wait_healthy(self, timeout_s: float = 30) -> None:
        """Wait until every running, unpaused member reports healthy."""
        deadline = time.monotonic() + timeout_s
        for member in self.members:
            if member.is_running and not member.is_paused:
                member.wait_healthy(max(0.1, deadline - time.monotonic()))

    def heal(self, timeout_s: float = 30) -> None:
        """Resume paused and restart stopped members, then wait until all are healthy."""
        for member in self.members:
            member.resume()
            member.launch()
        self.wait_healthy(timeout_s)

    def leader(self, timeout_s: float = 15) -> EtcdMember:
        """The one member whose metrics say ``etcd_server_is_leader 1``.

        Paused and stopped members are skipped; waits while there is no leader
        (an election) and raises ``TimeoutError`` after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            leaders = [m for m in self.members if _is_leader(m)]
            if len(leaders) == 1:
                return leaders[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no single etcd leader after {timeout_s}s: {leaders}")
            time.sleep(0.05)

    def metrics(self, member: EtcdMember) -> dict[str, float]:
        """``member.metrics()``: parsed Prometheus text from its /metrics."""
        return member.metrics()

    def etcdctl(self, *args: str, user: str | None = None, password: str | None = None,
                endpoints: Iterable[str] | None = None, timeout_s: float = 20) -> str:
        """Run etcdctl (API v3) against running members with this cluster's TLS files.

        Once auth is enabled, runs as root unless ``user`` is given. Returns
        stdout; raises ``EtcdctlError`` on a non-zero exit.
        """
        if not Path(ETCDCTL_BIN).exists():
            raise EtcdctlError(f"{ETCDCTL_BIN} not found; install Debian package etcd-client")
        urls = list(endpoints or [m.client_url for m in self.members if m.is_running])
        cmd = [ETCDCTL_BIN, "--endpoints", ",".join(urls), "--command-timeout", "10s"]
        if self.pki is not None:
            cmd += ["--cacert", str(self.pki.ca_cert), "--cert", str(self.pki.client_cert),
                    "--key", str(self.pki.client_key)]
        if user is None and self.auth is not None:
            user, password = self.auth.root_user, self.auth.root_password
        if user is not None:
            cmd += ["--user", user, "--password", password or ""]
        env = _clean_env() | {"ETCDCTL_API": "3"}
        done = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env,
                              timeout=timeout_s, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()  # drop etcdctl's JSON retry chatter
            problem = [ln for ln in lines if ln.startswith("Error:")] or lines[-1:]
            raise EtcdctlError(f"etcdctl {' '.join(args)}: {' '.join(problem)}")
        return done.stdout

    def stop(self) -> None:
        """Terminate every member and remove the data root if this cluster created it."""
        self._stop_members()
        _live.discard(self)
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _stop_members(self) -> None:
        for member in self.members:
            member.terminate(timeout_s=5)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EtcdCluster({self.client_urls!r})"


def enable_auth(cluster: EtcdCluster, root_password: str, user: str, password: str,
                key_prefix: str, role: str | None = None) -> EtcdAuth:
    """Create root and ``user`` (read-write on ``key_prefix`` only), then enable auth.

    Afterwards ``cluster.auth`` holds the credentials and ``cluster.etcdctl``
    runs as root. etcd's default "simple" tokens expire after 300 s idle
    (``--auth-token-ttl``) and die with the member that issued them.
    """
    if not key_prefix:
        raise ValueError("key_prefix must not be empty: an empty prefix would grant every key")
    role = role or f"{user}-role"
    cluster.etcdctl("user", "add", "root", f"--new-user-password={root_password}")
    cluster.etcdctl("user", "grant-role", "root", "root")
    cluster.etcdctl("role", "add", role)
    cluster.etcdctl("role", "grant-permission", "--prefix=true", role, "readwrite", key_prefix)
    cluster.etcdctl("user", "add", user, f"--new-user-password={password}")
    cluster.etcdctl("user", "grant-role", user, role)
    cluster.etcdctl("auth", "enable")
    cluster.auth = EtcdAuth("root", root_password, user, password, role, key_prefix)
    return cluster.auth


def _is_leader(member: EtcdMember) -> bool:
    if not member.is_running or member.is_paused:
        return False
    try:
        return member.metrics(timeout_s=1).get("etcd_server_is_leader") == 1.0
    except (OSError, http.client.HTTPException):
        return False


def _clean_env() -> dict[str, str]:
    # etcd refuses ETCD_* variables that shadow flags; keep the parent's out.
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


def _spawn(args: list[str], log: IO[bytes], spec: Spec) -> _Process:
    if Path(spec.etcd_bin).exists():
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=_clean_env(), start_new_session=True)
    from harness.etcd_docker import DockerProcess  # only where the etcd binary is missing

    return DockerProcess(args[1:], log, spec)


_live: set[EtcdCluster] = set()  # started and not yet stopped


@atexit.register
def _stop_leftovers() -> None:
    # A crashed test run must not leave etcd processes behind.
    for cluster in list(_live):
        cluster.stop()
