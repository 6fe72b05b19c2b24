"""UpdateEngineWatcher, connect and send_need_reboot against a real private dbus-daemon."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from locksmithd.bus import UpdateEngineWatcher, connect, disconnect, send_need_reboot
from locksmithd.bus import update_engine as update1
from locksmithd.bus.connection import call, error_of
from locksmithd.bus.need_reboot import send_need_reboot_sync
from locksmithd.errors import BusError
from harness.bus import PrivateBus
from harness.services import MALFORMED_STATUS_BODIES, SimulatedServices
from locksmithd.core.update_status import NEED_REBOOT, UpdateStatus
from tests.fixtures.dbus_fixtures import StatusRecorder

DOWNLOADING = UpdateStatus(1700000000, 0.25, "UPDATE_STATUS_DOWNLOADING", "3510.2.0", 123)


@asynccontextmanager
async def watching(address: str, recorder: StatusRecorder) -> AsyncIterator[UpdateEngineWatcher]:
    """A started watcher on its own connection; stopped and closed on exit."""
    bus = await connect(address)
    watcher = UpdateEngineWatcher(recorder, call_timeout_s=2.0)
    try:
        await watcher.start(bus)
        yield watcher
    finally:
        await watcher.stop()
        await disconnect(bus)


def test_connect_to_a_missing_socket_names_the_address() -> None:
    """A bus nobody listens on is a BusError that says which address failed."""
    address = "unix:path=/nonexistent/locksmithd-test-socket"

    with pytest.raises(BusError, match="/nonexistent/locksmithd-test-socket"):
        asyncio.run(connect(address, timeout_s=1.0))


def test_connect_to_a_silent_socket_times_out(tmp_path: Path) -> None:
    """A socket that accepts but never authenticates fails within the timeout."""
    path = tmp_path / "silent"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        started = time.monotonic()
        with pytest.raises(BusError, match=f"cannot connect to bus unix:path={path}"):
            asyncio.run(connect(f"unix:path={path}", timeout_s=0.3))
    assert time.monotonic() - started < 2.0


def test_connect_none_uses_the_system_bus_address(system_bus_address: str) -> None:
    """address=None reaches the bus DBUS_SYSTEM_BUS_ADDRESS points to."""

    async def scenario() -> str | None:
        bus = await connect(None)
        name = bus.unique_name
        await disconnect(bus)
        return name

    assert asyncio.run(scenario())


def test_get_status_when_update_engine_runs(private_bus: PrivateBus) -> None:
    """get_status returns update_engine's current status; start delivers it too."""

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address, status=DOWNLOADING) as sim:
            recorder = StatusRecorder()
            async with watching(private_bus.address, recorder) as watcher:
                assert await watcher.get_status() == DOWNLOADING
                assert recorder.statuses == [DOWNLOADING]
                assert sim.update_engine.get_status_calls == 2

    asyncio.run(scenario())


def test_get_status_when_update_engine_is_absent(private_bus: PrivateBus) -> None:
    """get_status returns None and start delivers nothing when nobody owns the name."""

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address, update_engine=False):
            recorder = StatusRecorder()
            async with watching(private_bus.address, recorder) as watcher:
                assert await watcher.get_status() is None
                assert recorder.statuses == []

    asyncio.run(scenario())


def test_get_status_before_start_is_a_bus_error() -> None:
    """A watcher that was never started has no bus to ask."""
    watcher = UpdateEngineWatcher(StatusRecorder())

    with pytest.raises(BusError, match="not started"):
        asyncio.run(watcher.get_status())


def test_status_signal_is_delivered(private_bus: PrivateBus) -> None:
    """A StatusUpdate signal reaches on_status with its decoded status."""

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address) as sim:
            recorder = StatusRecorder()
            async with watching(private_bus.address, recorder):
                sim.update_engine.emit_status_update(NEED_REBOOT)
                statuses = await recorder.wait_for_count(2)
        assert statuses[1].needs_reboot

    asyncio.run(scenario())


def test_malformed_signals_are_logged_and_ignored(
    private_bus: PrivateBus, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong signature, short body, wrong types: one warning each, nothing delivered;
    the good signal sent after them still arrives."""

    async def scenario() -> list[UpdateStatus]:
        async with await SimulatedServices.start(private_bus.address) as sim:
            recorder = StatusRecorder()
            async with watching(private_bus.address, recorder):
                for kind in MALFORMED_STATUS_BODIES:
                    sim.update_engine.emit_malformed(kind)
                sim.update_engine.emit_status_update(NEED_REBOOT)
                return await recorder.wait_for_count(2)

    with caplog.at_level(logging.WARNING, logger="locksmithd.bus"):
        statuses = asyncio.run(scenario())

    assert [status.current_operation for status in statuses] == ["UPDATE_STATUS_IDLE", NEED_REBOOT]
    warnings = [
        r for r in caplog.records if r.name == "locksmithd.bus" and "malformed" in r.message
    ]
    assert len(warnings) == len(MALFORMED_STATUS_BODIES)
    assert all("\n" not in r.getMessage() for r in warnings)


def test_update_engine_appearing_later_is_queried(private_bus: PrivateBus) -> None:
    """When com.coreos.update1 gets an owner after start, GetStatus is called again."""

    async def scenario() -> None:
        async with await SimulatedServices.start(
            private_bus.address, update_engine=False, status=DOWNLOADING
        ) as sim:
            recorder = StatusRecorder()
            async with watching(private_bus.address, recorder):
                assert recorder.statuses == []
                await sim.start_update_engine()
                assert await recorder.wait_for_count(1) == [DOWNLOADING]
                assert sim.update_engine.get_status_calls == 1

    asyncio.run(scenario())


def test_update_engine_restart_is_queried(private_bus: PrivateBus) -> None:
    """A restarted update_engine is asked for its status once it is back."""

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address) as sim:
            recorder = StatusRecorder()
            async with watching(private_bus.address, recorder):
                await recorder.wait_for_count(1)
                sim.update_engine.set_operation(NEED_REBOOT)  # changed while "down"
                await sim.restart_update_engine()
                statuses = await recorder.wait_for_count(2)
                assert statuses[1].needs_reboot
                assert sim.update_engine.get_status_calls == 2

    asyncio.run(scenario())


def test_failing_callback_does_not_stop_delivery(
    private_bus: PrivateBus, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_status is logged; later statuses are still delivered."""

    async def scenario() -> list[UpdateStatus]:
        recorder = StatusRecorder()

        def on_status(status: UpdateStatus) -> None:
            recorder(status)
            if len(recorder.statuses) == 1:
                raise RuntimeError("consumer bug")

        async with await SimulatedServices.start(private_bus.address) as sim:
            bus = await connect(private_bus.address)
            watcher = UpdateEngineWatcher(on_status)
            await watcher.start(bus)
            sim.update_engine.emit_status_update(NEED_REBOOT)
            statuses = await recorder.wait_for_count(2)
            await watcher.stop()
            await disconnect(bus)
            return statuses

    with caplog.at_level(logging.ERROR, logger="locksmithd.bus"):
        statuses = asyncio.run(scenario())

    assert statuses[1].needs_reboot
    assert any("callback failed" in r.message for r in caplog.records)


def test_stopped_watcher_delivers_nothing(private_bus: PrivateBus) -> None:
    """After stop() signals are no longer delivered, and start() may not be repeated twice."""

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address) as sim:
            bus = await connect(private_bus.address)
            recorder = StatusRecorder()
            watcher = UpdateEngineWatcher(recorder)
            await watcher.start(bus)
            with pytest.raises(BusError, match="already started"):
                await watcher.start(bus)
            await watcher.stop()
            sim.update_engine.emit_status_update(NEED_REBOOT)
            await _round_trip_to_update_engine(bus)  # the signal, if routed, came first
            assert len(recorder.statuses) == 1
            await disconnect(bus)

    asyncio.run(scenario())


def test_send_need_reboot_reaches_the_watcher(private_bus: PrivateBus) -> None:
    """send_need_reboot emits a StatusUpdate that the watcher delivers as needing a reboot."""

    async def scenario() -> None:
        recorder = StatusRecorder()
        async with watching(private_bus.address, recorder):
            await send_need_reboot(private_bus.address)
            await asyncio.to_thread(send_need_reboot_sync, private_bus.address)
            statuses = await recorder.wait_for_count(2)
        assert all(status.needs_reboot for status in statuses)

    asyncio.run(scenario())


def test_send_need_reboot_to_a_missing_bus_names_the_address() -> None:
    """A failed send is a BusError whose message names the bus address."""
    address = "unix:path=/nonexistent/locksmithd-test-socket"

    with pytest.raises(BusError, match="/nonexistent/locksmithd-test-socket"):
        send_need_reboot_sync(address, timeout_s=1.0)


async def _round_trip_to_update_engine(bus: MessageBus) -> None:
    # update_engine's reply comes after any signal it sent before: a barrier.
    reply = await call(
        bus,
        destination=update1.SERVICE,
        path=update1.PATH,
        interface=update1.INTERFACE,
        member="GetStatus",
    )
    assert error_of(reply) is None
