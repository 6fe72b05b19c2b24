"""The one settings table: README, flags, --help, defaults and the strategy registry all come from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from locksmithd import strategies
from locksmithd.daemon.main import cli
from locksmithd.core.etcd_config import EtcdSettings
from locksmithd.errors import ConfigError
from locksmithd.host import identity, statefile
from locksmithd.settings import FLAGS, KNOWN_KEYS, SECRET_KEYS, SETTINGS, DaemonSettings, RawSetting, readme_table
from locksmithd.settings import table, values

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_settings_table() -> str:
    """The Markdown table of README's Configure section, as written."""
    text = README.read_text()
    section = text[text.index("## Configure"):]
    start = section.index("| key |")
    return section[start:section.index("\n\n", start) + 1]


class TestReadme:
    """The README's Configure table is exactly the one rendered from the rows."""

    def test_readme_table_is_rendered_from_the_rows(self) -> None:
        """Regenerate with locksmithd.settings.readme_table() when a row changes."""
        assert readme_settings_table() == readme_table()

    def test_every_operator_row_is_in_the_readme_with_its_default(self) -> None:
        """Each documented key appears once with its default text; systemd's keys do not appear."""
        rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip()
                for line in readme_settings_table().splitlines()[2:]}
        assert rows == {row.key: row.default_text() for row in SETTINGS if row.operator}
        assert "JOURNAL_STREAM" not in rows and "NOTIFY_SOCKET" not in rows


class TestRows:
    """Keys, secrets, aliases and fields are derived from the rows, never listed twice."""

    def test_known_and_secret_keys_come_from_rows(self) -> None:
        assert KNOWN_KEYS == {row.key for row in SETTINGS}
        assert SECRET_KEYS == {"LOCKSMITHD_ETCD_PASSWORD"}
        assert table.ALIASES == {"REBOOT_WINDOW_START": "LOCKSMITHD_REBOOT_WINDOW_START",
                                 "REBOOT_WINDOW_LENGTH": "LOCKSMITHD_REBOOT_WINDOW_LENGTH"}

    def test_each_row_fills_a_real_field(self) -> None:
        """A row's field exists on DaemonSettings (or EtcdSettings for "etcd.", DaemonSettings.source_options
        for "source.": a source's own rows need no field of their own)."""
        top = {f.name for f in dataclasses.fields(DaemonSettings)}
        etcd = {f.name for f in dataclasses.fields(EtcdSettings)}
        options = set(DaemonSettings(machine_id="m").source_options)
        assert "reboot_check_interval_s" in options and "reboot_check_interval_s" not in top
        for row in SETTINGS:
            if row.field is not None:
                kind, _, name = row.field.rpartition(".")
                assert name in {"etcd": etcd, "source": options, "": top}[kind], row.key

    def test_defaults_are_the_edge_modules_defaults(self) -> None:
        """Defaults the host edge also uses (core/host_defaults.py) are the ones the table documents and parses."""
        assert table.STATE_FILE.default == statefile.CoordinatorFile().path
        assert identity.read_boot_id.__defaults__ == (table.BOOT_ID_PATH.default,)
        assert DaemonSettings(machine_id="m").retry_max_s == table.RETRY_MAX.default_value() == 60.0

    def test_dataclass_defaults_are_the_table_defaults(self) -> None:
        """DaemonSettings built without arguments, its etcd connection included, holds the table's parsed
        defaults: the etcd endpoint and request timeout are declared in the table only."""
        daemon = DaemonSettings(machine_id="m")
        for row in SETTINGS:
            if row.field is not None:
                kind, _, name = row.field.rpartition(".")
                found = (getattr(daemon.etcd, name) if kind == "etcd"
                         else daemon.source_options[name] if kind == "source" else getattr(daemon, name))
                assert found == row.default_value(), row.key

    def test_every_default_parses(self) -> None:
        """A documented default that its own parser refused would only fail at start-up."""
        for row in SETTINGS:
            if row.default is not None:
                table.parse_row(row, RawSetting(row.key, row.default, "default"))

    def test_operator_rows_have_flags(self) -> None:
        """Every operator row except the bus address has a flag, named after the key."""
        for row in SETTINGS:
            if row.operator and row.key != "DBUS_SYSTEM_BUS_ADDRESS":
                assert row.flag is not None, row.key
        assert FLAGS["--etcd-timeout"] is table.ETCD_TIMEOUT


class TestStrategyRegistry:
    """One registry of strategies; settings validate against it."""

    def test_labels_are_the_registry(self) -> None:
        assert strategies.LABELS == tuple(strategies.REGISTRY) == ("etcd-lock", "fleet-lock", "reboot", "off")

    @pytest.mark.parametrize("label", ["etcd-lock", "reboot", "off", "best-effort", " OFF "])
    def test_every_accepted_label_has_a_factory(self, label: str) -> None:
        resolved = values.strategy(RawSetting("REBOOT_STRATEGY", label, "test"))
        assert resolved in strategies.REGISTRY

    def test_factories_build_their_label(self) -> None:
        """The lock-free strategies are built without etcd; each reports its own label."""
        for label in ("reboot", "off"):
            settings = DaemonSettings(machine_id="m", strategy=label)
            assert settings.strategy_config() is None
            built = strategies.make_strategy(label, settings.strategy_config(), hostname="h")
            assert built.label == label
        settings = DaemonSettings(machine_id="m", strategy="fleet-lock", fleetlock_url="http://127.0.0.1:9")
        built = strategies.make_strategy("fleet-lock", settings.strategy_config(), hostname="h")
        assert built.label == "fleet-lock"

    def test_each_factory_takes_its_own_slice(self) -> None:
        """The loader builds each strategy the slice its declaration names, from the settings rows."""
        from locksmithd.core.strategy_config import EtcdLockConfig, FleetLockConfig
        from locksmithd.core.strategy_labels import DECLARATIONS

        settings = DaemonSettings(machine_id="m", strategy="etcd-lock", group="g", queue_drop_out_s=2.5)
        config = settings.strategy_config()
        assert isinstance(config, EtcdLockConfig)
        assert (config.holder, config.group, config.lease_ttl_s, config.etcd) == ("m", "g", 3, settings.etcd)
        fleet = DaemonSettings(machine_id="m", strategy="fleet-lock", fleetlock_url="http://x:1", retry_max_s=7)
        assert fleet.strategy_config() == FleetLockConfig(url="http://x:1", holder="m", group="default",
                                                          poll_max_s=7)
        for declaration in DECLARATIONS:
            built = DaemonSettings(machine_id="m", strategy=declaration.label,
                                   fleetlock_url="http://x:1").strategy_config()
            assert (None if built is None else type(built)) is declaration.config, declaration.label

    def test_each_strategy_owns_its_label_and_help(self) -> None:
        """Each strategy module names its declaration; the label and help operators read come from it."""
        import importlib

        from locksmithd.core.strategy_labels import DECLARATIONS

        for declaration in DECLARATIONS:
            module = importlib.import_module(f"locksmithd.strategies.{declaration.label.replace('-', '_')}")
            assert module.DECLARATION is declaration
            assert f"`{declaration.label}` ({declaration.help})" in table.STRATEGY.meaning

    def test_unknown_label_lists_the_registry(self) -> None:
        with pytest.raises(ValueError, match="use one of etcd-lock, fleet-lock, reboot, off"):
            values.strategy(RawSetting("REBOOT_STRATEGY", "sometimes", "test"))


class TestHelp:
    """--help lists every flag of the table with its key and default."""

    def test_help_shows_rows(self) -> None:
        result = CliRunner().invoke(cli, ["--help"], terminal_width=400)
        assert result.exit_code == 0
        lines = result.output.splitlines()
        for flag, row in FLAGS.items():
            at = next(i for i, line in enumerate(lines) if line.strip().startswith(flag + " ") or line.strip() == flag)
            # The entry: the flag's line and, when the flag is too long for click's first column, the next one.
            line = lines[at] if len(lines[at].split()) > 2 or at + 1 == len(lines) else lines[at] + lines[at + 1]
            assert row.key in line
            if row.default_text() and not row.switch:
                assert f"default {row.default_text()}" in line


# Differential check of the D-Bus address validator against dbus_fast's own parser.
BUS_ADDRESSES = [
    "unix:path=/run/dbus/system_bus_socket", "unix:abstract=/tmp/dbus-x", "tcp:host=127.0.0.1,port=1234",
    "unix:path=/a;tcp:host=b,port=2", "unix:path=/a%20b,guid=0123", "garbage", "unix:", "unix:path",
    "unix:path=/a b", "tcp:host=h,port=x", "tcp:host=h,port=99999", "foo:bar=1", ";", "unix:path=/x\n",
    ":path=/x", "unix:path=/a;", "unix:=x",
]


@pytest.mark.parametrize("address", BUS_ADDRESSES)
def test_bus_address_check_never_accepts_what_dbus_fast_refuses(address: str) -> None:
    """Anything we accept, dbus_fast parses and has a transport it can open."""
    from dbus_fast._private.address import parse_address

    raw = RawSetting("DBUS_SYSTEM_BUS_ADDRESS", address, "environment")
    try:
        values.bus_address(raw)
    except ValueError:
        return
    parsed = parse_address(address)
    for transport, options in parsed:
        assert transport in ("unix", "tcp")
        assert transport != "unix" or "path" in options or "abstract" in options
        assert transport != "tcp" or 0 <= int(options.get("port", "0")) <= 65535


@pytest.mark.parametrize("address", ["garbage", "unix:", "unix:path", "tcp:host=h,port=x", "foo:bar=1", ";",
                                     "unix:path=/a b"])
def test_bad_bus_addresses_are_config_errors(address: str) -> None:
    with pytest.raises(ConfigError, match="not a D-Bus address"):
        table.parse_row(table.BUS_ADDRESS, RawSetting("DBUS_SYSTEM_BUS_ADDRESS", address, "environment"))

