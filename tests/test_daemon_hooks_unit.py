"""The daemon's hook, inhibitor and schedule paths with fake adapters and a fake clock (no I/O)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from locksmithd.core.inhibitors import Inhibitor
from locksmithd.core.schedule import Schedule, parse_windows
from locksmithd.core.states import State
from locksmithd.daemon.run import Daemon
from locksmithd.errors import BusError
from tests.test_daemon_unit import FakeClock, FakeRebooter, FakeStrategy, Publisher, run_until, settings_for, stop

T0 = datetime(2024, 1, 4, 3, 0, tzinfo=timezone.utc)  # a Thursday


class FakeHooks:
    def __init__(self, clock: FakeClock, log: list[str], pre_takes_s: float = 0.0, pre_fails: int = 0) -> None:
        self.clock, self.log, self.pre_takes_s, self.pre_fails = clock, log, pre_takes_s, pre_fails

    async def pre_reboot(self, reason: str) -> str | None:
        self.log.append(f"pre:{reason}")
        self.clock.now += timedelta(seconds=self.pre_takes_s)
        if self.pre_fails:
            self.pre_fails -= 1
            return "pre-reboot hook /x/10-drain exited with 1"
        return None

    async def post_boot(self, reason: str) -> str | None:
        self.log.append(f"post:{reason}")
        return None


def daemon_with(strategy: FakeStrategy, rebooter: FakeRebooter, clock: FakeClock, **extra: object) -> tuple[
        Daemon, asyncio.Event]:
    needed = asyncio.Event()
    strategy.reason = "reboot-required: /run/reboot-required"  # type: ignore[attr-defined]
    settings = settings_for(extra.pop("window", None))
    daemon = Daemon(strategy, rebooter, settings=settings, publisher=Publisher(), reboot_needed=needed,  # type: ignore[arg-type]
                    now=clock, sleep=clock.sleep, **extra)  # type: ignore[arg-type]
    return daemon, needed


def test_window_closing_during_pre_reboot_hooks_undoes_them_and_releases() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter, log = FakeStrategy(clock), FakeRebooter(), []
        window = Schedule(parse_windows("Thu 03:00 10m"), timezone.utc)
        hooks = FakeHooks(clock, log, pre_takes_s=15 * 60)  # the drain outlasts the window
        daemon, needed = daemon_with(strategy, rebooter, clock, window=window, hooks=hooks)
        needed.set()
        task = await run_until(daemon, lambda: "release" in strategy.log)
        await stop(task)
        assert rebooter.reboots == 0
        reason = "reboot-required: /run/reboot-required"
        assert log == [f"pre:{reason}", f"post:{reason}"]

    asyncio.run(scenario())


def test_failing_pre_reboot_hook_releases_then_retries_and_reboots() -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter, log = FakeStrategy(clock), FakeRebooter(), []
        daemon, needed = daemon_with(strategy, rebooter, clock, window=None, hooks=FakeHooks(clock, log, pre_fails=2))
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        await stop(task)
        assert strategy.log[1:] == ["acquire", "release", "acquire", "release", "acquire", "rebooting"]
        assert [entry.split(":")[0] for entry in log] == ["pre", "post", "pre", "post", "pre"]

    asyncio.run(scenario())


def test_inhibitors_that_cannot_be_listed_do_not_stop_the_reboot() -> None:
    async def broken() -> list[Inhibitor]:
        raise BusError("org.freedesktop.DBus.Error.AccessDenied: no")

    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter = FakeStrategy(clock), FakeRebooter()
        daemon, needed = daemon_with(strategy, rebooter, clock, window=None, inhibitors=broken)
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        await stop(task)

    asyncio.run(scenario())


def test_inhibitor_wait_holds_no_slot_and_ends_when_it_goes() -> None:
    blockers = [Inhibitor("shutdown", "dnf", "transaction", "block", 0, 9)]

    async def listing() -> list[Inhibitor]:
        return list(blockers)

    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter = FakeStrategy(clock), FakeRebooter()
        daemon, needed = daemon_with(strategy, rebooter, clock, window=None, inhibitors=listing)
        needed.set()
        task = await run_until(daemon, lambda: daemon.state == State.WAITING_FOR_INHIBITOR and clock.now > T0
                               + timedelta(minutes=5))
        assert "acquire" not in strategy.log and rebooter.reboots == 0
        blockers.clear()
        await asyncio.sleep(0)
        for _ in range(200):
            await asyncio.sleep(0)
        assert rebooter.reboots == 1
        await stop(task)

    asyncio.run(scenario())


def test_a_schedule_in_another_zone_gates_the_daemon() -> None:
    """Thursday 03:00 UTC is 14:00 in Sydney: a Sydney window at 14:30 opens half an hour later."""
    async def scenario() -> None:
        clock = FakeClock(T0)
        strategy, rebooter = FakeStrategy(clock), FakeRebooter()
        window = Schedule(parse_windows("Thu 14:30 1h"), ZoneInfo("Australia/Sydney"))
        daemon, needed = daemon_with(strategy, rebooter, clock, window=window)
        needed.set()
        task = await run_until(daemon, lambda: rebooter.reboots == 1)
        await stop(task)
        assert T0 + timedelta(minutes=30) <= clock.now < T0 + timedelta(minutes=32)

    asyncio.run(scenario())
