"""The queue's watch plumbing: one waiter's watches, their thread hops, and events fed to the pure walk.

Which keys a waiter watches and what an event means are decided in
``core/queue_pause.py``; this module creates and cancels the watches on the
store's watch thread and brings their deliveries back to the event loop
(``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field, replace
from typing import Any

from locksmithd.core import queue_pause
from locksmithd.core.names import printable
from locksmithd.core.queue_view import GroupView
from locksmithd.core.queue_walk import Walk
from locksmithd.errors import LocksmithError
from locksmithd.etcd.keys import GroupKeys
from locksmithd.etcd.queue_store import QueueStore
from locksmithd.etcd.watch import WatchEvent

log = logging.getLogger("locksmithd.queue")


@dataclass(frozen=True)
class _Watch:
    """One watch of a waiter; ``token`` tells its deliveries from those of a watch already replaced."""

    handle: Any
    token: object
    deletes_only: bool


@dataclass
class Waiter:
    """One local host in the queue: what it knows (``walk``, a pure value) and the watches it keeps."""

    holder: str
    key: str
    walk: Walk = field(default_factory=Walk)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    departed: dict[str, int] = field(default_factory=dict)  # keys ahead seen deleted -> revision of the deletion
    watches: dict[str, _Watch] = field(default_factory=dict)  # by first key watched
    retiring: list[_Watch] = field(default_factory=list)  # replaced, delivering until the new one is set up
    news: int = 0  # counts watch events that call for a new read (one arriving during a read is not lost)

    @property
    def create_revision(self) -> int:
        """The key's create revision (0: no key in etcd)."""
        return self.walk.create_revision

    @create_revision.setter
    def create_revision(self, revision: int) -> None:
        self.walk = replace(self.walk, create_revision=revision)


class QueueWatches:
    """The watches of one GroupQueue's local waiters (``local``, shared with it)."""

    def __init__(self, store: QueueStore, view: GroupView, local: dict[str, Waiter], *, keys: GroupKeys,
                 rng: random.Random, retry_max_s: float) -> None:
        self.store = store
        self.view = view
        self.local = local
        self.keys = keys
        self.rng = rng
        self.retry_max_s = retry_max_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.handoffs_observed = 0  # slots released, as seen by a head's watch (for metrics)

    def start(self, me: Waiter, start_revision: int, may_attempt: bool = False) -> None:
        """Watch what ``queue_pause.wanted_watches`` asks for; watches already in place are kept.

        One created from a past revision is served by etcd's catch-up of
        lagging watches, every 100 ms.
        """
        wanted = queue_pause.wanted_watches(me.walk, own_key=me.key, halt_key=self.keys.halt,
                                            semaphore_key=self.keys.semaphore, start_revision=start_revision,
                                            may_attempt=may_attempt)
        for key in [key for key in me.watches if key not in wanted]:
            me.watches.pop(key).handle.cancel()
        for key, (end, deletes_only, since) in wanted.items():
            kept = me.watches.get(key)
            if kept is not None and kept.deletes_only == deletes_only:
                continue
            if kept is None:
                self.add(me, key, end, deletes_only, since)
                continue
            # Watched already in another mode: the new watch starts now, and the old one keeps
            # delivering until etcd has set the new one up, so that no change falls between them.
            me.retiring.append(kept)
            self.add(me, key, end, deletes_only, 0, retire=kept)

    def add(self, me: Waiter, start: str, end: str, deletes_only: bool, since: int,
            created: asyncio.Future[int] | None = None, retire: _Watch | None = None) -> None:
        loop = self.loop
        assert loop is not None
        token = object()
        head = start == self.keys.halt

        def on_events(events: list[WatchEvent], revision: int) -> None:
            loop.call_soon_threadsafe(self.apply, me, token, head, events)

        def settle(revision: int) -> None:
            if created is not None and not created.done():
                created.set_result(revision)
            if retire is not None and retire in me.retiring:
                me.retiring.remove(retire)
                retire.handle.cancel()

        def on_broken(error: BaseException) -> None:
            loop.call_soon_threadsafe(settle, 0)  # the read below goes ahead without it
            loop.call_soon_threadsafe(self.broken, me, token, error)

        def on_created(revision: int) -> None:
            loop.call_soon_threadsafe(settle, revision)

        handle = self.store.watch_range(start, end, since, on_events, on_broken, deletes_only=deletes_only,
                                        on_created=on_created if created is not None or retire else None)
        me.watches[start] = _Watch(handle, token, deletes_only)

    def stop(self, me: Waiter) -> None:
        for watch in (*me.watches.values(), *me.retiring):
            watch.handle.cancel()
        me.watches, me.retiring = {}, []

    def current(self, me: Waiter, token: object) -> bool:
        """False for a late delivery of a watch already stopped."""
        return self.local.get(me.holder) is me and any(
            watch.token is token for watch in (*me.watches.values(), *me.retiring))

    def apply(self, me: Waiter, token: object, head: bool, events: list[WatchEvent]) -> None:
        if not self.current(me, token):
            return
        if not head:
            departed = queue_pause.watch_news(me.walk, events)
            if departed is not None:
                me.departed.update(departed)
                self._news(me)
            return
        for event in events:
            entry = event.entry
            before = set(self.view.semaphore.holders)
            self.view.changed(entry.key, entry.value if event.kind == "put" else None, entry.mod_revision)
            self.handoffs_observed += len(before - set(self.view.semaphore.holders))
        # Wake this head even when another waiter's read already brought the view this far:
        # it may have been asleep on the older view.
        me.wake.set()
        self.wake_heads()

    def read_again(self, me: Waiter) -> None:
        """Make ``me`` read its place again (a change may have fallen between a read and a watch)."""
        if self.local.get(me.holder) is me:
            self._news(me)

    def _news(self, me: Waiter) -> None:
        me.news += 1
        me.walk = queue_pause.read_again(me.walk)
        me.wake.set()

    def wake_heads(self) -> None:
        """Wake local heads and local hosts that now hold a slot (O(local heads + holders))."""
        for holder in (*self.view.heads, *self.view.semaphore.holders):
            other = self.local.get(holder)
            if other is not None:
                other.wake.set()

    def broken(self, me: Waiter, token: object, error: BaseException) -> None:
        if not self.current(me, token):
            return
        message = error.one_line() if isinstance(error, LocksmithError) else printable(str(error) or repr(error), 300)
        log.warning("queue watch of %s broke (%s); re-reading", me.holder, message)
        self.stop(me)
        me.walk = queue_pause.watch_broken(me.walk, self.rng, self.retry_max_s)
        me.wake.set()

    def lease_lost(self) -> None:
        """Every local waiter key went with the lease: queue again (at the back)."""
        for me in self.local.values():
            me.walk = queue_pause.lease_lost(me.walk, self.rng, self.retry_max_s)
            me.wake.set()
