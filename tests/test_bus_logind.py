"""LogindClient against a fake logind on a real private dbus-daemon."""

from __future__ import annotations

import asyncio
import logging

import pytest

from locksmithd.bus import LogindClient, connect, disconnect
from locksmithd.errors import BusError, RebootRefused
from harness.bus import PrivateBus
from harness.services import SimulatedServices
from tests.fixtures.dbus_fixtures import wait_until


def test_reboot_is_accepted(private_bus: PrivateBus) -> None:
    """Reboot(false) is called once and the sync on_reboot hook runs."""

    async def scenario() -> None:
        hooked: list[bool] = []
        async with await SimulatedServices.start(
            private_bus.address, on_reboot=lambda: hooked.append(True)
        ) as sim:
            bus = await connect(private_bus.address)
            await LogindClient(bus).reboot()
            await wait_until(lambda: bool(hooked))
            await disconnect(bus)
            assert [record.interactive for record in sim.logind.reboots] == [False]

    asyncio.run(scenario())


def test_reboot_hook_runs_after_the_reply(private_bus: PrivateBus) -> None:
    """A hook that takes the host's services down still lets the reply through."""

    async def scenario() -> None:
        sim = await SimulatedServices.start(private_bus.address)
        sim.logind.on_reboot = sim.power_off
        bus = await connect(private_bus.address)
        try:
            await LogindClient(bus, call_timeout_s=2.0).reboot()
            assert len(sim.logind.reboots) == 1
        finally:
            await disconnect(bus)
            await sim.close()

    asyncio.run(scenario())


def test_async_reboot_hook_is_awaited(private_bus: PrivateBus) -> None:
    """An async on_reboot hook runs to completion as a task of the service loop."""

    async def scenario() -> None:
        done = asyncio.Event()

        async def on_reboot() -> None:
            await asyncio.sleep(0)
            done.set()

        async with await SimulatedServices.start(private_bus.address, on_reboot=on_reboot):
            bus = await connect(private_bus.address)
            await LogindClient(bus).reboot()
            await asyncio.wait_for(done.wait(), 5.0)
            await disconnect(bus)

    asyncio.run(scenario())


def test_refused_reboot_raises_with_the_dbus_error(private_bus: PrivateBus) -> None:
    """An error reply becomes RebootRefused carrying the D-Bus error name and text."""

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address) as sim:
            sim.logind.refuse_reboots = "org.freedesktop.login1.OperationInProgress"
            sim.logind.refuse_message = "There's already a shutdown or sleep operation in progress"
            bus = await connect(private_bus.address)
            try:
                with pytest.raises(RebootRefused) as caught:
                    await LogindClient(bus).reboot()
            finally:
                await disconnect(bus)
            assert sim.logind.reboots == []
        assert "org.freedesktop.login1.OperationInProgress" in caught.value.message
        assert "already a shutdown" in caught.value.message
        assert caught.value.kind == "reboot-refused"

    asyncio.run(scenario())


def test_reboot_without_logind_is_refused(private_bus: PrivateBus) -> None:
    """With nobody owning org.freedesktop.login1 the reboot is refused, not ignored."""

    async def scenario() -> None:
        bus = await connect(private_bus.address)
        try:
            with pytest.raises(RebootRefused, match="ServiceUnknown"):
                await LogindClient(bus, call_timeout_s=2.0).reboot()
        finally:
            await disconnect(bus)

    asyncio.run(scenario())


def test_reboot_on_a_closed_connection_is_refused(private_bus: PrivateBus) -> None:
    """A connection that is gone is a refusal too, not a silent success."""

    async def scenario() -> None:
        bus = await connect(private_bus.address)
        await disconnect(bus)
        with pytest.raises(RebootRefused, match="closed"):
            await LogindClient(bus).reboot()

    asyncio.run(scenario())


def test_tty_sessions_lists_non_empty_ttys(private_bus: PrivateBus) -> None:
    """Sessions with a tty are listed (local and pseudo); ttyless ones are skipped."""

    async def scenario() -> list[str]:
        async with await SimulatedServices.start(private_bus.address) as sim:
            sim.logind.add_session("1", "core", "tty1")
            sim.logind.add_session("c2", "core", "")
            sim.logind.add_session("c3", "admin", "pts/3")
            bus = await connect(private_bus.address)
            ttys = await LogindClient(bus).tty_sessions()
            sim.logind.remove_session("c3")
            after_logout = await LogindClient(bus).tty_sessions()
            await disconnect(bus)
            assert after_logout == ["tty1"]
            return ttys

    assert asyncio.run(scenario()) == ["tty1", "pts/3"]


def test_tty_sessions_survive_a_logind_restart(private_bus: PrivateBus) -> None:
    """Sessions are exported again with logind, so they are listed after a restart."""

    async def scenario() -> list[str]:
        async with await SimulatedServices.start(private_bus.address) as sim:
            sim.logind.add_session("5", "core", "tty2")
            await sim.restart_logind()
            bus = await connect(private_bus.address)
            ttys = await LogindClient(bus).tty_sessions()
            await disconnect(bus)
            return ttys

    assert asyncio.run(scenario()) == ["tty2"]


def test_tty_sessions_without_logind_is_empty_with_a_warning(
    private_bus: PrivateBus, caplog: pytest.LogCaptureFixture
) -> None:
    """No logind means nobody to notify: an empty list and one warning."""

    async def scenario() -> list[str]:
        bus = await connect(private_bus.address)
        ttys = await LogindClient(bus).tty_sessions()
        await disconnect(bus)
        return ttys

    with caplog.at_level(logging.WARNING, logger="locksmithd.bus"):
        assert asyncio.run(scenario()) == []
    assert [r.name for r in caplog.records if r.levelno == logging.WARNING] == ["locksmithd.bus"]


def test_tty_sessions_on_a_closed_connection_is_a_bus_error(private_bus: PrivateBus) -> None:
    """A transport failure is not mistaken for "no sessions"."""

    async def scenario() -> None:
        bus = await connect(private_bus.address)
        await disconnect(bus)
        with pytest.raises(BusError, match="closed"):
            await LogindClient(bus).tty_sessions()

    asyncio.run(scenario())
