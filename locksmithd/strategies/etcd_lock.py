"""Strategy "etcd-lock": take a slot of the group's etcd semaphore before rebooting."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from locksmithd.core.halt import Halt
from locksmithd.core.holder_record import (
    PHASE_CHECKING_HEALTH,
    PHASE_REBOOTING,
    PHASE_UNHEALTHY,
    AfterBoot,
    HolderRecord,
    after_boot,
    new_record,
)
from locksmithd.core.history import HistoryEvent
from locksmithd.core.names import printable
from locksmithd.core.semaphore import Semaphore
from locksmithd.core.stale_policy import StalePolicy
from locksmithd.core.strategy_labels import ETCD_LOCK
from locksmithd.errors import CorruptDocument, NotHolder, StoreError
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.halt import halt_group
from locksmithd.etcd.keys import alive_key
from locksmithd.etcd.lock import Change, SemaphoreClient, GroupRead
from locksmithd.etcd.lease import FAR_TTL_S
from locksmithd.etcd.queue import GroupQueue, LeaseSession
from locksmithd.etcd.stale import StaleHolders
from locksmithd.strategies.base import RequestObserver

DECLARATION = ETCD_LOCK
"""This strategy's label, help and config slice (``core/strategy_labels.py``)."""

log = logging.getLogger("locksmithd.strategy")
ALIVE_CHECK_S = 5.0  # how often a holder checks that its alive key is on the current lease (no request if so)


class EtcdLockStrategy:
    """Queue fairly for a slot (GroupQueue) and release it through the CAS path.

    ``retry_max_s`` (the daemon's LOCKSMITHD_RETRY_MAX) has no default here:
    the settings module owns it.
    """

    label = DECLARATION.label
    enabled = True
    uses_lock = True

    def __init__(self, store: EtcdStore, holder: str, group: str = "", key_prefix: str = "", *,
                 retry_max_s: float, hostname: str = "", boot_id: str | None = None,
                 reboot_deadline_s: float | None = None, recheck_interval_s: float,
                 lease_ttl_s: int = 10, head_timeout_s: float = 60.0, stale_policy: StalePolicy = StalePolicy.HALT,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.store = store
        self.holder = holder
        self.group = group
        self.hostname = hostname
        self.boot_id = boot_id
        self.reason: str | None = None
        self.reboot_deadline_s = reboot_deadline_s
        self.now = now
        self.alive_key = alive_key(holder, group, key_prefix)
        self.queue = GroupQueue(store, group, key_prefix, session=LeaseSession(store, lease_ttl_s, FAR_TTL_S),
                                recheck_interval_s=recheck_interval_s, retry_max_s=retry_max_s,
                                head_timeout_s=head_timeout_s)
        self.semaphore: SemaphoreClient = self.queue.semaphore  # the same guarded write for both ways
        self.stale = StaleHolders(self.semaphore, stale_policy, holder, now)
        self.queue.stale = self.stale  # the head of a full queue minds stale holders too
        self._alive_lease: int | None = None
        self._alive_task: asyncio.Task[None] | None = None
        self._after_boot: GroupRead | None = None  # what held_from_before read: booted() starts from it

    async def held_from_before(self) -> AfterBoot:
        snapshot = self._after_boot = await asyncio.to_thread(self.semaphore.read)
        holds = snapshot.semaphore.holds(self.holder)
        return after_boot(holds, snapshot.semaphore.record(self.holder) if holds else None, self.boot_id)

    async def rebooting(self) -> None:
        await self._update_record("rebooting", lambda record: record.with_changes(phase=PHASE_REBOOTING),
                                  self._event("reboot-requested", self.reason or ""), known=self.semaphore.last_written)

    async def booted(self) -> datetime:
        """Record the first sight of the new boot (with a "booted" event) and show the host is alive."""
        await self._stay_alive()
        snapshot, self._after_boot = self._after_boot, None
        if snapshot is None:
            snapshot = await asyncio.to_thread(self.semaphore.read)
        record = snapshot.semaphore.record(self.holder)
        if record is not None and self.reason is None:
            self.reason = record.reason  # why this reboot happened, for the post-boot hooks
        if record is not None and record.booted_at is not None:
            return record.booted_at
        now = self.now()
        written = await self._update_record(
            "booted", lambda r: r if r.booted_at else r.with_changes(booted_at=now, phase=PHASE_CHECKING_HEALTH),
            self._event("booted", f"boot {self.boot_id or 'unknown'}"), known=snapshot)
        record = written.record(self.holder) if written is not None else None
        return record.booted_at if record is not None and record.booted_at is not None else now

    async def note_health(self, detail: str) -> None:
        # Sent in the background: it may land after this host released its slot, which is fine.
        await self._update_record("note health", lambda record: record.with_changes(health=detail), moot=True,
                                  known=self.semaphore.last_written)

    async def release_healthy(self, detail: str) -> None:
        await self._unlock(self._event("health-passed", detail), self._event("released"))

    async def halt_unhealthy(self, reason: str) -> None:
        halt = Halt(reason=f"{self.holder} failed its health checks: {reason}", by=self.holder, since=self.now(),
                    group=self.group)

        def unhealthy(semaphore: Semaphore) -> Semaphore:
            record = semaphore.record(self.holder) or HolderRecord()
            if not semaphore.holds(self.holder):
                return semaphore
            return semaphore.with_record(self.holder, record.with_changes(phase=PHASE_UNHEALTHY, health=reason))

        events = [self._event("health-failed", reason), self._event("halt", halt.reason)]
        in_force = await asyncio.to_thread(halt_group, self.semaphore, halt, events, unhealthy)
        if isinstance(in_force, CorruptDocument):
            log.info("the group was already halted by an unreadable halt record: %s", in_force.one_line())
        elif in_force != halt:
            log.info("the group was already halted by %s: %s", printable(in_force.by, 64),
                     printable(in_force.reason, 500))

    async def acquire(self, deadline: datetime | None) -> bool:
        record = new_record(now=self.now(), deadline_after=None if self.reboot_deadline_s is None
                            else timedelta(seconds=self.reboot_deadline_s), hostname=self.hostname,
                            source="locksmithd", boot_id=self.boot_id, reason=self.reason)
        acquired = await self.queue.acquire(self.holder, record.to_info(), deadline)
        if acquired:
            await self._stay_alive()
        return acquired

    async def release(self) -> None:
        await self._unlock(self._event("released"))

    def stale_holders(self) -> StaleHolders:
        return self.stale

    def queue_position(self) -> tuple[int, int] | None:
        """(1-based place, queue length) while queued with a current view, else None."""
        return self.queue.position(self.holder)

    def handoffs_observed(self) -> int:
        """Slot releases this daemon's queue watch has seen."""
        return self.queue.handoffs_observed

    def group_client(self) -> SemaphoreClient:
        """The group's semaphore client (the one the queue writes through) for the metrics' reads."""
        return self.semaphore

    def observe_requests(self, observer: RequestObserver) -> None:
        """Every etcd request of this daemon (the queue's, the lease's, the metrics' reads) goes to ``observer``."""
        self.store.observer = observer

    async def close(self) -> None:
        if self._alive_task is not None:
            self._alive_task.cancel()
        await self.queue.close()  # revokes the lease that carries the alive key: it goes at once
        await asyncio.to_thread(self.store.close)

    async def _unlock(self, *events: HistoryEvent) -> None:
        alive = self._alive_lease is not None
        try:
            await asyncio.to_thread(functools.partial(self.semaphore.unlock, self.holder, events,
                                                      delete=[self.alive_key] if alive else [],
                                                      known=self.semaphore.last_written))
        except NotHolder:
            log.debug("%s held no slot to release", self.holder)
        else:
            if alive:
                self.queue.session.settled(self.alive_key, None)
            alive = False  # the release deleted the alive key
        await self._stop_being_alive(delete=alive)

    async def _stay_alive(self) -> None:
        """Keep this holder's lease-bound alive key while it holds a slot (re-put if the lease changes)."""
        await self._put_alive_key()
        if self._alive_task is None or self._alive_task.done():
            self._alive_task = asyncio.create_task(self._alive_loop(), name="holder alive key")

    async def _put_alive_key(self) -> None:
        lease_id = await self.queue.session.ensure()
        if lease_id != self._alive_lease:
            self.queue.session.carry(self.alive_key, lease_id)  # close revokes this lease: the key goes at once
            await asyncio.to_thread(self.store.put, self.alive_key, self.holder.encode(), lease_id)
            self.queue.session.settled(self.alive_key, lease_id)
            self._alive_lease = lease_id

    async def _alive_loop(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_CHECK_S)
            try:
                await self._put_alive_key()
            except StoreError as error:
                log.warning("cannot renew this holder's alive key: %s", error.one_line())

    async def _stop_being_alive(self, delete: bool = True) -> None:
        if self._alive_task is not None:
            self._alive_task.cancel()
            self._alive_task = None
        self._alive_lease = None
        if not delete:
            return
        try:
            await asyncio.to_thread(self.store.delete, self.alive_key)
            self.queue.session.settled(self.alive_key, None)
        except StoreError as error:
            log.info("could not remove the alive key (its lease will): %s", error.one_line())

    def _event(self, kind: str, detail: str = "") -> HistoryEvent:
        return HistoryEvent(at=self.now(), host=self.holder, event=kind, detail=detail)

    async def _update_record(self, what: str, change: Callable[[Any], Any],
                             *events: HistoryEvent, moot: bool = False,
                             known: GroupRead | None = None) -> Semaphore | None:
        """Apply ``change`` to this host's holder record through the CAS path; None if it holds no slot.

        Holding no slot is a warning (an operator released it?), or with
        ``moot`` a debug message (a background note that lost the race with
        this host's own release).
        """
        def apply(semaphore: Semaphore) -> Semaphore:
            record = semaphore.record(self.holder)
            if record is None:
                record = HolderRecord()
            return semaphore.with_record(self.holder, change(record))

        def in_effect(semaphore: Semaphore) -> bool:
            record = semaphore.record(self.holder)
            return record is not None and change(record) == record

        try:
            return await asyncio.to_thread(self.semaphore.update,
                                           Change(f"{what} {self.holder}", apply, in_effect, events), known)
        except NotHolder:
            if moot:
                log.debug("not recording %s: %s holds no slot any more", what, self.holder)
            else:
                log.warning("cannot record %s: %s holds no slot (an operator released it?)", what, self.holder)
            return None
