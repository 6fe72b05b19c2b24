"""What "healthy after boot" means, as data: the policy, its setting parsers and the verdict."""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import timedelta

from locksmithd.core.duration import format_duration
from locksmithd.core.names import printable

SYSTEM_STATES: tuple[str, ...] = (
    "initializing", "starting", "running", "degraded",
    "maintenance", "stopping", "offline", "unknown",
)  # fmt: skip
"""systemd's ``SystemState`` values (``systemctl is-system-running``)."""

WAIT_STATES = frozenset({"initializing", "starting"})
"""States of a system still booting: always waited for, never healthy."""
BOOT_FINISHED_SIGNAL = "StartupFinished"
"""The manager's signal sent as the system state leaves ``starting`` (after the last boot job)."""

ANY_STATE = "any"
DEFAULT_HEALTHY_STATES: frozenset[str] = frozenset({"running"})
DEFAULT_CHECK_DIR = "/etc/locksmithd/health.d"
DEFAULT_SOAK_S = 0.0
DEFAULT_TIMEOUT_S = 15 * 60.0
# A check that needs more than a minute is more likely hung than thorough; the
# overall timeout (15 min by default) still leaves room for several rounds.
DEFAULT_COMMAND_TIMEOUT_S = 60.0
DEFAULT_RECHECK_INTERVAL_S = 10.0
"""The longest pause between rounds (LOCKSMITHD_HEALTH_RECHECK_INTERVAL): systemd's signals may start one
sooner (``round_due``); check commands have no signal, so this is how soon a check that failed runs again."""

ACTIVE_STATES = frozenset({"active", "reloading", "refreshing"})
"""Unit ``ActiveState`` values that count as active (as ``systemctl is-active`` does)."""
NOT_LOADED = "not loaded"
"""The state reported for a unit systemd has not loaded (``NoSuchUnit``)."""

UNIT_TYPES = frozenset({
    "service", "socket", "target", "device", "mount", "automount",
    "swap", "timer", "path", "slice", "scope",
})  # fmt: skip
UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX is 256 including the terminating NUL
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\@-]+")


class Verdict(enum.Enum):
    """The outcome of one round of checks."""

    WAIT = "wait"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, kw_only=True)
class HealthPolicy:
    """The checks a host must pass after boot before it releases its slot.

    ``healthy_states`` is ``None`` for ``any`` (systemd's state is not read).
    Times are seconds: ``soak_s`` since boot, ``timeout_s`` for all rounds,
    ``command_timeout_s`` per check command, ``recheck_interval_s`` the
    longest pause between rounds (systemd's signals may end it sooner).
    Raises ``ValueError`` for a value no parser would produce (a waiting
    state taken as healthy, an invalid unit name, a non-positive timeout or
    interval, a soak not shorter than the timeout).
    """

    healthy_states: frozenset[str] | None = DEFAULT_HEALTHY_STATES
    units: tuple[str, ...] = ()
    check_dir: str = DEFAULT_CHECK_DIR
    soak_s: float = DEFAULT_SOAK_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    recheck_interval_s: float = DEFAULT_RECHECK_INTERVAL_S

    def __post_init__(self) -> None:
        if self.healthy_states is not None:
            if not self.healthy_states:
                raise ValueError("healthy system states must not be empty (use None for 'any')")
            for state in sorted(self.healthy_states):
                _check_healthy_state(state)
        for unit in self.units:
            validate_unit_name(unit)
        parse_check_dir(self.check_dir)
        if self.soak_s < 0:
            raise ValueError(f"health soak must not be negative (got {self.soak_s} s)")
        for name, value in (("timeout", self.timeout_s), ("command timeout", self.command_timeout_s),
                            ("re-check interval", self.recheck_interval_s)):
            if not value > 0:
                raise ValueError(f"health {name} must be positive (got {value} s)")
        if self.soak_s >= self.timeout_s:
            raise ValueError(
                f"health soak {_span(self.soak_s)} must be shorter than the health timeout "
                f"{_span(self.timeout_s)}, or hosts would time out while still soaking"
            )

    @property
    def needs_systemd(self) -> bool:
        """Whether the checks read anything from systemd."""
        return self.healthy_states is not None or bool(self.units)

    def describe_states(self) -> str:
        """The healthy states in systemd's order, comma-separated ("running,degraded")."""
        if self.healthy_states is None:
            return ANY_STATE
        return ",".join(state for state in SYSTEM_STATES if state in self.healthy_states)


def parse_system_states(text: str) -> frozenset[str] | None:
    """Parse ``LOCKSMITHD_HEALTH_SYSTEM_STATES``: "running", "running,degraded" or "any".

    Returns ``None`` for ``any`` (skip the check). Raises ``ValueError`` for an
    empty list, an unknown state, ``any`` mixed with states, or a state that
    means the system is still booting (``initializing``, ``starting``).
    """
    names = [part.strip() for part in text.split(",")]
    if names == [ANY_STATE]:
        return None
    if any(not name for name in names):
        raise ValueError(f"expected comma-separated systemd states such as running,degraded or 'any', got {text!r}")
    for name in names:
        if name == ANY_STATE:
            raise ValueError(f"'any' must stand alone, got {text!r}")
        _check_healthy_state(name)
    return frozenset(names)


def _check_healthy_state(name: str) -> None:
    if name in WAIT_STATES:
        raise ValueError(f"{name!r} means the system is still booting; it is always waited for and cannot be healthy")
    if name not in SYSTEM_STATES:
        raise ValueError(f"unknown systemd state {name!r} (known: {', '.join(SYSTEM_STATES)}, or 'any')")


def parse_units(text: str) -> tuple[str, ...]:
    """Parse ``LOCKSMITHD_HEALTH_UNITS``: space-separated unit names, duplicates dropped.

    An empty or blank value means no unit is required. Raises ``ValueError``
    naming the first invalid unit name (see ``validate_unit_name``).
    """
    return tuple(dict.fromkeys(validate_unit_name(name) for name in text.split()))


def validate_unit_name(name: str) -> str:
    """Return ``name`` if systemd would accept it as a plain or instance unit name.

    Allowed: ``[A-Za-z0-9:_.\\-@]``, at most 255 characters, a known type
    suffix (``.service``, ``.socket``, ...), a non-empty prefix, and for
    ``name@instance.type`` a non-empty instance (a template cannot be active).
    Raises ``ValueError`` otherwise.
    """
    shown = repr(name) if len(name) <= 64 else repr(name[:61] + "...")
    if len(name) > UNIT_NAME_MAX:
        raise ValueError(f"unit name {shown} is longer than {UNIT_NAME_MAX} characters")
    if not _UNIT_CHARS.fullmatch(name):
        raise ValueError(f"unit name {shown} has characters other than A-Z a-z 0-9 : _ . \\ - @")
    prefix, dot, suffix = name.rpartition(".")
    if not dot or suffix not in UNIT_TYPES:
        raise ValueError(f"unit name {shown} does not end in a unit type ({', '.join('.' + t for t in sorted(UNIT_TYPES))})")
    base, at, instance = prefix.partition("@")
    if not base:
        raise ValueError(f"unit name {shown} has nothing before its type or '@'")
    if at and not instance:
        raise ValueError(f"unit name {shown} is a template; name an instance such as {base}@x.{suffix}")
    return name


def parse_check_dir(text: str) -> str:
    """Parse ``LOCKSMITHD_HEALTH_DIR``: an absolute path. Raises ``ValueError`` otherwise."""
    if not text.startswith("/") or "\0" in text:
        raise ValueError(f"health check directory must be an absolute path, got {text!r}")
    return text


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    """How one check command ended.

    ``exit_code`` is the return code (negative: killed by that signal) or
    ``None`` when the command timed out (``timed_out``) or could not be
    started (``error`` says why). ``output`` is the tail of stdout+stderr.
    """

    path: str
    exit_code: int | None = None
    timed_out: bool = False
    timeout_s: float = 0.0
    error: str | None = None
    output: str = ""

    @property
    def passed(self) -> bool:
        """Exit 0, and only that, is healthy."""
        return self.exit_code == 0 and not self.timed_out and self.error is None

    def failure(self) -> str | None:
        """One line naming the check (escaped) and how it failed, ``None`` if it passed."""
        path = printable(self.path)
        if self.error is not None:
            return f"check {path} could not be run: {self.error}"
        if self.timed_out:
            return f"check {path} timed out after {_span(self.timeout_s)}"
        if self.exit_code is None or self.exit_code == 0:
            return None
        if self.exit_code < 0:
            return f"check {path} was killed by signal {-self.exit_code}"
        return f"check {path} exited {self.exit_code}"


@dataclass(frozen=True, kw_only=True)
class HealthObservation:
    """What one round saw; ``problems`` are checks that could not be made at all.

    ``system_state`` is ``None`` when it was not read (policy ``any``, or
    reading failed: then ``problems`` says why). ``unit_states`` pairs each
    unit with its ``ActiveState`` or ``NOT_LOADED``.
    """

    seconds_since_boot: float
    system_state: str | None = None
    unit_states: tuple[tuple[str, str], ...] = ()
    commands: tuple[CommandResult, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Wait:
    """A reason to keep waiting, phrased for progress and for the deadline."""

    progress: str
    at_deadline: str


@dataclass(frozen=True, kw_only=True)
class HealthReport:
    """The verdict of a round: failed checks, reasons to wait, and the state seen.

    ``held_by_systemd`` is True when something systemd says (its state, a
    unit's state, or that it could not be read) is among the reasons the
    round was not healthy: only then can one of its signals change the verdict.
    """

    verdict: Verdict
    failures: tuple[str, ...] = ()
    waits: tuple[Wait, ...] = ()
    system_state: str | None = None
    soak_left_s: float = 0.0
    held_by_systemd: bool = False

    def describe(self) -> str:
        """One line for the daemon's status: "waiting for system state running (now starting)"."""
        if self.verdict is Verdict.HEALTHY:
            return "healthy"
        parts = [f"waiting for {wait.progress}" for wait in self.waits] + list(self.failures)
        return "; ".join(parts)

    def expired(self) -> HealthReport:
        """This round as the final one at the deadline: UNHEALTHY unless it was HEALTHY.

        Reasons to wait become failures ("system state still 'starting' ...").
        """
        if self.verdict is Verdict.HEALTHY:
            return self
        failures = tuple(wait.at_deadline for wait in self.waits) + self.failures
        return HealthReport(verdict=Verdict.UNHEALTHY, failures=failures,
                            system_state=self.system_state, soak_left_s=self.soak_left_s)


def judge(policy: HealthPolicy, seen: HealthObservation) -> HealthReport:
    """The verdict of one round under ``policy``.

    UNHEALTHY when any check failed (re-checked until the deadline, since a
    system that just booted may still settle), else WAIT while the system is
    still booting or the soak is not over, else HEALTHY.
    """
    failures = list(seen.problems)
    waits: list[Wait] = []
    if policy.healthy_states is not None and seen.system_state is not None:
        wanted = policy.describe_states()
        if seen.system_state in WAIT_STATES:
            waits.append(Wait(f"system state {wanted} (now {seen.system_state})",
                              f"system state still {seen.system_state!r} at the deadline (healthy: {wanted})"))
        elif seen.system_state not in policy.healthy_states:
            failures.append(f"system state {seen.system_state!r} not in {wanted}")
    failures.extend(_unit_failures(seen.unit_states))
    held_by_systemd = bool(failures or waits)  # so far: problems reading (systemd, the check directory), state, units
    failures.extend(f for f in (result.failure() for result in seen.commands) if f is not None)
    soak_left_s = max(0.0, policy.soak_s - seen.seconds_since_boot)
    if soak_left_s > 0:
        waits.append(Wait(f"soak of {_span(policy.soak_s)} after boot ({_span(soak_left_s)} left)",
                          f"soak of {_span(policy.soak_s)} after boot not over at the deadline"))
    if failures:
        verdict = Verdict.UNHEALTHY
    elif waits:
        verdict = Verdict.WAIT
    else:
        verdict = Verdict.HEALTHY
    return HealthReport(verdict=verdict, failures=tuple(failures), waits=tuple(waits),
                        system_state=seen.system_state, soak_left_s=soak_left_s, held_by_systemd=held_by_systemd)


def round_due(report: HealthReport, signals: Collection[str]) -> bool:
    """Whether a burst of systemd's ``signals`` (their members) may change the verdict after ``report``.

    Only when systemd held the last round back: a failing check command or a
    soak not over are no business of systemd's (the interval and the soak's
    end bring the next round). While the system is still booting, only the
    end of the boot can make it healthy: the storm of job and unit signals
    during a boot starts no round, ``StartupFinished`` does.
    """
    if not report.held_by_systemd:
        return False
    if report.system_state in WAIT_STATES:
        return BOOT_FINISHED_SIGNAL in signals
    return bool(signals)


def pause_before_next_round_s(policy: HealthPolicy, report: HealthReport, remaining_s: float) -> float:
    """The longest wait before the next round after ``report``, ``remaining_s`` before the deadline.

    The re-check interval, never past the deadline, and no later than the end
    of the soak when the soak is all there is to wait for (so the host
    releases as the soak ends). A change systemd signals may end it sooner.
    """
    pause_s = min(policy.recheck_interval_s, max(0.0, remaining_s))
    if report.soak_left_s > 0 and report.verdict is Verdict.WAIT:
        pause_s = min(pause_s, report.soak_left_s)
    return pause_s


def _unit_failures(unit_states: Iterable[tuple[str, str]]) -> list[str]:
    return [f"unit {unit} is {state}" for unit, state in unit_states if state not in ACTIVE_STATES]


def _span(seconds: float) -> str:
    """Seconds as a Go duration ("1m0s", "1.5s"), whole milliseconds."""
    return format_duration(timedelta(milliseconds=round(seconds * 1000)))

