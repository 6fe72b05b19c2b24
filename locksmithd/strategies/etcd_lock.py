"""Strategy "etcd-lock": take a slot of the group's etcd semaphore before rebooting."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Callable, Mapping

from locksmithd.errors import NotHolder
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.queue import GroupQueue, LeaseSession

log = logging.getLogger("locksmithd.strategy")


class EtcdLockStrategy:
    """Queue fairly for a slot (GroupQueue) and release it through the CAS path."""

    label = "etcd-lock"
    enabled = True
    uses_lock = True

    def __init__(self, store: EtcdStore, holder: str, group: str = "", key_prefix: str = "", *,
                 holder_info: Callable[[], Mapping[str, Any]] = dict, recheck_interval_s: float,
                 retry_max_s: float, lease_ttl_s: int = 10) -> None:
        self.store = store
        self.holder = holder
        self.semaphore = SemaphoreClient(store, group, key_prefix)
        self.queue = GroupQueue(store, group, key_prefix, session=LeaseSession(store, lease_ttl_s),
                                recheck_interval_s=recheck_interval_s, retry_max_s=retry_max_s)
        self._holder_info = holder_info

    async def release_after_boot(self) -> bool:
        try:
            await asyncio.to_thread(self.semaphore.unlock, self.holder)
        except NotHolder:  # nothing held from before (or an operator released it)
            return False
        return True

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
