"""The one interface every reboot strategy implements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class RebootStrategy(Protocol):
    """How a host gets permission to reboot and gives it back.

    ``enabled`` False means the daemon has nothing to do (strategy ``off``).
    All methods raise StoreError subclasses when the coordination backend
    cannot answer; the daemon retries them with backoff.
    """

    label: str
    enabled: bool
    uses_lock: bool

    async def release_after_boot(self) -> bool:
        """Give back a slot this host held from before; True if one was released."""

    async def acquire(self, deadline: datetime | None) -> bool:
        """Wait for permission; True once granted, False if ``deadline`` passed first."""

    async def release(self) -> None:
        """Give back permission taken in this boot and not used; idempotent."""

    async def close(self) -> None:
        """Free connections and leave any queue; never raises."""
