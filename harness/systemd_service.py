"""A fake systemd manager (SystemState, GetUnit, unit ActiveState) for tests on a private bus."""

# No ``from __future__ import annotations`` here: dbus_fast 5 evaluates string
# annotations itself and turns a ``-> None`` string into a broken signature.

from types import TracebackType
from typing import Self

from dbus_fast import DBusError, NameFlag, PropertyAccess, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from harness.dbus_compat import DBusObjectPath, DBusStr, DBusUInt64, dbus_method, dbus_property

from locksmithd.bus import systemd as systemd1
from locksmithd.bus.connection import connect, disconnect
from locksmithd.errors import BusError


class FakeUnit(ServiceInterface):
    """org.freedesktop.systemd1.Unit with read-only Id and ActiveState (set ``active_state``)."""

    def __init__(self, unit_id: str, active_state: str) -> None:
        super().__init__(systemd1.UNIT_INTERFACE)
        self.unit_id = unit_id  # not ``name``: ServiceInterface keeps its interface name there
        self.active_state = active_state

    @dbus_property(access=PropertyAccess.READ, name="Id")
    def dbus_id(self) -> DBusStr:
        return self.unit_id

    @dbus_property(access=PropertyAccess.READ, name="ActiveState")
    def dbus_active_state(self) -> DBusStr:
        return self.active_state


class FakeSystemdManager(ServiceInterface):
    """org.freedesktop.systemd1.Manager: ``SystemState`` and ``GetUnit`` over ``units``.

    ``get_unit_calls`` counts calls, so tests can see the bus was really used.
    """

    def __init__(self, system_state: str) -> None:
        super().__init__(systemd1.MANAGER_INTERFACE)
        self.system_state = system_state
        self.units: dict[str, FakeUnit] = {}
        self.get_unit_calls = 0
        self.userspace_timestamp_us = 2_000_000  # when init started (µs, monotonic); a container's differs per boot

    @dbus_property(access=PropertyAccess.READ, name="SystemState")
    def dbus_system_state(self) -> DBusStr:
        return self.system_state

    @dbus_property(access=PropertyAccess.READ, name="UserspaceTimestampMonotonic")
    def dbus_userspace_timestamp_monotonic(self) -> DBusUInt64:
        return self.userspace_timestamp_us

    @dbus_method(name="GetUnit")
    def dbus_get_unit(self, name: DBusStr) -> DBusObjectPath:
        self.get_unit_calls += 1
        if name not in self.units:
            raise DBusError(systemd1.NO_SUCH_UNIT, f"Unit {name} not loaded.")
        return unit_path(name)


class FakeSystemd:
    """A fake systemd manager owning org.freedesktop.systemd1 on its own connection.

    Start with ``await FakeSystemd.start(address, ...)`` and close with
    ``close()`` or ``async with``. ``stop()``/``resume()`` take the service
    off the bus and back, as a restart looks to clients.
    """

    def __init__(self, bus: MessageBus, manager: FakeSystemdManager) -> None:
        self.manager = manager
        self._bus = bus
        self._exported = False

    @classmethod
    async def start(cls, address: str, *, system_state: str = "running",
                    units: dict[str, str] | None = None) -> Self:
        """Connect to ``address``, load ``units`` (name -> ActiveState) and own the name.

        Raises ``BusError`` when connecting or owning the name fails.
        """
        bus = await connect(address)
        fake = cls(bus, FakeSystemdManager(system_state))
        try:
            for name, state in (units or {}).items():
                fake.set_unit(name, state)
            await fake.resume()
        except BaseException:
            await fake.close()
            raise
        return fake

    @property
    def system_state(self) -> str:
        """The ``SystemState`` clients read; assign to change it."""
        return self.manager.system_state

    @system_state.setter
    def system_state(self, state: str) -> None:
        self.manager.system_state = state

    def set_unit(self, name: str, active_state: str) -> None:
        """Load ``name`` with ``active_state``, or change the state of a loaded unit."""
        unit = self.manager.units.get(name)
        if unit is not None:
            unit.active_state = active_state
            return
        unit = FakeUnit(name, active_state)
        self.manager.units[name] = unit
        if self._exported:
            self._bus.export(unit_path(name), unit)

    def unload_unit(self, name: str) -> None:
        """Forget ``name``: GetUnit answers NoSuchUnit. Raises ``KeyError`` if not loaded."""
        unit = self.manager.units.pop(name)
        if self._exported:
            self._bus.unexport(unit_path(name), unit)

    async def resume(self) -> None:
        """Export the manager and its units and own org.freedesktop.systemd1."""
        if not self._exported:
            self._bus.export(systemd1.PATH, self.manager)
            for name, unit in self.manager.units.items():
                self._bus.export(unit_path(name), unit)
            self._exported = True
        try:
            reply = await self._bus.request_name(systemd1.SERVICE, NameFlag.DO_NOT_QUEUE)
        except Exception as exc:
            raise BusError(f"cannot own {systemd1.SERVICE}: {type(exc).__name__}: {exc}") from exc
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise BusError(f"cannot own {systemd1.SERVICE}: {reply.name}")

    async def stop(self) -> None:
        """Release org.freedesktop.systemd1 and unexport everything; ``resume()`` undoes it."""
        try:
            await self._bus.release_name(systemd1.SERVICE)
        except Exception as exc:
            raise BusError(f"cannot release {systemd1.SERVICE}: {type(exc).__name__}: {exc}") from exc
        self._unexport()

    async def close(self) -> None:
        """Disconnect; the name vanishes from the bus. Never raises."""
        self._unexport()
        await disconnect(self._bus)

    def _unexport(self) -> None:
        if not self._exported:
            return
        for name, unit in self.manager.units.items():
            self._bus.unexport(unit_path(name), unit)
        self._bus.unexport(systemd1.PATH, self.manager)
        self._exported = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def unit_path(name: str) -> str:
    """systemd's object path for a unit, escaped like ``bus_label_escape``.

    Every byte but ASCII letters and digits (and a leading digit) becomes
    ``_xx``: ``foo.service`` -> ``/org/freedesktop/systemd1/unit/foo_2eservice``.
    """
    escaped = "".join(
        chr(byte)
        if chr(byte).isascii() and chr(byte).isalnum() and not (i == 0 and chr(byte).isdigit())
        else f"_{byte:02x}"
        for i, byte in enumerate(name.encode())
    )
    return f"{systemd1.PATH}/unit/{escaped or '_'}"
