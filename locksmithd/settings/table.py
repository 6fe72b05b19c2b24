"""The one table of daemon settings: key, flag, default, parser, secrecy and meaning of each.

The daemon's flags and ``--help``, validation, the known and secret keys and
the README's Configure table all come from ``SETTINGS``. A new setting is one
row here plus the typed field it fills in ``DaemonSettings``; a source's own
setting needs no field (``field="source.<name>"`` puts its value in
``DaemonSettings.source_options``); then refresh the
README with ``python -c 'from locksmithd.settings import readme_table; print(readme_table())'``
(tests/test_settings_table.py fails until the two agree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from locksmithd.core.duration import format_duration
from locksmithd.core.health_policy import DEFAULT_RECHECK_INTERVAL_S
from locksmithd.core.host_defaults import DEFAULT_BOOT_ID_PATH, DEFAULT_MACHINE_ID_PATH, DEFAULT_STATE_FILE
from locksmithd.errors import ConfigError, IdentityError
from locksmithd.core.etcd_config import without_password
from locksmithd.settings import values
from locksmithd.settings.raw import DEFAULT, RawSetting
from locksmithd.core.strategy_labels import strategies_help

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

MAX_VALUE_CHARS = 4096
"""Longest value accepted from any source (PATH_MAX); longer is a mistake or an attack."""


@dataclass(frozen=True)
class Setting(Generic[T_co]):
    """One row of the table.

    ``default`` is written as an operator would write it and parsed by
    ``parse`` like any given value, so the documented default is the one
    used; None means unset. ``shown_default`` replaces it in the docs when
    the literal says too little. ``field`` names the DaemonSettings field
    the value fills ("etcd.<name>" for EtcdSettings, "source.<name>" for a
    source's own value in ``source_options``; None when the loader
    combines the row with others). ``operator`` False marks keys systemd sets
    (not documented, no flag); ``switch`` makes the flag take no value.
    ``error`` is the ConfigError class a bad value raises (IdentityError for
    the holder id, exit 4).
    """

    key: str
    parse: Callable[[RawSetting], T_co]
    meaning: str
    field: str | None
    default: str | None = None
    shown_default: str | None = None
    flag: str | None = None
    secret: bool = False
    aliases: tuple[str, ...] = ()
    operator: bool = True
    switch: bool = False
    error: type[ConfigError] = ConfigError

    def default_value(self) -> T_co | None:
        """The parsed default (None when the setting has none)."""
        return None if self.default is None else self.parse(RawSetting(self.key, self.default, DEFAULT))

    def default_text(self) -> str:
        """The default as documented: the literal in backticks, the description, or ""."""
        if self.shown_default is not None:
            return self.shown_default
        return "" if self.default is None else f"`{self.default}`"


def _seconds(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


STRATEGY = Setting("REBOOT_STRATEGY", values.strategy, strategies_help(), "strategy", "etcd-lock", flag="--strategy")
ENDPOINT = Setting("LOCKSMITHD_ENDPOINT", values.endpoints,
                   "etcd endpoints, comma-separated; unreachable ones are skipped", "etcd.endpoints",
                   "http://127.0.0.1:2379", flag="--endpoint")
GROUP = Setting("LOCKSMITHD_GROUP", values.group,
                "reboot group; each group has its own semaphore (same naming rule as holder ids)", "group",
                "", "(default group)", flag="--group")
CAFILE = Setting("LOCKSMITHD_ETCD_CAFILE", values.readable_file,
                 "CA file for https endpoints; a CA file alone is valid (server-authenticated TLS)", "etcd.cafile",
                 flag="--etcd-cafile")
CERTFILE = Setting("LOCKSMITHD_ETCD_CERTFILE", values.readable_file, "client certificate for TLS (with its key)",
                   "etcd.certfile", flag="--etcd-certfile")
KEYFILE = Setting("LOCKSMITHD_ETCD_KEYFILE", values.readable_file, "client certificate's private key",
                  "etcd.keyfile", flag="--etcd-keyfile")
USERNAME = Setting("LOCKSMITHD_ETCD_USERNAME", values.optional_text, "etcd user (with a password)", "etcd.username",
                   flag="--etcd-username")
PASSWORD = Setting("LOCKSMITHD_ETCD_PASSWORD", values.optional_text,
                   "etcd password; never appears in logs, errors or `--debug` output", "etcd.password",
                   flag="--etcd-password", secret=True)
PASSWORD_FILE = Setting("LOCKSMITHD_ETCD_PASSWORD_FILE", values.readable_file,
                        "file whose first line is the etcd password: out of the environment and `ps`; "
                        "`LoadCredential=etcd-password:PATH` in the unit does the same", None,
                        flag="--etcd-password-file")
KEY_PREFIX = Setting("LOCKSMITHD_ETCD_KEY_PREFIX", values.text,
                     "prefix before locksmith's keys, for a shared (multi-tenant) etcd", "etcd.key_prefix", "",
                     "", flag="--etcd-key-prefix")
WINDOW_START = Setting("LOCKSMITHD_REBOOT_WINDOW_START", values.text,
                       "`HH:MM` (daily) or `Day HH:MM` (weekly, e.g. `Thu 04:00`), in `LOCKSMITHD_TIMEZONE`; "
                       "`REBOOT_WINDOW_START` also accepted", None, flag="--reboot-window-start",
                       aliases=("REBOOT_WINDOW_START",))
WINDOW_LENGTH = Setting("LOCKSMITHD_REBOOT_WINDOW_LENGTH", values.text,
                        "Go duration, e.g. `1h30m`; both or neither of the pair; `REBOOT_WINDOW_LENGTH` also accepted",
                        None, flag="--reboot-window-length", aliases=("REBOOT_WINDOW_LENGTH",))
WINDOWS = Setting("LOCKSMITHD_REBOOT_WINDOWS", values.windows,
                  "several windows, `;`-separated, each `[days] HH:MM length` (e.g. `Mon-Fri 03:00 1h; Sat,Sun "
                  "22:30 90m`); overlapping ones merge; not together with the START/LENGTH pair", None,
                  shown_default="(any time)", flag="--reboot-windows")
TIMEZONE = Setting("LOCKSMITHD_TIMEZONE", values.time_zone,
                   "IANA time zone of the reboot windows (e.g. `Europe/Berlin`); DST-aware", None,
                   shown_default="host's (`TZ`, else `/etc/localtime`)", flag="--timezone")
LOGIN_DELAY = Setting("LOCKSMITHD_LOGIN_DELAY", values.delay_s,
                      "how long to wait after warning logged-in users (0 allowed, at most 24h)", "login_delay_s",
                      "5m", flag="--login-delay")
MACHINE_ID = Setting("LOCKSMITHD_MACHINE_ID", values.holder_id, "holder id override (tests, demos)", None,
                     shown_default=f"`{DEFAULT_MACHINE_ID_PATH}`", flag="--machine-id", error=IdentityError)
HOLDER_ID = Setting("LOCKSMITHD_HOLDER_ID", values.holder_id_mode,
                    "`machine-id` (locksmith's holder id) or `app-specific`: derived from it as "
                    "`sd_id128_get_machine_app_specific()` does, so the machine id never leaves the host; "
                    "give locksmithctl the same with `--holder-id`", None, "machine-id", flag="--holder-id")
STATE_FILE = Setting("LOCKSMITHD_STATE_FILE", values.state_file,
                     "coordinator state file; only its last directory is created", "state_file",
                     DEFAULT_STATE_FILE, flag="--state-file")
RECHECK_INTERVAL = Setting("LOCKSMITHD_RECHECK_INTERVAL", values.interval_s,
                           "safety-net re-read while waiting (the watch is the main path)", "recheck_interval_s",
                           "5m", flag="--recheck-interval")
QUEUE_DROP_OUT = Setting("LOCKSMITHD_QUEUE_DROP_OUT", values.drop_out_s,
                         "longest a crashed waiter holds up the hosts behind it once it is next in line: the short "
                         "lease of the head and the next host (hosts further back renew a 1h lease every 20m)",
                         "queue_drop_out_s", "30s", flag="--queue-drop-out")
QUEUE_HEAD_TIMEOUT = Setting("LOCKSMITHD_QUEUE_HEAD_TIMEOUT", values.interval_s,
                             "a head of the queue that leaves a free slot untaken this long is skipped "
                             "(and reported) by the host behind it", "queue_head_timeout_s", "1m",
                             flag="--queue-head-timeout")
RETRY_MAX = Setting("LOCKSMITHD_RETRY_MAX", values.interval_s, "longest pause between retries after errors",
                    "retry_max_s", "60s", flag="--retry-max")
ETCD_TIMEOUT = Setting("LOCKSMITHD_ETCD_TIMEOUT", values.request_timeout_s, "per etcd request (0.1s to 5m)",
                       "etcd.request_timeout_s", "5s", flag="--etcd-timeout")
BOOT_ID_PATH = Setting("LOCKSMITHD_BOOT_ID_PATH", values.path,
                       "the kernel's boot id, recorded with a slot (in a container, combined with when the "
                       "container's systemd started: see Health checks)", "boot_id_path",
                       DEFAULT_BOOT_ID_PATH, flag="--boot-id-path")
BUS_ADDRESS = Setting("DBUS_SYSTEM_BUS_ADDRESS", values.bus_address,
                      "the bus for update_engine and logind; an address that does not parse is a config error",
                      "bus_address", shown_default="system bus")
DEBUG = Setting("LOCKSMITHD_DEBUG", values.boolean, "verbose logs", "debug", "false", flag="--debug", switch=True)
REBOOT_DEADLINE = Setting("LOCKSMITHD_REBOOT_DEADLINE", values.interval_s,
                          "reboot plus health checks must be done this long after taking a slot; later, "
                          "a holder with no live daemon is stale; with `etcd-lock` it must be longer than "
                          "`LOCKSMITHD_HEALTH_TIMEOUT` plus `LOCKSMITHD_HEALTH_SOAK`", "reboot_deadline_s", "1h", flag="--reboot-deadline")
STALE_POLICY = Setting("LOCKSMITHD_STALE_POLICY", values.stale_policy,
                       "what the first daemon to see a stale holder does: `halt` the group, or `reclaim` its "
                       "slot (the host may still be down)", "stale_policy", "halt", flag="--stale-policy")
HEALTH_SYSTEM_STATES = Setting("LOCKSMITHD_HEALTH_SYSTEM_STATES", values.health_states,
                               "systemd `SystemState`s counted healthy after boot, comma-separated (e.g. "
                               "`running,degraded`); `any` skips the check; `starting` always means wait",
                               "health_system_states", "running", flag="--health-system-states")
HEALTH_UNITS = Setting("LOCKSMITHD_HEALTH_UNITS", values.health_units,
                       "units that must be active after boot, space-separated (read over systemd's D-Bus API)",
                       "health_units", "", "(none)", flag="--health-units")
HEALTH_DIR = Setting("LOCKSMITHD_HEALTH_DIR", values.health_dir,
                     "check commands run after boot in name order; each must exit 0 within 60s (may be missing: "
                     "no checks; never a file)",
                     "health_dir", "/etc/locksmithd/health.d", flag="--health-dir")
HEALTH_SOAK = Setting("LOCKSMITHD_HEALTH_SOAK", values.delay_s,
                      "minimum time after boot before the slot is released", "health_soak_s", "0s",
                      flag="--health-soak")
HEALTH_TIMEOUT = Setting("LOCKSMITHD_HEALTH_TIMEOUT", values.interval_s,
                         "checks repeat until all pass or this runs out; then the host keeps its slot and halts "
                         "its group", "health_timeout_s", "15m", flag="--health-timeout")
HEALTH_RECHECK_INTERVAL = Setting("LOCKSMITHD_HEALTH_RECHECK_INTERVAL", values.interval_s,
                                  "while not healthy, the checks run again at the latest this often (check "
                                  "commands have no signal; systemd's state and units are followed as they change)",
                                  "health_recheck_interval_s", _seconds(DEFAULT_RECHECK_INTERVAL_S),
                                  flag="--health-recheck-interval")
FLEETLOCK_URL = Setting("LOCKSMITHD_FLEETLOCK_URL", values.fleetlock_url,
                        "base URL of the FleetLock server for strategy `fleet-lock` (required with it), "
                        "e.g. `https://fleetlock.example:8080`", "fleetlock_url", flag="--fleetlock-url")
FLEETLOCK_GROUP = Setting("LOCKSMITHD_FLEETLOCK_GROUP", values.fleetlock_group,
                          "FleetLock group for strategy `fleet-lock` (`[a-zA-Z0-9.-]+`)", "fleetlock_group",
                          "default", flag="--fleetlock-group")
METRICS_ADDRESS = Setting("LOCKSMITHD_METRICS_ADDRESS", values.metrics_address,
                          "serve Prometheus metrics at `/metrics` on `host:port` (e.g. `127.0.0.1:9474`) or "
                          "`unix:/path`; empty: off", "metrics_address", "", "(off)", flag="--metrics-address")
# Every source of "a reboot is needed": {its name in LOCKSMITHD_SOURCES: what makes it say so}. The factories
# are the modules of sources/ (sources/registry.py), keyed by these names (a test keeps the two equal); a new
# source adds its entry here and its own rows below, with field "source.<name>" (read by the source from
# DaemonSettings.source_options), and touches no other file but its module.
SOURCE_KINDS: Mapping[str, str] = {
    "update-engine": "D-Bus signal",
    "reboot-required": "the file below appears",
    "command": "the check command exits 1",
}
SOURCES = Setting("LOCKSMITHD_SOURCES", values.reboot_sources(tuple(SOURCE_KINDS)),
                  "where \"a reboot is needed\" comes from, comma-separated: "
                  + ", ".join(f"`{name}` ({what})" for name, what in SOURCE_KINDS.items()),
                  "reboot_sources", "update-engine", flag="--sources")
REBOOT_REQUIRED_FILE = Setting("LOCKSMITHD_REBOOT_REQUIRED_FILE", values.absolute_path,
                               "the file of source `reboot-required` (its directory is watched with inotify; "
                               "packages are read from the same path + `.pkgs`); never a directory", "reboot_required_file",
                               "/run/reboot-required", flag="--reboot-required-file")
REBOOT_CHECK_COMMAND = Setting("LOCKSMITHD_REBOOT_CHECK_COMMAND", values.command_line,
                               "command of source `command` (words split as by a shell, no shell): exit 1 = reboot "
                               "needed, 0 = not, anything else is logged and retried", "reboot_check_command",
                               flag="--reboot-check-command")
REBOOT_CHECK_INTERVAL = Setting("LOCKSMITHD_REBOOT_CHECK_INTERVAL", values.interval_s,
                                "how often the check command runs (at least 1s; with 10 % jitter; it may run at most "
                                "this long or 5m)", "source.reboot_check_interval_s", "10m",
                                flag="--reboot-check-interval")
PRE_REBOOT_DIR = Setting("LOCKSMITHD_PRE_REBOOT_DIR", values.absolute_path,
                         "hooks run in name order after the slot is taken, before users are warned (e.g. drain); "
                         "one failing gives the slot back and retries later; may be missing, never a file", "pre_reboot_dir",
                         "/etc/locksmithd/pre-reboot.d", flag="--pre-reboot-dir")
POST_BOOT_DIR = Setting("LOCKSMITHD_POST_BOOT_DIR", values.absolute_path,
                        "hooks run in name order after boot, before the health checks (e.g. uncordon); one failing "
                        "keeps the slot and is retried; also run when pre-reboot hooks ran but the host did not "
                        "reboot; may be missing, never a file", "post_boot_dir", "/etc/locksmithd/post-boot.d", flag="--post-boot-dir")
HOOK_TIMEOUT = Setting("LOCKSMITHD_HOOK_TIMEOUT", values.interval_s,
                       "each hook's time limit (its process group is killed after it)", "hook_timeout_s", "10m",
                       flag="--hook-timeout")
IGNORE_INHIBITORS = Setting("LOCKSMITHD_IGNORE_INHIBITORS", values.boolean,
                            "reboot despite logind `block` inhibitors on shutdown (locksmith's behaviour); by default "
                            "the host waits for them without holding a slot", "ignore_inhibitors", "false",
                            flag="--ignore-inhibitors", switch=True)
# Set by systemd for the service, read through the same loader, not operator settings.
JOURNAL_STREAM = Setting("JOURNAL_STREAM", values.optional_text, "stderr is the journal (systemd)",
                         "journal_stream", operator=False)
NOTIFY_SOCKET = Setting("NOTIFY_SOCKET", values.optional_text, "where sd_notify goes (systemd)",
                        "notify_socket", operator=False)
CREDENTIALS_DIRECTORY = Setting("CREDENTIALS_DIRECTORY", values.optional_text,
                                "systemd credentials (LoadCredential=): etcd-password, etcd-username, etcd-ca.pem, "
                                "etcd-cert.pem, etcd-key.pem", None, operator=False)
WATCHDOG_USEC = Setting("WATCHDOG_USEC", values.watchdog_usec, "WatchdogSec= in microseconds (systemd)",
                        "watchdog_usec", operator=False)
WATCHDOG_PID = Setting("WATCHDOG_PID", values.optional_text, "the process the watchdog is for (systemd)",
                       "watchdog_pid", operator=False)
TEST_BLOCK_LOOP = Setting("LOCKSMITHD_TEST_BLOCK_LOOP", values.boolean,
                          "tests only: SIGUSR2 blocks the event loop, to prove the watchdog stops",
                          "test_block_loop", "false", operator=False)

SETTINGS: tuple[Setting[object], ...] = (
    STRATEGY, ENDPOINT, GROUP, CAFILE, CERTFILE, KEYFILE, USERNAME, PASSWORD, PASSWORD_FILE, KEY_PREFIX, WINDOW_START,
    WINDOW_LENGTH, WINDOWS, TIMEZONE, LOGIN_DELAY, MACHINE_ID, HOLDER_ID, STATE_FILE, RECHECK_INTERVAL, QUEUE_DROP_OUT,
    QUEUE_HEAD_TIMEOUT, RETRY_MAX,
    ETCD_TIMEOUT, BOOT_ID_PATH, BUS_ADDRESS, DEBUG, REBOOT_DEADLINE, STALE_POLICY, HEALTH_SYSTEM_STATES,
    HEALTH_UNITS, HEALTH_DIR, HEALTH_SOAK, HEALTH_TIMEOUT, HEALTH_RECHECK_INTERVAL, SOURCES,
    REBOOT_REQUIRED_FILE, REBOOT_CHECK_COMMAND, REBOOT_CHECK_INTERVAL, PRE_REBOOT_DIR, POST_BOOT_DIR, HOOK_TIMEOUT, IGNORE_INHIBITORS, FLEETLOCK_URL,
    FLEETLOCK_GROUP, METRICS_ADDRESS, JOURNAL_STREAM, NOTIFY_SOCKET, CREDENTIALS_DIRECTORY, WATCHDOG_USEC,
    WATCHDOG_PID, TEST_BLOCK_LOOP,
)  # fmt: skip
"""Every setting, in the order of the README's table."""

BY_KEY: Mapping[str, Setting[object]] = {row.key: row for row in SETTINGS}
KNOWN_KEYS = frozenset(BY_KEY)
SECRET_KEYS = frozenset(row.key for row in SETTINGS if row.secret)
URL_KEYS = frozenset({ENDPOINT.key, FLEETLOCK_URL.key})
"""Keys holding URLs: a password in their user info is masked in every message (``hidden``)."""
# locksmith's unprefixed names; within one source the prefixed name wins.
ALIASES: Mapping[str, str] = {alias: row.key for row in SETTINGS for alias in row.aliases}
FLAGS: Mapping[str, Setting[object]] = {row.flag: row for row in SETTINGS if row.flag}
assert len(FLAGS) == sum(1 for row in SETTINGS if row.flag), "two rows share a flag"


def hidden(key: str, value: object) -> object:
    """``value`` as it may appear in a message about ``key``: secrets become "(hidden)", and a URL's
    password "***" (the URL settings refuse credentials, but the refusal must not print them)."""
    if key in SECRET_KEYS:
        return "(hidden)"
    if key in URL_KEYS and isinstance(value, str):
        return without_password(value)
    return value


def parse_row(row: Setting[T], raw: RawSetting) -> T:
    """Parse ``raw`` with ``row``'s parser after the checks every value gets.

    Raises ``row.error`` (a ConfigError) naming ``raw``'s source and key (the
    value hidden for a secret) for text that is not valid UTF-8 (Python keeps such bytes as lone
    surrogates), holding a NUL character, longer than MAX_VALUE_CHARS, or
    refused by the parser.
    """
    problem: str | None = None
    try:
        raw.value.encode("utf-8")
    except UnicodeEncodeError:
        problem = "not valid UTF-8"
    if problem is None and "\x00" in raw.value:  # only a file can carry one; no path, name or URL may
        problem = "contains a NUL character"
    if problem is None and len(raw.value) > MAX_VALUE_CHARS:
        problem = f"longer than {MAX_VALUE_CHARS} characters"
    if problem is None:
        try:
            return row.parse(raw)
        except ValueError as exc:
            problem = str(exc)
    raise row.error(raw.source, raw.key, hidden(raw.key, raw.value), problem)


def readme_table() -> str:
    """The Markdown table of operator settings, as the README's Configure section holds it."""
    lines = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    for row in SETTINGS:
        if row.operator:
            flag = f"`{row.flag}`" if row.flag else ""
            lines.append(f"| `{row.key}` | {flag} | {row.default_text()} | {row.meaning} |")
    return "\n".join(lines) + "\n"
