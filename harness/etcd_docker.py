"""Fallback for hosts without /usr/bin/etcd: the same member in a host-network Docker container.

Used only when the etcd binary is missing; nothing requires Docker where etcd is installed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import IO, Any

from harness.etcd_spec import EtcdLaunchError, Spec

DOCKER_IMAGE = "quay.io/coreos/etcd:v3.4.23"


class DockerProcess:
    """Fallback when the etcd binary is missing: the same member in a host-network container."""

    def __init__(self, args: list[str], log: IO[bytes], spec: Spec) -> None:
        try:
            import docker  # type: ignore[import-untyped,import-not-found,unused-ignore]

            client = docker.from_env()
            client.ping()
        except Exception as exc:  # ImportError or any engine error
            raise EtcdLaunchError(
                f"{spec.etcd_bin} is missing and no Docker engine answers ({exc!r}); "
                "install Debian package etcd-server") from exc
        mounts = {p: {"bind": p, "mode": "rw"} for p in mount_dirs(args, spec)}
        self._log = log
        self._container: Any = client.containers.run(
            DOCKER_IMAGE, ["/usr/local/bin/etcd", *args], detach=True, network_mode="host",
            volumes=mounts, labels={"locksmithd-test": spec.token})
        self._container.reload()
        self._pid = int(self._container.attrs["State"]["Pid"])
        self._code: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def poll(self) -> int | None:
        if self._code is None:
            self._container.reload()
            if self._container.status in ("exited", "dead"):
                self._finish(int(self._container.attrs["State"]["ExitCode"]))
        return self._code

    def send_signal(self, sig: int, /) -> None:
        if self.poll() is None:
            self._container.kill(signal=int(sig))

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("docker etcd", timeout or 0)
            time.sleep(0.1)
        assert self._code is not None
        return self._code

    def _finish(self, code: int) -> None:
        self._log.write(self._container.logs())
        self._log.flush()
        self._container.remove(force=True)
        self._code = code


def mount_dirs(args: list[str], spec: Spec) -> set[str]:
    data_dir = Path(args[args.index("--data-dir") + 1])
    dirs = {str(data_dir.parent)}
    if spec.tls and spec.tls.pki:
        dirs.add(str(spec.tls.pki.directory))
    return dirs
