"""Values every source may give badly: bytes, NUL, huge, empty, repeated; the group rule from every source."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from locksmithd.daemon.main import _given_flags
from locksmithd.errors import ConfigError, ExitCode, IdentityError
from locksmithd.host.reads import HOST_READS
from locksmithd.settings import MAX_CONF_BYTES, DaemonSettings, load_settings

MACHINE = {"LOCKSMITHD_MACHINE_ID": "m"}


def load_from(tmp_path: Path, source: str, key: str, value: str) -> DaemonSettings:
    """Load with ``key=value`` given by ``source``: "file", "environment" or "command line"."""
    conf = tmp_path / "l.conf"
    conf.write_text(f"{key}='{value}'\n" if source == "file" else "")
    env = {**MACHINE, **({key: value} if source == "environment" else {})}
    flags = {key: value} if source == "command line" else None
    return load_settings(env, flags, conf_paths=[str(conf)], host=HOST_READS)


SOURCES = ["file", "environment", "command line"]


class TestGroupRule:
    """Group names follow the holder-id rule from every source; "" stays the default group."""

    @pytest.mark.parametrize("source", SOURCES)
    @pytest.mark.parametrize(("value", "problem"), [("a b", "whitespace"), ("a\tb", "whitespace"),
                                                    ("x\x1b[2J", "control"), ("g" * 257, "longer than 256")])
    def test_bad_group(self, tmp_path: Path, source: str, value: str, problem: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_from(tmp_path, source, "LOCKSMITHD_GROUP", value)
        assert info.value.key == "LOCKSMITHD_GROUP" and problem in info.value.problem
        assert info.value.source.startswith(str(tmp_path) if source == "file" else source)
        assert "\n" not in str(info.value) and "\x1b" not in str(info.value)

    @pytest.mark.parametrize("source", SOURCES)
    def test_good_groups(self, tmp_path: Path, source: str) -> None:
        assert load_from(tmp_path, source, "LOCKSMITHD_GROUP", "web/eu-1").group == "web/eu-1"
        assert load_from(tmp_path, source, "LOCKSMITHD_GROUP", "").group == ""


class TestEveryValue:
    """Checks applied to every key, whatever its parser."""

    @pytest.mark.parametrize("key", ["LOCKSMITHD_GROUP", "LOCKSMITHD_ETCD_KEY_PREFIX", "LOCKSMITHD_ETCD_USERNAME",
                                     "LOCKSMITHD_ENDPOINT", "LOCKSMITHD_STATE_FILE", "REBOOT_STRATEGY"])
    @pytest.mark.parametrize("source", ["environment", "command line"])
    def test_surrogate_escaped_bytes(self, key: str, source: str) -> None:
        """Python carries non-UTF-8 bytes as lone surrogates: "not valid UTF-8", never a crash."""
        bad = {key: "x\udcff"}
        with pytest.raises(ConfigError) as info:
            load_settings({**MACHINE, **(bad if source == "environment" else {})},
                          bad if source == "command line" else None, conf_paths=[])
        assert (info.value.source, info.value.key, info.value.problem) == (source, key, "not valid UTF-8")
        str(info.value).encode("utf-8")  # printable on any terminal

    def test_machine_id_bytes_are_an_identity_error(self) -> None:
        """The holder id keeps its own exit code (4) whatever is wrong with it."""
        with pytest.raises(IdentityError) as info:
            load_settings({"LOCKSMITHD_MACHINE_ID": "m\udcff"}, conf_paths=[])
        assert info.value.exit_code == ExitCode.IDENTITY and info.value.problem == "not valid UTF-8"

    def test_password_bytes_are_hidden(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings({**MACHINE, "LOCKSMITHD_ETCD_USERNAME": "u", "LOCKSMITHD_ETCD_PASSWORD": "hunter2\udcff"},
                          conf_paths=[])
        assert info.value.value == "(hidden)" and "hunter2" not in str(info.value)

    def test_nul_from_a_file(self, tmp_path: Path) -> None:
        conf = tmp_path / "l.conf"
        conf.write_bytes(b"LOCKSMITHD_BOOT_ID_PATH=/proc/a\x00b\n")
        with pytest.raises(ConfigError, match="NUL"):
            load_settings(MACHINE, conf_paths=[str(conf)], host=HOST_READS)

    def test_huge_value_is_refused_and_echoed_bounded(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_settings({**MACHINE, "LOCKSMITHD_ENDPOINT": "http://h:1," * 1000}, conf_paths=[])
        assert "longer than 4096" in str(info.value) and len(str(info.value)) < 300

    @pytest.mark.parametrize(("key", "value", "problem"), [
        ("LOCKSMITHD_ETCD_TIMEOUT", "5m1s", "between"), ("LOCKSMITHD_ETCD_TIMEOUT", "99ms", "between"),
        ("LOCKSMITHD_RETRY_MAX", "24h1s", "at most 24h"), ("LOCKSMITHD_RECHECK_INTERVAL", "100000h", "at most"),
        ("LOCKSMITHD_LOGIN_DELAY", "2562047h47m16s", "at most"), ("LOCKSMITHD_RETRY_MAX", "", "invalid duration"),
    ])
    def test_duration_bounds(self, key: str, value: str, problem: str) -> None:
        with pytest.raises(ConfigError, match=problem):
            load_settings({**MACHINE, key: value}, conf_paths=[])

    def test_duration_bounds_inclusive(self) -> None:
        settings = load_settings({**MACHINE, "LOCKSMITHD_ETCD_TIMEOUT": "5m", "LOCKSMITHD_RETRY_MAX": "24h"},
                                  conf_paths=[])
        assert (settings.etcd.request_timeout_s, settings.retry_max_s) == (300.0, 86400.0)


class TestSystemdKeys:
    """JOURNAL_STREAM and NOTIFY_SOCKET come through the same loader (environment only)."""

    def test_read_from_environment(self) -> None:
        settings = load_settings({**MACHINE, "JOURNAL_STREAM": "8:1234", "NOTIFY_SOCKET": "/run/n"}, conf_paths=[])
        assert (settings.journal_stream, settings.notify_socket) == ("8:1234", "/run/n")

    def test_absent(self) -> None:
        settings = load_settings(MACHINE, conf_paths=[])
        assert (settings.journal_stream, settings.notify_socket) == (None, None)


class TestConfFileReading:
    """Named files must exist; every file is a bounded regular file."""

    def test_named_missing_file(self, tmp_path: Path) -> None:
        missing = str(tmp_path / "gone.conf")
        # A default path may be absent.
        assert load_settings(MACHINE, conf_paths=[missing], host=HOST_READS).sources == ()
        with pytest.raises(ConfigError, match="does not exist"):
            load_settings(MACHINE, conf_paths=[missing], host=HOST_READS, conf_must_exist=True)

    def test_size_limit_is_exact(self, tmp_path: Path) -> None:
        conf = tmp_path / "l.conf"
        line = b"# pad\n"
        conf.write_bytes(line * (MAX_CONF_BYTES // len(line)) + b"#" * (MAX_CONF_BYTES % len(line)))
        assert load_settings(MACHINE, conf_paths=[str(conf)], host=HOST_READS).sources == (str(conf),)
        conf.write_bytes(conf.read_bytes() + b"#")
        with pytest.raises(ConfigError, match="larger than"):
            load_settings(MACHINE, conf_paths=[str(conf)], host=HOST_READS)

    def test_dev_null_reads_as_empty(self) -> None:
        settings = load_settings(MACHINE, conf_paths=["/dev/null"], host=HOST_READS, conf_must_exist=True)
        assert settings.sources == ("/dev/null",)

    def test_files_are_read_by_the_reader_handed_in(self, tmp_path: Path) -> None:
        """settings/ has no file reader of its own: the entry point hands in the host's non-blocking one (with
        the machine id's and the local zone's readers: settings/ imports no edge), asked
        for one byte past the limit (to tell a file too large); a FIFO is refused by it, naming the kind."""
        conf = tmp_path / "c.conf"
        conf.write_text("LOCKSMITHD_GROUP=g\n")
        asked: list[tuple[str, int]] = []

        def read(path: str, limit: int) -> bytes:
            asked.append((path, limit))
            return HOST_READS.read_file(path, limit)

        host = dataclasses.replace(HOST_READS, read_file=read)
        assert load_settings(MACHINE, conf_paths=[str(conf)], host=host).group == "g"
        assert asked == [(str(conf), MAX_CONF_BYTES + 1)]
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(ConfigError, match="it is a FIFO, not a regular file"):
            load_settings(MACHINE, conf_paths=[str(fifo)], host=host)
        with pytest.raises(TypeError, match="configuration files need host"):
            load_settings(MACHINE, conf_paths=[str(conf)])


class TestFlags:
    """Flags given more than once."""

    def test_repeated_endpoint_adds_up(self) -> None:
        given = _given_flags({"endpoint": ("http://a:1", "http://b:2"), "debug": None, "group": ()})
        assert given == {"LOCKSMITHD_ENDPOINT": "http://a:1,http://b:2"}

    def test_repeated_other_flag_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="given 2 times"):
            _given_flags({"strategy": ("off", "reboot")})

    def test_debug_switch(self) -> None:
        assert _given_flags({"debug": True}) == {"LOCKSMITHD_DEBUG": "1"}
