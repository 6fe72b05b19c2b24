"""The stop that the Debian package's removal asks for writes nothing to etcd (README "Remove and purge")."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.fleet import wait_for
from locksmithd.daemon.main import PACKAGE_REMOVAL_MARKER
from tests.test_daemon_integration import holders, run, start_host
from tests.test_daemon_sources import history

SLOW_HOOK = "#!/bin/sh\necho $$ > \"$(dirname \"$0\")/../hook.pid\"\nexec sleep 300\n"


def test_a_stop_for_the_package_removal_keeps_a_slot_taken_in_this_boot(tmp_path: Path, etcd_node: EtcdCluster,
                                                                        key_prefix: str) -> None:
    """With the prerm's marker beside the state file, SIGTERM while holding an unused slot exits 0 at once.

    Without the marker the same stop gives the slot back (a clean stop); with
    it, the slot stays held and no history event is written: nothing at all
    goes to etcd.
    """
    hooks = tmp_path / "pre-reboot.d"
    hooks.mkdir()
    (hooks / "10-slow").write_text(SLOW_HOOK)
    (hooks / "10-slow").chmod(0o755)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-removal", key_prefix, needs_reboot=True,
                                extra_env={"LOCKSMITHD_PRE_REBOOT_DIR": str(hooks)})
        try:
            await wait_for(lambda: (tmp_path / "hook.pid").exists(), 20, "the pre-reboot hook to run")
            assert holders(etcd_node, key_prefix) == ["h-removal"]
            before = history(etcd_node, key_prefix)
            (host.state_file.parent / PACKAGE_REMOVAL_MARKER).touch()
            host.auto_restart = False
            assert host.process is not None
            host.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(host.process.wait(), 20) == 0
            assert holders(etcd_node, key_prefix) == ["h-removal"]
            assert history(etcd_node, key_prefix) == before
            assert "stopping for the package's removal: nothing is written to etcd" in host.log_text()
        finally:
            pid_file = tmp_path / "hook.pid"
            if pid_file.exists():  # systemd would kill the unit's cgroup; here the hook is ours to end
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            await host.stop()

    run(scenario)
