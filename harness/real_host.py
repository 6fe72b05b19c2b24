"""One real systemd host for the e2e: a bookworm root booted with systemd-nspawn, rebooted when it asks.

The host's root is an overlay of the shared read-only layers (``harness.rootfs``)
and its own upper directory, so its files and its persistent journal survive
reboots. ``systemd-nspawn -b --register=no --keep-unit`` boots it (no machined,
PID 1 of this machine is not systemd) sharing this machine's network, so its
locksmithd reaches etcd on loopback. A reboot through logind ends nspawn with
exit 133; a watcher thread then boots the host again, as firmware would.
Commands run inside with nsenter into the container's PID 1 namespaces.

Every wait is bounded; ``stop`` ends nspawn by its PID and unmounts the root.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.rootfs import CLEAN_ENV, Layers

log = logging.getLogger("harness.real_host")

REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot
_STOP_WAIT_S = 40.0  # a unit's stop may take TimeoutStopSec=30s (a SIGSTOPped daemon)
# The hierarchies a container's systemd uses here (cgroup v1 plus the unified one). With --keep-unit a
# container lives in nspawn's own cgroup: each boot gets its own, or containers started from one process
# would share /system.slice/... and remove each other's unit cgroups ("Failed to attach to cgroup").
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
CGROUP_PARENT = "locksmithd-e2e"


class HostError(RuntimeError):
    """The host did not do what was asked in time; the message ends with its console tail."""


@dataclass
class Boot:
    """One run of nspawn: when it started and ended (monotonic), and how it ended."""

    started_at: float
    ended_at: float | None = None
    exit_code: int | None = None


@dataclass
class RealHost:
    """A booted (or bootable) container; ``name`` is also its hostname."""

    name: str
    layers: Layers
    workdir: Path
    machine_id: str = field(default_factory=lambda: secrets.token_hex(16))
    unit: str = "locksmithd.service"  # the daemon's unit on this host (the unprivileged variant has its own)
    reboot_on_request: bool = True
    boots: list[Boot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = self.workdir / "root"
        self._upper = self.workdir / "upper"
        self._work = self.workdir / "work"
        self.console_path = self.workdir / "console.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._watcher: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------

    def create(self) -> None:
        """Mount the root (layers plus this host's upper directory) and give it its identity."""
        for path in (self.root, self._upper, self._work):
            path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.layers.lowerdir()},upperdir={self._upper},workdir={self._work}",
                        str(self.root)], check=True, capture_output=True, timeout=30)
        self.write("etc/machine-id", self.machine_id + "\n", 0o444)
        self.write("etc/hostname", self.name + "\n")

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write ``text`` to ``path`` (relative to the host's root), creating directories."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chmod(target, mode)

    def enable(self, unit: str, directory: str = "/lib/systemd/system") -> None:
        """Enable ``unit`` (a file in ``directory`` of the host) for multi-user.target, as ``systemctl enable`` would."""
        wants = self.root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit
        if not link.is_symlink():
            link.symlink_to(f"{directory}/{unit}")

    def disable(self, unit: str) -> None:
        """Disable ``unit`` for multi-user.target, as ``systemctl disable`` would."""
        (self.root / "etc/systemd/system/multi-user.target.wants" / unit).unlink(missing_ok=True)

    # -- running --------------------------------------------------------------

    def boot(self) -> None:
        """Start the container; a watcher boots it again whenever it exits asking for a reboot."""
        with self._lock:
            self._start_locked()
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name=f"host-{self.name}", daemon=True)
            self._watcher.start()

    def _start_locked(self) -> None:
        cgroups = self._boot_cgroups(len(self.boots) + 1)
        enter = "".join(f'echo $$ > "{path}/cgroup.procs" && ' for path in cgroups)
        nspawn = ["systemd-nspawn", "--quiet", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
                  "-M", self.name, "--console=read-only", "--resolv-conf=off", "--timezone=off",
                  "--link-journal=no"]
        console = open(self.console_path, "ab")  # noqa: SIM115: owned by the process for its life
        try:
            # The shell moves itself into the boot's cgroups, then becomes nspawn (same PID).
            self._process = subprocess.Popen(["sh", "-c", enter + 'exec "$@"', "sh", *nspawn],
                                             stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                             env=CLEAN_ENV)
        finally:
            console.close()
        self.boots.append(Boot(started_at=time.monotonic()))

    def _boot_cgroups(self, boot: int) -> list[Path]:
        """A fresh cgroup for boot number ``boot`` of this host in each hierarchy mounted here."""
        made = []
        for hierarchy in CGROUP_HIERARCHIES:
            if (hierarchy / "cgroup.procs").exists():
                path = hierarchy / CGROUP_PARENT / f"{self.name}-{os.getpid()}-{boot}"
                path.mkdir(parents=True, exist_ok=True)
                made.append(path)
        return made

    def _remove_cgroups(self) -> None:
        """Remove this host's (now empty) boot cgroups, deepest first; a busy one is left."""
        for hierarchy in CGROUP_HIERARCHIES:
            for top in (hierarchy / CGROUP_PARENT).glob(f"{self.name}-{os.getpid()}-*"):
                for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    try:
                        path.rmdir()
                    except OSError:
                        pass
                try:
                    top.rmdir()
                except OSError:
                    pass

    def _watch(self) -> None:
        while True:
            with self._lock:
                process = self._process
            if process is None:
                return
            code = process.wait()
            with self._lock:
                boot = self.boots[-1]
                boot.ended_at, boot.exit_code = time.monotonic(), code
                if self._stopping or code != REBOOT_EXIT or not self.reboot_on_request:
                    if not self._stopping:
                        log.warning("host %s ended with exit %s", self.name, code)
                    self._process = None
                    return
                log.info("host %s rebooted (boot %d)", self.name, len(self.boots))
                self._start_locked()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def leader(self) -> int | None:
        """PID (on this machine) of the container's PID 1, or None between boots."""
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return None
        try:
            tasks = os.listdir(f"/proc/{process.pid}/task")
            children = " ".join(Path(f"/proc/{process.pid}/task/{task}/children").read_text() for task in tasks)
        except OSError:
            return None
        pids = children.split()
        return int(pids[0]) if pids else None

    def run(self, argv: list[str], *, timeout_s: float = 30.0, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the running container (all its namespaces, its root); output as text."""
        leader = self.leader()
        if leader is None:
            raise HostError(f"host {self.name} is not running{self._console_tail()}")
        done = subprocess.run(["nsenter", "-t", str(leader), "-a", "-r", "-w", "--", *argv], capture_output=True,
                              text=True, timeout=timeout_s, env=CLEAN_ENV, input=input_text, check=False)
        if check and done.returncode != 0:
            raise HostError(f"{self.name}: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}"
                            f"{done.stdout.strip()}")
        return done

    def wait_boots(self, count: int, timeout_s: float) -> None:
        """Wait until the host has started ``count`` boots and the latest one's systemd is up."""
        deadline = time.monotonic() + timeout_s
        while len(self.boots) < count or not self.system_up():
            if time.monotonic() > deadline:
                raise HostError(f"host {self.name}: {len(self.boots)} boots, wanted {count} and systemd up, "
                                f"after {timeout_s:.0f}s{self._console_tail()}")
            time.sleep(0.2)

    def system_up(self) -> bool:
        """Whether systemd in the current boot finished starting (running or degraded)."""
        try:
            state = self.run(["systemctl", "is-system-running"], check=False, timeout_s=10).stdout.strip()
        except (HostError, subprocess.TimeoutExpired):
            return False
        return state in ("running", "degraded")

    def main_pid(self) -> str:
        """The daemon unit's main PID as systemd says it ("0" while it does not run)."""
        return self.run(["systemctl", "show", "-P", "MainPID", self.unit]).stdout.strip()

    def journal(self, *args: str) -> list[dict[str, Any]]:
        """The host's journal over all boots, as ``journalctl -o json`` entries (``args`` filter it)."""
        out = self.run(["journalctl", "--no-pager", "-o", "json", *args], check=False, timeout_s=15).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def messages(self, unit: str | None = None) -> list[str]:
        """The journal messages of ``unit`` (default: the daemon's) over all boots, oldest first."""
        return [str(entry.get("MESSAGE", "")) for entry in self.journal("-u", unit or self.unit)]

    def stop(self) -> None:
        """Halt the container (SIGTERM to nspawn, SIGKILL after a bound) and unmount its root.

        A container whose nspawn was killed would live on (its PID 1 in its own
        PID namespace): its leader is killed too, which ends every process in it.
        """
        leader = self.leader()
        with self._lock:
            self._stopping = True
            process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                if leader is not None:
                    _kill_orphaned_init(leader)
        if self._watcher is not None:
            self._watcher.join(10)
        subprocess.run(["umount", "-l", str(self.root)], capture_output=True, timeout=30, check=False)
        self._remove_cgroups()

    def _console_tail(self, lines: int = 15) -> str:
        try:
            text = self.console_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\nconsole:\n" + "\n".join(text.splitlines()[-lines:])


def _kill_orphaned_init(pid: int) -> None:
    """SIGKILL the container's PID 1 (``pid`` on this machine) if it is still its systemd: that ends the
    whole PID namespace. Checked first, so a PID reused meanwhile is never hit."""
    try:
        if b"systemd" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
