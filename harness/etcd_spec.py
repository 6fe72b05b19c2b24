"""What etcd.py and etcd_docker.py share: a cluster's spec, its TLS choice and the launch error.

Its own module so that the Docker fallback needs nothing from etcd.py, which loads it lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.certs import Pki
from harness.ports import LOOPBACK


class EtcdLaunchError(RuntimeError):
    """etcd did not start, or did not become healthy in time; the message ends with its log tail."""


@dataclass(frozen=True)
class TlsConfig:
    """Serve clients over https; ``pki`` is made under the data root when None."""

    client_cert_auth: bool = False
    pki: Pki | None = None


@dataclass(frozen=True)
class Spec:
    """Settings shared by all members of one cluster."""

    etcd_bin: str
    token: str
    initial_cluster: str
    timing_ms: tuple[int, int]
    tls: TlsConfig | None
    extra_args: tuple[str, ...]
    client_host: str = LOOPBACK
