"""Read systemd's system state and unit states from its manager (org.freedesktop.systemd1), and hear them change."""

from __future__ import annotations

import logging
from collections.abc import Callable

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from locksmithd.bus.connection import (
    DEFAULT_CALL_TIMEOUT_S,
    SERVICE_ABSENT_ERRORS,
    add_match,
    call,
    error_of,
    remove_match,
)
from locksmithd.core.health_policy import BOOT_FINISHED_SIGNAL, NOT_LOADED
from locksmithd.errors import BusError

log = logging.getLogger("locksmithd.bus")

SERVICE = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
ALREADY_SUBSCRIBED = "org.freedesktop.systemd1.AlreadySubscribed"
UNITS_PATH = f"{PATH}/unit"
CHANGE_SIGNALS = frozenset({BOOT_FINISHED_SIGNAL, "JobRemoved", "UnitNew", "UnitRemoved", "Reloading"})
"""The manager's signals after which the system state or a unit's state may read differently: the boot
finished (``starting`` -> ``running``/``degraded``), a job ended (a unit started or failed), a unit was loaded
or forgotten, the configuration was reloaded."""
MANAGER_MATCH_RULE = f"type='signal',sender='{SERVICE}',path='{PATH}',interface='{MANAGER_INTERFACE}'"
UNIT_MATCH_RULE = (f"type='signal',sender='{SERVICE}',interface='{PROPERTIES_INTERFACE}',member='PropertiesChanged',"
                   f"path_namespace='{UNITS_PATH}'")
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


def is_change(msg: Message) -> bool:
    """Whether ``msg`` is one of systemd's signals after which what the health checks read may differ.

    ``CHANGE_SIGNALS`` of the manager, and ``PropertiesChanged`` of a unit's
    ``org.freedesktop.systemd1.Unit`` interface (its ActiveState, e.g. after
    ``systemctl reset-failed``; the type-specific interfaces change alongside).
    """
    if msg.message_type is not MessageType.SIGNAL:
        return False
    if msg.interface == MANAGER_INTERFACE:
        return msg.path == PATH and msg.member in CHANGE_SIGNALS
    return (msg.interface == PROPERTIES_INTERFACE and msg.member == "PropertiesChanged"
            and (msg.path or "").startswith(UNITS_PATH + "/") and bool(msg.body) and msg.body[0] == UNIT_INTERFACE)


class SystemdChanges:
    """Calls ``on_change(member)`` for each of systemd's signals that ``is_change`` accepts, between start and stop.

    systemd sends those signals only to subscribed clients: ``start`` adds the
    match rules (the manager's signals; PropertiesChanged of unit objects) and
    calls ``Manager.Subscribe()`` (allowed to every user by systemd's D-Bus
    policy); ``stop`` calls ``Unsubscribe()`` and removes the rules. One
    signal is one call: debouncing is the caller's. ``on_change`` runs on the
    bus reader and must be quick and must not raise.
    """

    def __init__(self, bus: MessageBus, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self._bus = bus
        self._call_timeout_s = call_timeout_s
        self._on_change: Callable[[str], None] | None = None
        self._rules: list[str] = []

    async def start(self, on_change: Callable[[str], None]) -> None:
        """Follow systemd's changes. Raises ``BusError`` (leaving nothing behind) when the bus refuses a
        rule, systemd is absent, or Subscribe fails; being subscribed already is fine."""
        if self._on_change is not None:
            raise BusError("already following systemd's changes")
        self._on_change = on_change
        self._bus.add_message_handler(self._handle)
        try:
            for rule in (MANAGER_MATCH_RULE, UNIT_MATCH_RULE):
                await add_match(self._bus, rule, self._call_timeout_s)
                self._rules.append(rule)
            reply = await call(self._bus, destination=SERVICE, path=PATH, interface=MANAGER_INTERFACE,
                               member="Subscribe", timeout_s=self._call_timeout_s)
            if (error := error_of(reply)) is not None and error[0] != ALREADY_SUBSCRIBED:
                raise _failed("the changes", error, verb="follow")
        except BusError:
            await self._undo()
            raise
        except BaseException:  # cancelled: no more calls, but hear nothing more either
            self._bus.remove_message_handler(self._handle)
            self._on_change = None
            raise

    async def stop(self) -> None:
        """Stop following (Unsubscribe, remove the rules); never raises, does nothing when not started."""
        if self._on_change is None:
            return
        self._bus.remove_message_handler(self._handle)
        if self._bus.connected:
            try:
                await call(self._bus, destination=SERVICE, path=PATH, interface=MANAGER_INTERFACE,
                           member="Unsubscribe", timeout_s=self._call_timeout_s)
            except BusError as exc:
                log.debug("could not unsubscribe from systemd: %s", exc.one_line())
        await self._undo()

    async def _undo(self) -> None:
        self._bus.remove_message_handler(self._handle)
        self._on_change = None
        rules, self._rules = self._rules, []
        for rule in rules if self._bus.connected else ():
            try:
                await remove_match(self._bus, rule, self._call_timeout_s)
            except BusError as exc:
                log.debug("could not remove match rule: %s", exc.one_line())

    def _handle(self, msg: Message) -> None:
        # Returns None: never marks a message handled, other handlers see it too.
        if self._on_change is not None and is_change(msg):
            self._on_change(msg.member or "")


def _failed(what: str, error: tuple[str, str], *, verb: str = "read") -> BusError:
    name, text = error
    if name in SERVICE_ABSENT_ERRORS:
        return BusError(f"cannot {verb} {what}: systemd ({SERVICE}) is not on the bus")
    return BusError(f"cannot {verb} {what} from systemd: {name}: {text}")
