"""Ask systemd-logind (org.freedesktop.login1) to reboot and list logged-in ttys."""

from __future__ import annotations

import asyncio
import logging

from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from locksmithd.bus.connection import (
    DEFAULT_CALL_TIMEOUT_S,
    call,
    call_if_present,
    error_of,
)
from locksmithd.core.inhibitors import INHIBITORS_SIGNATURE, Inhibitor
from locksmithd.errors import BusError, RebootRefused

log = logging.getLogger("locksmithd.bus")

SERVICE = "org.freedesktop.login1"
PATH = "/org/freedesktop/login1"
INTERFACE = "org.freedesktop.login1.Manager"
SESSION_INTERFACE = "org.freedesktop.login1.Session"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
SESSIONS_SIGNATURE = "a(susso)"


class LogindClient:
    """A client of logind's Manager object on one connection."""

    def __init__(self, bus: MessageBus, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self._bus = bus
        self._call_timeout_s = call_timeout_s

    async def reboot(self) -> None:
        """Ask logind to reboot now, without interactive authorization.

        Returns once logind accepted; the host goes down afterwards. Raises
        ``RebootRefused`` (its message holds the D-Bus error name and text)
        when logind answers with an error, is not on the bus, or does not
        answer within the call timeout, or the connection fails.
        """
        try:
            reply = await call(
                self._bus,
                destination=SERVICE,
                path=PATH,
                interface=INTERFACE,
                member="Reboot",
                signature="b",
                body=[False],
                timeout_s=self._call_timeout_s,
            )
        except BusError as exc:
            raise RebootRefused(f"logind reboot failed: {exc.message}") from exc
        if (error := error_of(reply)) is not None:
            name, text = error
            raise RebootRefused(f"logind refused to reboot: {name}: {text}")

    async def tty_sessions(self) -> list[str]:
        """The non-empty ttys (``tty1``, ``pts/3``) of logged-in sessions.

        Returns ``[]`` with a warning when logind is not on the bus. A session
        that ends between listing and reading its TTY is skipped. Raises
        ``BusError`` when ``ListSessions`` fails otherwise or is malformed.
        """
        reply = await call_if_present(
            self._bus,
            destination=SERVICE,
            path=PATH,
            interface=INTERFACE,
            member="ListSessions",
            timeout_s=self._call_timeout_s,
        )
        if reply is None:
            log.warning("logind (%s) is not on the bus; no sessions to notify", SERVICE)
            return []
        if reply.signature != SESSIONS_SIGNATURE:
            raise BusError(
                f"{INTERFACE}.ListSessions returned {reply.signature!r}, "
                f"expected {SESSIONS_SIGNATURE!r}"
            )
        paths = [str(session[4]) for session in reply.body[0]]
        ttys = await asyncio.gather(*(self._session_tty(path) for path in paths))
        return [tty for tty in ttys if tty]

    async def list_inhibitors(self) -> list[Inhibitor]:
        """Every inhibitor logind knows (``ListInhibitors``); ``[]`` when logind is not on the bus.

        Raises ``BusError`` when the call fails otherwise or the reply is malformed.
        """
        reply = await call_if_present(self._bus, destination=SERVICE, path=PATH, interface=INTERFACE,
                                      member="ListInhibitors", timeout_s=self._call_timeout_s)
        if reply is None:
            return []
        if reply.signature != INHIBITORS_SIGNATURE:
            raise BusError(f"{INTERFACE}.ListInhibitors returned {reply.signature!r}, "
                           f"expected {INHIBITORS_SIGNATURE!r}")
        return [Inhibitor(str(what), str(who), str(why), str(mode), int(uid), int(pid))
                for what, who, why, mode, uid, pid in reply.body[0]]

    async def _session_tty(self, session_path: str) -> str:
        reply = await call(
            self._bus,
            destination=SERVICE,
            path=session_path,
            interface=PROPERTIES_INTERFACE,
            member="Get",
            signature="ss",
            body=[SESSION_INTERFACE, "TTY"],
            timeout_s=self._call_timeout_s,
        )
        if (error := error_of(reply)) is not None:
            log.debug("skipping session %s: %s: %s", session_path, *error)
            return ""
        value = reply.body[0] if reply.signature == "v" else None
        if not isinstance(value, Variant) or not isinstance(value.value, str):
            log.debug("skipping session %s: TTY is not a string", session_path)
            return ""
        return value.value
