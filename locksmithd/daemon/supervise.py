"""systemd's view of the daemon: STATUS= with detail, WATCHDOG=1 from the event loop itself, STOPPING=1."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from locksmithd.core.states import State

STATUS_REFRESH_S = 2.0  # how often a changing detail (the queue position) is refreshed


class Notify(Protocol):
    def send(self, **fields: str) -> None: ...


def watchdog_interval_s(watchdog_usec: int | None, watchdog_pid: str | None, pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=, as sd_watchdog_enabled(3) advises), or None.

    None when systemd set no watchdog, or set it for another process (WATCHDOG_PID).
    """
    if not watchdog_usec:
        return None
    if watchdog_pid and watchdog_pid.strip() != str(pid):
        return None
    return watchdog_usec / 2_000_000


def status_text(state: State, noted: str, position: tuple[int, int] | None) -> str:
    """What ``systemctl status`` shows: the queue position while waiting for a slot, else the noted text."""
    if state is State.WAITING_FOR_LOCK:
        if position is not None:
            # 0: the queue's length is not known, and from place 3 on the place is an upper bound
            # (see GroupQueue.position)
            total = f" of {position[1]}" if position[1] else " at most" if position[0] >= 3 else ""
            return f"waiting for a slot: position {position[0]}{total}"
        return "waiting for a slot"
    return noted or state.value


class Supervisor:
    """Sends STATUS= when it changes and WATCHDOG=1 every ``watchdog_s`` from ``run`` (a task of the loop).

    The pings come from the event loop itself: a loop blocked by a bug stops
    them, and systemd restarts the service after WatchdogSec=.
    """

    def __init__(self, notifier: Notify, *, watchdog_s: float | None, state: Callable[[], State],
                 position: Callable[[], tuple[int, int] | None] = lambda: None) -> None:
        self._notifier = notifier
        self._watchdog_s = watchdog_s
        self._state = state
        self._position = position
        self._noted = ""
        self._sent = ""

    def note(self, text: str) -> None:
        """The Daemon's notify hook: a new state, or a state with its detail."""
        self._noted = text
        self.refresh()

    def refresh(self) -> None:
        text = status_text(self._state(), self._noted, self._position())
        if text != self._sent:
            self._sent = text
            self._notifier.send(STATUS=text)

    def stopping(self) -> None:
        self._sent = "stopping"
        self._notifier.send(STOPPING="1", STATUS="stopping")

    async def run(self) -> None:
        """Ping the watchdog and refresh the status until cancelled."""
        pause_s = min(self._watchdog_s, STATUS_REFRESH_S) if self._watchdog_s else STATUS_REFRESH_S
        while True:
            if self._watchdog_s:
                self._notifier.send(WATCHDOG="1")
            self.refresh()
            await asyncio.sleep(pause_s)
