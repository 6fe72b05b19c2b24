"""Fixtures of the real-systemd e2e (``make e2e``): the cached root filesystem, one etcd, fleets of hosts.

Collected only with LOCKSMITHD_E2E=1 (tests/conftest.py): it needs root,
systemd-nspawn, overlayfs and mmdebstrap's root filesystem, which ``make e2e``
prepares first (``python -m harness.rootfs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from harness.real_fleet import REPO, RealFleet
from harness.rootfs import Layers, prepare_layers, recorded_layers

BUILD_DIR = REPO / "build/e2e"


@pytest.fixture(scope="session")
def layers() -> Layers:
    """The layers ``make e2e`` prepared (or prepared here when run by hand)."""
    return recorded_layers(BUILD_DIR) or prepare_layers(REPO, BUILD_DIR)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster.start(1, log_dir=tmp_path_factory.mktemp("etcd-logs")) as cluster:
        yield cluster


@pytest.fixture
def fleet(layers: Layers, etcd: EtcdCluster, tmp_path: Path) -> Iterator[RealFleet]:
    """An empty fleet; every host added is stopped (by PID) and unmounted at the end."""
    made = RealFleet(layers, tmp_path / "hosts", etcd.client_urls[0])
    try:
        yield made
    finally:
        # Shown by pytest for a failed test only: what each host's daemon and systemd said.
        for host in made.hosts.values():
            if host.running:
                entries = host.journal("-u", host.unit, "-u", "locksmithd-fleetlock.service")
                tail = "\n".join(f"{e.get('SYSLOG_IDENTIFIER', '?')}: {e.get('MESSAGE', '')}" for e in entries[-60:])
                print(f"--- {host.name} ({len(host.boots)} boots) ---\n{tail}")
        made.stop()


FleetFactory = Callable[[], RealFleet]
