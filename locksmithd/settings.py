"""The daemon's settings: update.conf files, locksmithd.conf, environment and flags, validated once."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn

from locksmithd.core.duration import parse_duration
from locksmithd.errors import ConfigError
from locksmithd.etcd.settings import EtcdSettings, check_readable_file, parse_endpoints, validate_tls_and_auth
from locksmithd.host.identity import DEFAULT_BOOT_ID_PATH, DEFAULT_MACHINE_ID_PATH, read_machine_id, validate_holder_id
from locksmithd.core.window import RebootWindow, parse_window_length, parse_window_start

DEFAULT_CONF_PATHS: tuple[str, ...] = (
    "/usr/share/coreos/update.conf",
    "/etc/coreos/update.conf",
    "/usr/share/flatcar/update.conf",
    "/etc/flatcar/update.conf",
    "/etc/locksmithd/locksmithd.conf",
)
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_STATE_FILE = "/run/update-engine/coordinator.conf"
DEFAULT_LOGIN_DELAY_S = 300.0
DEFAULT_RECHECK_INTERVAL_S = 300.0
DEFAULT_RETRY_MAX_S = 60.0
DEFAULT_ETCD_TIMEOUT_S = 5.0
ENVIRONMENT = "environment"
COMMAND_LINE = "command line"

# "best-effort" is locksmith's legacy default: etcd-lock if etcd is configured,
# else reboot. An endpoint is always configured here (it has a default), so it
# means etcd-lock.
STRATEGIES: Mapping[str, str] = {"etcd-lock": "etcd-lock", "reboot": "reboot", "off": "off", "best-effort": "etcd-lock"}

STRATEGY = "REBOOT_STRATEGY"
ENDPOINT = "LOCKSMITHD_ENDPOINT"
GROUP = "LOCKSMITHD_GROUP"
CAFILE = "LOCKSMITHD_ETCD_CAFILE"
CERTFILE = "LOCKSMITHD_ETCD_CERTFILE"
KEYFILE = "LOCKSMITHD_ETCD_KEYFILE"
USERNAME = "LOCKSMITHD_ETCD_USERNAME"
PASSWORD = "LOCKSMITHD_ETCD_PASSWORD"
KEY_PREFIX = "LOCKSMITHD_ETCD_KEY_PREFIX"
WINDOW_START = "LOCKSMITHD_REBOOT_WINDOW_START"
WINDOW_LENGTH = "LOCKSMITHD_REBOOT_WINDOW_LENGTH"
MACHINE_ID = "LOCKSMITHD_MACHINE_ID"
STATE_FILE = "LOCKSMITHD_STATE_FILE"
LOGIN_DELAY = "LOCKSMITHD_LOGIN_DELAY"
RECHECK_INTERVAL = "LOCKSMITHD_RECHECK_INTERVAL"
RETRY_MAX = "LOCKSMITHD_RETRY_MAX"
ETCD_TIMEOUT = "LOCKSMITHD_ETCD_TIMEOUT"
BUS_ADDRESS = "DBUS_SYSTEM_BUS_ADDRESS"
BOOT_ID_PATH = "LOCKSMITHD_BOOT_ID_PATH"
DEBUG = "LOCKSMITHD_DEBUG"

KNOWN_KEYS = frozenset({
    STRATEGY, ENDPOINT, GROUP, CAFILE, CERTFILE, KEYFILE, USERNAME, PASSWORD, KEY_PREFIX,
    WINDOW_START, WINDOW_LENGTH, MACHINE_ID, STATE_FILE, LOGIN_DELAY, RECHECK_INTERVAL,
    RETRY_MAX, ETCD_TIMEOUT, BUS_ADDRESS, BOOT_ID_PATH, DEBUG,
})  # fmt: skip
# locksmith's unprefixed names; within one source the prefixed name wins.
ALIASES: Mapping[str, str] = {"REBOOT_WINDOW_START": WINDOW_START, "REBOOT_WINDOW_LENGTH": WINDOW_LENGTH}
SECRET_KEYS = frozenset({PASSWORD})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class DaemonSettings:
    """Everything locksmithd needs, validated; built by ``load_settings`` and never mutated.

    ``sources`` lists the configuration files that were read; ``unknown_keys``
    holds (source, key) for each unrecognised LOCKSMITHD_* key, to warn about.
    The etcd password never appears in repr (EtcdSettings hides it).
    """

    machine_id: str
    strategy: str = "etcd-lock"
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    group: str = ""
    window: RebootWindow | None = None
    state_file: str = DEFAULT_STATE_FILE
    login_delay_s: float = DEFAULT_LOGIN_DELAY_S
    recheck_interval_s: float = DEFAULT_RECHECK_INTERVAL_S
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    bus_address: str | None = None
    boot_id_path: str = DEFAULT_BOOT_ID_PATH
    debug: bool = False
    sources: tuple[str, ...] = ()
    unknown_keys: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """One line for the start-up log; contains no secret."""
        window = str(self.window) if self.window else "any time"
        return (
            f"strategy={self.strategy} group={self.group!r} window={window!r} "
            f"endpoints={self.etcd.describe_endpoints()} machine_id={self.machine_id}"
        )


class Entry(NamedTuple):
    """One KEY=value as found, with where it came from ("path:line", "environment", ...)."""

    key: str
    value: str
    source: str


def load_settings(
    environ: Mapping[str, str],
    flags: Mapping[str, str] | None = None,
    conf_paths: Sequence[str] = DEFAULT_CONF_PATHS,
    machine_id_path: str = DEFAULT_MACHINE_ID_PATH,
) -> DaemonSettings:
    """Read, merge and validate every source into one DaemonSettings.

    Priority, lowest first: each of ``conf_paths`` in order (missing files are
    skipped), then ``environ``, then ``flags`` (source "command line"). Never
    reads ``os.environ``. Raises ConfigError naming source, key and value for
    the first invalid setting, or IdentityError if no machine id is usable.
    """
    layers: list[list[Entry]] = []
    sources: list[str] = []
    for path in conf_paths:
        entries = read_conf_file(path)
        if entries is not None:
            layers.append(entries)
            sources.append(path)
    layers.append(_mapping_entries(environ, ENVIRONMENT))
    layers.append(_mapping_entries(flags or {}, COMMAND_LINE))
    values, unknown = merge_layers(layers)
    return _build(values, tuple(unknown), tuple(sources), machine_id_path)


def read_conf_file(path: str) -> list[Entry] | None:
    """Parse the KEY=value file at ``path``; None if it does not exist; ConfigError if unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(path, "file", path, f"cannot read the file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "file", path, "the file is not UTF-8 text") from exc
    return parse_conf_text(text, path)


def parse_conf_text(text: str, path: str) -> list[Entry]:
    """Parse shell-style KEY=value lines; the source of each entry is "path:line".

    Blank lines and lines starting with "#" or ";" are skipped; an ``export``
    prefix is tolerated; values may be single- or double-quoted or
    backslash-escaped, and an unquoted " #" starts a comment. Unquoted inner
    spaces are kept (as systemd's EnvironmentFile does). Nothing is expanded.
    A malformed line raises ConfigError naming the file and line number.
    """
    entries: list[Entry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith(("export ", "export\t")):
            stripped = stripped[len("export") :].lstrip()
        source = f"{path}:{number}"
        key, sep, rest = stripped.partition("=")
        shown = "(hidden)" if any(secret in stripped for secret in SECRET_KEYS) else stripped
        if not sep:
            raise ConfigError(source, "line", shown, "expected KEY=value")
        if not _NAME.fullmatch(key):
            raise ConfigError(source, "line", shown, f"{key!r} is not a valid variable name")
        try:
            entries.append(Entry(key, _unquote(rest.lstrip(" \t")), source))
        except ValueError as exc:
            raise ConfigError(source, key, "(hidden)" if key in SECRET_KEYS else rest, str(exc)) from exc
    return entries


def _unquote(raw: str) -> str:
    """Shell-like unquoting of one value; raises ValueError for unbalanced quotes."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char in " \t":
            end = i
            while end < len(raw) and raw[end] in " \t":
                end += 1
            if end == len(raw) or raw[end] == "#":
                break
            out.append(raw[i:end])
            i = end
        elif char == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated single quote")
            out.append(raw[i + 1 : end])
            i = end + 1
        elif char == '"':
            i = _double_quoted(raw, i + 1, out)
        elif char == "\\":
            if i + 1 == len(raw):
                raise ValueError("trailing backslash (line continuation is not supported)")
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _double_quoted(raw: str, i: int, out: list[str]) -> int:
    """Append the double-quoted text starting at ``i`` to ``out``; return the index past the quote."""
    while i < len(raw):
        char = raw[i]
        if char == '"':
            return i + 1
        if char == "\\" and i + 1 < len(raw) and raw[i + 1] in '"\\$`':
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    raise ValueError("unterminated double quote")


def _mapping_entries(mapping: Mapping[str, str], source: str) -> list[Entry]:
    """The entries of the environment or the flags that could concern locksmithd."""
    return [
        Entry(key, value, source)
        for key, value in sorted(mapping.items())
        if key in KNOWN_KEYS or key in ALIASES or key.startswith("LOCKSMITHD_")
    ]


def merge_layers(layers: Iterable[Sequence[Entry]]) -> tuple[dict[str, Entry], list[tuple[str, str]]]:
    """Merge layers given lowest priority first; return {canonical key: entry} and unknown keys.

    Within one layer the last line wins, except that a prefixed name beats its
    unprefixed alias. Unknown keys are reported only if they start with
    LOCKSMITHD_ (update.conf also holds update_engine's SERVER, GROUP, ...).
    """
    merged: dict[str, Entry] = {}
    unknown: dict[tuple[str, str], None] = {}
    for layer in layers:
        chosen: dict[str, Entry] = {}
        for entry in layer:
            canonical = ALIASES.get(entry.key, entry.key)
            if canonical not in KNOWN_KEYS:
                if entry.key.startswith("LOCKSMITHD_"):
                    unknown[(entry.source, entry.key)] = None
                continue
            previous = chosen.get(canonical)
            if previous is not None and previous.key == canonical and entry.key != canonical:
                continue
            chosen[canonical] = entry
        merged.update(chosen)
    return merged, list(unknown)


def _build(
    values: Mapping[str, Entry], unknown: tuple[tuple[str, str], ...], sources: tuple[str, ...], machine_id_path: str
) -> DaemonSettings:
    """Validate the merged values, in a fixed order, into DaemonSettings."""
    strategy_entry = values.get(STRATEGY)
    strategy = "etcd-lock"
    if strategy_entry is not None:
        strategy = STRATEGIES.get(strategy_entry.value.strip().lower(), "")
        if not strategy:
            _fail(strategy_entry, "unknown strategy; use one of etcd-lock, reboot, off (best-effort means etcd-lock)")
    override = values.get(MACHINE_ID)
    return DaemonSettings(
        strategy=strategy,
        etcd=_etcd(values),
        group=_optional(values, GROUP) or "",
        window=_window(values.get(WINDOW_START), values.get(WINDOW_LENGTH)),
        state_file=_path(values, STATE_FILE, DEFAULT_STATE_FILE),
        login_delay_s=_seconds(values.get(LOGIN_DELAY), DEFAULT_LOGIN_DELAY_S, allow_zero=True),
        recheck_interval_s=_seconds(values.get(RECHECK_INTERVAL), DEFAULT_RECHECK_INTERVAL_S),
        retry_max_s=_seconds(values.get(RETRY_MAX), DEFAULT_RETRY_MAX_S),
        bus_address=_optional(values, BUS_ADDRESS),
        boot_id_path=_path(values, BOOT_ID_PATH, DEFAULT_BOOT_ID_PATH),
        debug=_bool(values.get(DEBUG), default=False),
        machine_id=(
            validate_holder_id(override.value, override.source, override.key)
            if override is not None
            else read_machine_id(machine_id_path)
        ),
        sources=sources,
        unknown_keys=unknown,
    )


def _etcd(values: Mapping[str, Entry]) -> EtcdSettings:
    """Endpoints, TLS files, credentials, key prefix and timeout, checked to fit together."""
    endpoint = values.get(ENDPOINT)
    if endpoint is None:
        endpoint = Entry(ENDPOINT, DEFAULT_ENDPOINT, "default")
    for key in (CAFILE, CERTFILE, KEYFILE):
        entry = values.get(key)
        if entry is not None:
            check_readable_file(entry.value, entry.source, entry.key)
    settings = EtcdSettings(
        endpoints=parse_endpoints(endpoint.value, endpoint.source, endpoint.key),
        cafile=_optional(values, CAFILE),
        certfile=_optional(values, CERTFILE),
        keyfile=_optional(values, KEYFILE),
        username=_optional(values, USERNAME),
        password=_optional(values, PASSWORD),
        key_prefix=_optional(values, KEY_PREFIX) or "",
        request_timeout_s=_seconds(values.get(ETCD_TIMEOUT), DEFAULT_ETCD_TIMEOUT_S),
    )
    related = (ENDPOINT, CAFILE, CERTFILE, KEYFILE, USERNAME, PASSWORD, KEY_PREFIX)
    where = list(dict.fromkeys(values[key].source for key in related if key in values))
    return validate_tls_and_auth(settings, ", ".join(where) or "defaults", "LOCKSMITHD_")


def _window(start: Entry | None, length: Entry | None) -> RebootWindow | None:
    """The reboot window if both halves are set (non-empty), None if neither; else ConfigError."""
    start_set = start is not None and start.value.strip() != ""
    length_set = length is not None and length.value.strip() != ""
    if not start_set and not length_set:
        return None
    if start is None or length is None or start_set != length_set:
        given = start if start_set else length
        assert given is not None
        other = given.key.replace("START", "LENGTH") if start_set else given.key.replace("LENGTH", "START")
        _fail(given, f"{other} must be set too: give both the window start and length, or neither")
    try:
        weekday, hour, minute = parse_window_start(start.value)
    except ValueError as exc:
        _fail(start, str(exc), exc)
    try:
        return RebootWindow(weekday, hour, minute, parse_window_length(length.value))
    except ValueError as exc:
        _fail(length, str(exc), exc)


def _seconds(entry: Entry | None, default_s: float, *, allow_zero: bool = False) -> float:
    """A Go duration in seconds; zero only if ``allow_zero``; ConfigError if invalid."""
    if entry is None:
        return default_s
    try:
        seconds = parse_duration(entry.value.strip()).total_seconds()
    except ValueError as exc:
        _fail(entry, str(exc), exc)
    if seconds == 0 and not allow_zero:
        _fail(entry, "must be greater than zero")
    return seconds


def _bool(entry: Entry | None, *, default: bool) -> bool:
    """A boolean from 1/0, true/false, yes/no, on/off (any case); ConfigError otherwise."""
    if entry is None:
        return default
    text = entry.value.strip().lower()
    if text not in _TRUE | _FALSE:
        _fail(entry, "expected a boolean: 1/0, true/false, yes/no or on/off")
    return text in _TRUE


def _path(values: Mapping[str, Entry], key: str, default: str) -> str:
    """A path that must not be empty; whether it exists is checked when it is used."""
    entry = values.get(key)
    if entry is None:
        return default
    if entry.value.strip() == "":
        _fail(entry, "the path must not be empty")
    return entry.value


def _optional(values: Mapping[str, Entry], key: str) -> str | None:
    """An optional string; an empty value means unset (and overrides lower sources)."""
    entry = values.get(key)
    return entry.value if entry is not None and entry.value != "" else None


def _fail(entry: Entry, problem: str, cause: BaseException | None = None) -> NoReturn:
    """Raise ConfigError for ``entry``, never quoting a secret value."""
    value = "(hidden)" if entry.key in SECRET_KEYS else entry.value
    raise ConfigError(entry.source, entry.key, value, problem) from cause
