"""Fake update_engine and logind services for a simulated host on a private bus."""

# No ``from __future__ import annotations`` here: dbus_fast 5 evaluates string
# annotations itself and turns a ``-> None`` string into a broken signature.

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Annotated, Any, Self

from dbus_fast import DBusError, Message, MessageType, NameFlag, PropertyAccess, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from harness.dbus_compat import DBusBool, DBusSignature, DBusStr, dbus_method, dbus_property, dbus_signal

from locksmithd.bus import logind as login1
from locksmithd.bus import update_engine as update1
from locksmithd.bus.connection import connect, disconnect
from locksmithd.errors import BusError
from locksmithd.core.update_status import IDLE, NEED_REBOOT, UpdateStatus
from harness.systemd_service import FakeSystemd

log = logging.getLogger("harness.services")

StatusBody = Annotated[list[Any], DBusSignature("xdssx")]
SessionList = Annotated[list[list[Any]], DBusSignature("a(susso)")]
InhibitorList = Annotated[list[list[Any]], DBusSignature("a(ssssuu)")]
RebootHook = Callable[[], Awaitable[None] | None]

IDLE_STATUS = UpdateStatus(0, 0.0, IDLE, "", 0)

MALFORMED_STATUS_BODIES: dict[str, tuple[str, list[Any]]] = {
    "wrong-signature": ("s", [NEED_REBOOT]),
    "short-body": ("xd", [0, 0.0]),
    "wrong-types": ("sdssd", ["0", 0.0, NEED_REBOOT, "", 0.0]),
    "extra-field": ("xdssxs", [0, 0.0, NEED_REBOOT, "", 0, "extra"]),
    "empty-body": ("", []),
}
"""``emit_malformed`` kinds -> (signature, body); most carry NEED_REBOOT to catch lax parsers."""


class FakeUpdateEngine(ServiceInterface):
    """com.coreos.update1.Manager: ``GetStatus`` and ``StatusUpdate`` from ``status``."""

    def __init__(self, status: UpdateStatus = IDLE_STATUS) -> None:
        super().__init__(update1.INTERFACE)
        self.status = status
        self.get_status_calls = 0
        self._bus: MessageBus | None = None

    @dbus_method(name="GetStatus")
    def dbus_get_status(self) -> StatusBody:
        self.get_status_calls += 1
        return self.status.to_body()

    @dbus_signal(name="StatusUpdate")
    def dbus_status_update(self) -> StatusBody:
        return self.status.to_body()

    def attach(self, bus: MessageBus) -> None:
        """Export this object at /com/coreos/update1 on ``bus``."""
        bus.export(update1.PATH, self)
        self._bus = bus

    def detach(self) -> None:
        """Unexport this object from the bus it is attached to, if any."""
        if self._bus is not None:
            self._bus.unexport(update1.PATH, self)
            self._bus = None

    def set_operation(self, operation: str) -> None:
        """Change ``status.current_operation`` without telling anyone."""
        self.status = replace(self.status, current_operation=operation)

    def emit_status_update(self, operation: str | None = None) -> None:
        """Set ``operation`` if given, then broadcast ``StatusUpdate`` with ``status``.

        Raises ``BusError`` when not attached to a bus.
        """
        self._attached_bus()
        if operation is not None:
            self.set_operation(operation)
        self.dbus_status_update()

    def emit_malformed(self, kind: str) -> None:
        """Broadcast a malformed ``StatusUpdate`` (see ``MALFORMED_STATUS_BODIES``).

        Raises ``KeyError`` for an unknown kind, ``BusError`` when not attached.
        """
        signature, body = MALFORMED_STATUS_BODIES[kind]
        self._attached_bus().send(
            Message(
                message_type=MessageType.SIGNAL,
                path=update1.PATH,
                interface=update1.INTERFACE,
                member=update1.STATUS_SIGNAL,
                signature=signature,
                body=body,
            )
        )

    def _attached_bus(self) -> MessageBus:
        if self._bus is None:
            raise BusError("fake update_engine is not attached to a bus")
        return self._bus


class FakeSession(ServiceInterface):
    """org.freedesktop.login1.Session with read-only Id, Name and TTY."""

    def __init__(self, session_id: str, user: str, tty: str) -> None:
        super().__init__(login1.SESSION_INTERFACE)
        self.session_id = session_id
        self.user = user
        self.tty = tty

    @dbus_property(access=PropertyAccess.READ, name="Id")
    def dbus_id(self) -> DBusStr:
        return self.session_id

    @dbus_property(access=PropertyAccess.READ, name="Name")
    def dbus_name(self) -> DBusStr:
        return self.user

    @dbus_property(access=PropertyAccess.READ, name="TTY")
    def dbus_tty(self) -> DBusStr:
        return self.tty


@dataclass(frozen=True)
class RebootRecord:
    """One accepted ``Reboot`` call: when (by the fake's clock) and how."""

    at: float
    interactive: bool


class FakeLogind(ServiceInterface):
    """org.freedesktop.login1.Manager: ``Reboot`` and ``ListSessions``.

    Set ``refuse_reboots`` to a D-Bus error name to make ``Reboot`` fail with
    it. ``on_reboot`` (sync or async) runs after the ``Reboot`` reply is sent.
    """

    def __init__(
        self,
        on_reboot: RebootHook | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(login1.INTERFACE)
        self.on_reboot = on_reboot
        self.refuse_reboots: str | None = None
        self.refuse_message = "reboot refused by the test"
        self.reboots: list[RebootRecord] = []
        self.sessions: dict[str, tuple[int, FakeSession]] = {}
        # (what, who, why, mode, uid, pid) as ListInhibitors returns them; tests add and remove entries.
        self.inhibitors: list[tuple[str, str, str, str, int, int]] = []
        self._clock = clock
        self._bus: MessageBus | None = None
        self._hook_tasks: set[asyncio.Future[Any]] = set()

    @dbus_method(name="Reboot")
    def dbus_reboot(self, interactive: DBusBool) -> None:
        if self.refuse_reboots is not None:
            raise DBusError(self.refuse_reboots, self.refuse_message)
        self.reboots.append(RebootRecord(self._clock(), interactive))
        if self.on_reboot is not None:
            # Scheduled, so the method reply is queued before the hook runs.
            asyncio.get_running_loop().call_soon(self._run_hook, self.on_reboot)

    @dbus_method(name="ListSessions")
    def dbus_list_sessions(self) -> SessionList:
        return [
            [session.session_id, uid, session.user, "seat0", session_path(session_id)]
            for session_id, (uid, session) in self.sessions.items()
        ]

    @dbus_method(name="ListInhibitors")
    def dbus_list_inhibitors(self) -> InhibitorList:
        return [list(inhibitor) for inhibitor in self.inhibitors]

    def attach(self, bus: MessageBus) -> None:
        """Export the manager and every session on ``bus``."""
        bus.export(login1.PATH, self)
        for session_id, (_, session) in self.sessions.items():
            bus.export(session_path(session_id), session)
        self._bus = bus

    def detach(self) -> None:
        """Unexport the manager and every session from the attached bus, if any."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        for session_id, (_, session) in self.sessions.items():
            bus.unexport(session_path(session_id), session)
        bus.unexport(login1.PATH, self)

    def add_session(self, session_id: str, user: str, tty: str, uid: int = 1000) -> str:
        """Log a user in (``tty`` may be ``""``); returns the session's object path.

        Raises ``ValueError`` if the session id is already in use.
        """
        if session_id in self.sessions:
            raise ValueError(f"session {session_id!r} already exists")
        session = FakeSession(session_id, user, tty)
        self.sessions[session_id] = (uid, session)
        path = session_path(session_id)
        if self._bus is not None:
            self._bus.export(path, session)
        return path

    def remove_session(self, session_id: str) -> None:
        """Log a session out; raises ``KeyError`` if it does not exist."""
        _, session = self.sessions.pop(session_id)
        if self._bus is not None:
            self._bus.unexport(session_path(session_id), session)

    def _run_hook(self, hook: RebootHook) -> None:
        try:
            result = hook()
        except Exception:
            log.exception("fake logind on_reboot hook failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Future[Any]) -> None:
        self._hook_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("fake logind on_reboot hook failed", exc_info=task.exception())


def session_path(session_id: str) -> str:
    """logind's object path for a session id, escaped like ``sd_bus_path_encode``."""
    escaped = "".join(
        chr(byte)
        if chr(byte).isascii() and chr(byte).isalnum() and not (i == 0 and chr(byte).isdigit())
        else f"_{byte:02x}"
        for i, byte in enumerate(session_id.encode())
    )
    return f"{login1.PATH}/session/{escaped or '_'}"


class SimulatedServices:
    """Fake update_engine, logind and systemd, each on its own connection to one bus.

    systemd reports ``SystemState`` "running" unless told otherwise
    (``services.systemd.system_state = ...``), so health checks after a
    simulated reboot pass by default; like systemd it signals its changes to
    subscribed clients (``harness/systemd_service.py``).

    Each service can be stopped and started (name released and object
    unexported, then re-exported and the name requested again), as a host's
    service restart looks to clients. Close with ``close()`` or ``async with``.
    """

    def __init__(
        self,
        address: str,
        update_engine_bus: MessageBus,
        logind_bus: MessageBus,
        fake_update_engine: FakeUpdateEngine,
        fake_logind: FakeLogind,
    ) -> None:
        self.address = address
        self.update_engine = fake_update_engine
        self.logind = fake_logind
        self._update_engine_bus = update_engine_bus
        self._logind_bus = logind_bus
        self.systemd: FakeSystemd | None = None

    @classmethod
    async def start(
        cls,
        address: str,
        *,
        update_engine: bool = True,
        logind: bool = True,
        systemd: bool = True,
        status: UpdateStatus = IDLE_STATUS,
        on_reboot: RebootHook | None = None,
    ) -> Self:
        """Connect to ``address`` and run the services asked for.

        A service not started here is absent until its ``start_*`` method.
        Raises ``BusError`` when connecting or owning a name fails.
        """
        update_engine_bus = await connect(address)
        try:
            logind_bus = await connect(address)
        except BaseException:
            await disconnect(update_engine_bus)
            raise
        services = cls(
            address,
            update_engine_bus,
            logind_bus,
            FakeUpdateEngine(status),
            FakeLogind(on_reboot),
        )
        try:
            if update_engine:
                await services.start_update_engine()
            if logind:
                await services.start_logind()
            if systemd:
                services.systemd = await FakeSystemd.start(address)
        except BaseException:
            await services.close()
            raise
        return services

    async def start_update_engine(self) -> None:
        """Export the fake update_engine and own com.coreos.update1."""
        self.update_engine.attach(self._update_engine_bus)
        await _own(self._update_engine_bus, update1.SERVICE)

    async def stop_update_engine(self) -> None:
        """Release com.coreos.update1 and unexport the fake update_engine."""
        await _release(self._update_engine_bus, update1.SERVICE)
        self.update_engine.detach()

    async def restart_update_engine(self) -> None:
        """Stop then start update_engine; watchers see its name reappear."""
        await self.stop_update_engine()
        await self.start_update_engine()

    async def start_logind(self) -> None:
        """Export the fake logind (and its sessions) and own org.freedesktop.login1."""
        self.logind.attach(self._logind_bus)
        await _own(self._logind_bus, login1.SERVICE)

    async def stop_logind(self) -> None:
        """Release org.freedesktop.login1 and unexport the fake logind."""
        await _release(self._logind_bus, login1.SERVICE)
        self.logind.detach()

    async def restart_logind(self) -> None:
        """Stop then start logind."""
        await self.stop_logind()
        await self.start_logind()

    def power_off(self) -> None:
        """Drop both connections at once, like a host that goes down.

        Synchronous so it can serve as ``on_reboot``; ``close()`` still
        has to be awaited afterwards to release the sockets.
        """
        self._update_engine_bus.disconnect()
        self._logind_bus.disconnect()

    async def close(self) -> None:
        """Disconnect both services; their names vanish from the bus. Never raises."""
        self.update_engine.detach()
        self.logind.detach()
        await disconnect(self._update_engine_bus)
        await disconnect(self._logind_bus)
        if self.systemd is not None:
            await self.systemd.close()
            self.systemd = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _own(bus: MessageBus, name: str) -> None:
    try:
        reply = await bus.request_name(name, NameFlag.DO_NOT_QUEUE)
    except Exception as exc:
        raise BusError(f"cannot own {name}: {type(exc).__name__}: {exc}") from exc
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        raise BusError(f"cannot own {name}: {reply.name}")


async def _release(bus: MessageBus, name: str) -> None:
    try:
        await bus.release_name(name)
    except Exception as exc:
        raise BusError(f"cannot release {name}: {type(exc).__name__}: {exc}") from exc
