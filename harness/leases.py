"""etcd's leases as etcd itself lists them: how many exist, and which hold no key (for tests and benches)."""

from __future__ import annotations

import os
import subprocess

import etcd3
from etcd3 import etcdrpc

ETCDCTL_BIN = "/usr/bin/etcdctl"


def _client(url: str) -> etcd3.Etcd3Client:
    host, port = url.split("://", 1)[-1].rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=30)


def lease_ids(url: str) -> list[int]:
    """Every lease etcd holds, as ``etcdctl lease list`` prints them (python3-etcd3 lacks the LeaseLeases RPC)."""
    listing = subprocess.run([ETCDCTL_BIN, "--endpoints", url, "lease", "list"], capture_output=True, text=True,
                             check=True, timeout=60, env={**os.environ, "ETCDCTL_API": "3"}).stdout.splitlines()
    return [int(line, 16) for line in listing[1:] if line.strip()]


def leases_without_keys(url: str) -> list[int]:
    """The leases that have no key attached (one LeaseTimeToLive with keys per lease: for small counts)."""
    client = _client(url)
    try:
        empty = []
        for lease_id in lease_ids(url):
            info = client.leasestub.LeaseTimeToLive(etcdrpc.LeaseTimeToLiveRequest(ID=lease_id, keys=True),
                                                    client.timeout)
            if int(info.TTL) > 0 and not list(info.keys):
                empty.append(lease_id)
        return empty
    finally:
        client.close()
