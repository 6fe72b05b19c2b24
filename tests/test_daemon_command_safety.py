"""Checks and hooks run as root only from safe places, with a clean environment: the real runner and real daemons."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SimulatedHost, wait_for
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import semaphore_key
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.core.command_env import command_environment
from locksmithd.host.commands import list_commands, run_command, unsafe_place
from tests.test_daemon_integration import holders, run, settled, start_host

NOBODY = 65534


def marker_script(path: Path, marker: Path, *, code: int = 0) -> Path:
    """An executable that leaves ``marker`` behind when it runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit {code}\n")
    path.chmod(0o755)
    return path


def group_writable_file(script: Path, tmp_path: Path) -> Path:
    script.chmod(0o775)
    return script


def world_writable_file(script: Path, tmp_path: Path) -> Path:
    script.chmod(0o757)
    return script


def group_writable_directory(script: Path, tmp_path: Path) -> Path:
    script.parent.chmod(0o775)
    return script.parent


def owned_by_nobody(script: Path, tmp_path: Path) -> Path:
    os.chown(script, NOBODY, -1)
    return script


def directory_owned_by_nobody(script: Path, tmp_path: Path) -> Path:
    os.chown(script.parent, NOBODY, -1)
    return script.parent


def symlink_to_writable_target(script: Path, tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere" / "real"
    target.parent.mkdir()
    script.rename(target)
    target.chmod(0o777)
    script.symlink_to(target)
    return target


def symlink_into_writable_directory(script: Path, tmp_path: Path) -> Path:
    target = tmp_path / "open" / "real"
    target.parent.mkdir()
    target.parent.chmod(0o777)  # no sticky bit: anyone may replace "real"
    script.rename(target)
    script.symlink_to(target)
    return target.parent


def symlink_owned_by_nobody(script: Path, tmp_path: Path) -> Path:
    target = tmp_path / "elsewhere" / "real"
    target.parent.mkdir()
    script.rename(target)
    script.symlink_to(target)
    os.lchown(script, NOBODY, -1)
    return script


UNSAFE: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "file writable by group": (group_writable_file, "is writable by group"),
    "file writable by others": (world_writable_file, "is writable by others"),
    "directory writable by group": (group_writable_directory, "is writable by group"),
    "file owned by another uid": (owned_by_nobody, f"is owned by uid {NOBODY}, not root"),
    "directory owned by another uid": (directory_owned_by_nobody, f"is owned by uid {NOBODY}, not root"),
    "symlink to a writable target": (symlink_to_writable_target, "is writable by group and others"),
    "symlink into a writable directory": (symlink_into_writable_directory, "is writable by group and others"),
    "symlink owned by another uid": (symlink_owned_by_nobody, f"is owned by uid {NOBODY}, not root"),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_runner_refuses_a_command_in_an_unsafe_place(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     case: str) -> None:
    """The real runner never starts it: a failed result and one warning naming the culprit and why."""
    make_unsafe, why = UNSAFE[case]
    marker = tmp_path / "ran"
    script = marker_script(tmp_path / "checks" / "10-check", marker)
    culprit = make_unsafe(script, tmp_path)
    with caplog.at_level(logging.WARNING, logger="locksmithd.commands"):
        result = asyncio.run(run_command(str(script), 10.0))
    assert not marker.exists()
    assert not result.passed and result.error == f"refused: {culprit} {why}"
    assert result.failure() == f"check {script} could not be run: refused: {culprit} {why}"
    assert [r.getMessage() for r in caplog.records] == [f"health check {script} refused: {culprit} {why}"]


def test_safe_places_run(tmp_path: Path) -> None:
    """Root's 0755 file under a sticky /tmp runs, directly and through a symlink to a safe target."""
    assert os.stat("/tmp").st_mode & 0o1002 == 0o1002  # the sticky, world-writable directory on the way
    marker = tmp_path / "ran"
    script = marker_script(tmp_path / "checks" / "10-check", marker)
    link = tmp_path / "checks" / "20-link"
    link.symlink_to(script)
    assert unsafe_place(str(script)) is None and unsafe_place(str(link)) is None
    assert asyncio.run(run_command(str(link), 10.0)).passed and marker.exists()


def test_a_sticky_command_directory_is_still_refused(tmp_path: Path) -> None:
    """/tmp-like directories are fine on the way, never as the place of the commands themselves."""
    checks = tmp_path / "checks"
    marker_script(checks / "10-check", tmp_path / "ran")
    checks.chmod(0o1777)
    paths, problems = list_commands(str(checks), "health check", set(), named="check")
    assert paths == [] and problems == [f"check directory {checks} refused: {checks} is writable by group and others"]


def test_command_environment_keeps_no_secret() -> None:
    """The allow-list: basics, LC_*, the hooks' own LOCKSMITHD_* settings; never the daemon's settings or secrets."""
    daemon = {"PATH": "/bin", "LANG": "C.UTF-8", "LC_TIME": "C", "HOME": "/root", "KUBECONFIG": "/k",
              "LOCKSMITHD_ETCD_PASSWORD": "hunter2", "LOCKSMITHD_ETCD_USERNAME": "u", "LOCKSMITHD_ENDPOINT": "e",
              "LOCKSMITHD_K8S_NODE": "n1", "LOCKSMITHD_DRAIN_TIMEOUT": "5m", "LOCKSMITHD_EXTRA_TOKEN": "t",
              "NOTIFY_SOCKET": "/run/n", "CREDENTIALS_DIRECTORY": "/run/c", "AWS_SECRET_ACCESS_KEY": "s",
              "PYTHONPATH": "/x"}
    env = command_environment(daemon, {"LOCKSMITHD_ETCD_PASSWORD", "LOCKSMITHD_ETCD_USERNAME", "LOCKSMITHD_ENDPOINT"})
    assert env == {"PATH": "/bin", "LANG": "C.UTF-8", "LC_TIME": "C", "HOME": "/root", "KUBECONFIG": "/k",
                   "LOCKSMITHD_K8S_NODE": "n1", "LOCKSMITHD_DRAIN_TIMEOUT": "5m"}
    assert command_environment({}, set()) == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def log_of(host: SimulatedHost) -> str:
    return host.log_text()


def test_daemon_refuses_a_world_writable_pre_reboot_directory(tmp_path: Path, etcd_node: EtcdCluster,
                                                               key_prefix: str) -> None:
    """A refused hook directory is a hook failure: no reboot, the slot given back; once fixed, the reboot goes on."""
    host_dir = tmp_path / "h-unsafe-pre"
    marker = tmp_path / "hook-ran"
    pre = host_dir / "pre-reboot.d"
    marker_script(pre / "10-drain", marker)
    pre.chmod(0o777)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-unsafe-pre", key_prefix, needs_reboot=True,
                                extra_env={"LOCKSMITHD_HOOK_TIMEOUT": "20s"})
        try:
            line = f"refusing every pre-reboot hook in {pre}: {pre} is writable by group and others"
            await wait_for(lambda: line in log_of(host), 30, f"the refusal; log:\n{log_of(host)[-2000:]}")
            await wait_for(lambda: holders(etcd_node, key_prefix) == [], 10, "the slot given back")
            assert log_of(host).count(line) == 1  # one line, not one per attempt
            assert host.logind.reboots == [] and not marker.exists()
            pre.chmod(0o755)
            await wait_for(lambda: settled(host), 40, "the reboot once the directory is safe")
            assert marker.exists() and len(host.logind.reboots) == 1
        finally:
            await host.stop()

    run(scenario)


def test_daemon_counts_a_refused_health_check_as_failed(tmp_path: Path, etcd_node: EtcdCluster,
                                                        key_prefix: str) -> None:
    """A check owned by another uid never runs and fails: the host keeps its slot and halts the group, naming it."""
    marker = tmp_path / "check-ran"

    async def scenario() -> None:
        host = SimulatedHost("h-unsafe-check", tmp_path / "h", etcd_node.client_urls, reboot_delay_s=0.3,
                             options=HostOptions(key_prefix=key_prefix,
                                                 extra_env={"LOCKSMITHD_HEALTH_TIMEOUT": "3s"}))
        check = marker_script(host.health_dir / "10-app", marker)
        os.chown(check, NOBODY, -1)
        await host.start(needs_reboot=True)
        store = EtcdStore(EtcdSettings(
            request_timeout_s=5.0, endpoints=parse_endpoints(etcd_node.client_urls, "test", "endpoint"),
                                       key_prefix=key_prefix))
        client = SemaphoreClient(store, "", key_prefix)
        try:
            await wait_for(lambda: client.read().halt is not None, 40, f"the halt; log:\n{log_of(host)[-2000:]}")
            halt = client.read().halt
            assert halt is not None
            assert f"check {check} could not be run: refused: {check} is owned by uid {NOBODY}, not root" in halt.reason
            assert client.read().semaphore.holders == ("h-unsafe-check",)  # kept: not known healthy
            assert not marker.exists()
            os.chown(check, 0, -1)
            await wait_for(lambda: client.read().semaphore.holders == (), 30, "released once the check is safe")
            assert marker.exists() and len(host.logind.reboots) == 1
        finally:
            await host.stop()
            store.close()

    run(scenario)


def test_daemon_refuses_a_group_writable_reboot_check_command(tmp_path: Path, etcd_node: EtcdCluster,
                                                              key_prefix: str) -> None:
    """The only source's command is group-writable: exit 3 with one line naming it; it never ran; nothing stored."""
    marker = tmp_path / "check-ran"
    check = marker_script(tmp_path / "bin" / "needs-reboot", marker, code=1)
    check.chmod(0o775)
    key = semaphore_key("", key_prefix)

    async def scenario() -> None:
        host = await start_host(tmp_path, etcd_node, "h-unsafe-cmd", key_prefix,
                                extra_env={"LOCKSMITHD_SOURCES": "command",
                                           "LOCKSMITHD_REBOOT_CHECK_COMMAND": f"{check} -r"})
        try:
            host.auto_restart = False
            assert host.process is not None
            assert await asyncio.wait_for(host.process.wait(), 20) == 3
            errors = [line for line in log_of(host).splitlines() if "LOCKSMITHD_REBOOT_CHECK_COMMAND" in line]
            assert len(errors) == 1, log_of(host)
            assert errors[0].endswith(f"refusing to run it: {check} is writable by group"), errors[0]
            assert "Traceback" not in log_of(host)
            assert not marker.exists() and host.logind.reboots == []
        finally:
            await host.stop()

    run(scenario)
    store = EtcdStore(EtcdSettings(
        request_timeout_s=5.0, endpoints=parse_endpoints(etcd_node.client_urls, "test", "endpoint")))
    try:
        stored = store.read(key)
        assert stored is None or json.loads(stored.value)["holders"] == []
    finally:
        store.close()


def test_hooks_and_checks_never_see_the_etcd_password(tmp_path: Path, etcd_auth_node: EtcdCluster) -> None:
    """A whole cycle with etcd auth: the hooks' and the check's environments hold what is documented, no secret."""
    auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
    assert auth is not None and pki is not None
    dumps = tmp_path / "dumps"
    dumps.mkdir()

    async def scenario() -> None:
        host = SimulatedHost("env-host", tmp_path / "h", etcd_auth_node.client_urls, reboot_delay_s=0.3,
                             options=HostOptions(key_prefix=auth.key_prefix, extra_env={
                                 "LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert), "LOCKSMITHD_ETCD_USERNAME": auth.user,
                                 "LOCKSMITHD_ETCD_PASSWORD": auth.password, "LOCKSMITHD_K8S_NODE": "node-7",
                                 "KUBECONFIG": "/etc/k.conf", "NOTIFY_SOCKET": "/nonexistent/notify"}))
        for directory, name in ((host.workdir / "pre-reboot.d", "pre"), (host.workdir / "post-boot.d", "post"),
                                (host.health_dir, "check")):
            directory.mkdir(parents=True, exist_ok=True)
            script = directory / f"10-{name}"
            script.write_text(f"#!/bin/sh\nenv -0 > '{dumps / name}'\n")
            script.chmod(0o755)
        await host.start(needs_reboot=True)
        try:
            await wait_for(lambda: settled(host), 40, f"reboot cycle; log:\n{log_of(host)[-2000:]}")
        finally:
            await host.stop()

    run(scenario)
    for name in ("pre", "post", "check"):
        raw = (dumps / name).read_bytes()
        env = dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
        assert auth.password not in raw.decode(), name
        assert "LOCKSMITHD_ETCD_PASSWORD" not in env and "LOCKSMITHD_ETCD_USERNAME" not in env
        assert "NOTIFY_SOCKET" not in env and "LOCKSMITHD_ENDPOINT" not in env
        assert env["LOCKSMITHD_K8S_NODE"] == "node-7" and env["KUBECONFIG"] == "/etc/k.conf" and "PATH" in env
        if name != "check":
            assert env["LOCKSMITHD_HOOK"] == {"pre": "pre-reboot", "post": "post-boot"}[name]
            assert env["LOCKSMITHD_HOLDER_ID"] == "env-host" and env["LOCKSMITHD_REBOOT_REASON"]


def test_a_bare_command_name_is_found_in_path_and_checked(tmp_path: Path) -> None:
    """A name without a slash (as LOCKSMITHD_REBOOT_CHECK_COMMAND may give) is looked up in the command's PATH."""
    marker = tmp_path / "ran"
    bindir = tmp_path / "bin"
    script = marker_script(bindir / "needs-reboot", marker)
    env = {"PATH": f"{tmp_path / 'nothing'}:{bindir}:/usr/bin:/bin"}
    assert asyncio.run(run_command("needs-reboot", 10.0, env=env, what="reboot check")).passed and marker.exists()
    marker.unlink()
    script.chmod(0o757)
    refused = asyncio.run(run_command("needs-reboot", 10.0, env=env, what="reboot check"))
    assert refused.error == f"refused: {script} is writable by others" and not marker.exists()
    missing = asyncio.run(run_command("no-such-check", 10.0, env=env, what="reboot check"))
    assert missing.error == "not found in PATH"
