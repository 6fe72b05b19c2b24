"""Loading the daemon's settings: sources, precedence, file syntax and validation errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from locksmithd.errors import ConfigError, ExitCode, IdentityError
from locksmithd.etcd.connection import Endpoint
from locksmithd.host.reads import HOST_READS
from locksmithd.settings import (
    DEFAULT_CONF_PATHS,
    DaemonSettings,
    load_settings,
    parse_conf_text,
)
from locksmithd.core.schedule import WindowSpec
from harness.certs import make_pki

MACHINE_ID = "0123456789abcdef0123456789abcdef"
LAYERS = ("usr-coreos", "etc-coreos", "usr-flatcar", "etc-flatcar", "locksmithd")


class Host:
    """A fake host in a temp dir: five config files (lowest priority first) and a machine-id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = {name: root / f"{name}.conf" for name in LAYERS}
        self.machine_id_path = root / "machine-id"
        self.machine_id_path.write_text(MACHINE_ID + "\n")
        pki = make_pki(root / "pki")  # the TLS files are parsed at start-up, so they must be real
        for name, made in (("ca.pem", pki.ca_cert), ("cert.pem", pki.client_cert), ("key.pem", pki.client_key)):
            (root / name).write_bytes(made.read_bytes())

    def write(self, layer: str, text: str) -> str:
        self.paths[layer].write_text(text)
        return str(self.paths[layer])

    def load(self, env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None) -> DaemonSettings:
        return load_settings(
            env or {},
            flags,
            conf_paths=[str(self.paths[name]) for name in LAYERS],
            host=HOST_READS,
            machine_id_path=str(self.machine_id_path),
        )

    def fill(self, values: Mapping[str, str]) -> dict[str, str]:
        """Replace "{tmp}" in values by the temp dir, for file paths."""
        return {key: value.replace("{tmp}", str(self.root)) for key, value in values.items()}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


class TestDefaults:
    """With no configuration at all, the documented defaults apply."""

    def test_defaults(self, host: Host) -> None:
        """Every field has its documented default; nothing was read."""
        settings = host.load({"PATH": "/usr/bin", "HOME": "/root"})
        assert settings.strategy == "etcd-lock"
        assert settings.etcd.endpoints == (Endpoint("http", "127.0.0.1", 2379),)
        assert settings.etcd.request_timeout_s == 5.0
        assert settings.etcd.key_prefix == ""
        assert settings.etcd.cafile is None and settings.etcd.username is None
        assert settings.group == ""
        assert settings.window is None
        assert settings.machine_id == MACHINE_ID
        assert settings.state_file == "/run/update-engine/coordinator.conf"
        assert settings.login_delay_s == 300.0
        assert settings.recheck_interval_s == 300.0
        assert settings.retry_max_s == 60.0
        assert settings.bus_address is None
        assert settings.boot_id_path == "/proc/sys/kernel/random/boot_id"
        assert settings.debug is False
        assert settings.sources == ()
        assert settings.unknown_keys == ()

    def test_default_paths_are_in_priority_order(self) -> None:
        """update.conf files come first, locksmithd.conf last among files."""
        assert DEFAULT_CONF_PATHS == (
            "/usr/share/coreos/update.conf",
            "/etc/coreos/update.conf",
            "/usr/share/flatcar/update.conf",
            "/etc/flatcar/update.conf",
            "/etc/locksmithd/locksmithd.conf",
        )


class TestPrecedence:
    """update.conf < later update.conf < locksmithd.conf < environment < command line."""

    @pytest.mark.parametrize("top", range(len(LAYERS) + 2))
    def test_highest_source_wins(self, host: Host, top: int) -> None:
        """Every source up to ``top`` sets the group; the highest one's value is used."""
        for index, layer in enumerate(LAYERS[: top + 1]):
            host.write(layer, f"LOCKSMITHD_GROUP=from-{index}\n")
        env = {"LOCKSMITHD_GROUP": "from-env"} if top >= len(LAYERS) else {}
        flags = {"LOCKSMITHD_GROUP": "from-flags"} if top > len(LAYERS) else None
        expected = "from-flags" if flags else "from-env" if env else f"from-{top}"
        settings = host.load(env, flags)
        assert settings.group == expected
        assert settings.sources == tuple(str(host.paths[name]) for name in LAYERS[: top + 1])

    def test_sources_merge_key_by_key(self, host: Host) -> None:
        """Each key comes from the highest source that sets it; others keep lower values."""
        host.write("usr-coreos", "REBOOT_STRATEGY=reboot\nLOCKSMITHD_GROUP=a\n")
        host.write("etc-flatcar", "REBOOT_STRATEGY=off\n")
        host.write("locksmithd", "LOCKSMITHD_RETRY_MAX=10s\n")
        settings = host.load({"LOCKSMITHD_RETRY_MAX": "20s"}, {"LOCKSMITHD_DEBUG": "yes"})
        assert (settings.strategy, settings.group, settings.retry_max_s, settings.debug) == ("off", "a", 20.0, True)

    def test_update_engine_keys_are_ignored(self, host: Host) -> None:
        """update.conf's GROUP is update_engine's channel, not the locksmith group."""
        host.write("etc-flatcar", "GROUP=stable\nSERVER=https://update.example/v1\n")
        settings = host.load()
        assert settings.group == ""
        assert settings.unknown_keys == ()

    def test_unknown_locksmithd_keys_are_reported_not_fatal(self, host: Host) -> None:
        """Misspelt LOCKSMITHD_* keys are listed with their source for a warning."""
        path = host.write("locksmithd", "LOCKSMITHD_GROPU=x\n")
        settings = host.load({"LOCKSMITHD_ENDPONT": "http://x:1", "PATH": "/bin"})
        assert settings.unknown_keys == ((f"{path}:1", "LOCKSMITHD_GROPU"), ("environment", "LOCKSMITHD_ENDPONT"))

    def test_empty_optional_value_overrides_lower_source(self, host: Host) -> None:
        """An empty optional value unsets what a lower source gave."""
        host.write("locksmithd", "LOCKSMITHD_ETCD_CAFILE={}\nLOCKSMITHD_ETCD_KEY_PREFIX=/t1\n".format(host.root / "ca.pem"))
        settings = host.load({"LOCKSMITHD_ETCD_CAFILE": "", "LOCKSMITHD_ETCD_KEY_PREFIX": ""})
        assert settings.etcd.cafile is None
        assert settings.etcd.key_prefix == ""


class TestWindowKeys:
    """The window pair, with locksmith's unprefixed names as aliases."""

    def test_unprefixed_names_are_accepted(self, host: Host) -> None:
        """REBOOT_WINDOW_START/LENGTH work as in locksmith."""
        host.write("etc-coreos", "REBOOT_WINDOW_START=Thu 04:00\nREBOOT_WINDOW_LENGTH=1h\n")
        window = host.load().window
        assert window is not None and window.windows == (WindowSpec(frozenset({3}), 4, 0, timedelta(hours=1)),)

    @pytest.mark.parametrize(
        "text",
        [
            "LOCKSMITHD_REBOOT_WINDOW_START=05:00\nREBOOT_WINDOW_START=06:00\n",
            "REBOOT_WINDOW_START=06:00\nLOCKSMITHD_REBOOT_WINDOW_START=05:00\n",
        ],
    )
    def test_prefixed_name_wins_within_a_source(self, host: Host, text: str) -> None:
        """Whatever the line order, the prefixed name wins in the same file."""
        host.write("locksmithd", text + "REBOOT_WINDOW_LENGTH=30m\n")
        window = host.load().window
        assert window is not None and window.windows == (WindowSpec(frozenset(range(7)), 5, 0, timedelta(minutes=30)),)

    def test_prefixed_name_wins_in_environment(self, host: Host) -> None:
        """The same rule applies to the environment."""
        env = {"REBOOT_WINDOW_START": "06:00", "LOCKSMITHD_REBOOT_WINDOW_START": "05:00", "REBOOT_WINDOW_LENGTH": "1h"}
        window = host.load(env).window
        assert window is not None and window.windows[0].hour == 5

    def test_higher_source_beats_prefix(self, host: Host) -> None:
        """An unprefixed key in the environment overrides a prefixed one in a file."""
        host.write("locksmithd", "LOCKSMITHD_REBOOT_WINDOW_START=05:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n")
        window = host.load({"REBOOT_WINDOW_START": "Sun 23:00"}).window
        assert window is not None and window.windows == (WindowSpec(frozenset({6}), 23, 0, timedelta(hours=1)),)

    def test_both_empty_means_no_window(self, host: Host) -> None:
        """Emptying both halves in a higher source removes a lower source's window."""
        host.write("etc-flatcar", "REBOOT_WINDOW_START=05:00\nREBOOT_WINDOW_LENGTH=1h\n")
        assert host.load({"REBOOT_WINDOW_START": "", "REBOOT_WINDOW_LENGTH": ""}).window is None


class TestValues:
    """Accepted spellings of strategies, durations, booleans and identities."""

    @pytest.mark.parametrize(
        ("text", "strategy"),
        [("etcd-lock", "etcd-lock"), ("reboot", "reboot"), ("off", "off"), ("best-effort", "etcd-lock"), (" Reboot ", "reboot")],
    )
    def test_strategies(self, host: Host, text: str, strategy: str) -> None:
        """best-effort (locksmith's legacy default) means etcd-lock."""
        assert host.load({"REBOOT_STRATEGY": text}).strategy == strategy

    def test_durations_and_flags(self, host: Host) -> None:
        """Go durations become seconds; a zero login delay is allowed."""
        settings = host.load(
            {
                "LOCKSMITHD_LOGIN_DELAY": "0",
                "LOCKSMITHD_RECHECK_INTERVAL": "1m30s",
                "LOCKSMITHD_RETRY_MAX": "1.5m",
                "LOCKSMITHD_ETCD_TIMEOUT": "250ms",
            }
        )
        assert (settings.login_delay_s, settings.recheck_interval_s, settings.retry_max_s) == (0.0, 90.0, 90.0)
        assert settings.etcd.request_timeout_s == 0.25

    @pytest.mark.parametrize(("text", "value"), [("1", True), ("TRUE", True), ("yes", True), ("0", False), ("false", False), ("No", False)])
    def test_booleans(self, host: Host, text: str, value: bool) -> None:
        """Booleans accept 1/0, true/false and yes/no in any case."""
        assert host.load({"LOCKSMITHD_DEBUG": text}).debug is value

    def test_paths_group_and_bus(self, host: Host) -> None:
        """A group may hold "/"; a state file's directory may not exist yet."""
        settings = host.load(
            {
                "LOCKSMITHD_GROUP": "web/eu",
                "LOCKSMITHD_STATE_FILE": str(host.root / "not-yet" / "state.conf"),
                "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/tmp/bus",
                "LOCKSMITHD_BOOT_ID_PATH": "/tmp/boot_id",
            }
        )
        assert settings.group == "web/eu"
        assert settings.state_file.endswith("not-yet/state.conf")
        assert settings.bus_address == "unix:path=/tmp/bus"
        assert settings.boot_id_path == "/tmp/boot_id"

    def test_machine_id_override(self, host: Host) -> None:
        """LOCKSMITHD_MACHINE_ID replaces /etc/machine-id, which is then not needed."""
        host.machine_id_path.unlink()
        assert host.load({"LOCKSMITHD_MACHINE_ID": "node-7"}).machine_id == "node-7"

    def test_tls_and_credentials(self, host: Host) -> None:
        """CA, client certificate, key and credentials are carried into EtcdSettings."""
        env = host.fill(
            {
                "LOCKSMITHD_ENDPOINT": "https://a:2379, https://b:2379",
                "LOCKSMITHD_ETCD_CAFILE": "{tmp}/ca.pem",
                "LOCKSMITHD_ETCD_CERTFILE": "{tmp}/cert.pem",
                "LOCKSMITHD_ETCD_KEYFILE": "{tmp}/key.pem",
                "LOCKSMITHD_ETCD_USERNAME": "root",
                "LOCKSMITHD_ETCD_PASSWORD": "s3cret-pw",
            }
        )
        settings = host.load(env)
        assert settings.etcd.describe_endpoints() == "https://a:2379,https://b:2379"
        assert settings.etcd.certfile == env["LOCKSMITHD_ETCD_CERTFILE"]
        assert settings.etcd.password == "s3cret-pw"
        assert "s3cret-pw" not in repr(settings)
        assert "s3cret-pw" not in settings.describe()


class TestFileSyntax:
    """Shell-style KEY=value files, as update.conf and EnvironmentFile= use them."""

    def test_accepted_forms(self) -> None:
        """Comments, export, quotes, escapes, inline comments and inner spaces."""
        text = (
            "# comment\n"
            "; also a comment\n"
            "\n"
            "export A=1\n"
            "B='Thu 04:00'\n"
            'C="a \\"quoted\\" \\$x"\n'
            "D=Thu 04:00   # trailing comment\n"
            "E=pass#word\n"
            "F=\n"
            "  G=  \n"
            "H=a\\ b\n"
            "A=2\n"
        )
        entries = {entry.key: entry.value for entry in parse_conf_text(text, "f")}
        assert entries == {
            "A": "2",
            "B": "Thu 04:00",
            "C": 'a "quoted" $x',
            "D": "Thu 04:00",
            "E": "pass#word",
            "F": "",
            "G": "",
            "H": "a b",
        }

    def test_entries_name_file_and_line(self) -> None:
        """Each entry's source is "path:line"."""
        assert [entry.source for entry in parse_conf_text("\nA=1\n\nB=2\n", "/etc/x.conf")] == ["/etc/x.conf:2", "/etc/x.conf:4"]

    @pytest.mark.parametrize(
        ("line", "key", "problem"),
        [
            ("JUSTTEXT", "line", "expected KEY=value"),
            ("1KEY=x", "line", "not a valid variable name"),
            ("KEY WITH SPACE=x", "line", "not a valid variable name"),
            ("A='open", "A", "unterminated single quote"),
            ('A="open', "A", "unterminated double quote"),
            ("A=x\\", "A", "trailing backslash"),
        ],
    )
    def test_malformed_lines(self, host: Host, line: str, key: str, problem: str) -> None:
        """A malformed line is a ConfigError naming the file and line number."""
        path = host.write("etc-flatcar", f"GROUP=stable\n{line}\n")
        with pytest.raises(ConfigError) as info:
            host.load()
        assert info.value.source == f"{path}:2"
        assert info.value.key == key
        assert problem in str(info.value)
        assert "\n" not in str(info.value)

    def test_secrets_are_not_echoed_from_malformed_lines(self, host: Host) -> None:
        """A broken password line is reported without the password."""
        host.write("locksmithd", "LOCKSMITHD_ETCD_PASSWORD='hunter2\n")
        with pytest.raises(ConfigError) as info:
            host.load()
        assert "hunter2" not in str(info.value)

    def test_unreadable_file(self, host: Host) -> None:
        """A config path that is a directory is an error, not silently skipped."""
        host.paths["locksmithd"].mkdir()
        with pytest.raises(ConfigError, match="cannot read"):
            host.load()


# (environment, key in error, value in error, text in the problem)
INVALID: list[tuple[dict[str, str], str, str, str]] = [
    ({"REBOOT_STRATEGY": "sometimes"}, "REBOOT_STRATEGY", "sometimes", "unknown strategy"),
    ({"REBOOT_STRATEGY": ""}, "REBOOT_STRATEGY", "", "unknown strategy"),
    ({"REBOOT_WINDOW_START": "Thu 25:00", "REBOOT_WINDOW_LENGTH": "1h"}, "REBOOT_WINDOW_START", "Thu 25:00", "hour 25"),
    ({"LOCKSMITHD_REBOOT_WINDOW_START": "Thu 12:60", "REBOOT_WINDOW_LENGTH": "1h"}, "LOCKSMITHD_REBOOT_WINDOW_START", "Thu 12:60", "minute 60"),
    ({"REBOOT_WINDOW_START": "Funday 04:00", "REBOOT_WINDOW_LENGTH": "1h"}, "REBOOT_WINDOW_START", "Funday 04:00", "unknown day"),
    ({"REBOOT_WINDOW_START": "noon", "REBOOT_WINDOW_LENGTH": "1h"}, "REBOOT_WINDOW_START", "noon", "not HH:MM"),
    ({"REBOOT_WINDOW_START": "04:00", "REBOOT_WINDOW_LENGTH": "1hx"}, "REBOOT_WINDOW_LENGTH", "1hx", "unknown unit"),
    ({"REBOOT_WINDOW_START": "04:00", "REBOOT_WINDOW_LENGTH": "-1h"}, "REBOOT_WINDOW_LENGTH", "-1h", "negative"),
    ({"REBOOT_WINDOW_START": "04:00", "LOCKSMITHD_REBOOT_WINDOW_LENGTH": "0"}, "LOCKSMITHD_REBOOT_WINDOW_LENGTH", "0", "must be positive"),
    ({"REBOOT_WINDOW_START": "04:00"}, "REBOOT_WINDOW_START", "04:00", "REBOOT_WINDOW_LENGTH must be set too"),
    ({"LOCKSMITHD_REBOOT_WINDOW_LENGTH": "1h"}, "LOCKSMITHD_REBOOT_WINDOW_LENGTH", "1h", "LOCKSMITHD_REBOOT_WINDOW_START must be set too"),
    ({"LOCKSMITHD_ETCD_CAFILE": "{tmp}/missing.pem"}, "LOCKSMITHD_ETCD_CAFILE", "{tmp}/missing.pem", "does not exist"),
    ({"LOCKSMITHD_ETCD_CAFILE": "{tmp}"}, "LOCKSMITHD_ETCD_CAFILE", "{tmp}", "is a directory"),
    ({"LOCKSMITHD_ETCD_CAFILE": "{tmp}/ca.pem", "LOCKSMITHD_ETCD_KEYFILE": "{tmp}/key.pem"}, "LOCKSMITHD_ETCD_CERTFILE", "", "must be given together"),
    ({"LOCKSMITHD_ETCD_CAFILE": "{tmp}/ca.pem", "LOCKSMITHD_ETCD_CERTFILE": "{tmp}/cert.pem"}, "LOCKSMITHD_ETCD_KEYFILE", "", "must be given together"),
    ({"LOCKSMITHD_ENDPOINT": "https://etcd:2379"}, "LOCKSMITHD_ETCD_CAFILE", "", "need a CA file"),
    ({"LOCKSMITHD_ETCD_USERNAME": "root"}, "LOCKSMITHD_ETCD_PASSWORD", "", "must be given together"),
    ({"LOCKSMITHD_ENDPOINT": "ftp://x"}, "LOCKSMITHD_ENDPOINT", "ftp://x", "http:// or https://"),
    ({"LOCKSMITHD_ENDPOINT": "http://"}, "LOCKSMITHD_ENDPOINT", "http://", "no host"),
    ({"LOCKSMITHD_ENDPOINT": "127.0.0.1:2379:1"}, "LOCKSMITHD_ENDPOINT", "127.0.0.1:2379:1", "endpoint"),
    ({"LOCKSMITHD_ENDPOINT": "http://h:99999"}, "LOCKSMITHD_ENDPOINT", "http://h:99999", "not a valid URL"),
    ({"LOCKSMITHD_ENDPOINT": " , "}, "LOCKSMITHD_ENDPOINT", " , ", "no endpoint"),
    ({"LOCKSMITHD_LOGIN_DELAY": "5"}, "LOCKSMITHD_LOGIN_DELAY", "5", "missing unit"),
    ({"LOCKSMITHD_LOGIN_DELAY": "-5m"}, "LOCKSMITHD_LOGIN_DELAY", "-5m", "negative"),
    ({"LOCKSMITHD_RECHECK_INTERVAL": "0"}, "LOCKSMITHD_RECHECK_INTERVAL", "0", "greater than zero"),
    ({"LOCKSMITHD_RETRY_MAX": "soon"}, "LOCKSMITHD_RETRY_MAX", "soon", "invalid duration"),
    ({"LOCKSMITHD_ETCD_TIMEOUT": "5 s"}, "LOCKSMITHD_ETCD_TIMEOUT", "5 s", "unknown unit"),
    ({"LOCKSMITHD_ETCD_TIMEOUT": "0s"}, "LOCKSMITHD_ETCD_TIMEOUT", "0s", "greater than zero"),
    ({"LOCKSMITHD_DEBUG": "maybe"}, "LOCKSMITHD_DEBUG", "maybe", "expected a boolean"),
    ({"LOCKSMITHD_DEBUG": ""}, "LOCKSMITHD_DEBUG", "", "expected a boolean"),
    ({"LOCKSMITHD_STATE_FILE": ""}, "LOCKSMITHD_STATE_FILE", "", "must not be empty"),
    ({"LOCKSMITHD_BOOT_ID_PATH": " "}, "LOCKSMITHD_BOOT_ID_PATH", " ", "must not be empty"),
]


class TestInvalid:
    """Each invalid setting is one ConfigError line naming source, key and value."""

    @pytest.mark.parametrize(("env", "key", "value", "problem"), INVALID, ids=[f"{row[1]}={row[2]!r}" for row in INVALID])
    def test_invalid_environment(self, host: Host, env: dict[str, str], key: str, value: str, problem: str) -> None:
        """Values from the environment are named with source "environment"."""
        value = value.replace("{tmp}", str(host.root))
        with pytest.raises(ConfigError) as info:
            host.load(host.fill(env))
        error = info.value
        assert type(error) is ConfigError
        assert error.exit_code == ExitCode.CONFIG
        assert (error.source, error.key, error.value) == ("environment", key, value)
        message = str(error)
        assert message.startswith(f"environment: {key}={value!r}: ")
        assert problem in message
        assert "\n" not in message

    @pytest.mark.parametrize(("env", "key", "value", "problem"), INVALID[:3] + INVALID[17:21])
    def test_invalid_command_line(self, host: Host, env: dict[str, str], key: str, value: str, problem: str) -> None:
        """Values given as flags are named with source "command line"."""
        with pytest.raises(ConfigError) as info:
            host.load({}, env)
        assert (info.value.source, info.value.key, info.value.value) == ("command line", key, value)
        assert problem in str(info.value)

    def test_invalid_value_in_a_file_names_file_and_line(self, host: Host) -> None:
        """Values from a file are named "path:line"."""
        path = host.write("etc-flatcar", "GROUP=stable\nREBOOT_STRATEGY=sometimes\n")
        with pytest.raises(ConfigError) as info:
            host.load()
        assert str(info.value) == f"{path}:2: REBOOT_STRATEGY='sometimes': " + info.value.problem

    def test_password_is_never_in_an_error(self, host: Host) -> None:
        """Credentials errors do not quote the password."""
        with pytest.raises(ConfigError) as info:
            host.load({"LOCKSMITHD_ETCD_PASSWORD": "hunter2"})
        assert info.value.key == "LOCKSMITHD_ETCD_USERNAME"
        assert "hunter2" not in str(info.value)


class TestIdentity:
    """The holder id: an override or /etc/machine-id, never empty."""

    @pytest.mark.parametrize(("value", "problem"), [("", "empty"), ("a b", "whitespace"), ("x" * 300, "longer than 256")])
    def test_bad_override(self, host: Host, value: str, problem: str) -> None:
        """A bad LOCKSMITHD_MACHINE_ID is an IdentityError naming environment, key and value."""
        with pytest.raises(IdentityError) as info:
            host.load({"LOCKSMITHD_MACHINE_ID": value})
        assert info.value.exit_code == ExitCode.IDENTITY
        assert (info.value.source, info.value.key, info.value.value) == ("environment", "LOCKSMITHD_MACHINE_ID", value)
        assert problem in str(info.value)
        assert "\n" not in str(info.value)

    @pytest.mark.parametrize("content", [None, "", "\n"])
    def test_missing_or_empty_machine_id_file(self, host: Host, content: str | None) -> None:
        """Without an override, a missing or empty machine-id file is an IdentityError."""
        host.machine_id_path.unlink()
        if content is not None:
            host.machine_id_path.write_text(content)
        with pytest.raises(IdentityError) as info:
            host.load()
        assert info.value.exit_code == ExitCode.IDENTITY
        assert info.value.source == str(host.machine_id_path)
        assert info.value.key == "machine-id"
