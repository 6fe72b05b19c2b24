"""Read systemd's system state and unit states from its manager (org.freedesktop.systemd1)."""

from __future__ import annotations

from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from locksmithd.bus.connection import DEFAULT_CALL_TIMEOUT_S, SERVICE_ABSENT_ERRORS, call, error_of
from locksmithd.core.health_policy import NOT_LOADED
from locksmithd.errors import BusError

SERVICE = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
# A unit garbage-collected between GetUnit and reading its property: its
# object is gone, which means the same as NoSuchUnit.
_VANISHED_OBJECT_ERRORS = frozenset({NO_SUCH_UNIT, "org.freedesktop.DBus.Error.UnknownObject"})


class SystemdClient:
    """A client of systemd's manager on one connection.

    Every method raises ``BusError`` with one clear line when systemd is not
    on the bus, answers with an error, answers with the wrong type, or does
    not answer within the call timeout.
    """

    def __init__(self, bus: MessageBus, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self._bus = bus
        self._call_timeout_s = call_timeout_s

    async def system_state(self) -> str:
        """The manager's ``SystemState`` ("starting", "running", "degraded", ...)."""
        state = await self._get_string(PATH, MANAGER_INTERFACE, "SystemState", "the system state")
        if state is None:
            raise BusError(f"cannot read the system state: systemd has no object {PATH}")
        return state

    async def unit_active_state(self, name: str) -> str:
        """The unit's ``ActiveState`` ("active", "failed", ...), or ``NOT_LOADED``.

        A unit systemd has not loaded (``NoSuchUnit``) is not a bus failure:
        it is reported as ``NOT_LOADED``, which is not active.
        """
        reply = await self._call(PATH, MANAGER_INTERFACE, "GetUnit", "s", [name], f"unit {name}")
        if (error := error_of(reply)) is not None:
            if error[0] == NO_SUCH_UNIT:
                return NOT_LOADED
            raise _failed(f"unit {name}", error)
        if reply.signature != "o":
            raise BusError(f"{MANAGER_INTERFACE}.GetUnit({name!r}) returned {reply.signature!r}, expected 'o'")
        state = await self._get_string(str(reply.body[0]), UNIT_INTERFACE, "ActiveState", f"unit {name}")
        return NOT_LOADED if state is None else state

    async def userspace_timestamp_monotonic_us(self) -> int:
        """The manager's ``UserspaceTimestampMonotonic``: when this system's init started (µs, monotonic clock).

        Different for every boot of a container (its kernel's clock goes on),
        readable by any user; 0 when systemd does not know it.
        """
        prop, what = "UserspaceTimestampMonotonic", "when init started"
        reply = await self._call(PATH, PROPERTIES_INTERFACE, "Get", "ss", [MANAGER_INTERFACE, prop], what)
        if (error := error_of(reply)) is not None:
            raise _failed(what, error)
        value = reply.body[0] if reply.signature == "v" else None
        if not isinstance(value, Variant) or value.signature != "t":
            raise BusError(f"cannot read {what}: {MANAGER_INTERFACE}.{prop} is not a uint64")
        return int(value.value)

    async def _get_string(self, path: str, interface: str, prop: str, what: str) -> str | None:
        """The string property, or ``None`` when the object does not exist."""
        reply = await self._call(path, PROPERTIES_INTERFACE, "Get", "ss", [interface, prop], what)
        if (error := error_of(reply)) is not None:
            if error[0] in _VANISHED_OBJECT_ERRORS:
                return None
            raise _failed(what, error)
        value = reply.body[0] if reply.signature == "v" else None
        if not isinstance(value, Variant) or not isinstance(value.value, str):
            raise BusError(f"cannot read {what}: {interface}.{prop} is not a string")
        return value.value

    async def _call(self, path: str, interface: str, member: str, signature: str,
                    body: list[object], what: str) -> Message:
        try:
            return await call(self._bus, destination=SERVICE, path=path, interface=interface,
                              member=member, signature=signature, body=body,
                              timeout_s=self._call_timeout_s)
        except BusError as exc:
            raise BusError(f"cannot read {what} from systemd: {exc.message}") from exc


def _failed(what: str, error: tuple[str, str]) -> BusError:
    name, text = error
    if name in SERVICE_ABSENT_ERRORS:
        return BusError(f"cannot read {what}: systemd ({SERVICE}) is not on the bus")
    return BusError(f"cannot read {what} from systemd: {name}: {text}")
