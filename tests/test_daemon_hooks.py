"""Real daemons run pre-reboot and post-boot hooks: failures give the slot back (before) or keep it (after)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.fleet import SimulatedHost, wait_for
from tests.test_daemon_integration import ctl, run, settled, start_host


def write_hook(directory: Path, name: str, fail_while: Path, record: Path) -> None:
    """A hook that appends its kind and environment to ``record`` and fails while ``fail_while`` exists."""
    directory.mkdir(parents=True, exist_ok=True)
    hook = directory / name
    hook.write_text(f"""#!/bin/sh
echo "$LOCKSMITHD_HOOK|$LOCKSMITHD_GROUP|$LOCKSMITHD_HOLDER_ID|$LOCKSMITHD_REBOOT_REASON" >> "{record}"
echo "hook {name} says hello"
if [ -e "{fail_while}" ]; then echo "drain refused: PodDisruptionBudget" >&2; exit 3; fi
exit 0
""")
    hook.chmod(0o755)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def hook_env(host_dir: Path) -> dict[str, str]:
    return {"LOCKSMITHD_PRE_REBOOT_DIR": str(host_dir / "pre-reboot.d"),
            "LOCKSMITHD_POST_BOOT_DIR": str(host_dir / "post-boot.d"), "LOCKSMITHD_HOOK_TIMEOUT": "20s"}


def log_of(host: SimulatedHost) -> str:
    return (host.workdir / "locksmithd.log").read_text(errors="replace")


def test_failing_pre_reboot_hook_releases_the_slot_and_retries(tmp_path: Path, etcd_node: EtcdCluster,
                                                               key_prefix: str) -> None:
    host_dir = tmp_path / "h-pre"
    fail, record = tmp_path / "pre-fails", tmp_path / "record"
    fail.write_text("")
    write_hook(host_dir / "pre-reboot.d", "10-drain", fail, record)
    write_hook(host_dir / "post-boot.d", "90-uncordon", tmp_path / "never", record)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-pre", key_prefix, group="hooks", needs_reboot=True,
                                extra_env=hook_env(host_dir))
        try:
            await wait_for(lambda: sum(line.startswith("pre-reboot") for line in lines(record)) >= 2, 30,
                           "the pre-reboot hook tried twice")
            assert host.logind.reboots == []
            assert "pre-reboot hook" in log_of(host) and "giving the slot back" in log_of(host)
            assert "drain refused: PodDisruptionBudget" in log_of(host)  # the hook's output is logged
            # Each failed attempt is undone by the post-boot hooks (uncordon), and the slot is given back.
            assert lines(record)[:2] == ["pre-reboot|hooks|h-pre|update-engine", "post-boot|hooks|h-pre|update-engine"]
            await wait_for(lambda: holders_of(etcd_node, key_prefix) == [], 10, "the slot given back")
            fail.unlink()
            await wait_for(lambda: settled(host), 40, "reboot once the hook passes")
            assert len(host.logind.reboots) == 1
            assert lines(record)[-1] == "post-boot|hooks|h-pre|update-engine"  # after boot, with the reason
        finally:
            await host.stop()

    run(scenario)


def holders_of(cluster: EtcdCluster, prefix: str) -> list[str]:
    result = ctl(cluster, prefix, "--group", "hooks", "status", "--json")
    assert result.returncode == 0, result.stderr
    found: list[str] = json.loads(result.stdout)["holders"]
    return found


def test_failing_post_boot_hook_keeps_the_slot_until_it_passes(tmp_path: Path, etcd_node: EtcdCluster,
                                                                key_prefix: str) -> None:
    host_dir = tmp_path / "h-post"
    fail, record = tmp_path / "post-fails", tmp_path / "record"
    fail.write_text("")
    write_hook(host_dir / "post-boot.d", "50-uncordon", fail, record)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-post", key_prefix, group="hooks", needs_reboot=True,
                                extra_env=hook_env(host_dir))
        try:
            await wait_for(lambda: len(host.logind.reboots) == 1 and host.boots >= 2, 30, "the reboot")
            await wait_for(lambda: sum(line.startswith("post-boot") for line in lines(record)) >= 3, 30,
                           "the post-boot hook retried")
            assert host.daemon_state().get("DAEMON_STATE") == "checking-health"
            assert holders_of(etcd_node, key_prefix) == ["h-post"]  # not released: not back in service
            assert "keeping the slot" in log_of(host)
            fail.unlink()
            await wait_for(lambda: settled(host), 30, "released once the hook passes")
            assert holders_of(etcd_node, key_prefix) == []
            assert len(host.logind.reboots) == 1
        finally:
            await host.stop()

    run(scenario)
