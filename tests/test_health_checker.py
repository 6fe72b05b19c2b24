"""HealthChecker: fake systemd on a real private bus, real check commands, an injected clock."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from harness.bus import PrivateBus
from harness.systemd_service import FakeSystemd
from locksmithd.bus.connection import connect, disconnect
from locksmithd.bus.systemd import SystemdChanges, SystemdClient
from locksmithd.core.health_policy import HealthPolicy, HealthReport, Verdict
from locksmithd.daemon.health import HealthChecker, HealthGateOnWallClock, boot_clock
from locksmithd.daemon.run import HealthResult
from locksmithd.daemon.wakeup import Wakeup
from locksmithd.errors import BusError
from tests.test_health_commands import script


@dataclass
class FakeClock:
    """A clock that only moves when ``sleep`` is awaited; ``on_sleep`` runs after each sleep."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[FakeClock], None] = lambda clock: None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(self)


@asynccontextmanager
async def systemd_client(address: str) -> AsyncIterator[SystemdClient]:
    """A SystemdClient on its own connection to ``address``."""
    bus = await connect(address)
    try:
        yield SystemdClient(bus, call_timeout_s=2.0)
    finally:
        await disconnect(bus)


def policy_for(check_dir: Path, **changes: object) -> HealthPolicy:
    """A policy with the check directory ``check_dir``, short timeouts and ``changes``."""
    base = HealthPolicy(check_dir=str(check_dir), command_timeout_s=5.0, timeout_s=600.0,
                        recheck_interval_s=10.0)
    return replace(base, **changes)  # type: ignore[arg-type]


def check_once(address: str, policy: HealthPolicy, *, system_state: str | None = "running",
               units: dict[str, str] | None = None, since_boot_s: float = 600.0) -> HealthReport:
    """One round against a fake systemd in ``system_state`` (``None``: systemd absent)."""

    async def scenario() -> HealthReport:
        async with systemd_client(address) as client:
            checker = HealthChecker(policy, client)
            if system_state is None:
                return await checker.check_once(since_boot_s)
            async with await FakeSystemd.start(address, system_state=system_state, units=units):
                return await checker.check_once(since_boot_s)

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("states", "system_state", "verdict", "failures"),
    [
        (frozenset({"running"}), "running", Verdict.HEALTHY, ()),
        (frozenset({"running"}), "degraded", Verdict.UNHEALTHY, ("system state 'degraded' not in running",)),
        (frozenset({"running", "degraded"}), "degraded", Verdict.HEALTHY, ()),
        (frozenset({"running"}), "starting", Verdict.WAIT, ()),
        (frozenset({"running"}), "maintenance", Verdict.UNHEALTHY,
         ("system state 'maintenance' not in running",)),
        (None, "degraded", Verdict.HEALTHY, ()),
    ],
)
def test_system_state(private_bus: PrivateBus, tmp_path: Path, states: frozenset[str] | None,
                      system_state: str, verdict: Verdict, failures: tuple[str, ...]) -> None:
    """SystemState read over the bus is judged against the healthy states ('any': None)."""
    report = check_once(private_bus.address, policy_for(tmp_path, healthy_states=states),
                        system_state=system_state)
    assert (report.verdict, report.failures) == (verdict, failures)


def test_any_needs_no_systemd(private_bus: PrivateBus, tmp_path: Path) -> None:
    """With 'any' and no units, a host without systemd on the bus can be healthy."""
    report = check_once(private_bus.address, policy_for(tmp_path, healthy_states=None), system_state=None)
    assert report.verdict is Verdict.HEALTHY


def test_systemd_absent_is_a_named_failure(private_bus: PrivateBus, tmp_path: Path) -> None:
    """systemd missing from the bus fails the state and unit checks with a clear reason."""
    policy = policy_for(tmp_path, units=("sshd.service",))
    report = check_once(private_bus.address, policy, system_state=None)
    assert report.verdict is Verdict.UNHEALTHY
    assert report.failures == (
        "cannot read the system state: systemd (org.freedesktop.systemd1) is not on the bus",
        "cannot read unit sshd.service: systemd (org.freedesktop.systemd1) is not on the bus",
    )


@pytest.mark.parametrize(
    ("units", "failures"),
    [
        ({"sshd.service": "active", "docker.socket": "active"}, ()),
        ({"sshd.service": "active", "docker.socket": "failed"}, ("unit docker.socket is failed",)),
        ({"sshd.service": "inactive"}, ("unit sshd.service is inactive", "unit docker.socket is not loaded")),
    ],
)
def test_required_units(private_bus: PrivateBus, tmp_path: Path, units: dict[str, str],
                        failures: tuple[str, ...]) -> None:
    """Every required unit must be active; one not loaded is named as such."""
    policy = policy_for(tmp_path, units=("sshd.service", "docker.socket"))
    report = check_once(private_bus.address, policy, units=units)
    assert report.failures == failures
    assert report.verdict is (Verdict.UNHEALTHY if failures else Verdict.HEALTHY)


def test_check_commands_run_in_name_order(private_bus: PrivateBus, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """Executables run in name order; a failing one is named; others and output are logged."""
    log_file = tmp_path / "ran"
    checks = tmp_path / "health.d"
    checks.mkdir()
    for name, code in (("20-b", 0), ("10-a", 0), ("30-c", 1)):
        script(checks, name, f"echo {name} >> {log_file}; echo output-of-{name}; exit {code}")
    (checks / "subdir").mkdir()
    with caplog.at_level(logging.INFO, logger="locksmithd.commands"):
        report = check_once(private_bus.address, policy_for(checks))
    assert log_file.read_text().split() == ["10-a", "20-b", "30-c"]
    assert report.failures == (f"check {checks}/30-c exited 1",)
    messages = [r.getMessage() for r in caplog.records if r.name == "locksmithd.commands"]
    assert f"health check {checks}/30-c exited 1; output: output-of-30-c" in messages
    assert f"health check {checks}/10-a passed; output: output-of-10-a" in messages


def test_non_executable_file_is_skipped_with_one_warning(private_bus: PrivateBus, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A file without execute permission is not run and is warned about once per checker."""
    ran = tmp_path / "ran"
    script(tmp_path, "10-notes", f"touch {ran}; exit 1", mode=0o644)

    async def scenario() -> list[HealthReport]:
        async with systemd_client(private_bus.address) as client, \
                await FakeSystemd.start(private_bus.address):
            checker = HealthChecker(policy_for(tmp_path), client)
            return [await checker.check_once(600.0), await checker.check_once(610.0)]

    with caplog.at_level(logging.WARNING, logger="locksmithd.commands"):
        reports = asyncio.run(scenario())
    assert [r.verdict for r in reports] == [Verdict.HEALTHY, Verdict.HEALTHY]
    assert not ran.exists()
    warnings = [r.getMessage() for r in caplog.records if r.name == "locksmithd.commands"]
    assert warnings == [f"skipping health check {tmp_path}/10-notes: not an executable regular file"]


def test_missing_check_directory_means_no_commands(private_bus: PrivateBus, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """No directory: healthy on the other checks, said once at debug level."""
    with caplog.at_level(logging.DEBUG, logger="locksmithd.health"):
        report = check_once(private_bus.address, policy_for(tmp_path / "absent"))
    assert report.verdict is Verdict.HEALTHY
    assert [r.levelno for r in caplog.records if r.name == "locksmithd.health"] == [logging.DEBUG]


def test_unreadable_check_directory_is_a_named_failure(private_bus: PrivateBus, tmp_path: Path) -> None:
    """A check directory that cannot be listed fails, naming it (here: it is a file)."""
    not_a_dir = tmp_path / "health.d"
    not_a_dir.write_text("oops\n", encoding="utf-8")
    report = check_once(private_bus.address, policy_for(not_a_dir))
    assert report.verdict is Verdict.UNHEALTHY
    assert report.failures == (f"check directory {not_a_dir} cannot be read: Not a directory",)


def test_unexaminable_entry_is_a_named_failure(private_bus: PrivateBus, tmp_path: Path) -> None:
    """An entry that cannot be examined (a symlink loop) fails rather than passing by omission."""
    (tmp_path / "10-loop").symlink_to("10-loop")
    script(tmp_path, "20-ok", "exit 0")
    report = check_once(private_bus.address, policy_for(tmp_path))
    assert report.failures == (
        f"check {tmp_path}/10-loop cannot be examined: Too many levels of symbolic links",)


def test_check_timeout_is_a_named_failure(private_bus: PrivateBus, tmp_path: Path) -> None:
    """A check that outlives the per-command timeout fails with 'timed out after'."""
    script(tmp_path, "10-hang", "exec sleep 300")
    report = check_once(private_bus.address, policy_for(tmp_path, command_timeout_s=0.3))
    assert report.failures == (f"check {tmp_path}/10-hang timed out after 300ms",)


def test_soak_not_over_is_wait(private_bus: PrivateBus, tmp_path: Path) -> None:
    """All checks pass but the soak is not over: WAIT, with the time left."""
    report = check_once(private_bus.address, policy_for(tmp_path, soak_s=300.0), since_boot_s=240.0)
    assert report.verdict is Verdict.WAIT
    assert report.describe() == "waiting for soak of 5m0s after boot (1m0s left)"


def wait_until_healthy(address: str, policy: HealthPolicy, clock: FakeClock, *, booted_at: float,
                       deadline: float, system_state: str = "running",
                       change: Callable[[FakeSystemd, FakeClock], None] = lambda s, c: None,
                       ) -> tuple[HealthReport, list[str]]:
    """Run wait_until_healthy against a fake systemd; ``change`` runs after each sleep."""
    progress: list[str] = []

    async def scenario() -> HealthReport:
        async with systemd_client(address) as client, \
                await FakeSystemd.start(address, system_state=system_state) as systemd:
            clock.on_sleep = lambda c: change(systemd, c)
            checker = HealthChecker(policy, client, clock=clock, sleep=clock.sleep,
                                    on_progress=lambda report: progress.append(report.describe()))
            return await checker.wait_until_healthy(booted_at, deadline)

    return asyncio.run(scenario()), progress


def test_starting_then_running_becomes_healthy(private_bus: PrivateBus, tmp_path: Path) -> None:
    """While starting the checker waits and says so; once running it is healthy."""
    clock = FakeClock()

    def boot_finishes(systemd: FakeSystemd, c: FakeClock) -> None:
        if len(c.sleeps) == 2:
            systemd.system_state = "running"

    report, progress = wait_until_healthy(private_bus.address, policy_for(tmp_path), clock,
                                          booted_at=995.0, deadline=1600.0, system_state="starting",
                                          change=boot_finishes)
    assert report.verdict is Verdict.HEALTHY
    assert progress == ["waiting for system state running (now starting)"] * 2 + ["healthy"]
    assert clock.sleeps == [10.0, 10.0]


def test_failing_check_at_the_deadline_is_unhealthy_naming_it(private_bus: PrivateBus, tmp_path: Path) -> None:
    """A check failing every round: rounds every interval, one at the deadline, then UNHEALTHY."""
    script(tmp_path, "10-app", "echo 'app not answering'; exit 2")
    clock = FakeClock()
    report, progress = wait_until_healthy(private_bus.address, policy_for(tmp_path), clock,
                                          booted_at=900.0, deadline=1025.0)
    assert report.verdict is Verdict.UNHEALTHY
    assert report.failures == (f"check {tmp_path}/10-app exited 2",)
    assert clock.sleeps == [10.0, 10.0, 5.0]
    assert len(progress) == 4 and clock.now == 1025.0


def test_failure_that_clears_before_the_deadline(private_bus: PrivateBus, tmp_path: Path) -> None:
    """A degraded system that recovers in time is healthy; no failure sticks."""
    clock = FakeClock()

    def recovers(systemd: FakeSystemd, c: FakeClock) -> None:
        if c.now >= 1030.0:
            systemd.system_state = "running"

    report, progress = wait_until_healthy(private_bus.address, policy_for(tmp_path), clock,
                                          booted_at=900.0, deadline=1100.0, system_state="degraded",
                                          change=recovers)
    assert report.verdict is Verdict.HEALTHY
    assert progress == ["system state 'degraded' not in running"] * 3 + ["healthy"]


def test_still_starting_at_the_deadline_says_so(private_bus: PrivateBus, tmp_path: Path) -> None:
    """A system that never finishes booting fails with 'still starting at the deadline'."""
    clock = FakeClock()
    report, _ = wait_until_healthy(private_bus.address, policy_for(tmp_path), clock,
                                   booted_at=900.0, deadline=1030.0, system_state="starting")
    assert report.verdict is Verdict.UNHEALTHY
    assert report.failures == ("system state still 'starting' at the deadline (healthy: running)",)


def test_soak_ends_the_wait_on_time(private_bus: PrivateBus, tmp_path: Path) -> None:
    """While only soaking, the checker wakes when the soak ends, not a whole interval later."""
    clock = FakeClock()
    report, progress = wait_until_healthy(private_bus.address, policy_for(tmp_path, soak_s=120.0), clock,
                                          booted_at=1000.0 - 95.0, deadline=1600.0)
    assert report.verdict is Verdict.HEALTHY
    assert clock.sleeps == [10.0, 10.0, 5.0]
    assert progress[0] == "waiting for soak of 2m0s after boot (25s left)"


def test_deadline_already_passed_still_checks_once(private_bus: PrivateBus, tmp_path: Path) -> None:
    """A checker started after its deadline (daemon restarted late) checks once and decides."""
    clock = FakeClock()
    report, progress = wait_until_healthy(private_bus.address, policy_for(tmp_path), clock,
                                          booted_at=0.0, deadline=500.0)
    assert report.verdict is Verdict.HEALTHY and clock.sleeps == [] and progress == ["healthy"]


def test_real_clock_and_sleep(private_bus: PrivateBus, tmp_path: Path) -> None:
    """With the default boot clock and real sleeping, a failing check gives up at the deadline."""
    script(tmp_path, "10-fail", "exit 1")
    policy = policy_for(tmp_path, recheck_interval_s=0.1, timeout_s=5.0)

    async def scenario() -> HealthReport:
        async with systemd_client(private_bus.address) as client, \
                await FakeSystemd.start(private_bus.address):
            checker = HealthChecker(policy, client)
            return await checker.wait_until_healthy(0.0, boot_clock() + 0.5)

    report = asyncio.run(scenario())
    assert report.failures == (f"check {tmp_path}/10-fail exited 1",)


@asynccontextmanager
async def following(address: str, wakeup: Wakeup) -> AsyncIterator[None]:
    """systemd's changes poke ``wakeup``, on a connection of their own."""
    bus = await connect(address)
    changes = SystemdChanges(bus, call_timeout_s=2.0)
    try:
        await changes.start(wakeup.poke)
        yield
    finally:
        await changes.stop()
        await disconnect(bus)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass
class Flip:
    """What ``flip_after_first_round`` saw."""

    elapsed_s: float  # from "running" to the verdict
    report: HealthReport
    progress: list[str]  # each round's description
    rounds_after_burst: int  # rounds run by then
    emitted: list[str]  # the signals the fake sent
    subscribers: int  # clients subscribed when it turned running


def flip_after_first_round(address: str, policy: HealthPolicy, *, signals: bool = True, start: str = "starting",
                           burst: int = 0) -> Flip:
    """systemd in ``start``; after the first round (mid-pause) ``burst`` changes of an unrelated unit, then
    ``running``. Real clock and sleep."""
    progress: list[str] = []

    async def scenario() -> Flip:
        async with systemd_client(address) as client, \
                await FakeSystemd.start(address, system_state=start, signals=signals) as systemd:
            wakeup = Wakeup()
            async with following(address, wakeup):
                checker = HealthChecker(policy, client, wakeup=wakeup,
                                        on_progress=lambda report: progress.append(report.describe()))
                task = asyncio.create_task(checker.wait_until_healthy(boot_clock() - 600, boot_clock() + 600))
                try:
                    await until(lambda: len(progress) == 1, "the first round")
                    await asyncio.sleep(0.3)  # well into the pause after it
                    for i in range(burst):
                        systemd.set_unit("other.service", "active" if i % 2 else "activating")
                    if burst:
                        await asyncio.sleep(0.8)  # the settle, a round, and time for any needless one
                    rounds_after_burst = len(progress)
                    subscribers = len(systemd.subscribers)
                    turned = time.monotonic()
                    systemd.system_state = "running"
                    report = await asyncio.wait_for(task, 5.0)
                    elapsed_s = time.monotonic() - turned
                finally:
                    task.cancel()
            return Flip(elapsed_s, report, progress, rounds_after_burst, list(systemd.emitted), subscribers)

    return asyncio.run(scenario())


def test_systemd_signal_starts_a_round_at_once(private_bus: PrivateBus, tmp_path: Path) -> None:
    """With a 30 s interval, a system that turns running is found healthy well within a second: its
    StartupFinished starts the round (the old fixed 10 s poll would time out here)."""
    policy = policy_for(tmp_path, recheck_interval_s=30.0)
    flip = flip_after_first_round(private_bus.address, policy)
    assert flip.report.verdict is Verdict.HEALTHY
    assert flip.progress == ["waiting for system state running (now starting)", "healthy"]
    assert flip.emitted == ["StartupFinished"]
    assert flip.elapsed_s < 1.5, flip.elapsed_s  # SETTLE_S (0.2 s) plus one round; slack for a loaded machine


def test_a_burst_of_signals_is_one_round(private_bus: PrivateBus, tmp_path: Path) -> None:
    """Degraded: six quick unit changes make one more round, not six; reset-failed (running) one more."""
    policy = policy_for(tmp_path, recheck_interval_s=30.0)
    flip = flip_after_first_round(private_bus.address, policy, start="degraded", burst=6)
    assert flip.emitted == ["UnitNew"] + ["PropertiesChanged"] * 6
    assert flip.rounds_after_burst == 2
    assert flip.progress == ["system state 'degraded' not in running"] * 2 + ["healthy"]
    assert flip.report.verdict is Verdict.HEALTHY and flip.elapsed_s < 1.5


def test_a_booting_system_is_checked_again_at_the_end_of_the_boot(private_bus: PrivateBus, tmp_path: Path) -> None:
    """While systemd says starting, the jobs and units of the boot start no round: StartupFinished does."""
    policy = policy_for(tmp_path, recheck_interval_s=30.0)
    flip = flip_after_first_round(private_bus.address, policy, burst=6)
    assert flip.emitted == ["UnitNew"] + ["PropertiesChanged"] * 5 + ["StartupFinished"]
    assert flip.rounds_after_burst == 1
    assert flip.progress == ["waiting for system state running (now starting)", "healthy"]
    assert flip.elapsed_s < 1.5


def test_signals_start_no_round_for_a_failing_check(private_bus: PrivateBus, tmp_path: Path) -> None:
    """Only a check command fails: systemd's signals cannot change that, the interval brings the next round."""
    script(tmp_path, "10-app", "echo 'app not answering'; exit 2")
    policy = policy_for(tmp_path, recheck_interval_s=30.0)
    progress: list[str] = []

    async def scenario() -> list[str]:
        async with systemd_client(private_bus.address) as client, \
                await FakeSystemd.start(private_bus.address) as systemd:
            wakeup = Wakeup()
            async with following(private_bus.address, wakeup):
                checker = HealthChecker(policy, client, wakeup=wakeup,
                                        on_progress=lambda report: progress.append(report.describe()))
                task = asyncio.create_task(checker.wait_until_healthy(boot_clock() - 600, boot_clock() + 600))
                try:
                    await until(lambda: len(progress) == 1, "the first round")
                    for state in ("activating", "active", "failed"):
                        systemd.set_unit("other.service", state)
                    await asyncio.sleep(0.8)
                    assert not task.done()
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            return list(systemd.emitted)

    emitted = asyncio.run(scenario())
    assert emitted == ["UnitNew", "PropertiesChanged", "PropertiesChanged"]
    assert progress == [f"check {tmp_path}/10-app exited 2"]


def test_without_signals_the_interval_still_rechecks(private_bus: PrivateBus, tmp_path: Path) -> None:
    """A systemd that accepts Subscribe but never signals: the round after the change comes at the interval."""
    policy = policy_for(tmp_path, recheck_interval_s=1.5)
    flip = flip_after_first_round(private_bus.address, policy, signals=False)
    assert flip.emitted == [] and flip.subscribers == 1
    assert flip.report.verdict is Verdict.HEALTHY
    assert flip.progress == ["waiting for system state running (now starting)", "healthy"]
    assert 0.8 < flip.elapsed_s < 3.0, flip.elapsed_s  # the rest of the 1.5 s interval after the 0.3 s already waited


class RefusingFeed:
    """A change feed whose start fails, as when the bus or systemd refuses the subscription."""

    def __init__(self) -> None:
        self.starts = 0

    async def start(self, on_change: Callable[[str], None]) -> None:
        self.starts += 1
        raise BusError("cannot follow the changes from systemd: org.freedesktop.DBus.Error.AccessDenied: no")

    async def stop(self) -> None:
        raise AssertionError("never started, never stopped")


def test_gate_without_signals_warns_once_and_polls(private_bus: PrivateBus, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A refused subscription is one warning naming the interval; the checks still pass at its pace. The
    daemon hears of each round but the healthy one (its release follows at once: no note in etcd before it)."""
    policy = policy_for(tmp_path, recheck_interval_s=0.2)
    feed = RefusingFeed()
    progress: list[str] = []

    async def scenario() -> list[HealthResult]:
        async with systemd_client(private_bus.address) as client, \
                await FakeSystemd.start(private_bus.address, system_state="starting") as systemd:
            gate = HealthGateOnWallClock(policy, client, changes=feed)
            now = datetime.now(timezone.utc)
            asyncio.get_running_loop().call_later(0.5, setattr, systemd, "system_state", "running")
            first = await gate.wait_until_healthy(now, now + timedelta(minutes=5), progress.append)
            second = await gate.wait_until_healthy(now, now + timedelta(minutes=5), lambda detail: None)
            return [first, second]

    with caplog.at_level(logging.DEBUG, logger="locksmithd.health"):
        results = asyncio.run(scenario())
    assert [result.passed for result in results] == [True, True] and feed.starts == 2
    assert progress and set(progress) == {"waiting for system state running (now starting)"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["bus: cannot follow the changes from systemd: org.freedesktop.DBus.Error.AccessDenied: no; "
                        "re-checking health every 200ms instead"]


def test_wakeup_pause_and_bursts() -> None:
    """No poke: the pause runs out (empty). Pokes, before or during a pause: it ends after the settle with what
    they named, and every poke up to then is used up by it."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wakeup = Wakeup(settle_s=0.05)
        started = loop.time()
        assert await wakeup.pause(0.1) == frozenset() and loop.time() - started >= 0.1
        for what in ("JobRemoved", "JobRemoved", "UnitNew"):
            wakeup.poke(what)  # came during a round
        started = loop.time()
        assert await wakeup.pause(10.0) == {"JobRemoved", "UnitNew"} and loop.time() - started < 1.0
        assert await wakeup.pause(0.05) == frozenset()  # the burst was used up
        loop.call_later(0.05, wakeup.poke, "PropertiesChanged")
        loop.call_later(0.07, wakeup.poke, "StartupFinished")  # within the settle: the same burst
        started = loop.time()
        assert await wakeup.pause(10.0) == {"PropertiesChanged", "StartupFinished"}
        assert loop.time() - started < 1.0
        assert await wakeup.pause(0.05) == frozenset()

    asyncio.run(scenario())


def test_wakeup_a_final_poke_ends_the_pause_with_no_settle() -> None:
    """A poke named in ``final`` (the end of the boot) ends the pause, or a settle under way, at once: nothing
    can add to that news."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        wakeup = Wakeup(settle_s=5.0, final=frozenset({"StartupFinished"}))
        loop.call_later(0.05, wakeup.poke, "StartupFinished")
        started = loop.time()
        assert await wakeup.pause(10.0) == {"StartupFinished"}
        assert loop.time() - started < 2.0  # well under the 5 s settle
        wakeup.poke("JobRemoved")
        started = loop.time()
        assert await wakeup.pause(10.0) == {"JobRemoved"} and loop.time() - started >= 5.0
        loop.call_later(0.05, wakeup.poke, "JobRemoved")
        loop.call_later(0.1, wakeup.poke, "StartupFinished")  # within the settle: cuts it short
        started = loop.time()
        assert await wakeup.pause(10.0) == {"JobRemoved", "StartupFinished"}
        assert loop.time() - started < 2.0

    asyncio.run(scenario())
