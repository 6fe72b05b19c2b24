"""The health policy: setting parsers, validation and the verdict of one round (pure)."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest

from locksmithd.core import health_policy
from locksmithd.core.health_policy import (
    NOT_LOADED,
    CommandResult,
    HealthObservation,
    HealthPolicy,
    Verdict,
    judge,
    parse_check_dir,
    pause_before_next_round_s,
    round_due,
    parse_system_states,
    parse_units,
    validate_unit_name,
)

CHECK = "/etc/locksmithd/health.d/10-disk"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("running", frozenset({"running"})),
        ("running,degraded", frozenset({"running", "degraded"})),
        (" running , degraded ", frozenset({"running", "degraded"})),
        ("running,running", frozenset({"running"})),
        ("any", None),
        (" any ", None),
        ("maintenance,stopping,offline,unknown", frozenset({"maintenance", "stopping", "offline", "unknown"})),
    ],
)
def test_system_states_accepted(text: str, expected: frozenset[str] | None) -> None:
    """Known states, comma-separated with optional blanks, or 'any' alone."""
    assert parse_system_states(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected comma-separated systemd states"),
        ("running,", "expected comma-separated systemd states"),
        ("starting", "'starting' means the system is still booting"),
        ("running,initializing", "'initializing' means the system is still booting"),
        ("any,running", "'any' must stand alone"),
        ("Running", "unknown systemd state 'Running'"),
        ("up", "unknown systemd state 'up' (known: initializing, starting, running"),
    ],
)
def test_system_states_refused(text: str, message: str) -> None:
    """Each bad value is a ValueError whose message says what is wrong."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_system_states(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("   ", ()),
        ("sshd.service", ("sshd.service",)),
        ("sshd.service  docker.socket\tlocal-fs.target", ("sshd.service", "docker.socket", "local-fs.target")),
        ("getty@tty1.service", ("getty@tty1.service",)),
        ("a.service a.service", ("a.service",)),
        ("dev-disk-by\\x2dlabel-root.device", ("dev-disk-by\\x2dlabel-root.device",)),
        ("run-user-1000.mount foo:bar_baz.timer x.path y.swap z.slice s.scope a.automount",
         ("run-user-1000.mount", "foo:bar_baz.timer", "x.path", "y.swap", "z.slice", "s.scope",
          "a.automount")),
        ("a" * 247 + ".service", ("a" * 247 + ".service",)),
    ],
)
def test_units_accepted(text: str, expected: tuple[str, ...]) -> None:
    """Space-separated valid unit names, in order, duplicates dropped; blank means none."""
    assert parse_units(text) == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sshd", "does not end in a unit type"),
        ("sshd.daemon", "does not end in a unit type"),
        (".service", "has nothing before its type"),
        ("@x.service", "has nothing before its type or '@'"),
        ("getty@.service", "is a template; name an instance such as getty@x.service"),
        ("ssh d.service", "has characters other than"),
        ("sshd.service;rm", "has characters other than"),
        ("caf\u00e9.service", "has characters other than"),
        ("a" * 248 + ".service", "is longer than 255 characters"),
    ],
)
def test_unit_names_refused(name: str, message: str) -> None:
    """Names systemd would refuse are ValueErrors naming the unit."""
    with pytest.raises(ValueError, match=message):
        validate_unit_name(name)


def test_units_setting_names_the_bad_unit() -> None:
    """In a list, the error quotes the offending name."""
    with pytest.raises(ValueError, match="unit name 'oops' does not end"):
        parse_units("sshd.service oops")


@pytest.mark.parametrize(("text", "ok"), [("/etc/locksmithd/health.d", True), ("/x", True),
                                          ("health.d", False), ("", False), ("/a\0b", False)])
def test_check_dir_must_be_absolute(text: str, ok: bool) -> None:
    """The check directory is an absolute path."""
    if ok:
        assert parse_check_dir(text) == text
    else:
        with pytest.raises(ValueError, match="must be an absolute path"):
            parse_check_dir(text)


def test_policy_defaults() -> None:
    """Defaults: running, no units, /etc/locksmithd/health.d, no soak, 15 min, 60 s per command."""
    policy = HealthPolicy()
    assert policy.healthy_states == frozenset({"running"})
    assert policy.units == ()
    assert policy.check_dir == "/etc/locksmithd/health.d"
    assert (policy.soak_s, policy.timeout_s, policy.command_timeout_s) == (0.0, 900.0, 60.0)
    assert policy.recheck_interval_s > 0
    assert policy.needs_systemd
    assert not HealthPolicy(healthy_states=None).needs_systemd
    assert HealthPolicy(healthy_states=None, units=("a.service",)).needs_systemd


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"healthy_states": frozenset({"starting"})}, "still booting"),
        ({"healthy_states": frozenset({"any"})}, "unknown systemd state 'any'"),
        ({"healthy_states": frozenset()}, "must not be empty"),
        ({"units": ("nope",)}, "does not end in a unit type"),
        ({"check_dir": "relative"}, "absolute path"),
        ({"soak_s": -1.0}, "soak must not be negative"),
        ({"timeout_s": 0.0}, "timeout must be positive"),
        ({"command_timeout_s": -5.0}, "command timeout must be positive"),
        ({"recheck_interval_s": 0.0}, "re-check interval must be positive"),
        ({"soak_s": 900.0}, "soak 15m0s must be shorter than the health timeout 15m0s"),
    ],
)
def test_policy_refuses_impossible_values(changes: dict[str, object], message: str) -> None:
    """A policy no parser would produce is refused at construction."""
    with pytest.raises(ValueError, match=message):
        HealthPolicy(**changes)  # type: ignore[arg-type]


POLICY = HealthPolicy(healthy_states=frozenset({"running"}), units=("sshd.service",), soak_s=120.0)


def seen(**changes: object) -> HealthObservation:
    """A healthy observation of POLICY, with ``changes``."""
    base = HealthObservation(seconds_since_boot=300.0, system_state="running",
                             unit_states=(("sshd.service", "active"),),
                             commands=(CommandResult(path=CHECK, exit_code=0),))
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("observation", "verdict", "failures", "describe"),
    [
        (seen(), Verdict.HEALTHY, (), "healthy"),
        (seen(unit_states=(("sshd.service", "reloading"),)), Verdict.HEALTHY, (), "healthy"),
        (seen(system_state="starting"), Verdict.WAIT, (), "waiting for system state running (now starting)"),
        (seen(system_state="initializing"), Verdict.WAIT, (),
         "waiting for system state running (now initializing)"),
        (seen(seconds_since_boot=30.0), Verdict.WAIT, (), "waiting for soak of 2m0s after boot (1m30s left)"),
        (seen(system_state="degraded"), Verdict.UNHEALTHY, ("system state 'degraded' not in running",),
         "system state 'degraded' not in running"),
        (seen(system_state="stopping"), Verdict.UNHEALTHY, ("system state 'stopping' not in running",), None),
        (seen(unit_states=(("sshd.service", "failed"),)), Verdict.UNHEALTHY,
         ("unit sshd.service is failed",), None),
        (seen(unit_states=(("sshd.service", NOT_LOADED),)), Verdict.UNHEALTHY,
         ("unit sshd.service is not loaded",), None),
        (seen(unit_states=(("sshd.service", "activating"),)), Verdict.UNHEALTHY,
         ("unit sshd.service is activating",), None),
        (seen(commands=(CommandResult(path=CHECK, exit_code=1),)), Verdict.UNHEALTHY,
         (f"check {CHECK} exited 1",), None),
        (seen(commands=(CommandResult(path=CHECK, timed_out=True, timeout_s=60.0),)), Verdict.UNHEALTHY,
         (f"check {CHECK} timed out after 1m0s",), None),
        (seen(commands=(CommandResult(path=CHECK, exit_code=-9),)), Verdict.UNHEALTHY,
         (f"check {CHECK} was killed by signal 9",), None),
        (seen(commands=(CommandResult(path=CHECK, error="Exec format error"),)), Verdict.UNHEALTHY,
         (f"check {CHECK} could not be run: Exec format error",), None),
        (seen(system_state=None, problems=("cannot read the system state: systemd is absent",)),
         Verdict.UNHEALTHY, ("cannot read the system state: systemd is absent",), None),
        (seen(system_state="starting", seconds_since_boot=0.0, unit_states=(("sshd.service", "inactive"),)),
         Verdict.UNHEALTHY, ("unit sshd.service is inactive",),
         "waiting for system state running (now starting); waiting for soak of 2m0s after boot "
         "(2m0s left); unit sshd.service is inactive"),
        (seen(system_state="failed-weird", unit_states=(("sshd.service", "failed"),),
              commands=(CommandResult(path=CHECK, exit_code=3),)), Verdict.UNHEALTHY,
         ("system state 'failed-weird' not in running", "unit sshd.service is failed", f"check {CHECK} exited 3"),
         None),
    ],
)
def test_verdict(observation: HealthObservation, verdict: Verdict, failures: tuple[str, ...],
                 describe: str | None) -> None:
    """Failures make UNHEALTHY; booting or soaking alone make WAIT; else HEALTHY."""
    report = judge(POLICY, observation)
    assert report.verdict is verdict
    assert report.failures == failures
    if describe is not None:
        assert report.describe() == describe


def test_degraded_can_be_allowed_and_any_skips_the_state() -> None:
    """running,degraded accepts degraded; 'any' ignores whatever state (even none) was seen."""
    allowed = replace(POLICY, healthy_states=frozenset({"running", "degraded"}))
    assert judge(allowed, seen(system_state="degraded")).verdict is Verdict.HEALTHY
    assert judge(allowed, seen(system_state="maintenance")).failures == (
        "system state 'maintenance' not in running,degraded",)
    anything = replace(POLICY, healthy_states=None)
    assert judge(anything, seen(system_state=None)).verdict is Verdict.HEALTHY


def test_soak_counts_from_boot() -> None:
    """The soak is over exactly at soak_s seconds since boot."""
    assert judge(POLICY, seen(seconds_since_boot=119.5)).soak_left_s == pytest.approx(0.5)
    assert judge(POLICY, seen(seconds_since_boot=120.0)).verdict is Verdict.HEALTHY


@pytest.mark.parametrize(
    ("observation", "failures"),
    [
        (seen(system_state="starting"), ("system state still 'starting' at the deadline (healthy: running)",)),
        (seen(seconds_since_boot=10.0), ("soak of 2m0s after boot not over at the deadline",)),
        (seen(system_state="starting", commands=(CommandResult(path=CHECK, exit_code=2),)),
         ("system state still 'starting' at the deadline (healthy: running)", f"check {CHECK} exited 2")),
        (seen(unit_states=(("sshd.service", "failed"),)), ("unit sshd.service is failed",)),
    ],
)
def test_expired_report_is_unhealthy_and_names_why(observation: HealthObservation,
                                                    failures: tuple[str, ...]) -> None:
    """At the deadline, reasons to wait become failures; a healthy round stays healthy."""
    final = judge(POLICY, observation).expired()
    assert final.verdict is Verdict.UNHEALTHY
    assert final.failures == failures
    healthy = judge(POLICY, seen())
    assert healthy.expired() is healthy


@pytest.mark.parametrize(
    ("soak_s", "since_boot_s", "state", "remaining_s", "expected_s"),
    [
        (0.0, 600.0, "starting", 900.0, 30.0),  # the interval: signals end it sooner
        (0.0, 600.0, "starting", 12.5, 12.5),  # never past the deadline
        (0.0, 600.0, "starting", -3.0, 0.0),  # already past it: no wait
        (120.0, 110.0, "running", 900.0, 10.0),  # only soaking: wake as the soak ends
        (120.0, 110.0, "starting", 900.0, 10.0),  # waiting for the boot too: still no later than the soak
        (120.0, 110.0, "degraded", 900.0, 30.0),  # failing: the soak's end is not a reason to look again
    ],
)
def test_pause_before_next_round(soak_s: float, since_boot_s: float, state: str, remaining_s: float,
                                 expected_s: float) -> None:
    policy = HealthPolicy(recheck_interval_s=30.0, soak_s=soak_s)
    report = judge(policy, HealthObservation(seconds_since_boot=since_boot_s, system_state=state))
    assert pause_before_next_round_s(policy, report, remaining_s) == expected_s


@pytest.mark.parametrize(
    ("seen", "signals", "due"),
    [
        # still booting: only the end of the boot can make it healthy
        (dict(system_state="starting"), {"JobRemoved", "UnitNew", "PropertiesChanged"}, False),
        (dict(system_state="starting"), {"JobRemoved", "StartupFinished"}, True),
        (dict(system_state="initializing", unit_states=(("kubelet.service", "inactive"),)), {"UnitNew"}, False),
        # held back by systemd otherwise: any change may help (reset-failed, a unit started)
        (dict(system_state="degraded"), {"PropertiesChanged"}, True),
        (dict(unit_states=(("kubelet.service", "activating"),)), {"JobRemoved"}, True),
        (dict(system_state=None, problems=("cannot read the system state: systemd is not on the bus",)),
         {"UnitNew"}, True),
        # not systemd's business: a failing check, the soak
        (dict(commands=(CommandResult(path=CHECK, exit_code=1),)), {"PropertiesChanged", "JobRemoved"}, False),
        (dict(seconds_since_boot=10.0), {"StartupFinished"}, False),
        # a pause that ran out carries no signal
        (dict(system_state="degraded"), set(), False),
    ],
)
def test_round_due(seen: dict[str, object], signals: set[str], due: bool) -> None:
    """Which bursts of systemd's signals may change the verdict of the last round."""
    policy = HealthPolicy(soak_s=60.0, units=("kubelet.service",))
    base: dict[str, object] = dict(seconds_since_boot=600.0, system_state="running",
                                   unit_states=(("kubelet.service", "active"),))
    report = judge(policy, HealthObservation(**{**base, **seen}))  # type: ignore[arg-type]
    assert report.verdict is not Verdict.HEALTHY
    assert round_due(report, signals) is due


def test_core_module_imports_only_core_and_errors() -> None:
    """health_policy.py is pure: it imports nothing outside locksmithd.core and errors."""
    tree = ast.parse(Path(health_policy.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    allowed_stdlib = {"__future__", "enum", "re", "collections.abc", "dataclasses", "datetime"}
    for name in imported:
        assert name in allowed_stdlib or name.startswith("locksmithd.core.") or name == "locksmithd.errors", name
