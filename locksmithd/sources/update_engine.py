"""The update_engine source: update_engine's status reports on D-Bus; UPDATED_NEED_REBOOT means a reboot is needed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from locksmithd.bus.update_engine import UpdateEngineWatcher
from locksmithd.core.update_status import UpdateStatus
from locksmithd.sources.base import SourceContext, SourceKind

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

log = logging.getLogger("locksmithd")


def status_reason(status: UpdateStatus) -> str | None:
    """The reason a reboot is needed, from one status report (None when it says none is)."""
    if not status.needs_reboot:
        return None
    return "update-engine" + (f": version {status.new_version}" if status.new_version else "")


class UpdateEngineSource:
    """The update_engine watcher as a source: it starts on the daemon's bus and tells ``on_needed``."""

    def __init__(self, bus: MessageBus, on_needed: Callable[[str], None]) -> None:
        self.bus = bus
        self.on_needed = on_needed
        self.watcher = UpdateEngineWatcher(self.on_status)

    def on_status(self, status: UpdateStatus) -> None:
        log.debug("update_engine status: %s", status.current_operation)
        if (reason := status_reason(status)) is not None:
            self.on_needed(reason)

    async def start(self) -> None:
        await self.watcher.start(self.bus)

    async def stop(self) -> None:
        await self.watcher.stop()


SOURCE = SourceKind("update-engine", lambda context: UpdateEngineSource(context.bus, context.on_needed))
