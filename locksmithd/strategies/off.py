"""Strategy "off": locksmithd does nothing and exits."""

from __future__ import annotations

from datetime import datetime


class OffStrategy:
    """Never reboots; the daemon logs that it is disabled and exits 0."""

    label = "off"
    enabled = False
    uses_lock = False

    async def release_after_boot(self) -> bool:
        return False

    async def acquire(self, deadline: datetime | None) -> bool:
        raise RuntimeError("strategy 'off' never acquires")

    async def release(self) -> None:
        return None

    async def close(self) -> None:
        return None
