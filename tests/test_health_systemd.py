"""SystemdClient against the fake systemd manager on a real private dbus-daemon."""

# No ``from __future__ import annotations``: IntStateManager below is a
# dbus_fast interface, and dbus_fast reads its annotations at runtime.

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from dbus_fast.aio import MessageBus
from dbus_fast import Message, PropertyAccess
from dbus_fast.service import ServiceInterface

from harness.dbus_compat import DBusInt32, dbus_property

from harness.bus import PrivateBus
from harness.systemd_service import FakeSystemd, unit_path
from locksmithd.bus.connection import connect, disconnect
from locksmithd.bus.systemd import SystemdChanges, SystemdClient, is_change
from locksmithd.core.health_policy import NOT_LOADED
from locksmithd.errors import BusError


@asynccontextmanager
async def client_of(address: str) -> AsyncIterator[SystemdClient]:
    """A SystemdClient on its own connection, closed on exit."""
    bus = await connect(address)
    try:
        yield SystemdClient(bus, call_timeout_s=2.0)
    finally:
        await disconnect(bus)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an async test scenario to completion."""

    async def main() -> None:
        await scenario()

    asyncio.run(main())


def test_system_state_is_read_from_the_manager(private_bus: PrivateBus) -> None:
    """SystemState follows what the manager says, across changes."""

    async def scenario() -> None:
        async with await FakeSystemd.start(private_bus.address, system_state="starting") as systemd:
            async with client_of(private_bus.address) as client:
                assert await client.system_state() == "starting"
                systemd.system_state = "running"
                assert await client.system_state() == "running"
                systemd.system_state = "degraded"
                assert await client.system_state() == "degraded"

    run(scenario)


def test_unit_states_through_get_unit(private_bus: PrivateBus) -> None:
    """ActiveState of loaded units via GetUnit; an unloaded unit is 'not loaded'."""

    async def scenario() -> None:
        units = {"sshd.service": "active", "broken.service": "failed", "getty@tty1.service": "activating"}
        async with await FakeSystemd.start(private_bus.address, units=units) as systemd:
            async with client_of(private_bus.address) as client:
                assert await client.unit_active_state("sshd.service") == "active"
                assert await client.unit_active_state("broken.service") == "failed"
                assert await client.unit_active_state("getty@tty1.service") == "activating"
                assert await client.unit_active_state("absent.service") == NOT_LOADED
                systemd.set_unit("sshd.service", "deactivating")
                assert await client.unit_active_state("sshd.service") == "deactivating"
                systemd.unload_unit("broken.service")
                assert await client.unit_active_state("broken.service") == NOT_LOADED
                systemd.set_unit("late.socket", "active")
                assert await client.unit_active_state("late.socket") == "active"
                assert systemd.manager.get_unit_calls == 7

    run(scenario)


def test_systemd_absent_is_a_clear_bus_error(private_bus: PrivateBus) -> None:
    """Nobody owning org.freedesktop.systemd1 is a BusError that says so, for both reads."""

    async def scenario() -> None:
        async with client_of(private_bus.address) as client:
            with pytest.raises(BusError, match=r"cannot read the system state: systemd "
                                               r"\(org.freedesktop.systemd1\) is not on the bus"):
                await client.system_state()
            with pytest.raises(BusError, match=r"cannot read unit sshd.service: systemd "
                                               r"\(org.freedesktop.systemd1\) is not on the bus"):
                await client.unit_active_state("sshd.service")

    run(scenario)


def test_systemd_leaving_and_coming_back(private_bus: PrivateBus) -> None:
    """A stopped systemd is an error; once back, the same client reads again."""

    async def scenario() -> None:
        async with await FakeSystemd.start(private_bus.address) as systemd:
            async with client_of(private_bus.address) as client:
                await systemd.stop()
                with pytest.raises(BusError, match="is not on the bus"):
                    await client.system_state()
                await systemd.resume()
                assert await client.system_state() == "running"

    run(scenario)


class IntStateManager(ServiceInterface):
    """A manager whose SystemState is an integer and which has no GetUnit."""

    def __init__(self) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")

    @dbus_property(access=PropertyAccess.READ, name="SystemState")
    def dbus_system_state(self) -> DBusInt32:
        return 3


@pytest.mark.parametrize("what", ["no-object", "wrong-type"])
def test_unexpected_answers_are_bus_errors(private_bus: PrivateBus, what: str) -> None:
    """An owner of the name without the manager's object or property is a BusError, not a crash."""

    async def scenario() -> None:
        owner: MessageBus = await connect(private_bus.address)
        try:
            if what == "wrong-type":
                owner.export("/org/freedesktop/systemd1", IntStateManager())
            await owner.request_name("org.freedesktop.systemd1")
            async with client_of(private_bus.address) as client:
                expected = "systemd has no object" if what == "no-object" else "SystemState is not a string"
                with pytest.raises(BusError, match=expected):
                    await client.system_state()
                with pytest.raises(BusError, match="cannot read unit x.service from systemd"):
                    await client.unit_active_state("x.service")
        finally:
            await disconnect(owner)

    run(scenario)


def test_unit_path_escapes_like_systemd() -> None:
    """Object paths follow systemd's bus_label_escape."""
    assert unit_path("sshd.service") == "/org/freedesktop/systemd1/unit/sshd_2eservice"
    assert unit_path("getty@tty1.service") == "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice"
    assert unit_path("1x.service") == "/org/freedesktop/systemd1/unit/_31x_2eservice"



async def until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Wait (bounded) for ``condition``: signals arrive asynchronously."""
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@asynccontextmanager
async def changes_of(address: str) -> AsyncIterator[tuple[SystemdChanges, MessageBus]]:
    """A SystemdChanges on its own connection, closed on exit."""
    bus = await connect(address)
    try:
        yield SystemdChanges(bus, call_timeout_s=2.0), bus
    finally:
        await disconnect(bus)


def test_signals_only_while_subscribed(private_bus: PrivateBus) -> None:
    """Like systemd, the fake sends nothing until a client subscribes, and stops when it unsubscribes or leaves."""

    async def scenario() -> None:
        async with await FakeSystemd.start(private_bus.address, system_state="starting") as systemd:
            heard: list[str] = []
            async with changes_of(private_bus.address) as (changes, bus):
                systemd.set_unit("a.service", "activating")
                systemd.system_state = "degraded"
                assert systemd.emitted == [] and systemd.subscribers == set()
                await changes.start(heard.append)
                assert systemd.subscribers == {bus.unique_name}
                await changes.stop()
                assert systemd.subscribers == set()
                systemd.system_state = "running"
                await changes.start(heard.append)
                await asyncio.sleep(0.2)
                assert heard == [] and systemd.emitted == []
            await until(lambda: not systemd.subscribers, "the subscriber that left the bus to be forgotten")
            systemd.system_state = "degraded"
            assert systemd.emitted == []

    run(scenario)


def test_each_change_signal_is_heard(private_bus: PrivateBus) -> None:
    """The end of the boot, a job removed, a unit loaded, changed or forgotten: one on_change(member) each."""

    async def scenario() -> None:
        async with await FakeSystemd.start(private_bus.address, system_state="starting",
                                           units={"sshd.service": "activating"}) as systemd:
            async with changes_of(private_bus.address) as (changes, _):
                heard: list[str] = []
                await changes.start(heard.append)
                steps: list[tuple[Callable[[], None], str]] = [
                    (lambda: setattr(systemd, "system_state", "running"), "StartupFinished"),
                    (lambda: systemd.finish_job("sshd.service"), "JobRemoved"),
                    (lambda: systemd.set_unit("sshd.service", "active"), "PropertiesChanged"),
                    (lambda: systemd.set_unit("late.socket", "active"), "UnitNew"),
                    (lambda: systemd.unload_unit("late.socket"), "UnitRemoved"),
                    (lambda: setattr(systemd, "system_state", "degraded"), "PropertiesChanged"),
                ]
                for count, (change, member) in enumerate(steps, start=1):
                    change()
                    assert systemd.emitted[-1] == member
                    await until(lambda: len(heard) == count, member)
                    assert heard[-1] == member
                await changes.stop()
                systemd.set_unit("sshd.service", "failed")
                await asyncio.sleep(0.2)
                assert len(heard) == len(steps)

    run(scenario)


def test_other_signals_are_not_changes() -> None:
    """A unit's PropertiesChanged of another interface, or the same signal from another path, wakes nothing."""
    assert not is_change(Message.new_signal(unit_path("a.service"), "org.freedesktop.DBus.Properties",
                                            "PropertiesChanged", "sa{sv}as",
                                            ["org.freedesktop.systemd1.Service", {}, []]))
    assert not is_change(Message.new_signal("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                            "JobNew", "uos", [1, "/org/freedesktop/systemd1/job/1", "a.service"]))
    assert not is_change(Message.new_signal("/org/example", "org.freedesktop.systemd1.Manager",
                                            "StartupFinished", "", []))
    assert is_change(Message.new_signal(unit_path("a.service"), "org.freedesktop.DBus.Properties",
                                        "PropertiesChanged", "sa{sv}as", ["org.freedesktop.systemd1.Unit", {}, []]))


def test_following_an_absent_systemd_is_a_clear_error(private_bus: PrivateBus) -> None:
    """No systemd on the bus: start raises one clear BusError and can be tried again later."""

    async def scenario() -> None:
        async with changes_of(private_bus.address) as (changes, _):
            with pytest.raises(BusError, match=r"cannot follow the changes: systemd "
                                               r"\(org.freedesktop.systemd1\) is not on the bus"):
                await changes.start(lambda member: None)
            async with await FakeSystemd.start(private_bus.address) as systemd:
                await changes.start(lambda member: None)
                assert len(systemd.subscribers) == 1
                await changes.stop()

    run(scenario)
