"""What every source of "a reboot is needed" is, and what its factory is handed.

A source is one module in ``sources/`` that defines ``SOURCE = SourceKind(name, make)``; the registry
(``sources/registry.py``) finds it there. Its name, and the help text operators read, are its rows in
``settings/table.py`` (``SOURCE_KINDS``), which settings/ reads without importing the sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus


class Source(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class SourceContext:
    """What a source's factory may use.

    ``settings`` is the daemon's settings (each factory reads only its own rows, a new source's from
    ``settings.source_options`` by name, so it needs no settings field; it is typed by what it reads, not by
    the settings class, so sources/ does not import settings/); ``on_needed(reason)`` tells
    the daemon under this source's name; ``bus`` is the daemon's D-Bus connection; ``command_env`` is the
    clean environment for any command a source runs.
    """

    settings: Any
    on_needed: Callable[[str], None]
    bus: MessageBus
    command_env: Mapping[str, str]


@dataclass(frozen=True)
class SourceKind:
    """One source: its name in LOCKSMITHD_SOURCES and the factory that builds it (not started)."""

    name: str
    make: Callable[[SourceContext], Source]
