"""Strategy "etcd-lock": take a slot of the group's etcd semaphore before rebooting."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from locksmithd.core.halt import Halt
from locksmithd.core.holder_record import (
    PHASE_CHECKING_HEALTH,
    PHASE_REBOOTING,
    PHASE_UNHEALTHY,
    AfterBoot,
    HolderRecord,
    after_boot,
)
from locksmithd.core.semaphore import Semaphore
from locksmithd.errors import NotHolder
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import halt_key
from locksmithd.etcd.lock import Change, SemaphoreClient
from locksmithd.etcd.queue import GroupQueue, LeaseSession
from locksmithd.etcd.store import ABSENT

log = logging.getLogger("locksmithd.strategy")


class EtcdLockStrategy:
    """Queue fairly for a slot (GroupQueue) and release it through the CAS path.

    ``retry_max_s`` (the daemon's LOCKSMITHD_RETRY_MAX) has no default here:
    the settings module owns it.
    """

    label = "etcd-lock"
    enabled = True
    uses_lock = True

    def __init__(self, store: EtcdStore, holder: str, group: str = "", key_prefix: str = "", *,
                 retry_max_s: float, holder_info: Callable[[], Mapping[str, Any]] = dict,
                 recheck_interval_s: float = 300.0, lease_ttl_s: int = 10, boot_id: str | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.store = store
        self.holder = holder
        self.group = group
        self.boot_id = boot_id
        self.now = now
        self.halt_key = halt_key(group, key_prefix)
        self.queue = GroupQueue(store, group, key_prefix, session=LeaseSession(store, lease_ttl_s),
                                recheck_interval_s=recheck_interval_s, retry_max_s=retry_max_s)
        self.semaphore: SemaphoreClient = self.queue.semaphore  # the same guarded write for both ways
        self._holder_info = holder_info

    async def held_from_before(self) -> AfterBoot:
        snapshot = await asyncio.to_thread(self.semaphore.read)
        holds = snapshot.semaphore.holds(self.holder)
        return after_boot(holds, snapshot.semaphore.record(self.holder) if holds else None, self.boot_id)

    async def rebooting(self) -> None:
        await self._update_record("rebooting", lambda record: record.with_changes(phase=PHASE_REBOOTING))

    async def booted(self) -> datetime:
        now = self.now()

        def first_seen(record: Any) -> Any:
            if record.booted_at is not None:
                return record
            return record.with_changes(booted_at=now, phase=PHASE_CHECKING_HEALTH, boot_id=self.boot_id)

        written = await self._update_record("booted", first_seen)
        record = written.record(self.holder) if written is not None else None
        return record.booted_at if record is not None and record.booted_at is not None else now

    async def note_health(self, detail: str) -> None:
        await self._update_record("note health", lambda record: record.with_changes(health=detail))

    async def release_healthy(self, detail: str) -> None:
        await self.release()

    async def halt_unhealthy(self, reason: str) -> None:
        halt = Halt(reason=f"{self.holder}: {reason}", by=self.holder, since=self.now(), group=self.group)
        created = await asyncio.to_thread(self.store.swap, self.halt_key, halt.encode(), ABSENT)
        if not created:
            log.info("the group is already halted; leaving the halt record as it is")
        await self._update_record("unhealthy",
                                  lambda record: record.with_changes(phase=PHASE_UNHEALTHY, health=reason))

    async def _update_record(self, what: str, change: Callable[[Any], Any]) -> Semaphore | None:
        """Apply ``change`` to this host's holder record through the CAS path; None if it holds no slot."""
        def apply(semaphore: Semaphore) -> Semaphore:
            record = semaphore.record(self.holder)
            if record is None:
                record = HolderRecord()
            return semaphore.with_record(self.holder, change(record))

        def in_effect(semaphore: Semaphore) -> bool:
            record = semaphore.record(self.holder)
            return record is not None and change(record) == record

        try:
            return await asyncio.to_thread(self.semaphore.update, Change(f"{what} {self.holder}", apply, in_effect))
        except NotHolder:
            log.warning("cannot record %s: %s holds no slot (an operator released it?)", what, self.holder)
            return None

    async def acquire(self, deadline: datetime | None) -> bool:
        return await self.queue.acquire(self.holder, self._holder_info(), deadline)

    async def release(self) -> None:
        try:
            await asyncio.to_thread(self.semaphore.unlock, self.holder)
        except NotHolder:
            log.debug("%s held no slot to release", self.holder)

    async def close(self) -> None:
        await self.queue.close()
        await asyncio.to_thread(self.store.close)
