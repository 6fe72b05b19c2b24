"""A fake systemd manager (SystemState, GetUnit, ActiveState, Subscribe and its signals) on a private bus."""

# No ``from __future__ import annotations`` here: dbus_fast 5 evaluates string
# annotations itself and turns a ``-> None`` string into a broken signature.

from types import TracebackType
from typing import Self

from dbus_fast import DBusError, Message, MessageType, NameFlag, PropertyAccess, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from harness.dbus_compat import DBusObjectPath, DBusStr, DBusUInt64, dbus_method, dbus_property

from locksmithd.bus import systemd as systemd1
from locksmithd.bus.connection import DBUS_INTERFACE, DBUS_PATH, DBUS_SERVICE, add_match, connect, disconnect
from locksmithd.core.health_policy import WAIT_STATES
from locksmithd.errors import BusError

OWNER_GONE_RULE = f"type='signal',sender='{DBUS_SERVICE}',interface='{DBUS_INTERFACE}',member='NameOwnerChanged'"
NOT_SUBSCRIBED = "org.freedesktop.systemd1.NotSubscribed"
# Plausible StartupFinished times (firmware, loader, kernel, initrd, userspace, total), microseconds.
STARTUP_TIMES_US = (0, 0, 1_200_000, 0, 2_300_000, 3_500_000)


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

    Like systemd (252), it sends its signals only while some client is
    subscribed (``Manager.Subscribe()``; a client leaving the bus is
    unsubscribed; a second Subscribe is ``AlreadySubscribed``), as broadcasts:
    ``StartupFinished`` when the system state leaves ``initializing``/
    ``starting``, ``UnitNew``/``UnitRemoved`` when a unit is loaded or
    forgotten, ``PropertiesChanged`` of ``org.freedesktop.systemd1.Unit`` on
    the unit's object when its ActiveState changes, and ``JobRemoved`` from
    ``finish_job``. A change of the system state between other states is what a
    unit's change causes in systemd (``systemctl reset-failed`` makes a
    degraded system running): the fake sends that unit's PropertiesChanged.
    With ``signals=False`` it accepts Subscribe but sends nothing, as a
    systemd whose signals never reach the client. ``emitted`` lists the
    members of the signals sent.
    """

    def __init__(self, bus: MessageBus, manager: FakeSystemdManager, *, signals: bool = True) -> None:
        self.manager = manager
        self.signals = signals
        self.subscribers: set[str] = set()
        self.emitted: list[str] = []
        self._bus = bus
        self._exported = False
        self._job_id = 0
        bus.add_message_handler(self._handle)

    @classmethod
    async def start(cls, address: str, *, system_state: str = "running",
                    units: dict[str, str] | None = None, signals: bool = True) -> Self:
        """Connect to ``address``, load ``units`` (name -> ActiveState) and own the name.

        Raises ``BusError`` when connecting or owning the name fails.
        """
        bus = await connect(address)
        fake = cls(bus, FakeSystemdManager(system_state), signals=signals)
        try:
            await add_match(bus, OWNER_GONE_RULE)  # to forget subscribers that left, as sd_bus_track does
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
        self.set_system_state(state)

    def set_system_state(self, state: str, *, unit: str = "example.service") -> None:
        """Change ``SystemState`` and signal it as systemd would (see the class docstring).

        The end of the boot is ``StartupFinished``; any other change is sent
        as ``unit``'s PropertiesChanged (ActiveState ``failed`` on the way to
        ``degraded``, else ``inactive``, as after ``systemctl reset-failed``).
        """
        previous, self.manager.system_state = self.manager.system_state, state
        if previous == state:
            return
        if previous in WAIT_STATES and state not in WAIT_STATES:
            self._emit(systemd1.PATH, systemd1.MANAGER_INTERFACE, "StartupFinished", "tttttt", list(STARTUP_TIMES_US))
        else:
            self._unit_changed(unit, "failed" if state == "degraded" else "inactive")

    def set_unit(self, name: str, active_state: str) -> None:
        """Load ``name`` with ``active_state`` (UnitNew), or change the state of a loaded unit (PropertiesChanged)."""
        unit = self.manager.units.get(name)
        if unit is not None:
            if unit.active_state != active_state:
                unit.active_state = active_state
                self._unit_changed(name, active_state)
            return
        unit = FakeUnit(name, active_state)
        self.manager.units[name] = unit
        if self._exported:
            self._bus.export(unit_path(name), unit)
            self._emit(systemd1.PATH, systemd1.MANAGER_INTERFACE, "UnitNew", "so", [name, unit_path(name)])

    def unload_unit(self, name: str) -> None:
        """Forget ``name`` (UnitRemoved): GetUnit answers NoSuchUnit. Raises ``KeyError`` if not loaded."""
        unit = self.manager.units.pop(name)
        if self._exported:
            self._bus.unexport(unit_path(name), unit)
            self._emit(systemd1.PATH, systemd1.MANAGER_INTERFACE, "UnitRemoved", "so", [name, unit_path(name)])

    def finish_job(self, unit: str, result: str = "done") -> None:
        """Send ``JobRemoved`` for a job of ``unit`` that ended with ``result`` ("done", "failed", ...)."""
        self._job_id += 1
        job = f"{systemd1.PATH}/job/{self._job_id}"
        self._emit(systemd1.PATH, systemd1.MANAGER_INTERFACE, "JobRemoved", "uoss", [self._job_id, job, unit, result])

    def _unit_changed(self, name: str, active_state: str) -> None:
        changed = {"ActiveState": Variant("s", active_state)}
        self._emit(unit_path(name), systemd1.PROPERTIES_INTERFACE, "PropertiesChanged", "sa{sv}as",
                   [systemd1.UNIT_INTERFACE, changed, []])

    def _emit(self, path: str, interface: str, member: str, signature: str, body: list[object]) -> None:
        """Broadcast a signal, as systemd does, only while someone is subscribed."""
        if not (self.signals and self.subscribers and self._exported and self._bus.connected):
            return
        self._bus.send(Message.new_signal(path, interface, member, signature, body))
        self.emitted.append(member)

    def _handle(self, msg: Message) -> Message | None:
        """Subscribe and Unsubscribe (which need the caller's name), and callers leaving the bus."""
        if msg.message_type is MessageType.SIGNAL:
            if (msg.member == "NameOwnerChanged" and msg.sender == DBUS_SERVICE and msg.path == DBUS_PATH
                    and msg.signature == "sss" and not msg.body[2]):
                self.subscribers.discard(msg.body[0])
            return None
        if (msg.message_type is not MessageType.METHOD_CALL or not self._exported or msg.path != systemd1.PATH
                or msg.interface != systemd1.MANAGER_INTERFACE or msg.member not in ("Subscribe", "Unsubscribe")):
            return None
        sender = msg.sender or ""
        if msg.member == "Subscribe":
            if sender in self.subscribers:
                return Message.new_error(msg, systemd1.ALREADY_SUBSCRIBED, "Client is already subscribed.")
            self.subscribers.add(sender)
        elif sender in self.subscribers:
            self.subscribers.discard(sender)
        else:
            return Message.new_error(msg, NOT_SUBSCRIBED, "Client is not subscribed.")
        return Message.new_method_return(msg)

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
        self._bus.remove_message_handler(self._handle)
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
