"""Run the real locksmithctl (python -m locksmithd.ctl.main) with str or raw-bytes argv and env, and check its output."""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from collections.abc import Mapping
from typing import IO

from harness.etcd import EtcdCluster
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints

Arg = str | bytes


def run_ctl(*args: Arg, env: Mapping[str, Arg] | None = None, stdin: bytes | None = None,
            stdin_fd: int | IO[bytes] | None = None, stdout_fd: int | None = None,
            timeout_s: float = 60) -> subprocess.CompletedProcess[bytes]:
    """locksmithctl with ``args``; no LOCKSMITHCTL_* from the caller's environment leaks in."""
    base = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()
            if not k.startswith("LOCKSMITHCTL_") and k != "DBUS_SYSTEM_BUS_ADDRESS"}
    extra = {os.fsencode(k): os.fsencode(v) for k, v in (env or {}).items()}
    argv = [os.fsencode(sys.executable), b"-m", b"locksmithd.ctl.main", *(os.fsencode(a) for a in args)]
    return subprocess.run(argv, env={**base, **extra}, timeout=timeout_s,
                          input=stdin if stdin_fd is None else None,
                          stdin=stdin_fd if stdin_fd is not None else (None if stdin is not None else subprocess.DEVNULL),
                          stdout=stdout_fd if stdout_fd is not None else subprocess.PIPE, stderr=subprocess.PIPE)


def on(cluster: EtcdCluster, prefix: str, *args: Arg, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return run_ctl("--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args, **kw)  # type: ignore[arg-type]


def has_control(text: str) -> bool:
    """True if ``text`` holds a character a terminal could act on (other than the line ends)."""
    return any(char != "\n" and (unicodedata.category(char).startswith("C")
                                 or unicodedata.category(char) in ("Zl", "Zp")) for char in text)


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """stderr as text, asserting it is exactly one line, UTF-8, without a traceback or control characters."""
    text = result.stderr.decode("utf-8")
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert "Traceback" not in text and not has_control(text), text
    assert text.startswith("locksmithctl: "), text
    return text


def store_for(cluster: EtcdCluster) -> EtcdStore:
    return EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(cluster.client_urls, "test", "endpoints")))


def raw_put(cluster: EtcdCluster, key: str | bytes, value: bytes) -> None:
    """Write ``value`` at ``key`` as is (bytes keys may hold anything, as etcdctl can)."""
    import etcd3

    client = etcd3.client(host="127.0.0.1", port=int(cluster.client_urls[0].rsplit(":", 1)[1]))
    try:
        client.put(key, value)
    finally:
        client.close()


def raw_get(cluster: EtcdCluster, key: str) -> bytes | None:
    store = store_for(cluster)
    try:
        stored = store.read(key)
        return None if stored is None else stored.value
    finally:
        store.close()
