"""The leases a process's waiters share: a short one near the head of the queue, a long one further back.

A waiter key lives as long as its lease. Near the head, a crashed host must
drop out quickly, so those keys are on a short lease (``ttl_s``, the
daemon's LOCKSMITHD_QUEUE_DROP_OUT) renewed every third of it. Far from the
head nobody waits on a crashed host yet, so (when ``far_ttl_s`` is given)
those keys are on a long lease renewed rarely: the steady cost of a waiting
host is then one keep-alive per ``far_ttl_s / 3``. A waiter moves its key to
the short lease as it nears the head (a put keeps the key's place).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Callable

from locksmithd.errors import StoreError
from locksmithd.etcd.queue_store import LeaseStore

log = logging.getLogger("locksmithd.queue")

FAR_TTL_S = 3600
"""The long lease of waiters far from the head: renewed every 20 minutes (0.05 requests a minute).

A crashed host's key far back lingers at most this long, or until it reaches
the head and is skipped (LOCKSMITHD_QUEUE_HEAD_TIMEOUT)."""


@dataclass
class _Lease:
    ttl_s: int
    lease_id: int | None = None
    task: asyncio.Task[None] | None = None


class LeaseSession:
    """The short lease (and optionally a long one) of one process, each kept alive by one task.

    Without ``far_ttl_s`` every waiter uses the short lease.
    """

    def __init__(self, store: LeaseStore, ttl_s: int = 10, far_ttl_s: int | None = None) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.far_ttl_s = far_ttl_s
        self._near = _Lease(ttl_s)
        self._far = _Lease(far_ttl_s) if far_ttl_s else self._near
        self._granting = asyncio.Lock()  # concurrent waiters must share one lease, not grant one each
        self.on_lost: Callable[[], None] = lambda: None
        self._carried: dict[str, set[int]] = {}  # key -> the leases it may be on (a lease none is on is revoked, not renewed)

    @property
    def lease_id(self) -> int | None:
        """The short lease's id, if granted."""
        return self._near.lease_id

    @property
    def tiered(self) -> bool:
        return self._far is not self._near

    def is_far(self, lease_id: int) -> bool:
        """True when ``lease_id`` is this session's long lease."""
        return self.tiered and lease_id == self._far.lease_id

    async def ensure(self, far: bool = False) -> int:
        """The id of the short (or, with ``far``, the long) lease, granting it and starting keep-alives if needed.

        The caller ``carry``s its key on the lease before its next await: a lease that carries no key at
        its next renewal is let go (``_keep_alive``).
        """
        lease = self._far if far else self._near
        async with self._granting:
            if lease.lease_id is None:
                lease.lease_id = await asyncio.to_thread(self.store.grant_lease, lease.ttl_s)
                if lease.task is None or lease.task.done():
                    lease.task = asyncio.create_task(self._keep_alive(lease), name=f"lease keep-alive {lease.ttl_s}s")
            return lease.lease_id

    def invalidate(self, lease_id: int | None = None) -> None:
        """Forget a lease (only if it is still ``lease_id``: a newer one granted meanwhile stays)."""
        for lease in (self._near, self._far):
            if lease_id is None or lease.lease_id == lease_id:
                lease.lease_id = None

    def carry(self, key: str, lease_id: int) -> None:
        """``key`` is about to be put on ``lease_id``: from now on it may be there (as well as where it was).

        A lease that carries no key at its next renewal is revoked, not renewed (``_keep_alive``).
        """
        self._carried.setdefault(key, set()).add(lease_id)

    def settled(self, key: str, lease_id: int | None) -> None:
        """``key`` is known to be on ``lease_id`` alone (a confirmed put), or on none (None: known deleted)."""
        if lease_id is None:
            self._carried.pop(key, None)
        else:
            self._carried[key] = {lease_id}

    def carrying(self) -> set[int]:
        """The leases that may carry a key of this process."""
        return set().union(*self._carried.values())

    async def close(self) -> None:
        """Stop keep-alives and revoke every lease still held (their keys go with them); best effort.

        A lease no key of this process is known to be on is revoked too: a
        write whose reply was lost (a paused leader) may still land on it
        later, and a waiter key it created must not outlive the process.
        """
        for lease in {id(self._near): self._near, id(self._far): self._far}.values():
            if lease.task is not None:
                lease.task.cancel()
            lease_id, lease.lease_id = lease.lease_id, None
            if lease_id is not None:
                await self._revoke(lease_id)

    async def _revoke(self, lease_id: int) -> None:
        try:
            await asyncio.to_thread(self.store.revoke_lease, lease_id)
        except StoreError as error:
            log.info("could not revoke lease %x (it expires by itself): %s", lease_id, error.one_line())

    async def _keep_alive(self, lease: _Lease) -> None:
        period_s = max(lease.ttl_s / 3.0, 0.5)
        # A long lease is first renewed at a random point of its period: a fleet that queued
        # at once (an update landing everywhere) then renews spread out, not all together.
        first_s = period_s * random.uniform(0.1, 1.0) if lease.ttl_s > self.ttl_s else period_s
        await asyncio.sleep(first_s)
        while True:
            lease_id = lease.lease_id
            if lease_id is None:
                await asyncio.sleep(period_s)
                continue
            if lease_id not in self.carrying():
                # Nothing of this process rides on it any more (the slot was released, the waiter key
                # moved or took its slot): revoke it instead of renewing it for an idle daemon (6 requests
                # a minute per host at the default 30 s), which also removes a key a lost-reply write may
                # have left on it; the next ``ensure`` grants anew.
                lease.lease_id = None
                await self._revoke(lease_id)
                return
            try:
                remaining = await asyncio.to_thread(self.store.keep_alive, lease_id)
            except StoreError as error:
                log.warning("lease keep-alive failed: %s", error.one_line())
                await asyncio.sleep(period_s)
                continue
            if remaining <= 0 and lease.lease_id == lease_id:
                log.warning("lease %x expired; waiting hosts will queue again", lease_id)
                lease.lease_id = None
                self.on_lost()
            await asyncio.sleep(period_s)
