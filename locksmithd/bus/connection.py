"""Opening, calling over and closing D-Bus connections, with errors mapped to BusError."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from locksmithd.core.names import MAX_SHOWN_CHARS, printable
from locksmithd.errors import BusError

log = logging.getLogger("locksmithd.bus")

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_CALL_TIMEOUT_S = 10.0
DISCONNECT_TIMEOUT_S = 2.0

_AUTH_TIMEOUT = "auth_timeout" in inspect.signature(MessageBus.__init__).parameters
"""dbus-fast 5 takes ``auth_timeout``; Debian bookworm's 1.84 does not (``asyncio.timeout`` bounds both)."""

DBUS_SERVICE = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
DBUS_INTERFACE = "org.freedesktop.DBus"

SERVICE_ABSENT_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    }
)
"""Error names meaning "nobody owns the destination name" (service not running)."""


def describe_address(address: str | None) -> str:
    """A human name for a bus address (escaped, bounded); ``None`` is the default system bus."""
    return "the system bus" if address is None else f"bus {printable(address, MAX_SHOWN_CHARS)}"


async def connect(address: str | None, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> MessageBus:
    """Connect and authenticate to ``address`` (``None``: the system bus).

    The default system bus honours ``DBUS_SYSTEM_BUS_ADDRESS`` (read by
    dbus_fast, not by us). Raises ``BusError`` naming the address when the
    address is invalid, the socket refuses, authentication fails, or the
    whole handshake takes longer than ``timeout_s``.
    """
    where = describe_address(address)
    try:
        # dbus_fast >= 5 connects in connect(), not in the constructor, but the
        # constructor already parses the address and may raise (1.84 also opens
        # the socket there).
        bus = _new_bus(address, timeout_s)
    except Exception as exc:  # OSError, InvalidAddressError...
        raise BusError(f"cannot connect to {where}: {_why(exc)}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            return await bus.connect()
    except TimeoutError as exc:
        _close_socket(bus)
        raise BusError(f"cannot connect to {where}: no answer within {timeout_s} s") from exc
    except Exception as exc:  # OSError, AuthError, DBusError...
        _close_socket(bus)
        raise BusError(f"cannot connect to {where}: {_why(exc)}") from exc


def _new_bus(address: str | None, timeout_s: float) -> MessageBus:
    if _AUTH_TIMEOUT:
        if address is None:
            return MessageBus(bus_type=BusType.SYSTEM, auth_timeout=timeout_s)
        return MessageBus(bus_address=address, auth_timeout=timeout_s)
    if address is None:
        return _ClosingMessageBus(bus_type=BusType.SYSTEM)
    return _ClosingMessageBus(bus_address=address)


class _ClosingMessageBus(MessageBus):
    """dbus-fast 1.84 (Debian bookworm) opens its socket in the constructor and leaves it open on failure."""

    def _setup_socket(self) -> None:
        try:
            super()._setup_socket()  # type: ignore[misc]  # 1.84 only; 5.x connects in connect()
        except BaseException:
            _close_socket(self)
            raise


def _close_socket(bus: MessageBus) -> None:
    """Release the socket of a bus whose connection failed (dbus-fast 1.84 keeps it; 5.x closed it already)."""
    if _AUTH_TIMEOUT:
        return
    for name in ("_stream", "_sock"):
        resource = getattr(bus, name, None)
        if resource is not None:
            try:
                resource.close()
            except OSError:
                pass


async def disconnect(bus: MessageBus) -> None:
    """Close ``bus`` and wait until its socket is released; never raises.

    Waiting matters: a bus dropped without it leaks its socket until garbage
    collection (a ResourceWarning under ``filterwarnings = error``).
    """
    if bus.unique_name is None:
        return
    bus.disconnect()
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # untyped upstream
    except Exception as exc:  # a broken connection is as closed as a clean one
        log.debug("disconnect from D-Bus ended with %s", _why(exc))


async def call(
    bus: MessageBus,
    *,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: Sequence[object] = (),
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
) -> Message:
    """Call a method and return its reply, which may be an ERROR message.

    D-Bus error replies are returned, not raised, so that callers decide what
    an error name means to them (see ``error_of``). Raises ``BusError`` when
    no reply comes within ``timeout_s`` or the connection fails.
    """
    what = f"{interface}.{member} on {destination}"
    if not bus.connected:
        raise BusError(f"{what}: the D-Bus connection is closed")
    message = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=list(body),
    )
    try:
        async with asyncio.timeout(timeout_s):
            reply: Message | None = await bus.call(message)
    except TimeoutError as exc:
        raise BusError(f"{what}: no reply within {timeout_s} s") from exc
    except Exception as exc:  # dbus_fast passes on whatever broke the socket
        raise BusError(f"{what}: {_why(exc)}") from exc
    if reply is None:  # dbus_fast answers pending calls with None on a clean close
        raise BusError(f"{what}: the D-Bus connection closed before the reply")
    return reply


async def call_if_present(
    bus: MessageBus,
    *,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: Sequence[object] = (),
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
) -> Message | None:
    """Call a method of a service that may not be running: its absence is no answer.

    Returns the (non-error) reply, or ``None`` when nobody owns
    ``destination`` (``SERVICE_ABSENT_ERRORS``). Raises ``BusError`` naming
    the method for any other error reply, a timeout or a broken connection.
    """
    reply = await call(bus, destination=destination, path=path, interface=interface, member=member,
                       signature=signature, body=body, timeout_s=timeout_s)
    if (error := error_of(reply)) is not None:
        name, text = error
        if name in SERVICE_ABSENT_ERRORS:
            return None
        raise BusError(f"{interface}.{member} on {destination} failed: {name}: {text}")
    return reply


def error_of(reply: Message) -> tuple[str, str] | None:
    """``(error name, error text)`` of an ERROR reply, ``None`` for a normal reply."""
    if reply.message_type != MessageType.ERROR:
        return None
    text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
    return (reply.error_name or "unknown", text)


async def add_match(bus: MessageBus, rule: str, timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
    """Ask the bus daemon to route messages matching ``rule`` to ``bus``.

    Raises ``BusError`` when the daemon rejects the rule or does not answer.
    """
    await _bus_driver_call(bus, "AddMatch", rule, timeout_s)


async def remove_match(
    bus: MessageBus, rule: str, timeout_s: float = DEFAULT_CALL_TIMEOUT_S
) -> None:
    """Undo ``add_match``; raises ``BusError`` like it."""
    await _bus_driver_call(bus, "RemoveMatch", rule, timeout_s)


async def _bus_driver_call(bus: MessageBus, member: str, rule: str, timeout_s: float) -> None:
    reply = await call(
        bus,
        destination=DBUS_SERVICE,
        path=DBUS_PATH,
        interface=DBUS_INTERFACE,
        member=member,
        signature="s",
        body=[rule],
        timeout_s=timeout_s,
    )
    if (error := error_of(reply)) is not None:
        raise BusError(f"{member} {rule!r} failed: {error[0]}: {error[1]}")


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
