"""The daemon's settings: update.conf files, locksmithd.conf, environment and flags, validated once."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from typing import Any, TypeVar

from locksmithd.core.command_env import command_environment
from locksmithd.core.duration import format_duration
from locksmithd.core.etcd_config import EtcdSettings
from locksmithd.core.health_policy import HealthPolicy
from locksmithd.core.host_defaults import DEFAULT_MACHINE_ID_PATH
from locksmithd.core.host_reads import HostReads
from locksmithd.core.schedule import Schedule
from locksmithd.core.stale_policy import StalePolicy
from locksmithd.core.strategy_config import EtcdLockConfig, FleetLockConfig, StrategyConfig
from locksmithd.core.strategy_labels import ETCD_LOCK, FLEET_LOCK
from locksmithd.errors import ConfigError
from locksmithd.observe.address import MetricsAddress
from locksmithd.settings import table, values
from locksmithd.settings.conffile import read_conf_file
from locksmithd.settings.credentials import apply_credential_files
from locksmithd.settings.etcd_checks import validate_tls_and_auth
from locksmithd.settings.raw import COMMAND_LINE, ENVIRONMENT, RawSetting
from locksmithd.settings.table import ALIASES, KNOWN_KEYS, SETTINGS, Setting, parse_row
from locksmithd.settings.windows import schedule

T = TypeVar("T")

DEFAULT_CONF_PATHS: tuple[str, ...] = (
    "/usr/share/coreos/update.conf",
    "/etc/coreos/update.conf",
    "/usr/share/flatcar/update.conf",
    "/etc/flatcar/update.conf",
    "/etc/locksmithd/locksmithd.conf",
)


def _default(row: Setting[T]) -> T:
    value = row.default_value()
    assert value is not None, f"{row.key} has no default"
    return value


SOURCE_OPTION = "source."
"""The field prefix of a source's own rows: their values go to ``DaemonSettings.source_options``."""


def _default_source_options() -> dict[str, Any]:
    return {row.field.removeprefix(SOURCE_OPTION): row.default_value() for row in SETTINGS
            if row.field is not None and row.field.startswith(SOURCE_OPTION)}


def _default_etcd() -> EtcdSettings:
    """The etcd connection of the table's defaults (the one place they are declared)."""
    return EtcdSettings(endpoints=_default(table.ENDPOINT), request_timeout_s=_default(table.ETCD_TIMEOUT))


@dataclass(frozen=True, kw_only=True)
class DaemonSettings:
    """Everything locksmithd needs, validated; built by ``load_settings`` and never mutated.

    Field defaults are the table's (``settings/table.py``). ``command_env`` is
    the clean environment of every hook and check command (never the daemon's
    credentials: ``core.command_env``), built from the environment the
    loader read. ``source_options`` holds the values of the rows whose field
    is ``source.<name>``, by name: a source's own settings, which it reads
    from here (``context.settings.source_options``), so a new source needs no
    field of its own in this class. ``sources`` lists
    the configuration files that were read; ``unknown_keys`` holds (source,
    key) for each unrecognised LOCKSMITHD_* key, to warn about. The etcd
    password never appears in repr (EtcdSettings hides it).
    """

    machine_id: str
    strategy: str = _default(table.STRATEGY)
    etcd: EtcdSettings = field(default_factory=_default_etcd)
    group: str = _default(table.GROUP)
    window: Schedule | None = None
    state_file: str = _default(table.STATE_FILE)
    login_delay_s: float = _default(table.LOGIN_DELAY)
    recheck_interval_s: float = _default(table.RECHECK_INTERVAL)
    retry_max_s: float = _default(table.RETRY_MAX)
    queue_drop_out_s: float = _default(table.QUEUE_DROP_OUT)
    queue_head_timeout_s: float = _default(table.QUEUE_HEAD_TIMEOUT)
    bus_address: str | None = None
    boot_id_path: str = _default(table.BOOT_ID_PATH)
    debug: bool = _default(table.DEBUG)
    reboot_deadline_s: float = _default(table.REBOOT_DEADLINE)
    stale_policy: StalePolicy = _default(table.STALE_POLICY)
    health_system_states: frozenset[str] | None = field(default_factory=lambda: table.HEALTH_SYSTEM_STATES.default_value())
    health_units: tuple[str, ...] = ()
    health_dir: str = _default(table.HEALTH_DIR)
    health_soak_s: float = 0.0
    health_timeout_s: float = _default(table.HEALTH_TIMEOUT)
    health_recheck_interval_s: float = _default(table.HEALTH_RECHECK_INTERVAL)
    fleetlock_url: str | None = None
    fleetlock_group: str = _default(table.FLEETLOCK_GROUP)
    metrics_address: MetricsAddress | None = None
    reboot_sources: tuple[str, ...] = _default(table.SOURCES)
    reboot_required_file: str = _default(table.REBOOT_REQUIRED_FILE)
    reboot_check_command: tuple[str, ...] | None = None
    pre_reboot_dir: str = _default(table.PRE_REBOOT_DIR)
    post_boot_dir: str = _default(table.POST_BOOT_DIR)
    hook_timeout_s: float = _default(table.HOOK_TIMEOUT)
    ignore_inhibitors: bool = _default(table.IGNORE_INHIBITORS)
    journal_stream: str | None = None
    notify_socket: str | None = None
    watchdog_usec: int | None = None
    watchdog_pid: str | None = None
    test_block_loop: bool = False
    command_env: Mapping[str, str] = field(default_factory=lambda: command_environment({}, KNOWN_KEYS), repr=False)
    source_options: Mapping[str, Any] = field(default_factory=_default_source_options)
    sources: tuple[str, ...] = ()
    unknown_keys: tuple[tuple[str, str], ...] = ()

    def health_policy(self) -> HealthPolicy:
        """What "healthy after boot" means for this host (checked to fit together by the loader)."""
        return HealthPolicy(healthy_states=self.health_system_states, units=self.health_units,
                            check_dir=self.health_dir, soak_s=self.health_soak_s, timeout_s=self.health_timeout_s,
                            recheck_interval_s=self.health_recheck_interval_s)

    def strategy_config(self) -> StrategyConfig:
        """The slice of these settings the strategy's factory takes (``core/strategy_config.py``)."""
        if self.strategy == ETCD_LOCK.label:
            return EtcdLockConfig(etcd=self.etcd, holder=self.machine_id, group=self.group,
                                  retry_max_s=self.retry_max_s, recheck_interval_s=self.recheck_interval_s,
                                  reboot_deadline_s=self.reboot_deadline_s, stale_policy=self.stale_policy,
                                  lease_ttl_s=math.ceil(self.queue_drop_out_s),
                                  head_timeout_s=self.queue_head_timeout_s)
        if self.strategy == FLEET_LOCK.label:
            assert self.fleetlock_url is not None  # the loader requires it with this strategy
            return FleetLockConfig(url=self.fleetlock_url, holder=self.machine_id, group=self.fleetlock_group,
                                   poll_max_s=self.retry_max_s)
        return None

    def describe(self) -> str:
        """One line for the start-up log; contains no secret."""
        window = str(self.window) if self.window else "any time"
        if self.strategy == "fleet-lock":  # etcd is not used: say where the slot comes from instead
            return (f"strategy={self.strategy} fleetlock_url={self.fleetlock_url} "
                    f"fleetlock_group={self.fleetlock_group!r} window={window!r} machine_id={self.machine_id}")
        return (
            f"strategy={self.strategy} group={self.group!r} window={window!r} "
            f"sources={','.join(self.reboot_sources)} "
            f"endpoints={self.etcd.describe_endpoints()} machine_id={self.machine_id}"
        )


def load_settings(
    environ: Mapping[str, str],
    flags: Mapping[str, str] | None = None,
    conf_paths: Sequence[str] = (),
    machine_id_path: str = DEFAULT_MACHINE_ID_PATH,
    *,
    host: HostReads | None = None,
    conf_must_exist: bool = False,
    identity: bool = True,
) -> DaemonSettings:
    """Read, merge and validate every source into one DaemonSettings.

    Priority, lowest first: each of ``conf_paths`` in order (the entry points
    pass DEFAULT_CONF_PATHS or the files named; missing files are skipped
    unless ``conf_must_exist``, for files the operator named), then
    ``environ``, then ``flags`` (source "command line"). Never reads
    ``os.environ``. ``host`` reads what settings/ may not read itself (it
    imports no edge): the configuration files, the machine id (unless
    LOCKSMITHD_MACHINE_ID overrides it) and, for windows with no
    LOCKSMITHD_TIMEZONE, the zone of ``environ``'s TZ or /etc/localtime (the
    local time locksmith's window always meant); the entry points pass
    ``host.reads.HOST_READS``, and TypeError says what needed it when it is
    None. With ``identity`` False (``locksmithctl window``)
    no machine id is read and ``machine_id`` is "" unless overridden. Raises ConfigError naming source, key and value for the
    first invalid setting, or IdentityError if no machine id is usable.
    """
    layers: list[list[RawSetting]] = []
    sources: list[str] = []

    def reads(what: str) -> HostReads:
        if host is None:
            raise TypeError(f"load_settings: {what} need host (locksmithd.host.reads.HOST_READS)")
        return host

    for path in conf_paths:
        found = read_conf_file(path, reads("configuration files").read_file, must_exist=conf_must_exist)
        if found is not None:
            layers.append(found)
            sources.append(path)
    layers.append(_mapping_settings(environ, ENVIRONMENT))
    layers.append(_mapping_settings(flags or {}, COMMAND_LINE))
    values, unknown = merge_layers(layers)
    return _build(values, tuple(unknown), tuple(sources),
                  (lambda mode: reads("the machine id").holder_id(machine_id_path, mode)) if identity else None,
                  lambda: reads("windows without LOCKSMITHD_TIMEZONE").zone(environ.get("TZ")),
                  command_environment(environ, KNOWN_KEYS))


def _mapping_settings(mapping: Mapping[str, str], source: str) -> list[RawSetting]:
    """The settings of the environment or the flags that could concern locksmithd."""
    return [
        RawSetting(key, value, source)
        for key, value in sorted(mapping.items())
        if key in KNOWN_KEYS or key in ALIASES or key.startswith("LOCKSMITHD_")
    ]


def merge_layers(layers: Iterable[Sequence[RawSetting]]) -> tuple[dict[str, RawSetting], list[tuple[str, str]]]:
    """Merge layers given lowest priority first; return {canonical key: setting} and unknown keys.

    Within one layer the last line wins, except that a prefixed name beats its
    unprefixed alias. Unknown keys are reported only if they start with
    LOCKSMITHD_ (update.conf also holds update_engine's SERVER, GROUP, ...).
    """
    merged: dict[str, RawSetting] = {}
    unknown: dict[tuple[str, str], None] = {}
    for layer in layers:
        chosen: dict[str, RawSetting] = {}
        for raw in layer:
            canonical = ALIASES.get(raw.key, raw.key)
            if canonical not in KNOWN_KEYS:
                if raw.key.startswith("LOCKSMITHD_"):
                    unknown[(raw.source, raw.key)] = None
                continue
            previous = chosen.get(canonical)
            if previous is not None and previous.key == canonical and raw.key != canonical:
                continue
            chosen[canonical] = raw
        merged.update(chosen)
    return merged, list(unknown)


def _build(
    given: Mapping[str, RawSetting], unknown: tuple[tuple[str, str], ...], sources: tuple[str, ...],
    holder_id: Callable[[str], str] | None, host_zone: Callable[[], tuple[tzinfo, str]],
    command_env: Mapping[str, str],
) -> DaemonSettings:
    """Parse every row (given value or default), in table order, into DaemonSettings."""
    top: dict[str, Any] = {}
    etcd: dict[str, Any] = {}
    source_options: dict[str, Any] = {}
    for row in SETTINGS:
        raw = given.get(row.key)
        if row.field is None:
            if raw is not None:
                parse_row(row, raw)  # checked here; combined below
            continue
        value = parse_row(row, raw) if raw is not None else row.default_value()
        if row.field.startswith("etcd."):
            etcd[row.field.removeprefix("etcd.")] = value
        elif row.field.startswith(SOURCE_OPTION):
            source_options[row.field.removeprefix(SOURCE_OPTION)] = value
        else:
            top[row.field] = value
    override = given.get(table.MACHINE_ID.key)
    mode = given.get(table.HOLDER_ID.key)
    settings = DaemonSettings(
        **top,
        etcd=_etcd(etcd, given),
        window=schedule(given, host_zone),
        machine_id=parse_row(table.MACHINE_ID, override) if override else _machine_id(
            holder_id, parse_row(table.HOLDER_ID, mode) if mode else "machine-id"),
        sources=sources,
        unknown_keys=unknown,
        command_env=command_env,
        source_options=source_options,
    )
    if settings.strategy == "fleet-lock" and settings.fleetlock_url is None:
        raw = given.get(table.FLEETLOCK_URL.key) or given.get(table.STRATEGY.key)
        assert raw is not None  # fleet-lock is never the default
        raise ConfigError(raw.source, raw.key, raw.value, "strategy fleet-lock needs LOCKSMITHD_FLEETLOCK_URL")
    if "command" in settings.reboot_sources and settings.reboot_check_command is None:
        raw = given.get(table.SOURCES.key)
        assert raw is not None  # the default has no command source
        raise ConfigError(raw.source, raw.key, raw.value,
                          f"source 'command' needs {table.REBOOT_CHECK_COMMAND.key} (the command to run)")
    try:
        settings.health_policy()
    except ValueError as exc:  # the soak must be shorter than the timeout
        raw = given.get(table.HEALTH_SOAK.key) or given.get(table.HEALTH_TIMEOUT.key)
        where = raw if raw is not None else RawSetting(table.HEALTH_SOAK.key, "", "defaults")
        raise ConfigError(where.source, where.key, where.value, str(exc)) from None
    _check_deadline(settings, given)
    _check_paths(settings, given)
    return settings


def _given_or_default(given: Mapping[str, RawSetting], row: Setting[Any], value: object) -> RawSetting:
    """The setting as given, or its default as a RawSetting of source "defaults" (for an error naming it)."""
    return given.get(row.key) or RawSetting(row.key, str(value), "defaults")


def _check_deadline(settings: DaemonSettings, given: Mapping[str, RawSetting]) -> None:
    """With etcd-lock the reboot deadline must outlast the health checks (timeout plus soak).

    Else a host still checking its health after boot is past its deadline and,
    with no live daemon seen yet, taken for dead: its group halted or its slot
    reclaimed while it still counts on it.
    """
    if settings.strategy != "etcd-lock":
        return  # the deadline is recorded only with etcd-lock's slots
    checks_s = settings.health_timeout_s + settings.health_soak_s
    if settings.reboot_deadline_s > checks_s:
        return
    row = next((r for r in (table.REBOOT_DEADLINE, table.HEALTH_TIMEOUT, table.HEALTH_SOAK) if r.key in given),
               table.REBOOT_DEADLINE)
    raw = _given_or_default(given, row, row.default)
    raise ConfigError(raw.source, raw.key, raw.value,
                      f"{table.REBOOT_DEADLINE.key} ({_shown_s(settings.reboot_deadline_s)}) must be longer than "
                      f"{table.HEALTH_TIMEOUT.key} plus {table.HEALTH_SOAK.key} ({_shown_s(checks_s)}): else a "
                      f"host still checking its health is taken for dead")


def _check_paths(settings: DaemonSettings, given: Mapping[str, RawSetting]) -> None:
    """Paths that would reboot the host in a loop or fail every run, checked once at start (symlinks followed):
    the reboot-required file must not be a directory (when that source is on); the health and hook
    directories must not be files (they may be missing: then they hold no commands); with etcd-lock the
    boot id file, if there, must be a regular file (a FIFO would block; none would skip the health checks)."""
    checks: list[tuple[Setting[Any], str, Callable[[str], str | None]]] = [
        (table.HEALTH_DIR, settings.health_dir, values.directory_problem),
        (table.PRE_REBOOT_DIR, settings.pre_reboot_dir, values.directory_problem),
        (table.POST_BOOT_DIR, settings.post_boot_dir, values.directory_problem),
    ]
    if settings.strategy == "etcd-lock":  # the boot id tells a new boot (health checks first) from a crash
        checks.append((table.BOOT_ID_PATH, settings.boot_id_path, values.regular_file_problem))
    if "reboot-required" in settings.reboot_sources:
        checks.insert(0, (table.REBOOT_REQUIRED_FILE, settings.reboot_required_file, values.reboot_required_problem))
    for row, path, problem_of in checks:
        problem = problem_of(path)
        if problem is not None:
            raw = _given_or_default(given, row, path)
            raise ConfigError(raw.source, raw.key, raw.value, problem)


def _shown_s(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _machine_id(holder_id: Callable[[str], str] | None, mode: str) -> str:
    """This host's holder id ("" when no identity is needed, e.g. ``locksmithctl window``)."""
    return "" if holder_id is None else holder_id(mode)


def _etcd(fields: Mapping[str, Any], given: Mapping[str, RawSetting]) -> EtcdSettings:
    """The etcd rows' values, checked to fit together (TLS files, credentials)."""
    related = (table.ENDPOINT, table.CAFILE, table.CERTFILE, table.KEYFILE, table.USERNAME, table.PASSWORD,
               table.PASSWORD_FILE, table.KEY_PREFIX, table.CREDENTIALS_DIRECTORY)
    where = list(dict.fromkeys(given[row.key].source for row in related if row.key in given))
    filled = dict(fields)
    apply_credential_files(filled, given.get(table.PASSWORD_FILE.key), given.get(table.PASSWORD.key),
                           given.get(table.CREDENTIALS_DIRECTORY.key))
    return validate_tls_and_auth(EtcdSettings(**filled), ", ".join(where) or "defaults",
                                 {row.field.removeprefix("etcd."): row.key for row in SETTINGS
                                  if row.field and row.field.startswith("etcd.")})
