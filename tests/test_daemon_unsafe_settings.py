"""Settings that would reboot hosts in a loop or make a useless coordinator: the real locksmithd refuses them
at start with exit 3 and one line naming the setting, and etcd is left as it was."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from locksmithd.host.identity import read_boot_id
from locksmithd.settings.loader import load_settings
from locksmithd.sources.reboot_required import RebootRequiredWatcher, boot_time
from tests.test_daemon_config_errors import Arg, assert_refused, ctl, run_daemon, seeded  # noqa: F401 (fixture)

RR: dict[Arg, Arg] = {"LOCKSMITHD_SOURCES": "update-engine,reboot-required"}


def _cases(tmp: Path) -> list[tuple[dict[Arg, Arg], list[str]]]:
    """(environment, texts the one line must contain) for paths under ``tmp``."""
    regular = tmp / "a-file"
    fifo = tmp / "a-fifo"
    link_to_file = tmp / "link-to-file"
    return [
        # a directory always exists: a reboot at every start
        ({**RR, "LOCKSMITHD_REBOOT_REQUIRED_FILE": "/"}, ["LOCKSMITHD_REBOOT_REQUIRED_FILE", "names a directory"]),
        ({**RR, "LOCKSMITHD_REBOOT_REQUIRED_FILE": str(tmp)}, ["LOCKSMITHD_REBOOT_REQUIRED_FILE", "names a directory"]),
        ({**RR, "LOCKSMITHD_REBOOT_REQUIRED_FILE": f"{tmp}/rr/"}, ["LOCKSMITHD_REBOOT_REQUIRED_FILE", "a directory"]),
        # the deadline must outlast the health checks
        ({"LOCKSMITHD_REBOOT_DEADLINE": "15m"}, ["environment", "LOCKSMITHD_REBOOT_DEADLINE", "(15m0s)",
                                                 "must be longer than LOCKSMITHD_HEALTH_TIMEOUT plus"]),
        ({"LOCKSMITHD_REBOOT_DEADLINE": "10m", "LOCKSMITHD_HEALTH_TIMEOUT": "10m"},
         ["LOCKSMITHD_REBOOT_DEADLINE='10m'", "must be longer"]),
        ({"LOCKSMITHD_HEALTH_TIMEOUT": "1h"}, ["LOCKSMITHD_HEALTH_TIMEOUT='1h'", "LOCKSMITHD_REBOOT_DEADLINE (1h0m0s)"]),
        ({"LOCKSMITHD_HEALTH_TIMEOUT": "50m", "LOCKSMITHD_HEALTH_SOAK": "10m"},
         ["LOCKSMITHD_HEALTH_TIMEOUT", "plus LOCKSMITHD_HEALTH_SOAK (1h0m0s)"]),
        # periods and timeouts below 1s only make the daemon spin
        ({"LOCKSMITHD_REBOOT_CHECK_INTERVAL": "1ms"}, ["LOCKSMITHD_REBOOT_CHECK_INTERVAL", "at least 1s"]),
        ({"LOCKSMITHD_REBOOT_CHECK_INTERVAL": "999ms"}, ["LOCKSMITHD_REBOOT_CHECK_INTERVAL", "at least 1s"]),
        ({"LOCKSMITHD_RECHECK_INTERVAL": "50ms"}, ["LOCKSMITHD_RECHECK_INTERVAL", "at least 1s"]),
        ({"LOCKSMITHD_RETRY_MAX": "10ms"}, ["LOCKSMITHD_RETRY_MAX", "at least 1s"]),
        ({"LOCKSMITHD_QUEUE_HEAD_TIMEOUT": "1us"}, ["LOCKSMITHD_QUEUE_HEAD_TIMEOUT", "at least 1s"]),
        ({"LOCKSMITHD_HOOK_TIMEOUT": "100ms"}, ["LOCKSMITHD_HOOK_TIMEOUT", "at least 1s"]),
        ({"LOCKSMITHD_HEALTH_TIMEOUT": "500ms"}, ["LOCKSMITHD_HEALTH_TIMEOUT", "at least 1s"]),
        # a file where a directory of commands belongs fails every run
        ({"LOCKSMITHD_HEALTH_DIR": str(regular)}, ["LOCKSMITHD_HEALTH_DIR", "is a regular file, not a directory"]),
        ({"LOCKSMITHD_HEALTH_DIR": str(link_to_file)}, ["LOCKSMITHD_HEALTH_DIR", "is a regular file"]),
        ({"LOCKSMITHD_PRE_REBOOT_DIR": str(fifo)}, ["LOCKSMITHD_PRE_REBOOT_DIR", "is a FIFO, not a directory"]),
        ({"LOCKSMITHD_POST_BOOT_DIR": "/dev/null"}, ["LOCKSMITHD_POST_BOOT_DIR", "is a character device"]),
        # a FIFO as the boot id would wedge the start; none would skip the health checks after a reboot
        ({"LOCKSMITHD_BOOT_ID_PATH": str(fifo)}, ["LOCKSMITHD_BOOT_ID_PATH", "is a FIFO, not a regular file"]),
    ]


CASE_IDS = ["rr-root", "rr-dir", "rr-slash", "deadline", "deadline-eq", "timeout", "timeout-soak", "check-1ms",
            "check-999ms", "recheck", "retry", "head", "hook", "health-timeout", "health-file", "health-link",
            "pre-fifo", "post-dev", "boot-id-fifo"]


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_unsafe_setting_exits_3_with_one_line(tmp_path: Path, seeded: tuple[EtcdCluster, str, str],
                                              case: int) -> None:
    """Each: exit 3 and one line naming the setting, before anything runs: no state file, etcd unchanged."""
    cluster, prefix, before = seeded
    paths = tmp_path / "paths"
    paths.mkdir()
    (paths / "a-file").write_text("#!/bin/sh\nexit 0\n")
    os.mkfifo(paths / "a-fifo")
    os.symlink(paths / "a-file", paths / "link-to-file")
    env, needles = _cases(paths)[case]
    endpoint: dict[Arg, Arg] = {"LOCKSMITHD_ENDPOINT": cluster.client_urls[0], "LOCKSMITHD_ETCD_KEY_PREFIX": prefix}
    assert_refused(run_daemon(tmp_path, env={**endpoint, **env}), *needles)
    assert not (tmp_path / "state").exists()
    assert ctl(cluster, prefix, "status", "--raw").stdout == before


@pytest.mark.parametrize("env", [
    {"LOCKSMITHD_REBOOT_REQUIRED_FILE": "/"},  # its source is off: the path is never looked at
    {"REBOOT_STRATEGY": "fleet-lock", "LOCKSMITHD_FLEETLOCK_URL": "http://127.0.0.1:9",
     "LOCKSMITHD_HEALTH_TIMEOUT": "2h"},  # the deadline is etcd-lock's only
    {"LOCKSMITHD_REBOOT_CHECK_INTERVAL": "1s", "LOCKSMITHD_REBOOT_DEADLINE": "15m1s",
     "LOCKSMITHD_HEALTH_DIR": "/nonexistent/health.d"},  # the floor itself, just past the checks, a missing dir
])
def test_the_safe_side_of_each_rule_loads(env: dict[str, str]) -> None:
    """The counterparts: settings on the safe side of each rule are accepted as given."""
    settings = load_settings({**env, "LOCKSMITHD_MACHINE_ID": "m1"}, conf_paths=())
    assert settings.strategy == ("fleet-lock" if "LOCKSMITHD_FLEETLOCK_URL" in env else "etcd-lock")
    if "LOCKSMITHD_REBOOT_CHECK_INTERVAL" in env:
        assert settings.source_options["reboot_check_interval_s"] == 1.0 and settings.reboot_deadline_s == 901.0


def test_the_real_daemon_starts_on_the_safe_side(tmp_path: Path) -> None:
    """The real binary with a missing health directory and hook directories is not refused (strategy off)."""
    env: dict[Arg, Arg] = {"REBOOT_STRATEGY": "off", "LOCKSMITHD_HEALTH_DIR": str(tmp_path / "none"),
                           "LOCKSMITHD_PRE_REBOOT_DIR": str(tmp_path), "LOCKSMITHD_REBOOT_CHECK_INTERVAL": "1s"}
    result = run_daemon(tmp_path, env=env)
    assert result.returncode == 0, result.stderr


def test_a_directory_made_at_the_reboot_required_path_later_is_no_request(tmp_path: Path) -> None:
    """The watcher counts the file, not a directory created there after the start (logged, ignored)."""
    path = tmp_path / "reboot-required"
    told: list[str] = []

    async def scenario() -> None:
        watcher = RebootRequiredWatcher(str(path), told.append)
        await watcher.start()
        try:
            path.mkdir()
            await asyncio.sleep(1.0)
            assert told == []
            path.rmdir()
            path.write_text("")
            for _ in range(50):
                if told:
                    break
                await asyncio.sleep(0.1)
            assert told == [f"reboot-required: {path}"]
        finally:
            await watcher.stop()

    asyncio.run(scenario())


def test_a_fifo_as_boot_id_is_read_as_none_without_blocking(tmp_path: Path) -> None:
    """read_boot_id never blocks: a FIFO (no writer) gives None at once; a regular file its text."""
    fifo = tmp_path / "boot_id"
    os.mkfifo(fifo)
    assert read_boot_id(str(fifo)) is None
    regular = tmp_path / "boot_id_file"
    regular.write_text("abc\n")
    assert read_boot_id(str(regular)) == "abc"


def test_a_reboot_required_file_from_before_this_boot_is_no_request(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A file a reboot did not clear (a path that survives reboots) would reboot the host at every start:
    it is ignored with one warning; written again in this boot, it counts."""
    path = tmp_path / "reboot-required"
    path.write_text("")
    before_boot = boot_time() - 3600
    os.utime(path, (before_boot, before_boot))
    told: list[str] = []

    async def scenario() -> None:
        watcher = RebootRequiredWatcher(str(path), told.append)
        await watcher.start()
        try:
            await asyncio.sleep(0.5)
            assert told == []
            path.write_text("again\n")  # unattended-upgrades asks again, in this boot
            for _ in range(50):
                if told:
                    break
                await asyncio.sleep(0.1)
            assert told == [f"reboot-required: {path}"]
        finally:
            await watcher.stop()

    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "before this boot" in r.getMessage()]
    assert len(warnings) == 1 and "LOCKSMITHD_REBOOT_REQUIRED_FILE" in warnings[0]
