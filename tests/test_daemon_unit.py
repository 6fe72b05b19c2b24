"""The daemon's state machine with in-process fakes: windows, refusals, cancellation."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from locksmithd.core.holder_record import AfterBoot
from locksmithd.daemon.run import Daemon, HealthResult
from locksmithd.errors import RebootRefused, StoreDenied, StoreUnavailable
from locksmithd.strategies.base import WithoutSlot
from locksmithd.core.states import ALLOWED, State, StateMachine, TransitionError, published_state
from locksmithd.core.window import RebootWindow
from locksmithd.settings import DaemonSettings

T0 = datetime(2026, 11, 19, 4, 0, tzinfo=timezone.utc)  # a Thursday, 04:00


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


class FakeStrategy(WithoutSlot):
    """A strategy with a slot, kept in memory; the observers' methods are WithoutSlot's (no queue, no group)."""

    label = "etcd-lock"
    enabled = True
    uses_lock = True
    boot_id: str | None = None

    def __init__(self, clock: FakeClock, acquire_takes_s: float = 0.0, fail_acquire: int = 0) -> None:
        self.clock = clock
        self.acquire_takes_s = acquire_takes_s
        self.fail_acquire = fail_acquire
        self.holding = False
        self.log: list[str] = []
        self.held_before_boot = False

    async def held_from_before(self) -> AfterBoot:
        self.log.append("release-after-boot")
        return AfterBoot.UNKNOWN_BOOT if self.held_before_boot else AfterBoot.NOT_HOLDING

    async def acquire(self, deadline: datetime | None) -> bool:
        if self.fail_acquire:
            self.fail_acquire -= 1
            raise StoreUnavailable("etcd down")
        self.clock.now += timedelta(seconds=self.acquire_takes_s)
        self.holding = True
        self.log.append("acquire")
        return True

    async def release(self) -> None:
        if self.held_before_boot:
            self.held_before_boot = False
            return
        self.holding = False
        self.log.append("release")

    async def rebooting(self) -> None:
        self.log.append("rebooting")

    async def booted(self) -> datetime:
        self.log.append("booted")
        return self.clock.now

    async def note_health(self, detail: str) -> None:
        pass

    async def release_healthy(self, detail: str) -> None:
        self.holding = False
        self.log.append("release-healthy")

    async def halt_unhealthy(self, reason: str) -> None:
        self.log.append(f"halt: {reason}")

    async def close(self) -> None:
        pass


class FakeRebooter:
    def __init__(self, refuse: int = 0, ttys: list[str] | None = None) -> None:
        self.refuse = refuse
        self.ttys = ttys or []
        self.reboots = 0

    async def reboot(self) -> None:
        if self.refuse:
            self.refuse -= 1
            raise RebootRefused("logind refused to reboot: test")
        self.reboots += 1

    async def tty_sessions(self) -> list[str]:
        return list(self.ttys)


class Publisher:
    def __init__(self) -> None:
        self.states: list[str] = []

    def write(self, strategy: str, state: str, detail: str = "") -> None:
        self.states.append(detail)


def settings_for(window: Any = None, login_delay_s: float = 0.0, retry_max_s: float = 1.0) -> DaemonSettings:
    """The daemon's settings with these (the rest the table's defaults)."""
    return DaemonSettings(machine_id="m", window=window, login_delay_s=login_delay_s, retry_max_s=retry_max_s)


def make(strategy: FakeStrategy, rebooter: FakeRebooter, clock: FakeClock, window: RebootWindow | None = None,
         login_delay_s: float = 0.0, warned: list | None = None) -> tuple[Daemon, asyncio.Event, Publisher]:
    needed = asyncio.Event()
    publisher = Publisher()
    daemon = Daemon(strategy, rebooter, settings=settings_for(window, login_delay_s), publisher=publisher,
                    reboot_needed=needed, now=clock, sleep=clock.sleep,
                    warn_users=lambda ttys, delay: (warned if warned is not None else []).append((ttys, delay)))
    return daemon, needed, publisher


async def run_until(daemon: Daemon, condition, steps: int = 2000) -> asyncio.Task[None]:
    task = asyncio.create_task(daemon.run())
    for _ in range(steps):
        await asyncio.sleep(0)
        if condition():
            return task
    task.cancel()
    raise AssertionError(f"condition not reached; daemon in {daemon.state}")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_transitions_are_checked() -> None:
    """A handler cannot jump from idle straight to rebooting."""
    machine = StateMachine()
    machine.move(State.IDLE)
    with pytest.raises(TransitionError):
        machine.move(State.REBOOTING)
    assert all(State.STOPPED in targets for state, targets in ALLOWED.items() if state != State.STOPPED)


def test_published_states_follow_the_coordinator_convention() -> None:
    """The state file uses starting/running/reboot-planned/rebooting."""
    assert published_state(State.STARTING) == "starting"
    assert published_state(State.IDLE) == "running"
    assert published_state(State.WAITING_FOR_LOCK) == "reboot-planned"
    assert published_state(State.REBOOTING) == "rebooting"


def test_happy_path_releases_after_boot_then_reboots_once() -> None:
    """Release-after-boot runs first; a reboot need leads to acquire then one reboot."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter = FakeStrategy(clock), FakeRebooter()
        strategy.held_before_boot = True
        daemon, needed, publisher = make(strategy, rebooter, clock)
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        assert strategy.log == ["release-after-boot", "acquire", "rebooting"]
        assert daemon.state == State.REBOOTING
        await stop(task)
        assert strategy.holding, "a slot whose reboot was accepted is kept for after boot"
        assert publisher.states[-1] == "stopped"

    asyncio.run(scenario())


def test_waits_for_window_before_queueing() -> None:
    """Outside the window the daemon neither queues nor reboots; it does once the window opens."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        window = RebootWindow.parse("Thu 06:00", "1h")
        strategy, rebooter = FakeStrategy(clock), FakeRebooter()
        daemon, needed, _ = make(strategy, rebooter, clock, window)
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        assert clock.now >= T0.replace(hour=6)
        assert window.contains(clock.now)
        await stop(task)

    asyncio.run(scenario())


def test_window_closing_while_acquiring_releases_the_slot() -> None:
    """If the window closed while waiting for the lock, the slot is released and no reboot happens then."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        window = RebootWindow.parse("Thu 04:00", "30m")
        strategy = FakeStrategy(clock, acquire_takes_s=45 * 60)
        rebooter = FakeRebooter()
        daemon, needed, publisher = make(strategy, rebooter, clock, window)
        needed.set()
        task = await run_until(daemon, lambda: "release" in strategy.log)
        assert rebooter.reboots == 0
        assert not strategy.holding
        strategy.acquire_takes_s = 0
        for _ in range(200_000):
            await asyncio.sleep(0)
            if rebooter.reboots:
                break
        assert rebooter.reboots == 1
        assert window.contains(clock.now), "rebooted outside the window"
        assert clock.now - T0 >= timedelta(days=6), "should wait for next week's window"
        await stop(task)

    asyncio.run(scenario())


def test_refused_reboot_releases_and_retries() -> None:
    """logind refusing the reboot makes the daemon give the slot back and try again later."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter = FakeStrategy(clock), FakeRebooter(refuse=2)
        daemon, needed, _ = make(strategy, rebooter, clock)
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        assert strategy.log.count("release") == 2
        assert strategy.log.count("acquire") == 3
        await stop(task)

    asyncio.run(scenario())


def test_users_are_warned_and_delay_respected() -> None:
    """With logged-in ttys the daemon warns them and waits the login delay before rebooting."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        warned: list = []
        strategy, rebooter = FakeStrategy(clock), FakeRebooter(ttys=["pts/1"])
        daemon, needed, _ = make(strategy, rebooter, clock, login_delay_s=300, warned=warned)
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        assert warned == [(["pts/1"], 300)]
        assert clock.now - T0 >= timedelta(seconds=300)
        await stop(task)

    asyncio.run(scenario())


def test_login_delay_running_past_window_end_releases() -> None:
    """A login delay that outlasts the window ends in a release, not a reboot outside it."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        window = RebootWindow.parse("04:00", "2m")
        strategy, rebooter = FakeStrategy(clock), FakeRebooter(ttys=["tty1"])
        daemon, needed, _ = make(strategy, rebooter, clock, window, login_delay_s=300)
        needed.set()
        task = await run_until(daemon, lambda: "release" in strategy.log)
        assert rebooter.reboots == 0
        await stop(task)

    asyncio.run(scenario())


def test_sigterm_while_holding_gives_the_slot_back() -> None:
    """Cancelling the daemon after it acquired but before rebooting releases the slot."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter = FakeStrategy(clock), FakeRebooter(ttys=["tty1"])
        real_sleep = asyncio.sleep

        async def slow_sleep(seconds: float) -> None:
            await real_sleep(3600)

        daemon, needed, _ = make(strategy, rebooter, clock, login_delay_s=300)
        daemon.sleep = slow_sleep
        needed.set()
        task = await run_until(daemon, lambda: daemon.state == State.WARNING_USERS)
        assert strategy.holding
        await stop(task)
        assert not strategy.holding
        assert daemon.state == State.STOPPED

    asyncio.run(scenario())


def test_store_errors_while_queueing_are_retried() -> None:
    """etcd being unavailable while queueing leads to backoff and a later success."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter = FakeStrategy(clock, fail_acquire=3), FakeRebooter()
        daemon, needed, _ = make(strategy, rebooter, clock)
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        assert strategy.log.count("acquire") == 1
        await stop(task)

    asyncio.run(scenario())


class DeniedStrategy(FakeStrategy):
    """Every acquisition is refused by etcd (a role without permission)."""

    async def acquire(self, deadline: datetime | None) -> bool:
        self.log.append("acquire")
        raise StoreDenied("etcd at http://127.0.0.1:2379 refused read: permission denied")


def test_denied_backs_off_to_the_maximum_and_says_it_once(caplog: pytest.LogCaptureFixture) -> None:
    """A denied etcd request is an operator-must-act fault: pauses at the retry maximum, one error line."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        pauses: list[float] = []

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            await clock.sleep(seconds)

        strategy = DeniedStrategy(clock)
        needed = asyncio.Event()
        daemon = Daemon(strategy, FakeRebooter(), settings=settings_for(retry_max_s=60.0), publisher=Publisher(),
                        reboot_needed=needed, now=clock, sleep=sleep, rng=random.Random(7))
        needed.set()
        task = await run_until(daemon, lambda: len(pauses) >= 50, steps=100_000)
        await stop(task)
        assert all(30.0 <= pause <= 60.0 for pause in pauses), pauses
        assert strategy.log.count("acquire") >= 50

    with caplog.at_level(logging.DEBUG, logger="locksmithd"):
        asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "denied" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]


def test_backoff_grows_then_resets_after_success() -> None:
    """Transient etcd errors pause longer each time (with jitter), up to the cap."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        pauses: list[float] = []

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            await clock.sleep(seconds)

        strategy, rebooter = FakeStrategy(clock, fail_acquire=8), FakeRebooter()
        needed = asyncio.Event()
        daemon = Daemon(strategy, rebooter, settings=settings_for(retry_max_s=10.0), publisher=Publisher(),
                        reboot_needed=needed, now=clock, sleep=sleep, rng=random.Random(3))
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1, steps=100_000)
        await stop(task)
        assert len(pauses) == 8
        assert pauses[0] <= 0.5 and pauses[-1] >= 5.0 and max(pauses) <= 10.0, pauses

    asyncio.run(scenario())


class FakeGate:
    """Health checks whose outcomes the test scripts, one per call."""

    timeout_s = 900.0

    def __init__(self, outcomes: list[HealthResult]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[datetime, datetime]] = []

    async def wait_until_healthy(self, booted_at: datetime, give_up_at: datetime, progress: Any) -> HealthResult:
        self.calls.append((booted_at, give_up_at))
        progress(f"round {len(self.calls)}")
        return self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]


class AfterRebootStrategy(FakeStrategy):
    """Holds a slot taken before a reboot (or in the same boot, with ``same_boot``)."""

    def __init__(self, clock: FakeClock, found: AfterBoot) -> None:
        super().__init__(clock)
        self.found = found
        self.holding = True

    async def held_from_before(self) -> AfterBoot:
        self.log.append(f"found {self.found.value}")
        return self.found if self.holding else AfterBoot.NOT_HOLDING

    async def release(self) -> None:
        self.holding = False
        self.log.append("release")


def run_after_boot(found: AfterBoot, gate: FakeGate, until: Any) -> tuple[AfterRebootStrategy, Daemon]:
    async def scenario() -> tuple[AfterRebootStrategy, Daemon]:
        clock = FakeClock(T0)
        strategy = AfterRebootStrategy(clock, found)
        daemon = Daemon(strategy, FakeRebooter(), settings=settings_for(), publisher=Publisher(),
                        reboot_needed=asyncio.Event(), health=gate, now=clock, sleep=clock.sleep)
        task = await run_until(daemon, lambda: until(strategy, daemon), steps=10_000)
        await stop(task)
        return strategy, daemon

    return asyncio.run(scenario())


def test_after_a_reboot_the_slot_is_released_only_once_healthy() -> None:
    """A new boot goes through checking-health; passing checks release the slot."""
    gate = FakeGate([HealthResult(True, "all 3 checks passed")])
    strategy, daemon = run_after_boot(AfterBoot.NEW_BOOT, gate, lambda s, d: d.state == State.IDLE)
    assert strategy.log == ["found new-boot", "booted", "release-healthy"]
    assert gate.calls == [(T0, T0 + timedelta(seconds=900))]


def test_failed_checks_keep_the_slot_halt_the_group_then_release_when_healthy() -> None:
    """Checks failing by the timeout halt the group with the reason; the host keeps checking and releases later."""
    gate = FakeGate([HealthResult(False, "check 10-disk exited 1"), HealthResult(False, "check 10-disk exited 1"),
                     HealthResult(True, "ok")])
    strategy, daemon = run_after_boot(AfterBoot.NEW_BOOT, gate, lambda s, d: "release-healthy" in s.log)
    assert strategy.log[:3] == ["found new-boot", "booted", "halt: check 10-disk exited 1"]
    assert strategy.log[-1] == "release-healthy" and strategy.log.count("halt: check 10-disk exited 1") == 1


def test_same_boot_is_not_a_reboot_and_never_counts_as_healthy() -> None:
    """A slot taken in this boot (the daemon crashed before rebooting) is given back without health checks."""
    gate = FakeGate([HealthResult(True, "ok")])
    strategy, _ = run_after_boot(AfterBoot.SAME_BOOT, gate, lambda s, d: d.state == State.IDLE)
    assert strategy.log == ["found same-boot", "release"] and gate.calls == []


def test_stopping_while_checking_health_keeps_the_slot() -> None:
    """SIGTERM during health checks keeps the slot: the next start picks up the checks."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy = AfterRebootStrategy(clock, AfterBoot.NEW_BOOT)
        started = asyncio.Event()

        class SlowGate(FakeGate):
            async def wait_until_healthy(self, booted_at: datetime, give_up_at: datetime, progress: Any) -> HealthResult:
                started.set()
                await asyncio.sleep(3600)
                raise AssertionError("unreachable")

        daemon = Daemon(strategy, FakeRebooter(), settings=settings_for(), publisher=Publisher(),
                        reboot_needed=asyncio.Event(), health=SlowGate([]), now=clock, sleep=clock.sleep)
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(started.wait(), 5)
        assert daemon.state == State.CHECKING_HEALTH
        await stop(task)
        assert strategy.holding and "release" not in strategy.log

    asyncio.run(scenario())
