"""The simulated host: PrivateBus, FakeUpdateEngine, FakeLogind, SimulatedServices."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from dbus_fast import Message

from locksmithd.bus import connect, disconnect
from locksmithd.bus import logind as login1
from locksmithd.bus import update_engine as update1
from locksmithd.bus.connection import call, error_of
from locksmithd.errors import BusError
from harness.bus import PrivateBus
from harness.services import (
    FakeLogind,
    FakeUpdateEngine,
    SimulatedServices,
    session_path,
)
from locksmithd.core.update_status import NEED_REBOOT, UpdateStatus


async def _name_owner(address: str, name: str) -> str | None:
    bus = await connect(address)
    try:
        reply = await call(
            bus,
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="GetNameOwner",
            signature="s",
            body=[name],
        )
    finally:
        await disconnect(bus)
    return None if error_of(reply) else str(reply.body[0])


class TestPrivateBus:
    """A private dbus-daemon starts fast, runs beside others and cleans up."""

    def test_starts_fast_and_prints_a_unix_address(self) -> None:
        """The address is a unix socket path inside the bus's own temp dir."""
        started = time.monotonic()
        with PrivateBus() as bus:
            elapsed_s = time.monotonic() - started
            assert bus.address.startswith(f"unix:path={bus.socket_path}")
            assert bus.socket_path.exists()
        assert elapsed_s < 2.0  # typically ~10 ms; generous for loaded CI

    def test_several_run_side_by_side(self, private_bus_factory: Callable[[], PrivateBus]) -> None:
        """Each bus is its own world: a name owned on one is absent on the other."""
        first, second = private_bus_factory(), private_bus_factory()
        assert first.address != second.address

        async def scenario() -> tuple[str | None, str | None]:
            async with await SimulatedServices.start(first.address):
                return (
                    await _name_owner(first.address, update1.SERVICE),
                    await _name_owner(second.address, update1.SERVICE),
                )

        on_first, on_second = asyncio.run(scenario())
        assert on_first is not None
        assert on_second is None

    def test_stop_removes_everything_and_is_idempotent(self) -> None:
        """stop() ends the process and deletes the socket dir; a second stop is a no-op."""
        bus = PrivateBus().start()
        socket_path = bus.socket_path
        bus.stop()
        bus.stop()
        assert not socket_path.parent.exists()
        with pytest.raises(BusError, match="not running"):
            _ = bus.address

    def test_start_twice_is_an_error(self, private_bus: PrivateBus) -> None:
        """A started bus cannot be started again."""
        with pytest.raises(BusError, match="already started"):
            private_bus.start()

    def test_daemon_that_dies_at_start_is_reported(self) -> None:
        """A daemon that exits before printing its address is a BusError, not a hang."""
        with pytest.raises(BusError, match="exited before printing its address"):
            PrivateBus(dbus_daemon="/bin/false").start()


class TestFakeUpdateEngine:
    """The fake answers GetStatus and emits well-formed and malformed signals."""

    def test_get_status_returns_the_current_status(self, private_bus: PrivateBus) -> None:
        """GetStatus replies xdssx built from .status, changed by set_operation."""

        async def scenario() -> Message:
            async with await SimulatedServices.start(private_bus.address) as sim:
                sim.update_engine.set_operation(NEED_REBOOT)
                bus = await connect(private_bus.address)
                reply = await call(
                    bus,
                    destination=update1.SERVICE,
                    path=update1.PATH,
                    interface=update1.INTERFACE,
                    member="GetStatus",
                )
                await disconnect(bus)
                return reply

        reply = asyncio.run(scenario())
        assert reply.signature == "xdssx"
        assert reply.body == [0, 0.0, NEED_REBOOT, "", 0]

    def test_emitting_while_detached_is_an_error(self) -> None:
        """A fake that is not on a bus cannot emit anything."""
        fake = FakeUpdateEngine(UpdateStatus(0, 0.0, NEED_REBOOT, "", 0))
        with pytest.raises(BusError, match="not attached"):
            fake.emit_status_update()
        with pytest.raises(BusError, match="not attached"):
            fake.emit_malformed("short-body")

    def test_unknown_malformed_kind_is_a_key_error(self, private_bus: PrivateBus) -> None:
        """emit_malformed only knows the kinds listed in MALFORMED_STATUS_BODIES."""

        async def scenario() -> None:
            async with await SimulatedServices.start(private_bus.address) as sim:
                with pytest.raises(KeyError):
                    sim.update_engine.emit_malformed("no-such-kind")

        asyncio.run(scenario())


class TestFakeLogind:
    """The fake logind lists sessions as a(susso) and records reboots."""

    def test_session_paths_are_escaped_like_logind(self) -> None:
        """A leading digit and non-alphanumerics are _xx-escaped, like sd_bus_path_encode."""
        assert session_path("1") == "/org/freedesktop/login1/session/_31"
        assert session_path("c2") == "/org/freedesktop/login1/session/c2"
        assert session_path("a-b") == "/org/freedesktop/login1/session/a_2db"

    def test_list_sessions_signature_and_fields(self, private_bus: PrivateBus) -> None:
        """ListSessions gives (id, uid, user, seat, path) per session."""

        async def scenario() -> Message:
            async with await SimulatedServices.start(private_bus.address) as sim:
                sim.logind.add_session("7", "core", "tty1", uid=500)
                bus = await connect(private_bus.address)
                reply = await call(
                    bus,
                    destination=login1.SERVICE,
                    path=login1.PATH,
                    interface=login1.INTERFACE,
                    member="ListSessions",
                )
                await disconnect(bus)
                return reply

        reply = asyncio.run(scenario())
        assert reply.signature == "a(susso)"
        # Structs arrive as tuples from dbus-fast 5, as lists from Debian's 1.84.
        assert [[tuple(session) for session in reply.body[0]]] == [
            [("7", 500, "core", "seat0", session_path("7"))]
        ]

    def test_reboot_records_use_the_given_clock(self, private_bus: PrivateBus) -> None:
        """Reboot records carry the fake's clock reading, for ordering checks across hosts."""

        async def scenario() -> None:
            fake = FakeLogind(clock=lambda: 1234.5)
            bus = await connect(private_bus.address)
            fake.attach(bus)
            await bus.request_name(login1.SERVICE)
            client_bus = await connect(private_bus.address)
            await login1.LogindClient(client_bus).reboot()
            await disconnect(client_bus)
            fake.detach()
            await disconnect(bus)
            assert [record.at for record in fake.reboots] == [1234.5]

        asyncio.run(scenario())

    def test_duplicate_and_missing_sessions_are_errors(self) -> None:
        """add_session refuses a used id; remove_session refuses an unknown one."""
        fake = FakeLogind()
        fake.add_session("1", "core", "tty1")
        with pytest.raises(ValueError, match="already exists"):
            fake.add_session("1", "core", "tty2")
        with pytest.raises(KeyError):
            fake.remove_session("2")


class TestSimulatedServices:
    """Services own their names, can be restarted, and vanish when closed."""

    def test_names_follow_start_stop_and_close(self, private_bus: PrivateBus) -> None:
        """Names are owned while started, gone while stopped, back after restart."""

        async def scenario() -> list[bool]:
            seen: list[bool] = []
            sim = await SimulatedServices.start(private_bus.address, logind=False)
            seen.append(await _name_owner(private_bus.address, update1.SERVICE) is not None)
            seen.append(await _name_owner(private_bus.address, login1.SERVICE) is not None)
            await sim.start_logind()
            seen.append(await _name_owner(private_bus.address, login1.SERVICE) is not None)
            await sim.stop_update_engine()
            seen.append(await _name_owner(private_bus.address, update1.SERVICE) is not None)
            await sim.restart_logind()
            seen.append(await _name_owner(private_bus.address, login1.SERVICE) is not None)
            await sim.close()
            seen.append(await _name_owner(private_bus.address, login1.SERVICE) is not None)
            return seen

        assert asyncio.run(scenario()) == [True, False, True, False, True, False]

    def test_second_host_on_the_same_bus_cannot_own_the_names(
        self, private_bus: PrivateBus
    ) -> None:
        """Owning a name someone else holds is a BusError, and nothing is leaked."""

        async def scenario() -> None:
            async with await SimulatedServices.start(private_bus.address):
                with pytest.raises(BusError, match="cannot own com.coreos.update1"):
                    await SimulatedServices.start(private_bus.address)

        asyncio.run(scenario())

    def test_start_on_a_missing_bus_is_a_bus_error(self) -> None:
        """No daemon at the address: BusError naming it."""
        address = "unix:path=/nonexistent/locksmithd-test-socket"
        with pytest.raises(BusError, match="locksmithd-test-socket"):
            asyncio.run(SimulatedServices.start(address))
