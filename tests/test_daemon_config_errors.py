"""The real locksmithd refuses bad configuration: exit 3, one line naming source and key, etcd untouched."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.bus import PrivateBus
from harness.etcd import EtcdCluster
from locksmithd.errors import ExitCode

CTL = str(Path(sys.executable).with_name("locksmithctl"))
DAEMON = [sys.executable, "-m", "locksmithd.daemon.main"]
Arg = str | bytes


def base_env(tmp_path: Path) -> dict[Arg, Arg]:
    """A daemon environment without NOTIFY_SOCKET or JOURNAL_STREAM, with its own state file."""
    return {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "LOCKSMITHD_MACHINE_ID": "cfg-host", "LOCKSMITHD_STATE_FILE": str(tmp_path / "state" / "c.conf"),
            "LOCKSMITHD_RETRY_MAX": "1s"}


def run_daemon(tmp_path: Path, *args: Arg, env: dict[Arg, Arg] | None = None,
               conf: Arg = "/dev/null") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*DAEMON, "--conf", conf, *args], env={**base_env(tmp_path), **(env or {})},
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)


def assert_refused(result: subprocess.CompletedProcess[bytes], *needles: str,
                   code: ExitCode = ExitCode.CONFIG) -> str:
    """Exit ``code``, stderr one line without a traceback containing every needle; returns the line."""
    stderr = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("locksmithd: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert len(lines[0]) < 600  # a bad value is echoed bounded
    return lines[0]


def ctl(cluster: EtcdCluster, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    return subprocess.run([CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def seeded(etcd_session_node: EtcdCluster) -> tuple[EtcdCluster, str, str]:
    """A semaphore document with one holder, shared by this module; its raw bytes as stored."""
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    assert ctl(etcd_session_node, prefix, "set-max", "2").returncode == 0
    assert ctl(etcd_session_node, prefix, "lock", "other-host").returncode == 0
    before = ctl(etcd_session_node, prefix, "status", "--raw").stdout
    assert "other-host" in before
    return etcd_session_node, prefix, before


# (extra arguments, extra environment, texts the one line must contain)
BAD: list[tuple[list[Arg], dict[Arg, Arg], list[str]]] = [
    ([], {"LOCKSMITHD_GROUP": b"web\xff"}, ["environment", "LOCKSMITHD_GROUP", "not valid UTF-8"]),
    ([b"--group", b"\xfe\xff"], {}, ["command line", "LOCKSMITHD_GROUP", "not valid UTF-8"]),
    ([b"--endpoint", b"http://\xff:2379"], {}, ["command line", "LOCKSMITHD_ENDPOINT", "not valid UTF-8"]),
    ([b"--etcd-password", b"hunter2\xff"], {"LOCKSMITHD_ETCD_USERNAME": "u"},
     ["LOCKSMITHD_ETCD_PASSWORD", "(hidden)", "not valid UTF-8"]),
    ([], {"LOCKSMITHD_ETCD_KEY_PREFIX": b"/p\xc3/"}, ["LOCKSMITHD_ETCD_KEY_PREFIX", "not valid UTF-8"]),
    ([], {"LOCKSMITHD_STATE_FILE": b"/tmp/\xff/c.conf"}, ["LOCKSMITHD_STATE_FILE", "not valid UTF-8"]),
    ([], {"LOCKSMITHD_GROUP": "web\nfake line"}, ["LOCKSMITHD_GROUP", "whitespace or control"]),
    ([], {"LOCKSMITHD_GROUP": "a\x1b]0;title\x07"}, ["LOCKSMITHD_GROUP", "control"]),
    (["--group", "g" * 300], {}, ["LOCKSMITHD_GROUP", "longer than 256"]),
    ([], {"LOCKSMITHD_ETCD_KEY_PREFIX": "x" * 10_000}, ["LOCKSMITHD_ETCD_KEY_PREFIX", "longer than 4096"]),
    (["--etcd-timeout", "nan"], {}, ["LOCKSMITHD_ETCD_TIMEOUT", "invalid duration"]),
    (["--etcd-timeout", "inf"], {}, ["LOCKSMITHD_ETCD_TIMEOUT", "invalid duration"]),
    (["--etcd-timeout", "1e308"], {}, ["LOCKSMITHD_ETCD_TIMEOUT", "invalid duration"]),
    ([], {"LOCKSMITHD_ETCD_TIMEOUT": "2562047h"}, ["environment", "LOCKSMITHD_ETCD_TIMEOUT", "between"]),
    ([], {"LOCKSMITHD_ETCD_TIMEOUT": "301s"}, ["LOCKSMITHD_ETCD_TIMEOUT", "between 0.1s and 300s"]),
    ([], {"LOCKSMITHD_ETCD_TIMEOUT": "50ms"}, ["LOCKSMITHD_ETCD_TIMEOUT", "between"]),
    ([], {"LOCKSMITHD_RETRY_MAX": "2562047h"}, ["LOCKSMITHD_RETRY_MAX", "at most 24h"]),
    ([], {"LOCKSMITHD_LOGIN_DELAY": "25h"}, ["LOCKSMITHD_LOGIN_DELAY", "at most 24h"]),
    ([], {"LOCKSMITHD_RECHECK_INTERVAL": ""}, ["LOCKSMITHD_RECHECK_INTERVAL", "invalid duration"]),
    ([], {"DBUS_SYSTEM_BUS_ADDRESS": "garbage"}, ["environment", "DBUS_SYSTEM_BUS_ADDRESS", "not a D-Bus address"]),
    ([], {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path"}, ["DBUS_SYSTEM_BUS_ADDRESS", "not a D-Bus address"]),
    ([], {"DBUS_SYSTEM_BUS_ADDRESS": "tcp:host=h,port=x"}, ["DBUS_SYSTEM_BUS_ADDRESS", "tcp port"]),
    ([], {"DBUS_SYSTEM_BUS_ADDRESS": "nfs:path=/x"}, ["DBUS_SYSTEM_BUS_ADDRESS", "unsupported transport"]),
    (["--group", "a", "--group", "b"], {}, ["command line", "--group", "given 2 times"]),
    (["--etcd-password", "hunter2-a", "--etcd-password", "hunter2-b"], {}, ["--etcd-password", "(hidden)"]),
    # the self-driving settings
    ([], {"LOCKSMITHD_HEALTH_SYSTEM_STATES": "running,bogus"}, ["LOCKSMITHD_HEALTH_SYSTEM_STATES", "bogus"]),
    ([], {"LOCKSMITHD_HEALTH_SYSTEM_STATES": "starting"}, ["LOCKSMITHD_HEALTH_SYSTEM_STATES", "starting"]),
    ([], {"LOCKSMITHD_HEALTH_UNITS": "sshd.service bad/unit.service"}, ["LOCKSMITHD_HEALTH_UNITS", "bad/unit"]),
    ([], {"LOCKSMITHD_HEALTH_DIR": "relative/dir"}, ["LOCKSMITHD_HEALTH_DIR", "absolute"]),
    ([], {"LOCKSMITHD_HEALTH_TIMEOUT": "0s"}, ["LOCKSMITHD_HEALTH_TIMEOUT", "greater than zero"]),
    ([], {"LOCKSMITHD_HEALTH_SOAK": "20m"}, ["LOCKSMITHD_HEALTH_SOAK", "soak"]),
    ([], {"LOCKSMITHD_HEALTH_RECHECK_INTERVAL": "0s"}, ["LOCKSMITHD_HEALTH_RECHECK_INTERVAL", "greater than zero"]),
    (["--health-recheck-interval", "often"], {}, ["command line", "LOCKSMITHD_HEALTH_RECHECK_INTERVAL", "often"]),
    ([], {"LOCKSMITHD_REBOOT_DEADLINE": "soon"}, ["LOCKSMITHD_REBOOT_DEADLINE", "invalid duration"]),
    ([], {"LOCKSMITHD_STALE_POLICY": "ignore"}, ["LOCKSMITHD_STALE_POLICY", "halt or reclaim"]),
    ([], {"LOCKSMITHD_REBOOT_WINDOWS": "Mon-Fry 03:00 1h"},
     ["environment", "LOCKSMITHD_REBOOT_WINDOWS", "Mon-Fry", "not a day"]),
    ([], {"LOCKSMITHD_REBOOT_WINDOWS": "Mon 25:00 1h"}, ["LOCKSMITHD_REBOOT_WINDOWS", "hour 25"]),
    ([], {"LOCKSMITHD_REBOOT_WINDOWS": "Mon 03:00 0s"}, ["LOCKSMITHD_REBOOT_WINDOWS", "must be positive"]),
    ([], {"LOCKSMITHD_REBOOT_WINDOWS": "Mon 03:00"}, ["LOCKSMITHD_REBOOT_WINDOWS", "expected '[days] HH:MM length'"]),
    (["--reboot-windows", ";"], {}, ["command line", "LOCKSMITHD_REBOOT_WINDOWS", "no window given"]),
    ([], {"LOCKSMITHD_REBOOT_WINDOWS": "Mon 03:00 1h", "REBOOT_WINDOW_START": "04:00", "REBOOT_WINDOW_LENGTH": "1h"},
     ["LOCKSMITHD_REBOOT_WINDOWS", "cannot be combined with REBOOT_WINDOW_START"]),
    ([], {"LOCKSMITHD_TIMEZONE": "Mars/Olympus_Mons"},
     ["environment", "LOCKSMITHD_TIMEZONE", "Mars/Olympus_Mons", "unknown time zone"]),
    (["--timezone", "../../etc/passwd"], {}, ["command line", "LOCKSMITHD_TIMEZONE", "unknown time zone"]),
    ([], {"LOCKSMITHD_SOURCES": "update-engine,apt"}, ["environment", "LOCKSMITHD_SOURCES", "unknown source 'apt'"]),
    ([], {"LOCKSMITHD_SOURCES": " , "}, ["LOCKSMITHD_SOURCES", "no source given"]),
    ([], {"LOCKSMITHD_SOURCES": "command"}, ["LOCKSMITHD_SOURCES", "needs LOCKSMITHD_REBOOT_CHECK_COMMAND"]),
    ([], {"LOCKSMITHD_REBOOT_REQUIRED_FILE": "run/reboot-required"},
     ["LOCKSMITHD_REBOOT_REQUIRED_FILE", "must be an absolute path"]),
    (["--reboot-check-command", "needs-restarting -r 'x"], {},
     ["command line", "LOCKSMITHD_REBOOT_CHECK_COMMAND", "cannot be split into words"]),
    ([], {"LOCKSMITHD_REBOOT_CHECK_INTERVAL": "0s"}, ["LOCKSMITHD_REBOOT_CHECK_INTERVAL", "greater than zero"]),
    ([], {"LOCKSMITHD_REBOOT_CHECK_INTERVAL": "often"}, ["LOCKSMITHD_REBOOT_CHECK_INTERVAL", "invalid duration"]),
    ([], {"LOCKSMITHD_PRE_REBOOT_DIR": "pre-reboot.d"}, ["environment", "LOCKSMITHD_PRE_REBOOT_DIR", "absolute"]),
    (["--post-boot-dir", ""], {}, ["command line", "LOCKSMITHD_POST_BOOT_DIR", "must not be empty"]),
    ([], {"LOCKSMITHD_HOOK_TIMEOUT": "10 minutes"}, ["LOCKSMITHD_HOOK_TIMEOUT", "invalid duration"]),
    ([], {"LOCKSMITHD_HOOK_TIMEOUT": "25h"}, ["LOCKSMITHD_HOOK_TIMEOUT", "at most 24h"]),
    ([], {"LOCKSMITHD_IGNORE_INHIBITORS": "sometimes"}, ["environment", "LOCKSMITHD_IGNORE_INHIBITORS", "boolean"]),
]


@pytest.mark.parametrize(("args", "env", "needles"), BAD, ids=[str(row[2][:2]) + str(i) for i, row in enumerate(BAD)])
def test_bad_setting_exits_3_with_one_line(tmp_path: Path, seeded: tuple[EtcdCluster, str, str],
                                           args: list[Arg], env: dict[Arg, Arg], needles: list[str]) -> None:
    """Each bad value: exit 3, one line naming source and key, no traceback; no state file, etcd unchanged."""
    cluster, prefix, before = seeded
    endpoint = {"LOCKSMITHD_ENDPOINT": cluster.client_urls[0], "LOCKSMITHD_ETCD_KEY_PREFIX": prefix}
    line = assert_refused(run_daemon(tmp_path, *args, env={**endpoint, **env}), *needles)
    assert "hunter2" not in line  # secrets stay hidden
    assert not (tmp_path / "state").exists()
    assert ctl(cluster, prefix, "status", "--raw").stdout == before


class TestConfFiles:
    """A file named with --conf must exist and be a bounded regular file; never block, never eat memory."""

    def test_missing_named_file(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.conf"
        assert_refused(run_daemon(tmp_path, conf=str(missing)), str(missing), "does not exist")

    @pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "character device"), ("/", "directory")])
    def test_special_files(self, tmp_path: Path, path: str, kind: str) -> None:
        started = time.monotonic()
        assert_refused(run_daemon(tmp_path, conf=path), path, kind, "not a regular file")
        assert time.monotonic() - started < 20

    def test_fifo_does_not_block(self, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        assert_refused(run_daemon(tmp_path, conf=str(fifo)), str(fifo), "FIFO")

    def test_file_over_one_mib(self, tmp_path: Path) -> None:
        big = tmp_path / "big.conf"
        big.write_text("# padding\n" * 110_000)
        assert_refused(run_daemon(tmp_path, conf=str(big)), str(big), "larger than 1024 KiB")

    def test_non_utf8_file(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.conf"
        bad.write_bytes(b"LOCKSMITHD_GROUP=\xff\n")
        assert_refused(run_daemon(tmp_path, conf=str(bad)), str(bad), "not UTF-8")

    def test_bad_group_in_a_file_names_file_and_line(self, tmp_path: Path) -> None:
        conf = tmp_path / "l.conf"
        conf.write_text("# x\nLOCKSMITHD_GROUP='a b'\n")
        assert_refused(run_daemon(tmp_path, conf=str(conf)), f"{conf}:2", "LOCKSMITHD_GROUP", "whitespace")

    def test_one_missing_file_among_several(self, tmp_path: Path) -> None:
        """Every --conf file must exist, not only the first."""
        good = tmp_path / "good.conf"
        good.write_text("REBOOT_STRATEGY=off\n")
        result = subprocess.run([*DAEMON, "--conf", str(good), "--conf", str(tmp_path / "gone.conf")],
                                env=base_env(tmp_path), capture_output=True, timeout=30)
        assert_refused(result, "gone.conf", "does not exist")

    def test_named_file_that_exists_is_read(self, tmp_path: Path) -> None:
        """The counterpart: an existing --conf file is used (strategy off: exit 0)."""
        conf = tmp_path / "l.conf"
        conf.write_text("REBOOT_STRATEGY=off\n")
        result = run_daemon(tmp_path, conf=str(conf))
        assert result.returncode == 0, result.stderr
        assert b"strategy is 'off'" in result.stderr


class TestStateFile:
    """LOCKSMITHD_STATE_FILE: a directory or a missing grandparent is a config error; one directory is made."""

    def test_directory(self, tmp_path: Path) -> None:
        assert_refused(run_daemon(tmp_path, env={"LOCKSMITHD_STATE_FILE": str(tmp_path)}),
                       "environment", "LOCKSMITHD_STATE_FILE", "is a directory")

    def test_missing_parent_of_the_directory(self, tmp_path: Path) -> None:
        path = tmp_path / "a" / "b" / "c.conf"
        assert_refused(run_daemon(tmp_path, env={"LOCKSMITHD_STATE_FILE": str(path)}),
                       "LOCKSMITHD_STATE_FILE", "only the last directory is created")
        assert not (tmp_path / "a").exists()

    def test_parent_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "f").write_text("")
        assert_refused(run_daemon(tmp_path, env={"LOCKSMITHD_STATE_FILE": str(tmp_path / "f" / "c.conf")}),
                       "LOCKSMITHD_STATE_FILE", "is not a directory")

    def test_only_the_last_directory_is_created(self, tmp_path: Path) -> None:
        path = tmp_path / "run-dir" / "c.conf"
        result = run_daemon(tmp_path, env={"LOCKSMITHD_STATE_FILE": str(path), "REBOOT_STRATEGY": "off"})
        assert result.returncode == 0, result.stderr
        assert path.read_text().startswith("NAME=locksmithd")


def test_bus_that_does_not_answer_yet_is_retried_with_jitter_then_used(tmp_path: Path) -> None:
    """A valid address with no bus behind it: retries capped at LOCKSMITHD_RETRY_MAX with jitter, a log line
    before each sleep; when the bus appears the daemon connects and runs; SIGTERM then exits 0."""
    link = tmp_path / "bus-socket"
    env = {**base_env(tmp_path), "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={link}", "REBOOT_STRATEGY": "reboot",
           "LOCKSMITHD_RETRY_MAX": "1s", "LOCKSMITHD_BOOT_ID_PATH": str(tmp_path / "boot_id")}
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log, PrivateBus() as bus:
        process = subprocess.Popen([*DAEMON, "--conf", "/dev/null"], env=env, stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while log_path.read_text().count("retrying in") < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+)s", log_path.read_text())]
            assert len(delays) >= 5, log_path.read_text()
            assert all(0.2 <= d <= 1.0 for d in delays), delays  # jittered 50-100 % of min(cap, base * 2^n)
            assert len(set(delays[2:])) > 1, delays  # at the cap, still jittered
            os.symlink(bus.address.removeprefix("unix:path=").split(",")[0], link)
            state = tmp_path / "state" / "c.conf"
            while "DAEMON_STATE=idle" not in (state.read_text() if state.exists() else ""):
                assert time.monotonic() < deadline + 20, log_path.read_text()
                assert process.poll() is None, log_path.read_text()
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "Traceback" not in log_path.read_text()


def test_sigterm_while_connecting_to_the_bus_is_clean(tmp_path: Path) -> None:
    """A stop during the start-up connect loop is a clean exit 0, not death by signal."""
    env = {**base_env(tmp_path), "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'none'}",
           "REBOOT_STRATEGY": "reboot"}
    process = subprocess.Popen([*DAEMON, "--conf", "/dev/null"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    output = b""
    while b"retrying in" not in output:
        chunk = process.stdout.readline()
        assert chunk, output
        output += chunk
    process.send_signal(signal.SIGTERM)
    output += process.communicate(timeout=20)[0]
    assert process.returncode == 0, output
    assert b"Traceback" not in output
