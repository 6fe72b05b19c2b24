"""Start the configured sources of "a reboot is needed" (update_engine, reboot-required, command)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from locksmithd.errors import ConfigError, LocksmithError
from locksmithd.settings import table
from locksmithd.sources.base import Source as Source  # re-exported: what make_sources returns

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

    from locksmithd.settings import DaemonSettings
    from locksmithd.strategies.base import RebootStrategy

log = logging.getLogger("locksmithd")

MAX_REASON_CHARS = 1000


def bounded_reason(reason: str) -> str:
    """A reason short enough for the holder record and the history."""
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


class RebootNeed:
    """The one record of "a reboot is needed", whichever source says it first.

    ``needed(source, reason)`` is what every source calls (``source`` is its
    name in LOCKSMITHD_SOURCES: ``update-engine``, ``reboot-required`` or
    ``command``). The first call records the reason with the strategy (it goes
    into the holder record), sets ``event`` (what the Daemon waits on) and
    emits exactly one ``on_event("reboot-needed", source)``: the journal entry
    and the ``locksmithd_reboot_needed{source}`` metric. Later calls, from the
    same or another source, are logged at debug level and emit nothing.
    """

    def __init__(self, strategy: RebootStrategy, on_event: Callable[[str, str], None]) -> None:
        self.event = asyncio.Event()
        self._strategy = strategy
        self._on_event = on_event

    def needed(self, source: str, reason: str) -> None:
        if self.event.is_set():
            log.debug("also needed (%s): %s", source, reason)
            return
        reason = bounded_reason(reason)
        log.info("a reboot is needed: %s", reason)
        self._strategy.reason = reason
        self.event.set()
        self._on_event("reboot-needed", source)

    def of(self, source: str) -> Callable[[str], None]:
        """The ``on_needed(reason)`` callback for the source named ``source``."""
        return partial(self.needed, source)


def make_sources(settings: DaemonSettings, need: RebootNeed, bus: MessageBus) -> list[tuple[str, Source]]:
    """The sources ``settings`` names, in its order, not started; each tells ``need`` under its own name, and a
    command runs with ``settings.command_env``."""
    from locksmithd.sources.base import SourceContext
    from locksmithd.sources.registry import registry

    kinds = registry()
    return [(name, kinds[name].make(SourceContext(settings, need.of(name), bus, settings.command_env)))
            for name in settings.reboot_sources]


async def start_sources(sources: Sequence[tuple[str, Source]], started: list[Source]) -> None:
    """Start each source, appending it to ``started``; one that cannot start is a warning.

    Raises the source's error when it is the only source, and ConfigError
    (exit 3) when none of several could start.
    """
    for name, source in sources:
        try:
            await source.start()
        except LocksmithError as error:
            if len(sources) == 1:
                raise
            log.warning("reboot source %s cannot start, going on without it: %s", name, error.one_line())
        else:
            started.append(source)
    if not started:
        names = ",".join(name for name, _ in sources)
        raise ConfigError("start-up", table.SOURCES.key, names, "none of the reboot sources could start")
