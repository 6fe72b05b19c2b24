"""A fleet of real systemd hosts (``harness.real_host``) sharing one etcd, as an operator would run it.

Each host has locksmithd from the Debian package (``harness.rootfs``: its units
as the package installs and enables them), its configuration in
/etc/locksmithd/locksmithd.conf, and its own machine id and hostname. What the
tests judge is what an operator sees: etcd (through ``locksmithctl`` run here),
``journalctl``, ``systemctl`` and exit codes inside the hosts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.real_host import HostError, RealHost
from harness.rootfs import Layers

REPO = Path(__file__).resolve().parent.parent
UNPRIVILEGED_UNIT = "locksmithd-unprivileged.service"
FLEETLOCK_UNIT = "locksmithd-fleetlock.service"
POLKIT_RULE = REPO / "systemd/polkit/50-locksmithd.rules"
POLKIT_RULE_PATH = "usr/share/polkit-1/rules.d/50-locksmithd.rules"  # where the package puts it
CONF = "etc/locksmithd/locksmithd.conf"
FIGURES_FILE = "figures.txt"  # under build/e2e: what the scenarios measured, printed by harness.e2e


def conf_text(settings: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class RealFleet:
    """Hosts created under ``workdir``, all configured against ``endpoint``; ``stop`` ends them all."""

    def __init__(self, layers: Layers, workdir: Path, endpoint: str) -> None:
        self.layers = layers
        self.workdir = workdir
        self.endpoint = endpoint
        self.hosts: dict[str, RealHost] = {}

    def add(self, name: str, settings: Mapping[str, str], *, unprivileged: bool = False,
            files: Mapping[str, tuple[str, int]] | None = None) -> RealHost:
        """A new host running locksmithd with ``settings`` (LOCKSMITHD_ENDPOINT added), not booted yet.

        ``unprivileged`` switches to the package's unprivileged unit as the README
        tells (``systemctl disable locksmithd; systemctl enable
        locksmithd-unprivileged``). ``files`` maps paths in the host to (text, mode).
        """
        host = RealHost(name=name, layers=self.layers, workdir=self.workdir / name)
        host.create()
        self.hosts[name] = host
        host.write(CONF, conf_text({"LOCKSMITHD_ENDPOINT": self.endpoint, **settings}))
        if unprivileged:
            host.disable("locksmithd.service")
            host.enable(UNPRIVILEGED_UNIT)
            host.unit = UNPRIVILEGED_UNIT
        for path, (text, mode) in (files or {}).items():
            host.write(path, text, mode)
        return host

    def boot_all(self, timeout_s: float = 60.0) -> None:
        for host in self.hosts.values():
            host.boot()
        for host in self.hosts.values():
            host.wait_boots(1, timeout_s)

    def ctl(self, *args: str, group: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run this checkout's locksmithctl against the fleet's etcd (as an operator's workstation would)."""
        argv = [sys.executable, "-m", "locksmithd.ctl.main", "--endpoint", self.endpoint]
        if group:
            argv += ["--group", group]
        done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"locksmithctl {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def status(self, group: str = "") -> dict[str, Any]:
        """``locksmithctl status --json`` for ``group``."""
        parsed: dict[str, Any] = json.loads(self.ctl("status", "--json", group=group).stdout)
        return parsed

    def queue_place(self, group: str, host: RealHost) -> dict[str, Any] | None:
        """The host's entry in the group's queue (its place and since when it waits; not its age, which
        grows), or None when it is not queued."""
        for waiter in self.status(group)["waiting"]:
            if waiter["id"] == host.machine_id:
                return {key: value for key, value in waiter.items() if key != "age_s"}
        return None

    def stop(self) -> None:
        for host in self.hosts.values():
            try:
                host.stop()
            except (OSError, subprocess.SubprocessError, HostError):
                pass


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.25) -> None:
    """Poll ``predicate`` until true; AssertionError naming ``what`` after ``timeout_s``.

    A host between two boots (``HostError``) or a command inside it that does
    not answer in time counts as "not yet": hosts reboot while being watched.
    """
    deadline = time.monotonic() + timeout_s
    while not _holds(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def _holds(predicate: Callable[[], bool]) -> bool:
    try:
        return predicate()
    except (HostError, subprocess.TimeoutExpired):
        return False


def events(host: RealHost, kind: str | None = None) -> list[dict[str, Any]]:
    """The host's locksmithd event entries (LOCKSMITHD_EVENT set), optionally of one kind, oldest first."""
    # Filtered here: journalctl ANDs a field match after -u with only the last of -u's alternatives.
    return [entry for entry in host.journal("-u", host.unit)
            if "LOCKSMITHD_EVENT" in entry and (kind is None or entry["LOCKSMITHD_EVENT"] == kind)]


def released_after_reboot(host: RealHost) -> bool:
    """Whether the host gave a slot back in a boot after the one that last asked logind to reboot."""
    requested = events(host, "reboot-requested")
    return bool(requested) and any(entry["_BOOT_ID"] != requested[-1]["_BOOT_ID"]
                                   for entry in events(host, "slot-released"))


def entry_time(entry: Mapping[str, Any]) -> float:
    """An entry's wall-clock time in seconds (journald's __REALTIME_TIMESTAMP is in microseconds)."""
    return int(entry["__REALTIME_TIMESTAMP"]) / 1e6


def record_figures(text: str) -> None:
    """Print ``text`` and append it to the run's figures file (``make e2e`` prints it at the end)."""
    print(text)
    path = REPO / "build/e2e" / FIGURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text.rstrip("\n") + "\n")


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")[:-3]
