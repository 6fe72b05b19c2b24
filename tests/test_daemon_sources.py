"""Real daemons with LOCKSMITHD_SOURCES: the reboot-required file (inotify) and the check command."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import SimulatedHost, wait_for
from harness.ports import free_port
from tests.test_metrics import scrape
from tests.test_daemon_integration import ctl, run, settled, start_host


def log_of(host: SimulatedHost) -> str:
    return (host.workdir / "locksmithd.log").read_text(errors="replace")


def history(cluster: EtcdCluster, prefix: str) -> list[dict[str, str]]:
    result = ctl(cluster, prefix, "history", "--json")
    assert result.returncode == 0, result.stderr
    events: list[dict[str, str]] = json.loads(result.stdout)
    return events


def reboot_required_env(host_dir: Path) -> dict[str, str]:
    return {"LOCKSMITHD_SOURCES": "reboot-required",
            "LOCKSMITHD_REBOOT_REQUIRED_FILE": str(host_dir / "run" / "reboot-required")}


def test_file_created_at_runtime_leads_to_one_coordinated_reboot(tmp_path: Path, etcd_node: EtcdCluster,
                                                                 key_prefix: str) -> None:
    """Written while the daemon idles (as unattended-upgrades does): noticed within a second, one reboot."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-rr-live", key_prefix,
                                extra_env=reboot_required_env(tmp_path / "h-rr-live"))
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "idle")
            await wait_for(lambda: "watching" in log_of(host), 5, "the watch")
            (host.run_dir / "reboot-required.pkgs").write_text("linux-image-6.1.0-18-amd64\nlibc6\nlibc6\n")
            # Written the way dpkg's helper does: a temporary name, then renamed into place.
            (host.run_dir / "reboot-required.tmp").write_text("*** System restart required ***\n")
            created = time.monotonic()
            (host.run_dir / "reboot-required.tmp").rename(host.run_dir / "reboot-required")
            await wait_for(lambda: "a reboot is needed" in log_of(host), 5, "noticed")
            assert time.monotonic() - created < 1.5
            await wait_for(lambda: settled(host), 30, "reboot and release")
            await asyncio.sleep(2)  # /run was emptied by the reboot: no second one
            assert len(host.logind.reboots) == 1
            text = log_of(host)
            assert "reboot-required: " in text and "packages: linux-image-6.1.0-18-amd64, libc6)" in text
            requested = [e for e in history(etcd_node, key_prefix) if e["event"] == "reboot-requested"]
            assert len(requested) == 1 and "linux-image-6.1.0-18-amd64" in requested[0]["detail"]
        finally:
            await host.stop()

    run(scenario)


def test_file_present_before_start_leads_to_one_reboot(tmp_path: Path, etcd_node: EtcdCluster,
                                                       key_prefix: str) -> None:
    async def scenario() -> None:
        run_dir = tmp_path / "h-rr-before" / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "reboot-required").write_text("")
        host = await start_host(tmp_path, etcd_node, "h-rr-before", key_prefix,
                                extra_env=reboot_required_env(tmp_path / "h-rr-before"))
        try:
            await wait_for(lambda: settled(host), 30, "reboot and release")
            await asyncio.sleep(2)
            assert len(host.logind.reboots) == 1
        finally:
            await host.stop()

    run(scenario)


def test_holder_record_names_the_reason(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """While the host holds its slot (its logind refuses for now), the record's reason names the source."""
    async def scenario() -> None:
        run_dir = tmp_path / "h-rr-hold" / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "reboot-required").write_text("")
        host = await start_host(tmp_path, etcd_node, "h-rr-hold", key_prefix, login_delay="30s",
                                extra_env=reboot_required_env(tmp_path / "h-rr-hold"))
        try:
            host.logind.add_session("7", "alice", "tty1")  # the daemon holds its slot while warning alice
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "warning-users", 15, "holding")
            status = json.loads(ctl(etcd_node, key_prefix, "status", "--json").stdout)
            assert status["holders"] == ["h-rr-hold"]
            reason = status["holder_info"]["h-rr-hold"]["reason"]
            assert reason == f"reboot-required: {run_dir / 'reboot-required'}"
        finally:
            await host.stop()

    run(scenario)


def test_reboot_required_host_exports_only_its_source(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A real daemon with only the reboot-required source: the need is logged once and only
    ``locksmithd_reboot_needed{source="reboot-required"}`` is set (never update_engine's)."""
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        run_dir = tmp_path / "h-rr-metric" / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "reboot-required").write_text("")
        host = await start_host(tmp_path, etcd_node, "h-rr-metric", key_prefix, login_delay="30s",
                                extra_env={**reboot_required_env(tmp_path / "h-rr-metric"),
                                           "LOCKSMITHD_METRICS_ADDRESS": address})
        try:
            host.logind.add_session("7", "alice", "tty1")  # the daemon holds its slot while warning alice
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "warning-users", 15, "holding")
            samples = await asyncio.to_thread(scrape, address)
            gauges = {dict(labels)["source"]: v for (name, labels), v in samples.items()
                      if name == "locksmithd_reboot_needed"}
            assert gauges == {"reboot-required": 1.0}
            assert log_of(host).count("a reboot is needed") == 1, log_of(host)
        finally:
            await host.stop()

    run(scenario)


def write_check(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("outcome", ["needed", "not-needed", "error"])
def test_check_command_outcomes(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str, outcome: str) -> None:
    """Exit 1 reboots once (the check passes after boot); exit 0 never; exit 2 is logged and retried, never a reboot."""
    name = f"h-cmd-{outcome}"
    host_dir = tmp_path / name
    (host_dir / "run").mkdir(parents=True)
    runs = host_dir / "runs"
    code = {"needed": "if [ -e \"$RUN/pending\" ]; then exit 1; fi; exit 0",
            "not-needed": "exit 0", "error": "echo broken repository >&2; exit 2"}[outcome]
    if outcome == "needed":
        (host_dir / "run" / "pending").write_text("")
    check = write_check(tmp_path / f"check-{outcome}", f'echo run >> "{runs}"\nRUN="{host_dir / "run"}"\n{code}\n')
    env = {"LOCKSMITHD_SOURCES": "command", "LOCKSMITHD_REBOOT_CHECK_COMMAND": f"{check} --flag 'two words'",
           "LOCKSMITHD_REBOOT_CHECK_INTERVAL": "1s"}

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, name, key_prefix, extra_env=env)
        try:
            if outcome == "needed":
                await wait_for(lambda: settled(host), 30, "reboot and release")
                await asyncio.sleep(2.5)
                assert len(host.logind.reboots) == 1
                assert f"a reboot is needed: command: {check} --flag two words exited 1" in log_of(host)
            else:
                await wait_for(lambda: runs.exists() and len(runs.read_text().split()) >= 3, 20, "three runs")
                assert host.logind.reboots == []
                assert host.daemon_state().get("DAEMON_STATE") == "idle"
            if outcome == "error":
                assert "reboot check" in log_of(host) and "exit 2" in log_of(host)
                assert "broken repository" in log_of(host)
        finally:
            await host.stop()

    run(scenario)


async def exit_code(host: SimulatedHost, timeout_s: float = 20) -> int:
    assert host.process is not None
    return await asyncio.wait_for(host.process.wait(), timeout_s)


@pytest.mark.parametrize(("env", "needles"), [
    ({"LOCKSMITHD_SOURCES": "reboot-required", "LOCKSMITHD_REBOOT_REQUIRED_FILE": "/nonexistent-dir/reboot-required"},
     ["LOCKSMITHD_REBOOT_REQUIRED_FILE", "cannot watch /nonexistent-dir"]),
    ({"LOCKSMITHD_SOURCES": "command", "LOCKSMITHD_REBOOT_CHECK_COMMAND": "/nonexistent/needs-restarting -r"},
     ["LOCKSMITHD_REBOOT_CHECK_COMMAND", "not found or not executable"]),
])
def test_the_only_source_failing_to_start_exits_3(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str,
                                                  env: dict[str, str], needles: list[str]) -> None:
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-src-fail", key_prefix, extra_env=env)
        try:
            host.auto_restart = False
            assert await exit_code(host) == 3
            errors = [line for line in log_of(host).splitlines() if "ERROR" in line or "error" in line.lower()]
            assert any(all(needle in line for needle in needles) for line in errors), log_of(host)
            assert "Traceback" not in log_of(host)
        finally:
            await host.stop()

    run(scenario)


def test_a_failing_source_among_several_is_a_warning(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """reboot-required cannot watch its directory; update_engine still leads to the reboot."""
    env = {"LOCKSMITHD_SOURCES": "reboot-required,update-engine",
           "LOCKSMITHD_REBOOT_REQUIRED_FILE": "/nonexistent-dir/reboot-required"}

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-src-warn", key_prefix, extra_env=env)
        try:
            await wait_for(lambda: host.daemon_state().get("DAEMON_STATE") == "idle", 15, "idle")
            assert "reboot source reboot-required cannot start" in log_of(host)
            host.need_reboot()
            await wait_for(lambda: settled(host), 30, "reboot and release")
            assert "a reboot is needed: update-engine" in log_of(host)
        finally:
            await host.stop()

    run(scenario)


def test_directory_recreated_is_watched_again(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str) -> None:
    """The watched directory is removed and made again (as when /run is remounted): a new file is still seen."""
    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-rr-remount", key_prefix,
                                extra_env=reboot_required_env(tmp_path / "h-rr-remount"))
        try:
            await wait_for(lambda: "watching" in log_of(host), 15, "the watch")
            host.run_dir.rmdir()
            await wait_for(lambda: "went away" in log_of(host), 5, "the watch ended")
            await asyncio.sleep(1.5)  # the directory stays away for a while
            host.run_dir.mkdir()
            await wait_for(lambda: "watching" in log_of(host).split("went away")[-1], 5, "watched again")
            (host.run_dir / "reboot-required").write_text("")
            await wait_for(lambda: settled(host), 30, "reboot and release")
            assert len(host.logind.reboots) == 1
        finally:
            await host.stop()

    run(scenario)
