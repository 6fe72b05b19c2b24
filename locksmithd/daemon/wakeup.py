"""A pause that news ends early: a burst of pokes (systemd's signals) ends it once, after the burst settles."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

SETTLE_S = 0.2
"""After the first poke, how long the rest of a burst may take to arrive: systemd sends several signals for
one change (a job removed, then the unit's properties, then the end of the boot) and they make one round."""


class Wakeup:
    """``poke(what)`` from anywhere on the loop (a bus signal handler); ``pause(seconds)`` between rounds.

    ``pause`` returns after ``seconds`` (an empty set), or ``SETTLE_S`` after
    a poke with what every poke of the burst named. Pokes that came while no
    pause ran (during a round) end the next pause at once (after the settle):
    the round may have read the state before the change. Every poke up to the
    end of a pause is used up by it, so a burst is one answer, and rounds
    never overlap (one caller runs them one after the other). A poke named in
    ``final`` (news nothing else in its burst can add to, such as the end of
    the boot) ends the pause with no settle, or cuts a settle short.
    ``sleep`` is how time passes (injected in tests).
    """

    def __init__(self, *, settle_s: float = SETTLE_S, final: frozenset[str] = frozenset(),
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.settle_s = settle_s
        self.final = final
        self._sleep = sleep
        self._poked = asyncio.Event()
        self._final_poked = asyncio.Event()
        self._what: set[str] = set()

    def poke(self, what: str) -> None:
        self._what.add(what)
        self._poked.set()
        if what in self.final:
            self._final_poked.set()

    async def pause(self, seconds: float) -> frozenset[str]:
        """Wait ``seconds`` or until poked (then ``settle_s`` more); what the pokes named, empty if none came."""
        if not self._poked.is_set():
            await self._first_of(self._poked.wait(), self._sleep(seconds))
        if not self._poked.is_set():
            return frozenset()
        if not self._final_poked.is_set():
            await self._first_of(self._final_poked.wait(), self._sleep(self.settle_s))
        what, self._what = frozenset(self._what), set()
        self._poked.clear()
        self._final_poked.clear()
        return what

    @staticmethod
    async def _first_of(*waits: Awaitable[object]) -> None:
        """Wait until the first of ``waits`` is done; cancel the others."""
        tasks = [asyncio.ensure_future(wait) for wait in waits]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
