"""Broadcast update_engine's "reboot needed" status, as `locksmithctl send-need-reboot` does."""

from __future__ import annotations

import asyncio

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from locksmithd.bus.connection import (
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    DEFAULT_CONNECT_TIMEOUT_S,
    call,
    connect,
    describe_address,
    disconnect,
)
from locksmithd.bus.update_engine import INTERFACE, PATH, STATUS_SIGNAL
from locksmithd.errors import BusError
from locksmithd.core.update_status import NEED_REBOOT, STATUS_SIGNATURE, UpdateStatus

NEED_REBOOT_STATUS = UpdateStatus(
    last_checked_time=0, progress=0.0, current_operation=NEED_REBOOT, new_version="", new_size=0
)


async def send_need_reboot(
    address: str | None, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
) -> None:
    """Emit a ``StatusUpdate`` signal saying a reboot is needed on ``address``.

    Returns once the bus daemon has routed the signal to its listeners.
    Raises ``BusError`` naming the address when connecting or sending fails.
    """
    bus = await connect(address, timeout_s)  # its BusError already names the address
    try:
        await _emit(bus, timeout_s)
    except BusError as exc:
        where = describe_address(address)
        raise BusError(f"cannot send need-reboot on {where}: {exc.message}") from exc
    finally:
        await disconnect(bus)


async def _emit(bus: MessageBus, timeout_s: float) -> None:
    signal = Message(
        message_type=MessageType.SIGNAL,
        path=PATH,
        interface=INTERFACE,
        member=STATUS_SIGNAL,
        signature=STATUS_SIGNATURE,
        body=NEED_REBOOT_STATUS.to_body(),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await bus.send(signal)
    except TimeoutError as exc:
        raise BusError(f"signal not written within {timeout_s} s") from exc
    except Exception as exc:  # dbus_fast passes on whatever broke the socket
        raise BusError(f"{type(exc).__name__}: {exc}") from exc
    # The daemon handles one connection's messages in order: once it has
    # answered this call, it has routed the signal, so closing is safe.
    await call(
        bus,
        destination=DBUS_SERVICE,
        path=DBUS_PATH,
        interface=DBUS_INTERFACE,
        member="GetId",
        timeout_s=timeout_s,
    )


def send_need_reboot_sync(
    address: str | None, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
) -> None:
    """Blocking ``send_need_reboot`` for command-line tools; must not run inside a loop."""
    asyncio.run(send_need_reboot(address, timeout_s))
