"""Holders that do not come back: past their deadline with no live daemon, halted on or reclaimed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable
from urllib.parse import unquote_plus

from locksmithd.core.halt import Halt
from locksmithd.core.history import HistoryEvent
from locksmithd.core.holder_record import HolderView, view_holders
from locksmithd.core.names import printable
from locksmithd.core.semaphore import Semaphore
from locksmithd.core.stale_policy import StalePolicy
from locksmithd.errors import CorruptDocument
from locksmithd.etcd.halt import halt_group
from locksmithd.etcd.keys import alive_key, alive_prefix
from locksmithd.etcd.lock import SemaphoreClient

log = logging.getLogger("locksmithd.stale")


def read_holder_views(client: SemaphoreClient, semaphore: Semaphore, now: datetime) -> list[HolderView]:
    """Each holder of ``semaphore`` with its age, lateness and liveness (one range read of the alive keys).

    Shared by the stale-holder policy, ``locksmithctl status`` and the
    group's metrics, so all three judge "stale" the same way.
    """
    prefix = alive_prefix(client.group, client.key_prefix)
    alive = {unquote_plus(entry.key[len(prefix):]) for entry in client.store.read_prefix(prefix, keys_only=True)}
    records = {holder: record for holder in semaphore.holders if (record := semaphore.record(holder)) is not None}
    return view_holders(semaphore.holders, records, alive, now)


def next_deadline(semaphore: Semaphore) -> datetime | None:
    """The earliest deadline among the holders' records (None: no holder has one)."""
    deadlines = [record.deadline for holder in semaphore.holders
                 if (record := semaphore.record(holder)) is not None and record.deadline is not None]
    return min(deadlines, default=None)


def format_late(late: timedelta) -> str:
    """'12m30s late'-style text for logs and halt reasons."""
    seconds = int(late.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or hours else "") + f"{seconds}s"
    return f"{text} past its deadline"


class StaleHolders:
    """Finds stale holders of one group and applies the policy.

    Run by the head of a full queue (the host the stale slot blocks) and by
    the once-a-minute look of every daemon that is not queued
    (``daemon/group_watch.py``), whose random phases spread the looks: the
    first look past a deadline acts, and the guarded write lets one writer
    win (a halt is written only where none is, a reclaim only at the revision
    read and while the alive key is absent); the others then see the halt or
    the freed slot and do nothing. A holder past its deadline
    whose daemon is alive (its lease-bound key exists) is only reported: it
    is still working (e.g. health checks failing, the group halted).
    Synchronous (etcd calls): run it in a thread. Raises StoreError
    subclasses and CorruptDocument like the lock path.
    """

    def __init__(self, client: SemaphoreClient, policy: StalePolicy, actor: str,
                 now: Callable[[], datetime]) -> None:
        self.client = client
        self.policy = policy
        self.actor = actor
        self.now = now
        self._reported: set[tuple[str, str]] = set()

    def act(self) -> list[HolderView]:
        """Look at every holder past its deadline and apply the policy; returns the stale ones found."""
        snapshot = self.client.read()
        semaphore = snapshot.semaphore
        now = self.now()
        overdue = [view for view in read_holder_views(self.client, semaphore, now) if view.overdue is not None]
        # This daemon runs, so its own slot is not stale, even before its alive key is back after a boot.
        stale = [view for view in overdue if view.stale and view.holder != self.actor]
        for view in overdue:
            if not view.stale:
                self._report_once(view.holder, "alive", "holder %s is %s but its daemon is alive: reported, "
                                  "not reclaimed", view.holder, format_late(view.overdue or timedelta(0)))
        if not stale:
            return []
        if self.policy is StalePolicy.RECLAIM:
            for view in stale:
                self._reclaim(view)
        elif snapshot.halt is None and snapshot.halt_corrupt is None:
            self._halt(stale)
        return stale

    def _halt(self, stale: list[HolderView]) -> None:
        names = ", ".join(f"{view.holder} ({format_late(view.overdue or timedelta(0))})" for view in stale)
        halt = Halt(reason=f"did not come back: {names}", by=self.actor, since=self.now(), group=self.client.group)
        in_force = halt_group(self.client, halt, [HistoryEvent(at=self.now(), host=self.actor, event="halt",
                                                               detail=halt.reason)])
        if in_force == halt:
            log.error("halted the group: %s", halt.reason)
        elif isinstance(in_force, CorruptDocument):  # an unreadable halt record stops acquisitions too
            log.info("the group was halted meanwhile by an unreadable halt record: %s", in_force.one_line())
        else:  # another daemon's write came first
            log.info("the group was halted meanwhile by %s: %s", printable(in_force.by, 100),
                     printable(in_force.reason, 200))

    def _reclaim(self, view: HolderView) -> None:
        """Remove one stale holder, guarded by its document revision and its alive key's absence."""
        snapshot = self.client.read()
        if not snapshot.semaphore.holds(view.holder):
            return
        late = format_late(view.overdue or timedelta(0))
        event = HistoryEvent(at=self.now(), host=view.holder, event="reclaim", detail=f"{late}; by {self.actor}")
        revision, _ = self.client.write(
            snapshot.semaphore.unlock(view.holder), snapshot.mod_revision, events=[event],
            absent=(alive_key(view.holder, self.client.group, self.client.key_prefix),))
        if revision:
            log.warning("reclaimed the slot of %s: %s, no live daemon", view.holder, late)
        else:
            log.info("did not reclaim %s: the group changed meanwhile (looked again later)", view.holder)

    def _report_once(self, holder: str, why: str, message: str, *args: object) -> None:
        if (holder, why) not in self._reported:
            self._reported.add((holder, why))
            log.warning(message, *args)
