"""The once-a-minute look at the group: a holder that never comes back is noticed even when nobody waits."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from locksmithd.errors import CorruptDocument, StoreError
from locksmithd.etcd.stale import StaleHolders
from locksmithd.observe.group import GroupFigures, read_group_figures

log = logging.getLogger("locksmithd.watch")
LOOK_PERIOD_S = 60.0
"""Longest time between two looks of one daemon; each pause is drawn from 3/4 of it to all of it."""


class GroupWatch:
    """Reads the group's semaphore and halt (one request) about once a minute, at a random phase.

    Each look gives the group's figures without the waiters (``seen``, for
    the metrics) and applies the stale-holder policy when a holder is past
    its deadline with no live daemon and the group is not halted, as the
    head of the queue does (``StaleHolders``; the alive keys are read only
    while a holder is past its deadline). So with every other host finished
    and nobody queued, a holder that never comes back is still halted on or
    reclaimed within a minute of its deadline, by whichever daemon looks
    first; its guarded write lets one daemon win, and the others see the
    halt or the freed slot.

    ``busy()`` True skips a look: a queued host leaves stale holders to the
    head of the queue, which already minds them, so the queue's idle cost
    stays what it is. Costs one request a minute per daemon (two while a
    holder is past its deadline). ``sleep`` and ``rng`` are passed in for
    tests; ``now`` is the UTC clock.
    """

    def __init__(self, stale: StaleHolders, *, busy: Callable[[], bool],
                 seen: Callable[[GroupFigures | None], None], rng: random.Random | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, period_s: float = LOOK_PERIOD_S) -> None:
        self.stale = stale
        self.busy = busy
        self.seen = seen
        self.rng = rng or random.Random()
        self.now = now
        self.sleep = sleep
        self.period_s = period_s

    async def run(self) -> None:
        """Look until cancelled; the first look comes at a random point of the first period."""
        await self.sleep(self.period_s * self.rng.random())
        while True:
            if not self.busy():
                try:
                    self.seen(await asyncio.to_thread(self.look))
                except Exception:  # a bug here must not stop the daemon; say so and look again later
                    log.exception("the look at the group failed")
            await self.sleep(self.period_s * self.rng.uniform(0.75, 1.0))

    def look(self) -> GroupFigures | None:
        """One look (synchronous: etcd calls); None when etcd did not answer."""
        client = self.stale.client
        try:
            figures = self._figures()
        except StoreError as error:
            log.debug("cannot look at the group: %s", error.one_line())
            return None
        if figures.stale and not figures.halted:  # halted: nobody takes the slot anyway (as at the head)
            try:
                self.stale.act()  # reads again: another daemon may have acted since
                figures = self._figures()
            except (StoreError, CorruptDocument) as error:
                log.warning("cannot act on a stale holder of group %r: %s", client.group, error.one_line())
        return figures

    def _figures(self) -> GroupFigures:
        client = self.stale.client
        try:
            return read_group_figures(client, client.group, client.key_prefix, self.now(), waiters=False)
        except CorruptDocument:  # a bad holder record: the alert wants the figure
            return GroupFigures(client.group, corrupt=True, waiters=None)
