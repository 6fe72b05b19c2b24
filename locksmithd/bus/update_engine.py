"""Watch update_engine (com.coreos.update1) for status reports over D-Bus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from locksmithd.bus.connection import (
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    DEFAULT_CALL_TIMEOUT_S,
    add_match,
    call_if_present,
    remove_match,
)
from locksmithd.core.update_status import UpdateStatus, parse_status_body
from locksmithd.errors import BusError, MalformedSignal

log = logging.getLogger("locksmithd.bus")

SERVICE = "com.coreos.update1"
PATH = "/com/coreos/update1"
INTERFACE = "com.coreos.update1.Manager"
STATUS_SIGNAL = "StatusUpdate"

STATUS_MATCH_RULE = f"type='signal',interface='{INTERFACE}',member='{STATUS_SIGNAL}',path='{PATH}'"
OWNER_MATCH_RULE = (
    f"type='signal',sender='{DBUS_SERVICE}',interface='{DBUS_INTERFACE}',"
    f"member='NameOwnerChanged',path='{DBUS_PATH}',arg0='{SERVICE}'"
)

StatusCallback = Callable[[UpdateStatus], None]


class UpdateEngineWatcher:
    """Delivers every update_engine status it learns to ``on_status``.

    Sources, in arrival order: one ``GetStatus`` when started, every
    well-formed ``StatusUpdate`` signal, and one ``GetStatus`` each time
    update_engine (re)appears on the bus. Malformed signals are logged on
    ``locksmithd.bus`` and never delivered. Introspection is never used, so
    update_engine may be absent when the watcher starts.
    """

    def __init__(
        self, on_status: StatusCallback, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    ) -> None:
        self._on_status = on_status
        self._call_timeout_s = call_timeout_s
        self._bus: MessageBus | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, bus: MessageBus) -> None:
        """Subscribe on ``bus`` and deliver the current status if update_engine runs.

        Raises ``BusError`` when the match rules cannot be added or the first
        ``GetStatus`` fails for another reason than update_engine being absent.
        """
        if self._bus is not None:
            raise BusError("update_engine watcher already started")
        self._bus = bus
        bus.add_message_handler(self._handle_message)
        try:
            await add_match(bus, STATUS_MATCH_RULE, self._call_timeout_s)
            await add_match(bus, OWNER_MATCH_RULE, self._call_timeout_s)
            status = await self.get_status()
        except BaseException:
            bus.remove_message_handler(self._handle_message)
            self._bus = None
            raise
        if status is None:
            log.info("update_engine (%s) is not on the bus yet; waiting for it", SERVICE)
        else:
            self._deliver(status)

    async def stop(self) -> None:
        """Unsubscribe and cancel pending queries; never raises."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        bus.remove_message_handler(self._handle_message)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if bus.connected:
            for rule in (STATUS_MATCH_RULE, OWNER_MATCH_RULE):
                try:
                    await remove_match(bus, rule, self._call_timeout_s)
                except BusError as exc:
                    log.debug("could not remove match rule: %s", exc.one_line())

    async def get_status(self) -> UpdateStatus | None:
        """Ask update_engine for its status; ``None`` when it is not on the bus.

        Raises ``BusError`` when the watcher is not started, the call fails or
        times out, and ``MalformedSignal`` (a ``BusError``) when the reply is
        not ``xdssx``.
        """
        if self._bus is None:
            raise BusError("update_engine watcher is not started")
        reply = await call_if_present(
            self._bus,
            destination=SERVICE,
            path=PATH,
            interface=INTERFACE,
            member="GetStatus",
            timeout_s=self._call_timeout_s,
        )
        if reply is None:
            return None
        return parse_status_body(reply.signature, reply.body)

    def _handle_message(self, msg: Message) -> None:
        # Returns None: never marks a message handled, other handlers see it too.
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == STATUS_SIGNAL and msg.interface == INTERFACE and msg.path == PATH:
            self._on_status_signal(msg)
        elif (
            msg.member == "NameOwnerChanged"
            and msg.sender == DBUS_SERVICE
            and msg.interface == DBUS_INTERFACE
            and msg.signature == "sss"
            and msg.body[0] == SERVICE
        ):
            self._on_owner_changed(new_owner=msg.body[2])

    def _on_owner_changed(self, new_owner: str) -> None:
        if not new_owner:
            log.info("update_engine (%s) left the bus", SERVICE)
            return
        log.info("update_engine appeared on the bus as %s; asking its status", new_owner)
        self._spawn(self._query_and_deliver())

    def _on_status_signal(self, msg: Message) -> None:
        # No sender check on purpose: `locksmithctl send-need-reboot` (and the
        # tests) emit StatusUpdate from their own connection, not from the
        # owner of com.coreos.update1, exactly like CoreOS locksmith expects.
        try:
            status = parse_status_body(msg.signature, msg.body)
        except MalformedSignal as exc:
            log.warning(
                "ignoring malformed %s signal from %s: %s",
                STATUS_SIGNAL,
                msg.sender,
                exc.message,
            )
            return
        self._deliver(status)

    async def _query_and_deliver(self) -> None:
        try:
            status = await self.get_status()
        except BusError as exc:
            log.warning("update_engine status query failed: %s", exc.one_line())
            return
        if status is not None:
            self._deliver(status)

    def _deliver(self, status: UpdateStatus) -> None:
        try:
            self._on_status(status)
        except Exception:  # a bug in the consumer must not kill the bus reader
            log.exception("update_engine status callback failed for %s", status)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Keep a reference: the event loop holds tasks only weakly.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
