"""The one interface every reboot strategy implements."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from locksmithd.core.holder_record import AfterBoot

if TYPE_CHECKING:
    from locksmithd.etcd.lock import SemaphoreClient
    from locksmithd.etcd.stale import StaleHolders

RequestObserver = Callable[[str, float, str], None]
"""Sees each request to the coordination backend: (operation, seconds, outcome)."""


class RebootStrategy(Protocol):
    """How a host gets permission to reboot, proves it came back healthy, and gives it back.

    ``enabled`` False means the daemon has nothing to do (strategy ``off``);
    ``uses_lock`` False means there is no slot (strategy ``reboot``), so the
    slot methods are never called. All methods raise StoreError subclasses
    when the coordination backend cannot answer, and CorruptDocument for a
    document they must not touch; the daemon retries them with backoff.
    """

    label: str
    enabled: bool
    uses_lock: bool
    reason: str | None
    """Why a reboot is needed (set by the daemon's sources before it queues): recorded with the slot."""
    boot_id: str | None
    """This boot's id (set by the daemon once the bus is up, before ``held_from_before``); None if unknown.

    Recorded with a slot; a slot found at start with another boot id was
    taken before a reboot (see ``daemon/boot_id.py``).
    """

    async def held_from_before(self) -> AfterBoot:
        """Whether this host holds a slot from before, and whether it has rebooted since."""

    async def acquire(self, deadline: datetime | None) -> bool:
        """Wait for permission; True once granted, False if ``deadline`` passed first."""

    async def rebooting(self) -> None:
        """Record that the reboot is being requested (best effort: the caller ignores failures)."""

    async def booted(self) -> datetime:
        """Record that the host is back after the reboot (once); return when it was first seen back."""

    async def note_health(self, detail: str) -> None:
        """Show health-check progress in the holder record (best effort)."""

    async def release_healthy(self, detail: str) -> None:
        """Give the slot back after the health checks passed; idempotent."""

    async def halt_unhealthy(self, reason: str) -> None:
        """Keep the slot and halt the group, naming the failed check; idempotent."""

    async def release(self) -> None:
        """Give back a slot taken in this boot and not used (or held from before); idempotent."""

    async def close(self) -> None:
        """Free connections and leave any queue; never raises."""

    def stale_holders(self) -> StaleHolders | None:
        """The group's stale-holder policy, for the daemon's once-a-minute look; None without a group in etcd."""

    # What the observers (metrics, systemd STATUS=) ask; cheap, never raise, never block.

    def queue_position(self) -> tuple[int, int] | None:
        """(1-based place, queue length) while queued and known, else None."""

    def handoffs_observed(self) -> int:
        """Slot releases this daemon has seen hand the slot on."""

    def group_client(self) -> SemaphoreClient | None:
        """The etcd group this host coordinates through, for metrics to read; None when there is none
        this daemon can read (``fleet-lock``: the server's etcd is not the daemon's)."""

    def observe_requests(self, observer: RequestObserver) -> None:
        """Have ``observer`` see each request to the coordination backend from now on."""


class WithoutQueue:
    """The observers' methods for strategies with no etcd group of their own (``fleet-lock``, ``reboot``,
    ``off``): no place in a queue, no handoffs seen, nothing for metrics to read."""

    def queue_position(self) -> tuple[int, int] | None:
        return None

    def handoffs_observed(self) -> int:
        return 0

    def group_client(self) -> SemaphoreClient | None:
        return None

    def observe_requests(self, observer: RequestObserver) -> None:
        return None


class WithoutSlot(WithoutQueue):
    """The slot methods of strategies that take no slot (``off``, ``reboot``): nothing to hold or give back."""

    reason: str | None = None
    boot_id: str | None = None

    async def held_from_before(self) -> AfterBoot:
        return AfterBoot.NOT_HOLDING

    async def rebooting(self) -> None:
        return None

    async def booted(self) -> datetime:
        raise RuntimeError(f"{type(self).__name__} holds no slot and never checks health")

    async def note_health(self, detail: str) -> None:
        return None

    async def release_healthy(self, detail: str) -> None:
        return None

    async def halt_unhealthy(self, reason: str) -> None:
        return None

    async def release(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stale_holders(self) -> StaleHolders | None:
        return None
